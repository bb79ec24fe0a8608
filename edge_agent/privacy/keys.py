"""The site's pseudonym keys: one file, one line per version, the highest version active.

File format (``privacy.key_file``), UTF-8 text, mode 0600::

    # edge-agent pseudonym keys: the highest version is active. Keep mode 0600.
    v1 3q2+7w0d...base64 of 32 random bytes...=
    v2 Hk9d...                      <- after one rotation; v1 stays for the record

Lines are ``v<N> <base64 of exactly 32 bytes>`` (N >= 1, each once), blank lines and lines
starting with ``#`` are ignored. Why a text file of versions rather than one raw key: rotation
must not orphan what was already sent (its tokens carry ``p1:``), so old versions stay
readable beside the new one, and an operator can see with ``cat`` how many versions exist.

Why the checks are strict: the key is what keeps a pseudonym from being reversed by
enumeration (see ``pseudonym``), so a file any local user can read is refused at start-up with
the ``chmod`` that fixes it, like ssh refuses a private key with loose permissions. Key
material is never printed, logged or put in an exception; ``fingerprint`` (``SHA256:<base64>``,
as ssh prints) names a key instead.

Exceptions: ``KeyFileError(Exception)``: missing, unreadable, loose permissions, malformed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from ..errors import StartupError

__all__ = ["KEY_BYTES", "KeyRing", "KeyFileError", "load_keyring", "create_site_key", "rotate_site_key",
           "fingerprint", "check_private_mode"]

KEY_BYTES = 32
_HEADER = "# edge-agent pseudonym keys: one line per version, the highest is active. Keep this file mode 0600.\n"
_LINE = re.compile(r"v(\d+)\s+(\S+)")


class KeyFileError(StartupError):
    """A key file cannot be used; the message names the file and the fix, never the key."""


def fingerprint(key: bytes) -> str:
    """``SHA256:<base64 of sha256(key), unpadded>``: names a key without revealing it."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key).digest()).decode("ascii").rstrip("=")


@dataclass(frozen=True)
class KeyRing:
    """Key bytes by version; ``active`` (default: the highest) is the one new data uses."""

    versions: Mapping[int, bytes] = field(repr=False)
    active: int = 0

    def __post_init__(self) -> None:
        if not self.versions:
            raise ValueError("a key ring needs at least one key")
        for v, k in self.versions.items():
            if v < 1 or len(k) != KEY_BYTES:
                raise ValueError(f"key version {v}: needs a version >= 1 and {KEY_BYTES} bytes")
        if not self.active:
            object.__setattr__(self, "active", max(self.versions))
        if self.active not in self.versions:
            raise ValueError(f"active version {self.active} is not in the ring")

    def key(self, version: int) -> bytes:
        return self.versions[version]

    @property
    def active_key(self) -> bytes:
        return self.versions[self.active]

    def fingerprints(self) -> dict[int, str]:
        return {v: fingerprint(k) for v, k in sorted(self.versions.items())}

    def __repr__(self) -> str:  # never the key bytes, even in a traceback's locals
        return f"KeyRing(active={self.active}, versions={sorted(self.versions)})"


def check_private_mode(path: Path, mode: int) -> None:
    """Refuse a secret file that group or others can read, write or execute."""
    loose = stat.S_IMODE(mode) & 0o077
    if loose:
        what = "readable" if loose & 0o044 else "writable" if loose & 0o022 else "accessible"
        raise KeyFileError(f"key file {path} is {what} by group or others (mode {stat.S_IMODE(mode):04o}); "
                           f"run: chmod 600 {path}")


def load_keyring(path: str | Path) -> KeyRing:
    """Read a key file; ``KeyFileError`` when it is missing, loosely permitted or malformed."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise KeyFileError(f"key file {path} does not exist; 'edge-agent keys init -c CONFIG' creates it") from None
    except OSError as exc:
        raise KeyFileError(f"key file {path}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise KeyFileError(f"key file {path} is not a regular file")
    check_private_mode(path, st.st_mode)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not UTF-8"
        raise KeyFileError(f"key file {path}: cannot be read ({reason})") from None
    return KeyRing(_parse(path, text))


def _parse(path: Path, text: str) -> dict[int, bytes]:
    versions: dict[int, bytes] = {}
    first: dict[int, int] = {}
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"key file {path} line {n}"
        m = _LINE.fullmatch(line)
        if m is None:  # the line itself is not quoted: it may be key material
            raise KeyFileError(f"{where}: expected 'v<N> <base64 of {KEY_BYTES} bytes>'")
        version = int(m.group(1))
        if version < 1:
            raise KeyFileError(f"{where}: versions start at v1")
        if version in versions:
            raise KeyFileError(f"{where}: version v{version} appears twice (first at line {first[version]})")
        try:
            key = base64.b64decode(m.group(2), validate=True)
        except (binascii.Error, ValueError):
            raise KeyFileError(f"{where}: the key is not valid base64") from None
        if len(key) != KEY_BYTES:
            raise KeyFileError(f"{where}: the key is {len(key)} bytes, expected {KEY_BYTES}")
        versions[version], first[version] = key, n
    if not versions:
        raise KeyFileError(f"key file {path} holds no key line ('v1 <base64>'); if it never held a key, "
                           "delete it and 'edge-agent keys init -c CONFIG' creates one (an empty file it replaces)")
    return versions


def _line(version: int, key: bytes) -> str:
    return f"v{version} {base64.b64encode(key).decode('ascii')}\n"


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, mode 0600 from the first byte (never world-readable)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)  # in case the umask or an ACL interfered
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def create_site_key(path: str | Path) -> KeyRing:
    """Create a key file holding ``v1`` (32 random bytes); refuses to overwrite an existing one."""
    path = Path(path)
    if path.exists():
        raise KeyFileError(f"key file {path} already exists; it is kept (rotate_site_key adds a version)")
    key = secrets.token_bytes(KEY_BYTES)
    _write_private(path, _HEADER + _line(1, key))
    return KeyRing({1: key})


def rotate_site_key(path: str | Path) -> KeyRing:
    """Add a new highest version to an existing key file (which stays otherwise unchanged)."""
    path = Path(path)
    ring = load_keyring(path)
    text = path.read_text(encoding="utf-8")
    version = max(ring.versions) + 1
    key = secrets.token_bytes(KEY_BYTES)
    _write_private(path, text + ("" if text.endswith("\n") or not text else "\n") + _line(version, key))
    return KeyRing({**ring.versions, version: key})
