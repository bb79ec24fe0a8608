"""Serves a simulated device family over TCP and over a serial port, for the byte protocols
(DL/T 645, CJ/T 188, the JSON-line hub and gate). The Modbus simulator has its own server
(``modbus``), because RTU framing rests on silence timing this one does not need.

A ``Handler`` is the devices on one line: ``feed`` gets the bytes received so far on one
connection (a ``bytearray`` it consumes from the front as it recognises frames or lines) and
returns what to answer; ``tick`` is called about every ``tick_s`` and returns what the devices
say unprompted (a hub's vitals, a gate's passages), sent to every connection. One handler serves
every connection, under one lock, so its devices have one state whoever asks.

Wire timing: a pty pair paces bytes itself (``PtyPair(baud=...)``); on TCP, ``baud`` delays each
answer by the time the request and the answer would take on the line, so a bench over TCP sees
the same bus time as over RS-485.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Protocol

import serial

__all__ = ["Handler", "ByteServer", "wire_time"]

_POLL_S = 0.05


class Handler(Protocol):
    def feed(self, pending: bytearray) -> bytes: ...

    def tick(self, now: float) -> bytes: ...


def wire_time(n_bytes: int, baud: int | None, bits_per_byte: int = 10) -> float:
    """Seconds ``n_bytes`` take on a serial line (0 without a baud rate)."""
    return n_bytes * bits_per_byte / baud if baud else 0.0


class _Conn:
    """One connected peer: its input so far and how to write to it."""

    def __init__(self, write, baud: int | None, bits_per_byte: int) -> None:
        self.pending = bytearray()
        self.write = write
        self.baud, self.bits = baud, bits_per_byte


class ByteServer:
    """Runs ``handler`` on each listener until ``stop()``; listeners start in their own threads."""

    def __init__(self, handler: Handler, *, tick_s: float = _POLL_S) -> None:
        self.handler = handler
        self.tick_s = tick_s
        self._lock = threading.Lock()  # the handler's state is shared by every connection
        self._conns: list[_Conn] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._closers: list = []
        self._start(self._ticker, "sim-tick")

    def _start(self, target, name: str, *args) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    # -- the handler ----------------------------------------------------------------------
    def _feed(self, conn: _Conn, data: bytes) -> None:
        with self._lock:
            conn.pending += data
            before = len(conn.pending)
            try:
                answer = self.handler.feed(conn.pending)
            except Exception:  # a simulator bug must not kill the line: drop the input
                conn.pending.clear()
                answer = b""
            consumed = before - len(conn.pending)
        if answer:
            delay = wire_time(consumed + len(answer), conn.baud, conn.bits)
            if delay:
                time.sleep(delay)
            self._send(conn, answer)

    def _ticker(self) -> None:
        while not self._stop.wait(self.tick_s):
            with self._lock:
                try:
                    said = self.handler.tick(time.time())
                except Exception:
                    said = b""
                conns = list(self._conns)
            if said:
                for conn in conns:
                    self._send(conn, said)

    def _send(self, conn: _Conn, data: bytes) -> None:
        try:
            conn.write(data)
        except (OSError, serial.SerialException):
            with self._lock:
                if conn in self._conns:
                    self._conns.remove(conn)

    # -- TCP ------------------------------------------------------------------------------
    def serve_tcp(self, host: str = "127.0.0.1", port: int = 0, *, baud: int | None = None,
                  bits_per_byte: int = 10) -> tuple[str, int]:
        """Listen on ``host:port`` (0: a free port); returns the address bound."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((host, port))
            listener.listen(8)
        except OSError:
            listener.close()
            raise
        listener.settimeout(_POLL_S)
        self._closers.append(listener.close)
        self._start(self._accept, "sim-tcp", listener, baud, bits_per_byte)
        bound = listener.getsockname()
        return bound[0], bound[1]

    def _accept(self, listener: socket.socket, baud: int | None, bits: int) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = listener.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            sock.settimeout(_POLL_S)
            conn = _Conn(sock.sendall, baud, bits)
            with self._lock:
                self._conns.append(conn)
            self._closers.append(sock.close)
            self._start(self._serve_socket, "sim-conn", sock, conn)

    def _serve_socket(self, sock: socket.socket, conn: _Conn) -> None:
        try:
            while not self._stop.is_set():
                try:
                    data = sock.recv(4096)
                except (TimeoutError, socket.timeout):
                    continue
                if not data:
                    return
                self._feed(conn, data)
        except OSError:
            return
        finally:
            with self._lock:
                if conn in self._conns:
                    self._conns.remove(conn)
            try:
                sock.close()
            except OSError:
                pass

    # -- serial ---------------------------------------------------------------------------
    def serve_serial(self, path: str, *, baud: int = 9600, parity: str = "N", stopbits: int = 1) -> None:
        """Answer on serial port ``path`` (a pty's far end, or a real RS-485 adapter)."""
        port = serial.Serial(path, baudrate=baud, parity=parity, stopbits=stopbits, timeout=_POLL_S)
        self._closers.append(port.close)

        def write(data: bytes) -> None:
            port.write(data)
            port.flush()
        conn = _Conn(write, None, 10)  # the line itself (or the pty pair) does the pacing
        with self._lock:
            self._conns.append(conn)
        self._start(self._serve_port, "sim-serial", port, conn)

    def _serve_port(self, port: serial.Serial, conn: _Conn) -> None:
        while not self._stop.is_set():
            try:
                data = port.read(port.in_waiting or 1)
            except (OSError, serial.SerialException, TypeError):
                return
            if data:
                self._feed(conn, data)

    def stop(self) -> None:
        self._stop.set()
        for close in self._closers:
            try:
                close()
            except OSError:
                pass
        for thread in self._threads:
            thread.join(timeout=1)

    def __enter__(self) -> "ByteServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
