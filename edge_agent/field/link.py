"""A raw byte link (RS-485 port or TCP) for the protocols pymodbus does not speak: DL/T 645,
CJ/T 188 and the JSON-line hub and gate. The project's only direct pyserial user.

A TCP link (``host``/``port``: a serial-to-Ethernet converter, or a simulator) goes through
pyserial's ``socket://`` URL handler, so one code path serves both. Errors are
``edge_agent.errors``': ``LinkError`` when the port or host cannot be used (retried on the next
call, but not within ``RETRY_LINK_AFTER_S``), ``NoResponse`` when a device is silent or its
answer never completes.

Two ways to use it, both under ``lock`` (reentrant; one transaction at a time on a bus):

- ``transact(request, complete, timeout_s)``: send a frame, read until ``complete`` says the
  answer is whole. Stale bytes are discarded before sending, ``gap_s`` of silence is kept since
  the last transaction, as on a Modbus bus.
- ``read_line(timeout_s)``: the next ``\\n``-terminated line of a talking device. Memory is
  bounded: a line longer than ``max_line`` is discarded up to its newline and reported once as
  ``errors.LineTooLong``, never buffered whole.
"""

from __future__ import annotations

import logging
import os
import termios
import threading
import time
from typing import Callable

import serial

from ..errors import LineTooLong, LinkError, NoResponse
from ..model import MAX_LINE
from ..settings import BusSettings

__all__ = ["ByteLink", "RETRY_LINK_AFTER_S"]

log = logging.getLogger("edge_agent.link")

RETRY_LINK_AFTER_S = 1.0
_CHUNK = 512
_READ_STEP_S = 0.05  # a serial port's read timeout: how often a wait looks at its deadline


def _is_pty(path: str) -> bool:
    return os.path.realpath(path).startswith("/dev/pts/")


Complete = Callable[[bytes], "int | None"]  # bytes so far -> the frame's length once known, else None


class ByteLink:
    """One serial port or TCP connection, opened lazily, reopened after a failure."""

    def __init__(self, settings: BusSettings, *, max_line: int = MAX_LINE) -> None:
        self.settings = settings
        self.name = settings.name
        self.lock = threading.RLock()
        self.max_line = max_line
        self._port: serial.SerialBase | None = None
        self._tty = True  # a serial port (else socket://): decides how _read_some waits
        self._pty_noted = False
        self._failed_at: float | None = None
        self._failure = ""
        self._last_end = 0.0
        self._pending = bytearray()  # bytes read past the last line returned
        self._skipping = False  # inside an over-long line: drop until its newline

    @property
    def where(self) -> str:
        s = self.settings
        return f"serial port {s.serial}" if s.serial else f"{s.host}:{s.port}"

    # -- the link -------------------------------------------------------------------------
    def _link_error(self, message: str) -> LinkError:
        self._failed_at, self._failure = time.monotonic(), message
        return LinkError(message)

    def open(self) -> serial.SerialBase:
        """The open port; LinkError naming why it cannot be opened."""
        if self._port is not None:
            return self._port
        if self._failed_at is not None and time.monotonic() - self._failed_at < RETRY_LINK_AFTER_S:
            raise LinkError(self._failure)
        s = self.settings
        if s.serial:
            path = s.serial
            if "://" not in path:
                if not os.path.exists(path):
                    raise self._link_error(f"bus {self.name}: serial port {path} not found")
                if not os.access(path, os.R_OK | os.W_OK):
                    raise self._link_error(f"bus {self.name}: no permission to open serial port {path} "
                                           "(add the service user to the 'dialout' group)")
            url = path
        else:
            url = f"socket://{s.host}:{s.port}"
        self._tty = not url.startswith("socket://")
        try:
            try:
                port = self._open_url(url, s.parity)
            except (serial.SerialException, termios.error):
                if s.parity == "N" or not _is_pty(url):
                    raise
                # A pseudo-terminal (a simulator's line) carries no parity bit: Linux drops the
                # setting the first time and refuses it (EINVAL) once the pty has been set up.
                port = self._open_url(url, "N")
                if not self._pty_noted:
                    log.info("bus %s: %s is a pseudo-terminal, which carries no parity bits: opened it "
                             "without parity", self.name, s.serial)
                    self._pty_noted = True
        except (serial.SerialException, OSError, ValueError, termios.error) as exc:
            why = str(exc).split(":", 1)[-1].strip() or type(exc).__name__
            raise self._link_error(f"bus {self.name}: cannot open {self.where}: {why}") from None
        self._port, self._failed_at = port, None
        self._pending.clear()
        self._skipping = False
        return port

    def _open_url(self, url: str, parity: str) -> serial.SerialBase:
        s = self.settings
        port = serial.serial_for_url(url, do_not_open=True, timeout=_READ_STEP_S, write_timeout=5)
        if self._tty and "://" not in url:
            port.baudrate, port.parity = s.baud, parity
            port.bytesize, port.stopbits = s.data_bits, s.stop_bits
        port.open()
        return port

    def close(self) -> None:
        with self.lock:
            if self._port is not None:
                sock = getattr(self._port, "_socket", None)  # socket:// ports
                try:
                    self._port.close()
                except (serial.SerialException, OSError):
                    pass
                if sock is not None:  # pyserial skips close() when shutdown() fails (peer gone)
                    sock.close()
            self._port = None

    def _lost(self, during: str) -> LinkError:
        self.close()
        return self._link_error(f"bus {self.name}: {self.where} lost {during}")

    def _read_some(self, port: serial.SerialBase, wait_s: float) -> bytes:
        """What arrives within ``wait_s`` (at least one byte unless it times out)."""
        try:
            if self._tty:
                # the timeout stays as opened: setting it re-applies every line setting, and a
                # pty that silently dropped parity refuses that (termios.error EINVAL)
                first = port.read(1)
                if not first:
                    return b""
                waiting = port.in_waiting
                return first + (port.read(min(waiting, _CHUNK)) if waiting else b"")
            port.timeout = max(0.0, wait_s)
            first = port.read(1)
            if not first:
                return b""
            port.timeout = 0  # then whatever else is already there (in_waiting is 0/1 on socket://)
            return first + port.read(_CHUNK)
        except (serial.SerialException, OSError, termios.error):
            raise self._lost("while reading") from None

    def send(self, data: bytes) -> None:
        """Write ``data`` (for a line protocol's command; ``transact`` for request/response)."""
        with self.lock:
            port = self.open()
            try:
                port.write(data)
                port.flush()
            except (serial.SerialException, OSError, termios.error):
                raise self._lost("while writing") from None

    # -- request/response -----------------------------------------------------------------
    def transact(self, request: bytes, complete: Complete, timeout_s: float | None = None,
                 *, device: str = "device") -> bytes:
        """Send ``request`` and return the answer's bytes once ``complete`` gives its length.

        ``complete`` may raise ValueError when the bytes cannot start a frame: they are kept
        and reading goes on to the timeout, so garbage ends as NoResponse, like silence."""
        timeout = self.settings.timeout_s if timeout_s is None else timeout_s
        with self.lock:
            port = self.open()
            if self.settings.gap_s > 0:
                wait = self._last_end + self.settings.gap_s - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
            try:
                port.reset_input_buffer()
            except (serial.SerialException, OSError, termios.error):
                raise self._lost("while clearing input") from None
            self._pending.clear()
            try:
                self.send(request)
                return self._answer(port, complete, timeout, device)
            finally:
                self._last_end = time.monotonic()

    def _answer(self, port: serial.SerialBase, complete: Complete, timeout: float, device: str) -> bytes:
        deadline = time.monotonic() + timeout
        got = bytearray()
        garbage = False
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            chunk = self._read_some(port, min(left, _READ_STEP_S))
            if not chunk:
                continue
            got += chunk
            if len(got) > 64 * 1024:
                break
            try:
                need = complete(bytes(got))
            except ValueError:
                garbage = True
                continue
            if need is not None and len(got) >= need:
                return bytes(got[:need])
        if not got:
            raise NoResponse(f"bus {self.name}: {device} did not answer within {timeout:g}s")
        what = "an unusable answer" if garbage else f"an incomplete answer ({len(got)} bytes)"
        raise NoResponse(f"bus {self.name}: {device} sent {what} within {timeout:g}s")

    # -- lines ----------------------------------------------------------------------------
    def read_line(self, timeout_s: float) -> bytes | None:
        """The next line without its ``\\n`` (a trailing ``\\r`` is kept), None when none
        completes within ``timeout_s``; LineTooLong once per over-long line, after discarding it."""
        deadline = time.monotonic() + timeout_s
        with self.lock:
            port = self.open()
            while True:
                line = self._take_line()
                if line is not None:
                    return line
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                chunk = self._read_some(port, min(left, _READ_STEP_S))
                if chunk:
                    self._pending += chunk

    def _take_line(self) -> bytes | None:
        while True:
            end = self._pending.find(b"\n")
            if self._skipping:
                if end < 0:
                    self._pending.clear()
                    return None
                del self._pending[:end + 1]
                self._skipping = False
                continue
            if end < 0:
                if len(self._pending) > self.max_line:
                    self._pending.clear()
                    self._skipping = True
                    raise LineTooLong(f"bus {self.name}: a line longer than {self.max_line} bytes was discarded")
                return None
            if end > self.max_line:
                del self._pending[:end + 1]
                raise LineTooLong(f"bus {self.name}: a line longer than {self.max_line} bytes was discarded")
            line = bytes(self._pending[:end])
            del self._pending[:end + 1]
            return line

    def __repr__(self) -> str:
        return f"ByteLink({self.name!r}, {self.where})"
