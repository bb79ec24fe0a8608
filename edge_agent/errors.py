"""The exceptions of edge-agent: one root, a branch per kind of failure, drawn here (the floor).

Every exception the package raises on purpose derives from ``EdgeAgentError``: its message is
one line that names the place (file, key, bus, device) and the fix, so the CLI prints it as
it is and exits 1 (``cli.main`` catches the root, once). A class keeps its builtin base where
code catches that (``ValueError``). The branches live here; each room defines its leaves and
imports its branch, never the reverse::

    EdgeAgentError
     +-- ConfigurationError   the config cannot be used
     |    +-- ConfigError         every problem of one file, FILE:LINE: key.path: ... (config.schema)
     +-- StartupError         something the agent needs at start is missing, malformed or not permitted
     |    +-- KeyFileError        the pseudonym key file (privacy.keys)
     |    |    +-- VerifierError  a trusted command key file (commands.verify)
     |    +-- SealError           the platform's public key; a sealed value that does not open (privacy.seal)
     |    +-- SigningKeyError     a command signing or verification key file (commands.signing)
     |    +-- MqttConfigError     a password or TLS file the mqtt settings name (uplink.client)
     |    +-- UplinkError         the uplink cannot start (uplink.drain)
     |    +-- ControlError        the control socket cannot be served (agent.control)
     |    +-- WebError            the technician's page cannot start: password, TLS files, address (web.auth)
     |    +-- DriverError         an installed driver is unsound (field.registry)
     +-- BusError             one exchange with a device failed, whatever the protocol or library below
     |    +-- LinkError           the link itself cannot be used: port absent or not permitted, TCP
     |    |                       refused/unreachable, connection lost; retried on the next call
     |    +-- NoResponse          the device stayed silent within its timeout, or answered garbage
     |    |                       (bad checksum, short or foreign frame, wrong address)
     |    +-- DeviceFault         the device answered, refusing: a Modbus exception, a DL/T 645 error
     |                            reply, a gate's negative ack; ``.code`` says which
     +-- LineTooLong (ValueError) a talking device's line passed ``model.MAX_LINE`` bytes and was
     |                            discarded: a bad frame, not a failed poll, so not a BusError
     +-- BufferError          the buffer file cannot be opened, read or written (buffer.file)
     |    +-- BufferFull          SQLITE_FULL: nothing was written
     |    +-- BufferCorrupt       not a database, truncated or damaged: a case for quarantine
     |    +-- BufferDenied        this user may not open it or its journals
     +-- CommandError         a platform command that must not act, or its record
     |    +-- CommandRejected     refused with a code from the contract (commands.types)
     |    +-- LedgerError         the command ledger file cannot be used (commands.ledger)
     +-- ControlUnavailable   no daemon answered on the control socket (agent.control): status
     |                        then reads the buffer file
     +-- CliFailure           an expected failure of a CLI verb (cli)
     +-- UsageError (ValueError) a bad argument to scan: exit 2 (tools.scan)
     +-- PayloadError (ValueError) a payload the platform side cannot decode (platform)

Kept apart from ``bus`` (pymodbus) and ``link`` (pyserial) so that drivers and pollers of every
protocol share one vocabulary without importing either library. Not in the tree: a module's
private signals (``_Bad``, ``_CannotOpen``, ...), caught in that module, and the drivers'
frame decoding reasons (``FrameError``, ``BadFrame``: ``ValueError``s turned into ``NoResponse``
or a counted bad frame inside the driver): should one leak, it is a bug and keeps its traceback.

Messages name the bus, the device and the cause, never a value read (it may be personal);
``bug_location`` names an unexpected exception the same way, by type and place only.
"""

from __future__ import annotations

import traceback

__all__ = ["EdgeAgentError", "ConfigurationError", "StartupError", "BusError", "LinkError", "NoResponse",
           "DeviceFault", "LineTooLong", "BufferError", "CommandError", "EXCEPTION_NAMES", "bug_location"]

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


class EdgeAgentError(Exception):
    """The root: an expected failure whose message (one line) says where and what to do."""


class ConfigurationError(EdgeAgentError):
    """The config cannot be used."""


class StartupError(EdgeAgentError):
    """A key, file, socket or driver the agent needs at start cannot be used; fix it, then start."""


class BusError(EdgeAgentError):
    """Base of the bus exceptions: one exchange with a device failed."""


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


class LineTooLong(EdgeAgentError, ValueError):
    """A line passed its link's ``max_line`` bytes; it was discarded up to its newline."""


class BufferError(EdgeAgentError):  # shadows the builtin, as buffer.file always has: the buffer's own
    """The buffer cannot be opened, read or written; the message names the file."""


class CommandError(EdgeAgentError):
    """A platform command that must not act, or the record of commands cannot be kept."""
