"""The bus exceptions every poller catches, whatever the protocol or library below.

Kept apart from ``bus`` (pymodbus) and ``link`` (pyserial) so that drivers and pollers of every
protocol share one vocabulary without importing either library::

    BusError
     +-- LinkError      the link itself cannot be used: port absent or not permitted, TCP
     |                  refused/unreachable, connection lost; retried on the next call
     +-- NoResponse     the device stayed silent within its timeout, or answered garbage
     |                  (bad checksum, short or foreign frame, wrong address)
     +-- DeviceFault    the device answered, refusing: a Modbus exception, a DL/T 645 error
                        reply, a gate's negative ack; ``.code`` says which

Messages name the bus, the device and the cause, never a value read (it may be personal).
"""

from __future__ import annotations

__all__ = ["BusError", "LinkError", "NoResponse", "DeviceFault", "EXCEPTION_NAMES"]

EXCEPTION_NAMES = {
    1: "illegal function", 2: "illegal data address", 3: "illegal data value",
    4: "server device failure", 5: "acknowledge", 6: "server device busy",
    7: "negative acknowledge", 8: "memory parity error", 10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}


class BusError(Exception):
    """Base of the bus exceptions."""


class LinkError(BusError):
    """The link cannot be used (one line naming the bus and the port or host)."""


class NoResponse(BusError):
    """The device was silent within its timeout or answered something unusable."""


class DeviceFault(BusError):
    """The device refused: ``code`` is a Modbus exception number, or a protocol's own code."""

    def __init__(self, code: int | str, message: str | None = None) -> None:
        self.code = code
        if message is None:
            name = EXCEPTION_NAMES.get(code, "unknown exception") if isinstance(code, int) else str(code)
            message = f"exception {code} ({name})"
        super().__init__(message)
