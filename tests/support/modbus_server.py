"""Modbus devices for tests: pymodbus' own server (the "other implementation") and a scripted
RTU responder for the misbehaviour a real server will not produce (junk, bad CRC).

``ModbusTestServer`` serves given tables per unit id over TCP on a free loopback port, or over
RTU on a serial path (one end of a ``PtyPair``), from a background thread with its own event
loop. ``start()`` returns only once the server accepts (TCP: a probe connection succeeded;
serial: the port is open), so tests never race its start-up.

It uses the 3.16 ``SimDevice``/``SimData`` API (the replacement of the datastore classes that
warn about v4), with the four tables kept apart (coils and discrete inputs addressed by bit).
Undefined addresses answer exception 2; an absent unit id answers exception 4 (SimCore raises
KeyError and the request handler turns any datastore error into DEVICE_FAILURE).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from typing import Callable, Mapping, Sequence

from edge_agent.crc16 import crc16
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

__all__ = ["ModbusTestServer", "ScriptedRtuDevice", "crc16", "rtu_frame", "Tables"]

logging.getLogger("pymodbus").setLevel(logging.CRITICAL + 1)  # its errors dump frames; tests assert instead

# {"holding": {0: [1, 2, 3]}, "coil": {0: [True, False]}}: start address -> values
Tables = Mapping[str, Mapping[int, Sequence[int] | Sequence[bool]]]
_ORDER = ("coil", "discrete", "holding", "input")
_FC = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}


def _device(unit: int, tables: Tables, delay_s: float) -> SimDevice:
    unknown = set(tables) - set(_ORDER)
    if unknown:
        raise ValueError(f"unknown table(s) {sorted(unknown)}; use {_ORDER}")
    blocks: list[list[SimData]] = []
    for name in _ORDER:
        is_bit = name in ("coil", "discrete")
        entries = [SimData(address, values=[bool(v) for v in values] if is_bit else [int(v) for v in values],
                           datatype=DataType.BITS if is_bit else DataType.REGISTERS)
                   for address, values in sorted(tables.get(name, {}).items())]
        if not entries:  # SimDevice needs something in each table: park it out of the way
            entries = [SimData(65520, values=[False] * 16, datatype=DataType.BITS) if is_bit
                       else SimData(65535, datatype=DataType.INVALID)]
        blocks.append(entries)

    async def slow(*_args: object) -> None:
        await asyncio.sleep(delay_s)

    return SimDevice(id=unit, simdata=tuple(blocks), action=slow if delay_s else None)  # type: ignore[arg-type]


class ModbusTestServer:
    """A pymodbus server in a thread. ``units`` maps unit id -> tables; ``delays`` unit id ->
    seconds each answer waits (a slow device). ``serial`` set: RTU on that path; else TCP on
    127.0.0.1 and a free port (``.port``), with RTU framing if ``rtu_over_tcp`` (a
    serial-to-Ethernet converter)."""

    def __init__(self, units: Mapping[int, Tables], *, serial: str | None = None, baud: int = 9600,
                 delays: Mapping[int, float] | None = None, rtu_over_tcp: bool = False) -> None:
        self.units, self.serial, self.baud = units, serial, baud
        self.framer = FramerType.RTU if rtu_over_tcp else FramerType.SOCKET
        self.delays = dict(delays or {})
        self.host, self.port = "127.0.0.1", 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: ModbusTcpServer | ModbusSerialServer | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self) -> "ModbusTestServer":
        self._thread = threading.Thread(target=self._run, name="modbus-test-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(5):
            raise RuntimeError("test Modbus server did not start within 5s")
        if self._error:
            raise RuntimeError(f"test Modbus server failed to start: {self._error!r}")
        if self.serial is None:  # deterministic: do not return before a client can connect
            with socket.create_connection((self.host, self.port), timeout=2):
                pass
        return self

    def _run(self) -> None:
        asyncio.run(self._main())  # cancels leftover connection tasks and closes the loop

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            devices = [_device(u, t, self.delays.get(u, 0.0)) for u, t in self.units.items()]
            if self.serial is None:
                server: ModbusTcpServer | ModbusSerialServer = ModbusTcpServer(
                    devices, address=(self.host, 0), framer=self.framer)
            else:
                server = ModbusSerialServer(devices, port=self.serial, baudrate=self.baud)
            await server.serve_forever(background=True)
            if not server.transport:
                raise RuntimeError("server did not listen")
            if self.serial is None:
                self.port = server.transport.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
            self._server = server
        except BaseException as exc:  # reported by start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        await server.serving

    def set(self, unit: int, table: str, address: int, values: Sequence[int] | Sequence[bool]) -> None:
        """Change values while serving (as the device's own process would)."""
        assert self._loop and self._server
        future = asyncio.run_coroutine_threadsafe(
            self._server.context.async_setValues(unit, _FC[table], address, list(values)), self._loop)
        if future.result(timeout=2):
            raise ValueError(f"cannot set {table} {address}+{len(values)} on unit {unit}")

    def stop(self) -> None:
        if self._loop and self._server and self._thread and self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._server.shutdown(), self._loop).result(timeout=5)
        if self._thread:
            self._thread.join(timeout=5)
        self._server = None

    def __enter__(self) -> "ModbusTestServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- a scripted RTU device, for answers no honest server gives ------------------------------

def rtu_frame(body: bytes) -> bytes:
    return body + crc16(body).to_bytes(2, "little")


class ScriptedRtuDevice:
    """Reads 8-byte read requests from ``path`` and answers each with ``respond(request)``
    (bytes to send, or None to stay silent). ``requests`` records what arrived."""

    def __init__(self, path: str, respond: Callable[[bytes], bytes | None]) -> None:
        self.respond = respond
        self.requests: list[bytes] = []
        self._fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="scripted-rtu", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        buffer = b""
        while not self._stop.is_set():
            try:
                chunk = os.read(self._fd, 256)
            except BlockingIOError:
                time.sleep(0.002)
                continue
            except OSError:
                return
            buffer += chunk
            while len(buffer) >= 8:
                request, buffer = buffer[:8], buffer[8:]
                self.requests.append(request)
                answer = self.respond(request)
                if answer:
                    os.write(self._fd, answer)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        os.close(self._fd)

    def __enter__(self) -> "ScriptedRtuDevice":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
