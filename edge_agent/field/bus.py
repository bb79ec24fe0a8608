"""One Modbus link (RS-485 port, Modbus TCP, or RTU frames over TCP): the project's only
pymodbus user, so its API churn between minor versions stops here.

Errors are ``edge_agent.errors``' (re-exported here); everything else in the project catches
those, never pymodbus'. ``DeviceFault.code`` is the Modbus exception number.

pymodbus facts this module relies on (3.16, read from its source):

- The sync clients read ``comm_params.timeout_connect`` on every receive, and the transaction
  manager keeps its *own copy* of comm_params for its overall deadline; setting both before a
  request gives a per-request (per-device) timeout without reconnecting.
- Errors come two ways: raised (``ModbusIOException`` on timeout or undecodable frames,
  ``ConnectionException`` when the socket/port is gone) and returned (``rr.isError()``, an
  ``ExceptionResponse`` with ``exception_code``). Both are mapped here.
- ``retries=0``: retrying is the poller's decision, counted per device.
- Its ERROR log lines append the last raw frames, i.e. register values that may be personal
  data, and it logs one per timeout. We therefore raise the ``pymodbus`` logger above
  CRITICAL unless someone configured it explicitly; our exceptions carry the cause instead.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import threading
import time
from typing import Any, Callable

from pymodbus.client import ModbusSerialClient, ModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusIOException
from pymodbus.framer import FramerType
from pymodbus.pdu import ExceptionResponse

from ..errors import EXCEPTION_NAMES, BusError, DeviceFault, LinkError, NoResponse
from ..model import DType, Point, Reg
from .registers import encode_value
from ..settings import BusSettings

__all__ = ["BusError", "LinkError", "NoResponse", "DeviceFault", "ModbusBus", "EXCEPTION_NAMES"]

_pymodbus_log = logging.getLogger("pymodbus")
if _pymodbus_log.level == logging.NOTSET:
    _pymodbus_log.setLevel(logging.CRITICAL + 1)

RETRY_LINK_AFTER_S = 1.0  # a failed connect is not retried sooner: no busy loop on a dead link
_READ_FC = {Reg.COIL: 1, Reg.DISCRETE: 2, Reg.HOLDING: 3, Reg.INPUT: 4}


class _CannotOpen(Exception):
    """Why the link cannot be opened, without a device: ``ModbusBus`` adds the one asking."""


class ModbusBus:
    """A Modbus link with lazy connection, per-request timeouts and one transaction at a time.

    ``lock`` serialises transactions: callers that need several transactions in a row (a
    poller's retries) hold it across them; ``read``/``write`` take it too, so it is
    reentrant. Buses never share a lock, so a dead device on one line delays only its own
    bus, and by at most its timeout per attempt. ``settings.gap_s`` of silence is kept between
    the end of one transaction and the start of the next on every link kind (a serial-to-Ethernet
    converter drives an RS-485 line too). A failed connect is retried on the next call, but not
    within ``RETRY_LINK_AFTER_S``: a LinkError with the same cause is raised at once instead.

    Every LinkError names the device whose request failed. Only the cause (``_failure``: the
    bus, the port or host, and why) is kept between calls; the message is built per request,
    so the devices that share a lost link never read another device's number in their error.
    """

    def __init__(self, settings: BusSettings) -> None:
        self.settings = settings
        self.name = settings.name
        self.lock = threading.RLock()
        self._client: ModbusTcpClient | ModbusSerialClient | None = None
        self._failed_at: float | None = None
        self._failure = ""
        self._last_end = 0.0

    @property
    def where(self) -> str:
        s = self.settings
        return f"serial port {s.serial}" if s.link == "serial" else f"{s.host}:{s.port or 502}"

    # -- the link -------------------------------------------------------------------------
    def _failed(self, cause: str) -> None:
        """Remember why the link failed (no device in it): calls within the back-off reuse it."""
        self._failed_at, self._failure = time.monotonic(), cause

    def _not_sent(self, device_id: int) -> LinkError:
        """The link is down: this device's request was not sent (the message names it)."""
        return LinkError(f"bus {self.name}: {self._failure}; request to device {device_id} not sent")

    def _connect(self, timeout: float, device_id: int) -> ModbusTcpClient | ModbusSerialClient:
        if self._client is not None:
            return self._client
        if self._failed_at is not None and time.monotonic() - self._failed_at < RETRY_LINK_AFTER_S:
            raise self._not_sent(device_id)
        s = self.settings
        try:
            client = self._open_serial(timeout) if s.link == "serial" else self._open_tcp(timeout)
        except _CannotOpen as exc:
            self._failed(str(exc))
            raise self._not_sent(device_id) from None
        self._client, self._failed_at = client, None
        return client

    def _open_serial(self, timeout: float) -> ModbusSerialClient:
        s = self.settings
        path = s.serial or ""
        if "://" not in path:  # pyserial URLs (rfc2217://, socket://) have no path to check
            if not os.path.exists(path):
                raise _CannotOpen(f"serial port {path} not found")
            if not os.access(path, os.R_OK | os.W_OK):
                raise _CannotOpen(f"no permission to open serial port {path} "
                                  "(add the service user to the 'dialout' group)")
        client = ModbusSerialClient(path, framer=FramerType.RTU, baudrate=s.baud, bytesize=s.data_bits,
                                    parity=s.parity, stopbits=s.stop_bits, timeout=timeout, retries=0,
                                    name=self.name)
        if not client.connect():
            client.close()
            raise _CannotOpen(f"cannot open serial port {path} (in use by another program, or not a serial device?)")
        return client

    def _open_tcp(self, timeout: float) -> ModbusTcpClient:
        s = self.settings
        host, port = s.host or "", s.port or 502
        framer = FramerType.SOCKET if s.link == "tcp" else FramerType.RTU
        client = ModbusTcpClient(host, port=port, framer=framer, timeout=timeout, retries=0, name=self.name)
        # We open the socket ourselves (pymodbus' connect() only does the same call) so that
        # the error can say *why*: refused, unreachable, unresolvable, timed out.
        try:
            client.socket = socket.create_connection((host, port), timeout=timeout)
        except socket.gaierror:
            raise _CannotOpen(f"cannot resolve host {host!r}") from None
        except TimeoutError:
            raise _CannotOpen(f"cannot connect to {host}:{port}: timed out after {timeout:g}s") from None
        except OSError as exc:
            why = os.strerror(exc.errno).lower() if exc.errno else str(exc)
            if exc.errno == errno.ECONNREFUSED:
                why = "connection refused (nothing listening on that port?)"
            raise _CannotOpen(f"cannot connect to {host}:{port}: {why}") from None
        return client

    def close(self) -> None:
        """Drop the link; the next call opens it again."""
        with self.lock:
            if self._client is not None:
                self._client.close()
            self._client = None

    # -- transactions ---------------------------------------------------------------------
    def _transact(self, device_id: int, timeout_s: float | None, fc: int,
                  call: Callable[[Any], Any]) -> Any:
        timeout = self.settings.timeout_s if timeout_s is None else timeout_s
        client = self._connect(timeout, device_id)
        client.comm_params.timeout_connect = timeout
        client.transaction.comm_params.timeout_connect = timeout  # the manager's own copy
        if self.settings.gap_s > 0:
            wait = self._last_end + self.settings.gap_s - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        try:
            response = call(client)
        except ConnectionException:
            self.close()
            self._failed(f"{self.where} lost")
            raise LinkError(f"bus {self.name}: {self.where} lost during a request to device {device_id}") from None
        except ModbusIOException as exc:
            if "no response" in str(exc).lower():
                raise NoResponse(f"bus {self.name}: device {device_id} did not answer within {timeout:g}s") from None
            raise NoResponse(f"bus {self.name}: device {device_id} sent an undecodable answer") from None
        except Exception as exc:  # noqa: BLE001  garbage can trip decoding bugs: still the device's doing
            raise NoResponse(f"bus {self.name}: device {device_id} sent an unusable answer "
                             f"({type(exc).__name__})") from None
        finally:
            self._last_end = time.monotonic()
        if response is None:
            raise NoResponse(f"bus {self.name}: device {device_id} did not answer within {timeout:g}s")
        if isinstance(response, ExceptionResponse):
            raise DeviceFault(response.exception_code)
        if response.isError() or response.function_code != fc:
            raise NoResponse(f"bus {self.name}: device {device_id} answered function "
                             f"{response.function_code}, expected {fc}")
        return response

    def read(self, device_id: int, reg: Reg, address: int, count: int, *,
             timeout_s: float | None = None) -> list[int] | list[bool]:
        """``count`` registers (ints) or bits (bools) of ``reg`` from ``address``."""
        if not 1 <= count <= reg.max_read:
            raise ValueError(f"bus {self.name}: cannot read {count} {reg} values at once (1..{reg.max_read})")
        fc = _READ_FC[reg]
        method = {1: "read_coils", 2: "read_discrete_inputs", 3: "read_holding_registers",
                  4: "read_input_registers"}[fc]
        with self.lock:
            response = self._transact(device_id, timeout_s, fc, lambda c: getattr(c, method)(
                address, count=count, device_id=device_id))
        values = response.bits if reg.is_bit else response.registers
        if len(values) < count:
            raise NoResponse(f"bus {self.name}: device {device_id} answered {len(values)} of {count} "
                             f"{'bits' if reg.is_bit else 'registers'}")
        return [bool(v) for v in values[:count]] if reg.is_bit else [int(v) for v in values[:count]]

    def write(self, device_id: int, point: Point, value: object, *, timeout_s: float | None = None) -> None:
        """Write ``value`` to ``point``: coil FC05, one register FC06, several FC16; a bool at a
        bit of a holding register is read-modify-write under the bus lock (the device itself
        offers no atomicity). ValueError when the value does not fit the point."""
        if point.reg in (Reg.INPUT, Reg.DISCRETE):
            raise ValueError(f"{point.name}: reg: {point.reg} is read-only in Modbus")
        payload = encode_value(point, value)
        a = point.address
        with self.lock:
            if point.reg is Reg.COIL:
                self._transact(device_id, timeout_s, 5, lambda c: c.write_coil(a, bool(payload), device_id=device_id))
            elif point.dtype is DType.BOOL:
                (word,) = self.read(device_id, Reg.HOLDING, a, 1, timeout_s=timeout_s)
                mask = 1 << (point.bit or 0)
                word = (int(word) | mask) if payload else (int(word) & ~mask)
                self._transact(device_id, timeout_s, 6, lambda c: c.write_register(a, word, device_id=device_id))
            elif isinstance(payload, list) and len(payload) == 1:
                self._transact(device_id, timeout_s, 6, lambda c: c.write_register(a, payload[0], device_id=device_id))
            else:
                self._transact(device_id, timeout_s, 16, lambda c: c.write_registers(a, payload, device_id=device_id))

    def __repr__(self) -> str:
        return f"ModbusBus({self.name!r}, {self.settings.link}, {self.where})"
