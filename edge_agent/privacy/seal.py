"""Seal: encrypt one value to the platform's public key, so only the platform can read it.

Why: some values must reach the platform intact (an SOS wearer's health figures, a position
for a rescue) yet must not be readable on the way: not by the broker, not in the gateway's
buffer file, not in a log. The gateway holds only the platform's *public* key, so a stolen
gateway cannot open what it sealed. A fresh ephemeral key per seal (one value, or the sealed
points of one record) means two seals of one value differ (nothing to correlate) and no state is kept between values.

Wire format, version 1 (everything a platform needs to implement ``open``)
-------------------------------------------------------------------------
A sealed value (a field of an event) is the JSON object::

    {"sealed": "<base64>", "kid": "<16 lower-case hex characters>"}

A record's seal (wire v2: one per record, holding every point of the record whose action is
seal) is the same two strings under other names, the plaintext being the JSON object
``{point: value}``::

    {"kid": "<16 lower-case hex characters>", "ct": "<base64>"}

- ``kid`` = the first 16 hex characters (8 bytes) of SHA-256 over the recipient's raw 32-byte
  X25519 public key. It tells the platform which private key to use (and so, which key pair
  to keep after a platform key rotation).
- ``sealed`` = standard base64 (RFC 4648 section 4, with ``=`` padding) of the bytes::

      offset  length  content
      0       32      E: the sender's ephemeral X25519 public key, raw (RFC 7748)
      32      12      N: AES-GCM nonce, random
      44      n+16    C: AES-256-GCM ciphertext of the n plaintext bytes, then the 16-byte tag

Sealing (gateway), for recipient public key R (raw 32 bytes):

1. generate an ephemeral X25519 key pair (e, E); ``shared = X25519(e, R)`` (32 bytes);
2. ``key = HKDF-SHA256(IKM = shared, salt = E || R, info = b"edge-agent seal v1", L = 32)``
   (RFC 5869; ``||`` is concatenation, E and R raw 32 bytes each);
3. N = 12 random bytes; ``C = AES-256-GCM-Encrypt(key, N, plaintext, AAD = kid)`` where the AAD
   is the ``kid`` string as ASCII bytes (16 bytes), so a seal cannot be relabelled for
   another key;
4. plaintext = the value as UTF-8 JSON (``json.dumps(value, ensure_ascii=False,
   separators=(",", ":"))``), so a string, a number, a list or an object comes back as itself.

Opening (platform), with private key r: check ``kid`` against the public key of r; split the
decoded bytes at 32 and 44; ``shared = X25519(r, E)``; derive the key as in 2 with R = the
public key of r; AES-256-GCM-Decrypt with the same AAD; ``json.loads`` the plaintext. Any
mismatch (unknown kid, short input, bad tag) is a refusal, never a partial value.
``edge_agent.platform.open_sealed`` is the reference implementation.

Platform public key file (``privacy.platform_key_file``): either one line holding base64 of
the raw 32-byte X25519 public key, or a PEM ``-----BEGIN PUBLIC KEY-----`` SubjectPublicKeyInfo.

Exceptions: ``SealError(Exception)``: a key file that is not an X25519 public key; on the
platform side, a seal that does not open.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from typing import TYPE_CHECKING

from ..errors import StartupError

if TYPE_CHECKING:  # cryptography costs ~7 MB of RSS: loaded only by a gateway that seals
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

__all__ = ["SealError", "PlatformKey", "seal", "seal_record", "is_sealed", "is_record_seal", "kid_of", "derive_key", "INFO",
           "PUB_BYTES", "NONCE_BYTES", "TAG_BYTES"]

INFO = b"edge-agent seal v1"
PUB_BYTES, NONCE_BYTES, TAG_BYTES = 32, 12, 16


class SealError(StartupError):
    """A platform key that cannot be used, or a sealed value that does not open."""


def kid_of(public_raw: bytes) -> str:
    """Key id: the first 16 hex characters of SHA-256 over the raw 32-byte public key."""
    return hashlib.sha256(public_raw).hexdigest()[:16]


def derive_key(shared: bytes, ephemeral_raw: bytes, recipient_raw: bytes) -> bytes:
    """The AES-256 key: HKDF-SHA256(shared, salt = E || R, info = INFO), 32 bytes."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=32, salt=ephemeral_raw + recipient_raw, info=INFO).derive(shared)


@dataclass(frozen=True)
class PlatformKey:
    """The platform's X25519 public key, as the gateway uses it to seal."""

    public: X25519PublicKey

    @property
    def raw(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return self.public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    @property
    def kid(self) -> str:
        return kid_of(self.raw)

    @classmethod
    def from_text(cls, text: str, source: str = "platform key") -> "PlatformKey":
        """Parse base64 of the raw 32 bytes (one line) or a PEM SubjectPublicKeyInfo."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

        text = text.strip()
        if text.startswith("-----BEGIN"):
            try:
                key = serialization.load_pem_public_key(text.encode("ascii"))
            except (ValueError, UnicodeEncodeError):
                raise SealError(f"{source}: not a readable PEM public key") from None
            if not isinstance(key, X25519PublicKey):
                raise SealError(f"{source}: a {type(key).__name__.removeprefix('_')} key; seal needs an X25519 key")
            return cls(key)
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise SealError(f"{source}: expected base64 of a raw 32-byte X25519 public key, "
                            "or a PEM 'BEGIN PUBLIC KEY' block") from None
        if len(raw) != PUB_BYTES:
            raise SealError(f"{source}: the key is {len(raw)} bytes, an X25519 public key is {PUB_BYTES}")
        return cls(X25519PublicKey.from_public_bytes(raw))

    @classmethod
    def load(cls, path: str | Path) -> "PlatformKey":
        """Read ``privacy.platform_key_file`` (public: no permission check is needed)."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise SealError(f"platform key file {path} does not exist; the platform operator provides it") from None
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or "not UTF-8"
            raise SealError(f"platform key file {path}: cannot be read ({reason})") from None
        return cls.from_text(text, f"platform key file {path}")

    def __repr__(self) -> str:
        return f"PlatformKey(kid={self.kid})"


def seal(value: Any, key: PlatformKey) -> dict[str, str]:
    """``{"sealed": ..., "kid": ...}`` of ``value`` (any JSON value) for ``key``; fresh randomness each call."""
    blob, kid = _seal_blob(value, key)
    return {"sealed": blob, "kid": kid}


def seal_record(points: dict[str, Any], key: PlatformKey) -> dict[str, str]:
    """A record's seal, ``{"kid": ..., "ct": ...}``: the points ``{name: value}`` of one record
    whose action is seal, sealed once together (same crypto as ``seal``, other key names)."""
    blob, kid = _seal_blob(points, key)
    return {"kid": kid, "ct": blob}


def _seal_blob(value: Any, key: PlatformKey) -> tuple[str, str]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    plaintext = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    ephemeral = X25519PrivateKey.generate()
    eph_raw = ephemeral.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    recipient_raw = key.raw
    kid = kid_of(recipient_raw)
    aes = AESGCM(derive_key(ephemeral.exchange(key.public), eph_raw, recipient_raw))
    nonce = os.urandom(NONCE_BYTES)
    blob = eph_raw + nonce + aes.encrypt(nonce, plaintext, kid.encode("ascii"))
    return base64.b64encode(blob).decode("ascii"), kid


def is_sealed(value: Any) -> bool:
    """True for an object of exactly the sealed shape."""
    return (isinstance(value, dict) and set(value) == {"sealed", "kid"}
            and all(isinstance(v, str) for v in value.values()))


def is_record_seal(value: Any) -> bool:
    """True for an object of exactly a record's seal shape, ``{"kid", "ct"}``."""
    return (isinstance(value, dict) and set(value) == {"kid", "ct"}
            and all(isinstance(v, str) for v in value.values()))
