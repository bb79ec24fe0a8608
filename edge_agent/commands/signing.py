"""Command signatures: the canonical form, Ed25519 key files, and signing (the platform's side).

Why Ed25519 and not the broker's credentials: a gateway opens gates and rewrites its own
configuration, so a command must act only when the platform itself made it. The gateway holds
only public keys: a stolen gateway, or a broker in an attacker's hands, cannot sign anything.

The canonical form (CONTRACT section 6), the exact bytes that are signed and verified::

    json.dumps({k: v for k, v in command.items() if k != "sig"}, sort_keys=True,
               separators=(",", ":"), ensure_ascii=False).encode("utf-8")

``kid``, when present, is inside the signed bytes (it cannot be swapped for another key's id);
``sig`` is standard base64 (RFC 4648 section 4, padded) of the 64-byte Ed25519 signature
(RFC 8032) of those bytes. A verifier re-serialises the parsed command, so whitespace and key
order on the wire do not matter; the values do, exactly.

Key ids: ``key_id`` = ``"k-"`` + the first 16 hex characters of SHA-256 over the raw 32-byte
public key; used when a trusted key has no id of its own in the config.

Key files: the private key is PEM PKCS#8, unencrypted, mode 0600 (refused when group or others
may read it, as ssh does); the public key is PEM SubjectPublicKeyInfo. ``generate`` writes
``command.key`` (never overwritten) and ``command.pub`` into a directory.

``cryptography`` is imported inside the functions: it costs ~7 MB of RSS, and a gateway without
``commands:`` never needs it (docs/benchmarks.md, agent RSS).

Exceptions: ``SigningKeyError(Exception)``: a key file that is missing, unreadable, loosely
permitted, or not an Ed25519 key; the message names the file, never key material.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import StartupError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = ["SigningKeyError", "canonical", "key_id", "public_raw", "load_public_key", "load_private_key",
           "sign", "verify_signature", "generate", "PRIVATE_NAME", "PUBLIC_NAME", "SIG_BYTES"]

PRIVATE_NAME, PUBLIC_NAME = "command.key", "command.pub"
SIG_BYTES = 64


class SigningKeyError(StartupError):
    """A signing or verification key file cannot be used; the message names the file and the fix."""


def canonical(obj: dict[str, Any]) -> bytes:
    """The signed bytes of a command: every field but ``sig``, sorted, compact, UTF-8."""
    return json.dumps({k: v for k, v in obj.items() if k != "sig"}, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")


def public_raw(public_key: Ed25519PublicKey) -> bytes:
    """The raw 32 bytes of an Ed25519 public key."""
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public_key: Ed25519PublicKey | bytes) -> str:
    """``k-`` + the first 16 hex characters of SHA-256 over the raw 32-byte public key."""
    raw = public_key if isinstance(public_key, (bytes, bytearray)) else public_raw(public_key)
    return "k-" + hashlib.sha256(bytes(raw)).hexdigest()[:16]


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise SigningKeyError(f"{what} file {path} does not exist") from None
    except OSError as exc:
        raise SigningKeyError(f"{what} file {path}: cannot be read ({exc.strerror or exc})") from None


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM ``BEGIN PUBLIC KEY`` file (as ``generate`` writes it)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    path = Path(path)
    data = _read(path, "command public key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        raise SigningKeyError(f"command public key file {path}: not a PEM 'BEGIN PUBLIC KEY' block "
                              "('edge-agent platform signkey DIR' writes one: DIR/command.pub)") from None
    except Exception as exc:  # cryptography raises UnsupportedAlgorithm for exotic keys
        raise SigningKeyError(f"command public key file {path}: not usable ({type(exc).__name__})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyError(f"command public key file {path}: a {type(key).__name__.removeprefix('_')} key; "
                              "command signatures need an Ed25519 key")
    return key


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    """An Ed25519 private key from a PEM PKCS#8 file of mode 0600 (as ``generate`` writes it)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise SigningKeyError(f"signing key file {path} does not exist "
                              "('edge-agent platform signkey DIR' creates DIR/command.key)") from None
    except OSError as exc:
        raise SigningKeyError(f"signing key file {path}: {exc.strerror or exc}") from None
    loose = stat.S_IMODE(mode) & 0o077
    if loose:
        raise SigningKeyError(f"signing key file {path} is accessible by group or others "
                              f"(mode {stat.S_IMODE(mode):04o}); run: chmod 600 {path}")
    data = _read(path, "signing key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise SigningKeyError(f"signing key file {path}: not an unencrypted PEM private key") from None
    except Exception as exc:
        raise SigningKeyError(f"signing key file {path}: not usable ({type(exc).__name__})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"signing key file {path}: a {type(key).__name__.removeprefix('_')} key; "
                              "command signatures need an Ed25519 key")
    return key


def sign(obj: dict[str, Any], private_key: Ed25519PrivateKey, kid: str | None = None) -> dict[str, Any]:
    """A copy of ``obj`` with ``kid`` (when given) and ``sig`` over its canonical form (kid included).

    Any ``sig`` already in ``obj`` is replaced; ``obj`` itself is not changed."""
    out = {k: v for k, v in obj.items() if k != "sig"}
    if kid is not None:
        out["kid"] = kid
    out["sig"] = base64.b64encode(private_key.sign(canonical(out))).decode("ascii")
    return out


def verify_signature(obj: dict[str, Any], signature: bytes, public_key: Ed25519PublicKey) -> bool:
    """Whether ``signature`` (raw bytes) is ``public_key``'s signature over ``canonical(obj)``."""
    from cryptography.exceptions import InvalidSignature

    if len(signature) != SIG_BYTES:
        return False
    try:
        public_key.verify(signature, canonical(obj))
    except InvalidSignature:
        return False
    return True


def generate(directory: str | Path) -> tuple[Path, Path, str]:
    """Write ``command.key`` (PEM PKCS#8, 0600, never overwritten) and ``command.pub`` (PEM
    SubjectPublicKeyInfo) into ``directory``; return both paths and the key id."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    directory = Path(directory)
    private_path, public_path = directory / PRIVATE_NAME, directory / PUBLIC_NAME
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    pub_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise SigningKeyError(f"signing key file {private_path} already exists; it is kept") from None
    except OSError as exc:
        raise SigningKeyError(f"{private_path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(private_path, 0o600)  # whatever the umask or an ACL did
        tmp = public_path.with_name(f".{PUBLIC_NAME}.{os.getpid()}.tmp")
        tmp.write_bytes(pub_pem)
        os.replace(tmp, public_path)
    except OSError as exc:
        private_path.unlink(missing_ok=True)
        raise SigningKeyError(f"{directory}: cannot write the key pair ({exc.strerror or exc})") from None
    return private_path, public_path, key_id(key.public_key())
