"""Commands from the platform's side: make one signed command (fresh id, ``iat``/``exp``), and
check a result on ``R/cmd/result`` against the command it answers (docs/commands.md, "Results").

Why check: results come at least once and from a broker the platform may not fully trust, so a
platform matches them by ``id`` and must not take a malformed one for a success.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

from ..commands.signing import sign
from .unseal import PayloadError

__all__ = ["Outcome", "new_command", "verify_result"]


@dataclass(frozen=True)
class Outcome:
    """A verified result: ``ok``, the error ``code`` and ``message`` when not, ``data`` when ok."""

    ok: bool
    code: str | None = None
    message: str | None = None
    data: Any = None


def new_command(op: str, private_key: Any, *, target: str | None = None, args: dict[str, Any] | None = None,
                kid: str | None = None, ttl_ms: int = 60_000, now_ms: int | None = None) -> dict[str, Any]:
    """A signed command (CONTRACT section 6) with a fresh random id; ``private_key`` an Ed25519 key."""
    iat = int(time.time() * 1000) if now_ms is None else now_ms
    command = {"v": 1, "id": f"c-{secrets.token_hex(6)}", "op": op, "target": target, "args": dict(args or {}),
               "iat": iat, "exp": iat + ttl_ms}
    return sign(command, private_key, kid)


def verify_result(result: Any, command: dict[str, Any]) -> Outcome:
    """The outcome ``result`` (a parsed JSON object) reports for ``command``; ``PayloadError`` when
    its id is another's or its shape is not a result's (``ok`` a boolean; an ``error`` with a
    string ``code`` and ``message`` exactly when ``ok`` is false)."""
    if not isinstance(result, dict):
        raise PayloadError(f"a result must be a JSON object, not {type(result).__name__}")
    if result.get("id") != command.get("id"):
        raise PayloadError(f"result for id {result.get('id')!r}, not for command {command.get('id')!r}")
    if result.get("v") != 1:
        raise PayloadError(f"result version {result.get('v')!r}; this platform reads version 1")
    ok = result.get("ok")
    if not isinstance(ok, bool):
        raise PayloadError(f"result 'ok' is {ok!r}, not true or false")
    if ok:
        if "error" in result:
            raise PayloadError("result says ok but carries an error")
        return Outcome(True, data=result.get("data"))
    error = result.get("error")
    if not (isinstance(error, dict) and isinstance(error.get("code"), str) and isinstance(error.get("message"), str)):
        raise PayloadError("a failed result without an error {code, message}")
    return Outcome(False, error["code"], error["message"])
