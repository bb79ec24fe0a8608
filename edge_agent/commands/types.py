"""The words every part of command handling shares: a verified command, a rejection, a result.

A command travels: uplink (bytes from ``R/cmd``) -> ``command_verify`` (size, JSON, schema,
signature, times, replay) -> ``commands`` (authorisation, then the op through ``command_ops`` or
the daemon's config apply) -> a result on ``R/cmd/result`` and an audit row in ``ledger``. Each
step either hands on a ``Command`` or raises ``CommandRejected`` with one of ``ERROR_CODES``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import CommandError

__all__ = ["ERROR_CODES", "Command", "CommandRejected", "result"]

# CONTRACT section 6 and issue 6: the code of every refusal or failure, as the platform sees it
ERROR_CODES = (
    "too_large", "bad_request", "unknown_key", "bad_signature", "expired", "not_yet_valid", "replayed",
    "unknown_op", "not_allowed", "device_error", "timeout", "rolled_back", "internal",
)


@dataclass(frozen=True)
class Command:
    """A command whose signature verified, within its validity, never seen before."""

    id: str
    op: str
    target: str | None
    args: dict[str, Any]
    iat: int  # ms since the epoch
    exp: int
    signer: str  # the id of the trusted key that verified the signature
    raw: dict[str, Any] = field(default_factory=dict, repr=False)  # as received, "sig" included


class CommandRejected(CommandError):
    """A command that must not act; ``code`` is one of ERROR_CODES, ``message`` one line that
    carries no personal data (it goes on the wire and into the audit log)."""

    def __init__(self, code: str, message: str, *, cmd_id: str | None = None, signer: str | None = None) -> None:
        if code not in ERROR_CODES:
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(message)
        self.code, self.message = code, message
        self.cmd_id, self.signer = cmd_id, signer


def result(cmd_id: str | None, ok: bool, ts_ms: int, *, code: str | None = None, message: str = "",
           data: dict[str, Any] | None = None) -> dict[str, Any]:
    """The contract's result object; ``data`` carries what an accepted op returns."""
    out: dict[str, Any] = {"v": 1, "id": cmd_id, "ok": ok, "ts": ts_ms}
    if not ok:
        out["error"] = {"code": code or "internal", "message": message}
    if data:
        out["data"] = data
    return out
