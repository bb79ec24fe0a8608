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

    LineTooLong (a ValueError)  a talking device's line passed ``model.MAX_LINE`` bytes and was
                        discarded: a bad frame, not a failed poll

Messages name the bus, the device and the cause, never a value read (it may be personal);
``bug_location`` names an unexpected exception the same way, by type and place only.
"""

from __future__ import annotations

import traceback

__all__ = ["BusError", "LinkError", "NoResponse", "DeviceFault", "LineTooLong", "EXCEPTION_NAMES", "bug_location"]

EXCEPTION_NAMES = {
    1: "illegal function", 2: "illegal data address", 3: "illegal data value",
    4: "server device failure", 5: "acknowledge", 6: "server device busy",
    7: "negative acknowledge", 8: "memory parity error", 10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}


def bug_location(exc: BaseException) -> str:
    """``ExcType at file.py:LINE`` of the innermost frame: enough to find the bug, no values."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return type(exc).__name__
    last = frames[-1]
    return f"{type(exc).__name__} at {last.filename.rsplit('/', 1)[-1]}:{last.lineno}"


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


class LineTooLong(ValueError):
    """A line passed its link's ``max_line`` bytes; it was discarded up to its newline."""
