"""A Modbus server of our own, for the bench, the demo and the tests: no pymodbus here.

The agent talks Modbus through pymodbus; a second, independent implementation on the other
end is what makes a test of that link mean something (two copies of one library agree with
each other even where both are wrong).

Frames (Modbus application protocol 1.1b3, serial line guide 1.02, Messaging on TCP/IP 1.0b):
- RTU: ``unit fc data... crc_lo crc_hi``, CRC-16/MODBUS (poly 0xA001 reflected, init 0xFFFF,
  sent low byte first); a frame ends at 3.5 character times of silence. Requests of
  functions 01-06 are 8 bytes and 15/16 are 9 + byte count, so a frame is served as soon
  as it is complete; silence only ends the frames we cannot measure and drops partial ones.
- TCP: MBAP ``tid(2) proto(2)=0 length(2) unit(1)`` then the PDU; length counts unit + PDU.
- Exceptions: fc | 0x80 and one code: 01 unknown function, 02 an unmapped address,
  03 a bad count or value, 0x0B (TCP only) no such unit. On RTU an unknown unit is silent,
  and unit 0 is a broadcast: writes are done by every unit, nobody answers.
Bad frames (CRC, header, truncation) are counted in ``bad_frames`` and skipped.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterable

import serial

from edge_agent.crc16 import crc16, crc_ok
from edge_agent.model import MAX_READ_BITS, MAX_READ_REGISTERS, Reg

from .devices import DeviceModel, ExceptionCode, Faults

__all__ = ["crc16", "rtu_frame", "execute", "Request", "ModbusSimulator"]

MAX_WRITE_BITS = 0x07B0  # function 15
MAX_WRITE_REGISTERS = 0x7B  # function 16
_READS = {0x01: Reg.COIL, 0x02: Reg.DISCRETE, 0x03: Reg.HOLDING, 0x04: Reg.INPUT}
_WRITES = {0x05, 0x06, 0x0F, 0x10}
_SERIAL_GAP_FLOOR_S = 0.02  # USB adapters deliver in bursts (FTDI latency timer 16 ms)
_RTU_TCP_GAP_S = 0.05  # a TCP segment may split a frame; wait this long before calling it ended
_MBAP_IDLE_S = 0.5  # a partial MBAP frame left this long is dropped
_POLL_S = 0.05  # how often threads look at the stop flag


_crc_ok = crc_ok


def _garbage() -> bytes:
    return os.urandom(3 + os.urandom(1)[0] % 10)


def rtu_frame(unit: int, pdu: bytes) -> bytes:
    """``unit + pdu + CRC``, ready for the line."""
    body = bytes([unit]) + pdu
    return body + struct.pack("<H", crc16(body))


def _exception(fc: int, code: int) -> bytes:
    return bytes([(fc | 0x80) & 0xFF, code])


def _pack_bits(bits: list[int]) -> bytes:
    out = bytearray((len(bits) + 7) // 8)
    for i, bit in enumerate(bits):
        if bit:
            out[i // 8] |= 1 << (i % 8)
    return bytes(out)


def _unpack_bits(data: bytes, count: int) -> list[int]:
    return [(data[i // 8] >> (i % 8)) & 1 for i in range(count)]


def execute(device: DeviceModel, pdu: bytes) -> bytes:
    """The reply PDU to a request PDU, reading or writing ``device``'s tables.

    Checks run in the standard's order: function (01), quantity and length (03), address (02).
    """
    fc = pdu[0]
    if fc in _READS:
        table = _READS[fc]
        if len(pdu) != 5:
            return _exception(fc, ExceptionCode.ILLEGAL_DATA_VALUE)
        address, count = struct.unpack(">HH", pdu[1:5])
        if not 1 <= count <= (MAX_READ_BITS if table.is_bit else MAX_READ_REGISTERS):
            return _exception(fc, ExceptionCode.ILLEGAL_DATA_VALUE)
        values = device.read(table, address, count) if address + count <= 0x10000 else None
        if values is None:
            return _exception(fc, ExceptionCode.ILLEGAL_DATA_ADDRESS)
        payload = _pack_bits(values) if table.is_bit else struct.pack(f">{count}H", *values)
        return bytes([fc, len(payload)]) + payload
    if fc in (0x05, 0x06):
        if len(pdu) != 5:
            return _exception(fc, ExceptionCode.ILLEGAL_DATA_VALUE)
        address, value = struct.unpack(">HH", pdu[1:5])
        if fc == 0x05 and value not in (0xFF00, 0x0000):
            return _exception(fc, ExceptionCode.ILLEGAL_DATA_VALUE)
        table, values = (Reg.COIL, [1 if value else 0]) if fc == 0x05 else (Reg.HOLDING, [value])
        refused = device.write(table, address, values)
        return _exception(fc, refused) if refused is not None else pdu
    if fc in (0x0F, 0x10):
        if len(pdu) < 6:
            return _exception(fc, ExceptionCode.ILLEGAL_DATA_VALUE)
        address, count, nbytes = struct.unpack(">HHB", pdu[1:6])
        bits = fc == 0x0F
        limit, expected = (MAX_WRITE_BITS, (count + 7) // 8) if bits else (MAX_WRITE_REGISTERS, 2 * count)
        if not 1 <= count <= limit or nbytes != expected or len(pdu) != 6 + nbytes:
            return _exception(fc, ExceptionCode.ILLEGAL_DATA_VALUE)
        if address + count > 0x10000:
            return _exception(fc, ExceptionCode.ILLEGAL_DATA_ADDRESS)
        data = pdu[6:]
        table, values = (Reg.COIL, _unpack_bits(data, count)) if bits else \
            (Reg.HOLDING, list(struct.unpack(f">{count}H", data)))
        refused = device.write(table, address, values)
        return _exception(fc, refused) if refused is not None else pdu[:5]
    return _exception(fc, ExceptionCode.ILLEGAL_FUNCTION)


def _rtu_request_length(buf: bytes | bytearray) -> int | None:
    """Length of the request at the head of ``buf``; None: not known yet; 0: ends at silence."""
    if len(buf) < 2:
        return None
    if buf[1] in _READS or buf[1] in (0x05, 0x06):
        return 8
    if buf[1] in (0x0F, 0x10):
        return 9 + buf[6] if len(buf) >= 7 else None
    return 0


@dataclass(frozen=True)
class Request:
    """One well-formed request frame as it reached the simulator, for any unit."""

    t: float  # time.monotonic()
    transport: str  # "tcp", "rtu-tcp" or "serial"
    unit: int
    function: int
    frame: bytes


class _RtuStream:
    """Cuts an RTU byte stream into frames by length and by silence; counts the bad ones."""

    def __init__(self, on_bad: Callable[[], None]) -> None:
        self.buf = bytearray()
        self.discarding = False  # after a bad CRC, the rest of the burst is junk too
        self._on_bad = on_bad

    def feed(self, data: bytes) -> list[bytes]:
        if self.discarding:
            return []
        self.buf += data
        frames = []
        while self.buf:
            need = _rtu_request_length(self.buf)
            if not need or need > len(self.buf):
                break
            frame = bytes(self.buf[:need])
            del self.buf[:need]
            if not _crc_ok(frame):
                self._drop()
                break
            frames.append(frame)
        return frames

    def silence(self) -> list[bytes]:
        """The line went quiet: what is buffered is one frame, or junk."""
        frame, self.discarding = bytes(self.buf), False
        self.buf.clear()
        if not frame:
            return []
        if _rtu_request_length(frame) == 0 and _crc_ok(frame):
            return [frame]
        self._on_bad()
        return []

    def _drop(self) -> None:
        self._on_bad()
        self.buf.clear()
        self.discarding = True


class ModbusSimulator:
    """Serves ``units`` (unit id -> device) over any number of TCP, RTU-over-TCP and serial
    listeners at once; every listener sees the same devices, as gateways on one bus do."""

    def __init__(self, units: dict[int, DeviceModel], history: int = 1000) -> None:
        for unit in units:
            if not 1 <= unit <= 247:
                raise ValueError(f"unit id {unit} is outside 1..247")
        self.units = dict(units)
        self._requests: deque[Request] = deque(maxlen=history)
        self._bad_frames = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._unanswered: dict[int, float] = {}  # unit -> when a request to it last got no answer (RTU)

    # -- what tests look at ------------------------------------------------------------
    @property
    def requests(self) -> list[Request]:
        """Well-formed request frames received, oldest first (bounded)."""
        with self._lock:
            return list(self._requests)

    @property
    def bad_frames(self) -> int:
        with self._lock:
            return self._bad_frames

    def clear(self) -> None:
        """Forget the recorded requests and the bad-frame count."""
        with self._lock:
            self._requests.clear()
            self._bad_frames = 0

    def set_faults(self, unit: int, faults: Faults | None = None, **changes: object) -> Faults:
        """Change one unit's faults while serving; ``Faults()`` clears them."""
        return self.units[unit].set_faults(faults, **changes)

    def _record(self, transport: str, unit: int, frame: bytes, fc: int) -> None:
        with self._lock:
            self._requests.append(Request(time.monotonic(), transport, unit, fc, frame))

    def _bad(self) -> None:
        with self._lock:
            self._bad_frames += 1

    # -- serving one request -------------------------------------------------------------
    def _serve(self, device: DeviceModel, pdu: bytes, faults: Faults) -> bytes | None:
        """The reply PDU, or None when the device stays silent; waits out a delay fault."""
        if faults.silence:
            return None
        device.tick(time.monotonic())
        if faults.exception is not None and pdu[0] in _READS:
            reply = _exception(pdu[0], faults.exception)
        else:
            reply = execute(device, pdu)
        if faults.delay_s:
            self._stop.wait(faults.delay_s)
        return reply

    def _answer_rtu(self, frame: bytes, transport: str) -> bytes | None:
        unit, pdu = frame[0], frame[1:-2]
        self._record(transport, unit, frame, pdu[0])
        if unit == 0:
            for device in self.units.values():
                if pdu[0] in _WRITES and not device.faults.silence:
                    device.tick(time.monotonic())
                    execute(device, pdu)
            return None
        device = self.units.get(unit)
        if device is None or self._deaf(unit, device.faults):
            self._unanswered[unit] = time.monotonic()
            return None
        faults = device.faults
        reply = self._serve(device, pdu, faults)
        if reply is None:
            self._unanswered[unit] = time.monotonic()
            return None
        if faults.garbage:
            return _garbage()
        out = rtu_frame(unit, reply)
        return out[:-2] + bytes([out[-2] ^ 0xFF, out[-1] ^ 0xFF]) if faults.bad_crc else out

    def _deaf(self, unit: int, faults: Faults) -> bool:
        """Whether ``unit`` still waits for the reply to a request to another unit that got none."""
        if faults.deaf_s <= 0:
            return False
        since = time.monotonic() - faults.deaf_s
        return any(when > since for other, when in list(self._unanswered.items()) if other != unit)

    def _answer_tcp(self, frame: bytes) -> bytes | None:
        tid, _, _, unit = struct.unpack(">HHHB", frame[:7])
        pdu = frame[7:]
        self._record("tcp", unit, frame, pdu[0])
        device = self.units.get(unit)
        faults = device.faults if device is not None else Faults()
        if device is None:
            reply: bytes | None = _exception(pdu[0], ExceptionCode.GATEWAY_TARGET_FAILED)
        else:
            reply = self._serve(device, pdu, faults)
        if reply is None:
            return None
        if faults.garbage:
            return _garbage()
        length = len(reply) + 1 + (3 if faults.bad_crc else 0)
        return struct.pack(">HHHB", tid, 0, length, unit) + reply

    def _take_mbap(self, buf: bytearray) -> Iterable[bytes]:
        while len(buf) >= 8:
            _, proto, length = struct.unpack(">HHH", buf[:6])
            if proto != 0 or not 2 <= length <= 254:
                self._bad()
                buf.clear()
                return
            if len(buf) < 6 + length:
                return
            frame = bytes(buf[:6 + length])
            del buf[:6 + length]
            yield frame

    # -- listeners ------------------------------------------------------------------------
    def _start(self, target: Callable[..., None], *args: object, name: str) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        with self._lock:
            self._threads.append(thread)

    def serve_tcp(self, host: str = "127.0.0.1", port: int = 0, *, rtu_framing: bool = False) -> tuple[str, int]:
        """Listen for Modbus TCP (or RTU frames over TCP); returns the address actually bound."""
        listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((host, port))
            listener.listen(16)
        except OSError:
            listener.close()
            raise
        listener.settimeout(_POLL_S)
        bound = listener.getsockname()[:2]
        self._start(self._accept_loop, listener, rtu_framing, name=f"modbus-sim-listen-{bound[1]}")
        return bound[0], bound[1]

    def _accept_loop(self, listener: socket.socket, rtu_framing: bool) -> None:
        with listener:
            while not self._stop.is_set():
                try:
                    conn, peer = listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return
                self._start(self._connection, conn, rtu_framing, name=f"modbus-sim-{peer[1]}")

    def _connection(self, conn: socket.socket, rtu_framing: bool) -> None:
        conn.settimeout(_RTU_TCP_GAP_S if rtu_framing else _POLL_S)
        stream = _RtuStream(self._bad)
        buf = bytearray()
        idle = 0.0
        with conn:
            while not self._stop.is_set():
                try:
                    data = conn.recv(4096)
                    if not data:
                        return
                except TimeoutError:
                    data = b""
                except OSError:
                    return
                if rtu_framing:
                    frames = stream.feed(data) if data else stream.silence()
                    replies = [self._answer_rtu(f, "rtu-tcp") for f in frames]
                else:
                    idle = 0.0 if data else idle + _POLL_S
                    buf += data
                    if buf and idle >= _MBAP_IDLE_S:
                        self._bad()
                        buf.clear()
                    replies = [self._answer_tcp(f) for f in self._take_mbap(buf)]
                try:
                    for reply in replies:
                        if reply:
                            conn.sendall(reply)
                except OSError:
                    return

    def serve_serial(self, path: str, *, baud: int = 9600, parity: str = "N", stopbits: int = 1) -> str:
        """Answer RTU on a serial port (a pty from ``PtyPair`` on the bench); returns the path."""
        bits = 1 + 8 + (parity != "N") + stopbits
        gap = max(3.5 * bits / baud if baud <= 19200 else 0.00175, _SERIAL_GAP_FLOOR_S)
        port = serial.Serial(path, baudrate=baud, bytesize=8, parity=parity, stopbits=stopbits, timeout=gap)
        self._start(self._serial_loop, port, name=f"modbus-sim-{os.path.basename(path)}")
        return path

    def _serial_loop(self, port: serial.Serial) -> None:
        stream = _RtuStream(self._bad)
        with port:
            while not self._stop.is_set():
                try:
                    data = port.read(max(1, port.in_waiting))
                    frames = stream.feed(data) if data else stream.silence()
                    for frame in frames:
                        reply = self._answer_rtu(frame, "serial")
                        if reply:
                            port.write(reply)
                except (OSError, serial.SerialException):
                    if not self._stop.wait(_POLL_S):
                        continue
                    return

    def stop(self, timeout: float = 2.0) -> None:
        """Close every listener and port and wait for the threads."""
        self._stop.set()
        with self._lock:
            threads, self._threads = self._threads, []
        for thread in threads:
            thread.join(timeout)

    def __enter__(self) -> "ModbusSimulator":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
