"""Verify a command from ``R/cmd``: size, JSON, schema, signature, times, op, replay.

Everything on ``R/cmd`` is hostile until its signature verifies: the broker, or anyone holding
broker credentials, can publish there. ``CommandVerifier.verify(payload)`` returns a ``Command``
or raises ``CommandRejected`` with the first reason, checked in this order:

1. ``too_large``: more than ``max_bytes``, refused before it is parsed;
2. ``bad_request``: not UTF-8, not a JSON object (duplicate keys, ``NaN``, too deep: refused), or
   not the schema: ``v`` 1; ``id`` 1-64 of ``[A-Za-z0-9._:-]``; ``op`` a string; ``target`` a
   string or null (may be absent); ``args`` an object (may be absent); ``iat``/``exp`` integer
   ms; ``sig`` base64; optional ``kid`` a string; no other field;
3. ``unknown_key``: ``kid`` names no trusted key;
4. ``bad_signature``: the signature (over ``signing.canonical``) verifies with no trusted key
   (with ``kid``: with that key only);
5. ``expired``: ``exp`` <= now; ``not_yet_valid``: ``iat`` > now + ``max_skew``;
6. ``bad_request``: ``exp`` <= ``iat``, or ``exp - iat`` > ``max_lifetime`` (a command may not
   outlive the replay cache's memory);
7. ``unknown_op``: ``op`` not one of ``settings.OPS``;
8. ``replayed``: ``ledger.remember`` has seen the id. Only a command that got this far is
   recorded, so nothing unsigned reaches the cache; a ledger failure refuses (``internal``).

For any input bytes ``verify`` raises nothing but ``CommandRejected`` (fuzzed with hypothesis).
Rejection messages are one line, quote nothing from the payload but a well-formed ``id`` and
``kid``, and carry no personal data: they go on the wire and into the audit log.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import time
from typing import TYPE_CHECKING, Any, Callable, Mapping

from .types import Command, CommandRejected
from ..privacy.keys import KeyFileError
from ..settings import OPS
from .signing import SIG_BYTES, SigningKeyError, canonical, key_id, load_public_key

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from .ledger import Ledger
    from ..settings import CommandSettings

__all__ = ["CommandVerifier", "VerifierError", "ID_PATTERN", "FIELDS"]

ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,64}")
KID_PATTERN = ID_PATTERN
FIELDS = frozenset({"v", "id", "op", "target", "args", "iat", "exp", "sig", "kid"})
_MAX_SIG_CHARS = 200  # base64 of 64 bytes is 88 characters
MAX_DEPTH = 32  # objects and arrays inside each other; a command's args never need more
MAX_MS = 2**53 - 1  # iat/exp: integers a JavaScript platform represents exactly


class VerifierError(KeyFileError):
    """The verifier cannot be built (a trusted key file missing or unusable): a start-up error.

    A ``KeyFileError``, so ``edge-agent run`` reports it as one line like any other key file."""


class _Bad(ValueError):
    """Inside parsing: a bad_request reason."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _Bad("a key appears twice in one object")
        out[k] = v
    return out


def _no_constant(name: str) -> Any:
    raise _Bad(f"{name} is not a JSON number")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _walk(obj: Any) -> None:
    """Refuse nesting deeper than MAX_DEPTH and floats that are not finite (json reads 1e999 as
    inf); iterative, so no input can exhaust the stack."""
    stack = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            raise _Bad("a number is out of range")
        if isinstance(value, (dict, list)):
            if depth > MAX_DEPTH:
                raise _Bad(f"payload is nested deeper than {MAX_DEPTH} levels")
            stack.extend((v, depth + 1) for v in (value.values() if isinstance(value, dict) else value))


def _parse(payload: bytes) -> dict[str, Any]:
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise _Bad("payload is not UTF-8") from None
    try:
        obj = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except _Bad:
        raise
    except RecursionError:
        raise _Bad("payload is nested too deeply") from None
    except ValueError:  # JSONDecodeError, or an integer of more digits than Python converts
        raise _Bad("payload is not valid JSON") from None
    if not isinstance(obj, dict):
        raise _Bad("payload is not a JSON object")
    _walk(obj)
    return obj


def _check_schema(obj: dict[str, Any]) -> None:
    unknown = sorted(set(obj) - FIELDS)
    if unknown:
        shown = unknown[0] if ID_PATTERN.fullmatch(unknown[0]) else "?"
        raise _Bad(f"unknown field {shown!r}" + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""))
    for name in ("v", "id", "op", "iat", "exp", "sig"):
        if name not in obj:
            raise _Bad(f"field '{name}' is missing")
    if not _is_int(obj["v"]) or obj["v"] != 1:
        raise _Bad("field 'v' must be 1")
    if not isinstance(obj["id"], str) or not ID_PATTERN.fullmatch(obj["id"]):
        raise _Bad("field 'id' must be 1-64 characters of A-Z a-z 0-9 . _ : -")
    if not isinstance(obj["op"], str):
        raise _Bad("field 'op' must be a string")
    if obj.get("target") is not None and not isinstance(obj["target"], str):
        raise _Bad("field 'target' must be a string or null")
    if not isinstance(obj.get("args", {}), dict):
        raise _Bad("field 'args' must be an object")
    for name in ("iat", "exp"):
        if not _is_int(obj[name]) or not 0 <= obj[name] <= MAX_MS:
            raise _Bad(f"field '{name}' must be an integer (ms since the epoch)")
    if "kid" in obj and not isinstance(obj["kid"], str):
        raise _Bad("field 'kid' must be a string")
    if not isinstance(obj["sig"], str) or len(obj["sig"]) > _MAX_SIG_CHARS:
        raise _Bad("field 'sig' must be base64 of an Ed25519 signature")


def _message(obj: dict[str, Any]) -> bytes:
    """The signed bytes; a string the canonical form cannot encode (a lone surrogate) is refused."""
    try:
        return canonical(obj)
    except UnicodeEncodeError:
        raise _Bad("payload holds a \\u escape that is not a character (lone surrogate)") from None


def _signature(text: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise _Bad("field 'sig' is not valid base64") from None


class CommandVerifier:
    """Turns ``R/cmd`` payloads into verified ``Command`` objects (module docstring)."""

    def __init__(self, keys: Mapping[str, Ed25519PublicKey], ledger: Ledger, *, max_bytes: int,
                 max_skew_s: float, max_lifetime_s: float, ops: tuple[str, ...] = OPS,
                 clock: Callable[[], float] = time.time) -> None:
        self.keys = dict(keys)
        self.ledger = ledger
        self.max_bytes = max_bytes
        self.max_skew_ms = int(max_skew_s * 1000)
        self.max_lifetime_ms = int(max_lifetime_s * 1000)
        self.ops = tuple(ops)
        self.clock = clock

    @classmethod
    def from_settings(cls, commands: CommandSettings, ledger: Ledger, *,
                      clock: Callable[[], float] = time.time) -> "CommandVerifier":
        """Load every trusted key file; ``VerifierError`` naming the file when one is unusable."""
        keys: dict[str, Ed25519PublicKey] = {}
        for trusted in commands.keys:
            try:
                public = load_public_key(trusted.public_key_file)
            except SigningKeyError as exc:
                raise VerifierError(f"commands.keys: {exc}") from None
            kid = trusted.id or key_id(public)
            if kid in keys:
                raise VerifierError(f"commands.keys: key id {kid!r} is listed twice")
            keys[kid] = public
        return cls(keys, ledger, max_bytes=commands.max_bytes, max_skew_s=commands.max_skew_s,
                   max_lifetime_s=commands.max_lifetime_s, clock=clock)

    def verify(self, payload: bytes) -> Command:
        """The verified command, or ``CommandRejected`` (and never anything else)."""
        cmd_id: str | None = None
        signer: str | None = None
        try:
            if not isinstance(payload, (bytes, bytearray, memoryview)):
                raise CommandRejected("bad_request", "payload is not bytes")
            payload = bytes(payload)
            if len(payload) > self.max_bytes:
                raise CommandRejected("too_large", f"payload is {len(payload)} bytes, more than the "
                                      f"{self.max_bytes} allowed")
            try:
                obj = _parse(payload)
                if isinstance(obj.get("id"), str) and ID_PATTERN.fullmatch(obj["id"]):
                    cmd_id = obj["id"]
                _check_schema(obj)
                signature = _signature(obj["sig"])
                message = _message(obj)
            except _Bad as exc:
                raise CommandRejected("bad_request", str(exc), cmd_id=cmd_id) from None
            signer = self._signer(obj, message, signature, cmd_id)
            return self._check_times_op_replay(obj, cmd_id, signer)
        except CommandRejected:
            raise
        except Exception as exc:  # a bug must refuse, never act and never kill the worker
            raise CommandRejected("internal", f"command could not be verified ({type(exc).__name__})",
                                  cmd_id=cmd_id, signer=signer) from None

    def _signer(self, obj: dict[str, Any], message: bytes, signature: bytes, cmd_id: str | None) -> str:
        from cryptography.exceptions import InvalidSignature

        kid = obj.get("kid")
        if kid is not None:
            if kid not in self.keys:
                shown = f" {kid!r}" if KID_PATTERN.fullmatch(kid) else ""
                raise CommandRejected("unknown_key", f"key id{shown} is not a trusted key", cmd_id=cmd_id)
            candidates = [(kid, self.keys[kid])]
        else:
            candidates = list(self.keys.items())
        if len(signature) == SIG_BYTES:
            for name, public in candidates:
                try:
                    public.verify(signature, message)
                except InvalidSignature:
                    continue
                return name
        raise CommandRejected("bad_signature", "signature does not verify"
                              + (" with any trusted key" if kid is None else f" with key {kid!r}"), cmd_id=cmd_id)

    def _check_times_op_replay(self, obj: dict[str, Any], cmd_id: str, signer: str) -> Command:
        now_ms = int(self.clock() * 1000)
        iat, exp = obj["iat"], obj["exp"]

        def reject(code: str, message: str) -> CommandRejected:
            return CommandRejected(code, message, cmd_id=cmd_id, signer=signer)

        if exp <= now_ms:
            raise reject("expired", f"exp is {_ago(now_ms - exp)} in the past")
        if iat > now_ms + self.max_skew_ms:
            raise reject("not_yet_valid", f"iat is {_ago(iat - now_ms)} in the future, more than the "
                         f"{_ago(self.max_skew_ms)} of clock skew allowed")
        if exp <= iat:
            raise reject("bad_request", "exp must be after iat")
        if exp - iat > self.max_lifetime_ms:
            raise reject("bad_request", f"exp - iat is {_ago(exp - iat)}, more than the "
                         f"{_ago(self.max_lifetime_ms)} a command may live")
        if obj["op"] not in self.ops:
            shown = f" {obj['op']!r}" if ID_PATTERN.fullmatch(obj["op"]) else ""
            raise reject("unknown_op", f"op{shown} is not one of {', '.join(self.ops)}")
        try:
            first = self.ledger.remember(cmd_id, exp, now_ms)
        except Exception as exc:
            raise reject("internal", f"the replay cache cannot be used ({type(exc).__name__}); "
                         "refused to be safe") from None
        if not first:
            raise reject("replayed", "this command id was already received")
        return Command(id=cmd_id, op=obj["op"], target=obj.get("target"), args=obj.get("args", {}),
                       iat=iat, exp=exp, signer=signer, raw=obj)


def _ago(ms: int) -> str:
    """A span in ms as a short human figure: ``850ms``, ``12s``, ``3600s``."""
    return f"{ms}ms" if abs(ms) < 1000 else f"{ms // 1000}s"

