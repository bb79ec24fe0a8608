"""Who may see the technician's page: one password, kept as a salted scrypt hash (issue 15).

The password file holds one line and never the password::

    scrypt$16384$8$1$<salt, base64>$<key, base64>     (n, r, p; 16-byte salt, 32-byte key; mode 0600)

``edge-agent web passwd`` writes it (``hash_password``, ``write_password_file``); the server
reads it (``PasswordFile``) at start and again whenever it changes, so a new password takes
effect without a restart and ends every session. Why these choices:

- scrypt (``hashlib``, OpenSSL's) costs ~16 MiB and ~50 ms (here; more on a Pi) per check,
  which is what makes a stolen file slow to guess. So checks run one at a time (bounded memory
  however many arrive), and a password once accepted is remembered as an HMAC under a random
  per-process key, so Prometheus' HTTP Basic scrape every 15 s costs no scrypt.
- Sessions (``Sessions``): random tokens in memory only, kept as their SHA-256 (a token is not
  in memory to leak), bounded in number and age; a restart logs everyone out.
- Wrong passwords (``Throttle``): counted per client address; after ``FAILURES`` within
  ``WINDOW_S`` that address is refused (429) for ``BLOCK_S`` without a check being run.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import secrets
import stat
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Callable

from ..errors import StartupError

__all__ = ["USER", "MIN_PASSWORD", "WebError", "hash_password", "verify_password", "write_password_file",
           "PasswordFile", "Sessions", "Throttle", "parse_basic", "login_page"]

log = logging.getLogger(__name__)

USER = "technician"  # the one user; HTTP Basic must name it
MIN_PASSWORD = 8
SCRYPT_N, SCRYPT_R, SCRYPT_P, SALT_BYTES, KEY_BYTES = 2**14, 8, 1, 16, 32
_MAXMEM = 64 * 1024**2  # above what n=2**14, r=8 needs (16 MiB), below what a tampered file could ask
FAILURES, WINDOW_S, BLOCK_S = 5, 60.0, 60.0
SESSION_S, MAX_SESSIONS = 8 * 3600.0, 32


class WebError(StartupError):
    """The page cannot be served: its password file, TLS files or address (one line with the fix)."""


# -- the hash -----------------------------------------------------------------------------------

def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str) -> str:
    """The password file's line for ``password`` (a fresh random salt each time)."""
    salt = secrets.token_bytes(SALT_BYTES)
    key = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                         dklen=KEY_BYTES, maxmem=_MAXMEM)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(key)}"


def _parse(line: str) -> tuple[int, int, int, bytes, bytes]:
    """(n, r, p, salt, key) of a hash line; ValueError saying what is wrong (never the line)."""
    parts = line.strip().split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        raise ValueError("expected one line 'scrypt$N$R$P$SALT$KEY'")
    try:
        n, r, p = (int(x) for x in parts[1:4])
        salt, key = (base64.b64decode(x, validate=True) for x in parts[4:6])
    except (ValueError, binascii.Error):
        raise ValueError("its numbers or base64 do not read") from None
    if not (2 <= n <= 2**20 and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 4 and 128 * r * n * p <= _MAXMEM):
        raise ValueError(f"scrypt parameters n={n}, r={r}, p={p} are out of range")
    if len(salt) < 8 or len(key) < 16:
        raise ValueError("its salt or key is too short")
    return n, r, p, salt, key


def verify_password(line: str, password: str) -> bool:
    """Whether ``password`` matches the hash ``line``; the keys compared in constant time."""
    n, r, p, salt, key = _parse(line)
    _map_large_blocks()
    got = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=len(key), maxmem=_MAXMEM)
    return hmac.compare_digest(got, key)


_MMAP_AT = 4 * 1024**2
_mapped = False


def _map_large_blocks() -> None:
    """Make glibc serve blocks of ``_MMAP_AT`` (4 MiB) and more from mmap, so scrypt's 16 MiB goes
    back to the system when freed. By default glibc raises its mmap threshold past a block once
    such a block is freed, and the next comes from a thread's arena and stays there: measured,
    each login left +16 MiB of RSS, up to once per arena (``malloc_trim`` does not shrink a
    thread's arena). Process-wide, but the agent allocates no other block that large; ``ctypes``
    is loaded by ``clock`` already. Not glibc (musl): nothing to do, free returns such blocks."""
    global _mapped
    if _mapped:
        return
    _mapped = True
    import ctypes

    try:
        ctypes.CDLL(None).mallopt(-3, _MMAP_AT)  # M_MMAP_THRESHOLD; fixed from now on
    except (OSError, AttributeError):
        pass


def write_password_file(path: str | os.PathLike[str], line: str, owner: tuple[int, int] | None = None) -> None:
    """Write the hash line atomically, mode 0600 from the first byte; ``owner`` (uid, gid) is given
    to the file (and to its directory when this call creates it), for root writing the service
    user's file."""
    path = Path(path)
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True)
        if owner is not None:
            os.chown(path.parent, *owner)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(line.strip() + "\n")
            f.flush()
            os.fchmod(f.fileno(), 0o600)  # whatever the umask or an ACL did
            if owner is not None:
                os.fchown(f.fileno(), *owner)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _read_line(path: Path) -> str:
    """The hash line of ``path``; WebError when absent, loosely permitted or malformed."""
    fix = "'edge-agent web passwd -c CONFIG' sets the password"
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            raise WebError(f"web password file {path} is not a regular file; {fix}")
        if stat.S_IMODE(st.st_mode) & 0o077:
            raise WebError(f"web password file {path} is accessible by group or others "
                           f"(mode {stat.S_IMODE(st.st_mode):04o}); run: chmod 600 {path}")
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        raise WebError(f"web password file {path} does not exist; {fix}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise WebError(f"web password file {path}: {getattr(exc, 'strerror', None) or 'not ASCII'}") from None
    lines = [x for x in text.splitlines() if x.strip()]
    try:
        if len(lines) != 1:
            raise ValueError("expected exactly one line")
        _parse(lines[0])
    except ValueError as exc:
        raise WebError(f"web password file {path}: {exc}; {fix}") from None
    return lines[0].strip()


class PasswordFile:
    """The technician's password as the server checks it; re-read when the file changes."""

    def __init__(self, path: str | os.PathLike[str], on_change: Callable[[], None] = lambda: None) -> None:
        self.path = Path(path)
        self.on_change = on_change
        self._lock = threading.Lock()  # one scrypt at a time: 16 MiB each
        self._pepper = secrets.token_bytes(32)
        self._line: str | None = None
        self._stamp: tuple[int, int, int] | None = None
        self._accepted: bytes | None = None  # HMAC of the last password that verified
        self._broken = False

    def load(self) -> None:
        """Read the file now (the server's start); WebError when it cannot be used."""
        with self._lock:
            self._stamp = self._stat()
            self._line = _read_line(self.path)

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def _refresh(self) -> None:
        stamp = self._stat()
        if stamp == self._stamp:
            return
        self._stamp, self._accepted = stamp, None
        try:
            self._line = _read_line(self.path)
            if self._broken:
                log.info("web: the password file %s is usable again", self.path)
            self._broken = False
        except WebError as exc:
            self._line = None  # fail closed: nobody logs in with a file that cannot be read
            if not self._broken:
                log.error("%s; every login is refused until it is fixed", exc)
            self._broken = True
        self.on_change()

    def refresh(self) -> None:
        """Re-read the file if it changed since it was read (a ``stat``; ``on_change`` then)."""
        with self._lock:
            self._refresh()

    def check(self, password: str) -> bool:
        """Whether ``password`` is the technician's; False while the file is unusable."""
        mac = hmac.new(self._pepper, password.encode("utf-8"), hashlib.sha256).digest()
        with self._lock:
            self._refresh()
            if self._line is None:
                return False
            if self._accepted is not None and hmac.compare_digest(mac, self._accepted):
                return True
            ok = verify_password(self._line, password)
            if ok:
                self._accepted = mac
            return ok


# -- sessions and throttling ------------------------------------------------------------------

class Sessions:
    """Login sessions in memory: at most ``limit``, each for ``max_age_s`` (the oldest goes first)."""

    def __init__(self, max_age_s: float = SESSION_S, limit: int = MAX_SESSIONS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_age_s, self.limit, self._clock = max_age_s, limit, clock
        self._expiry: OrderedDict[bytes, float] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _key(token: str) -> bytes:
        return hashlib.sha256(token.encode("utf-8", "replace")).digest()

    def new(self) -> str:
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._expire()
            while len(self._expiry) >= self.limit:
                self._expiry.popitem(last=False)
            self._expiry[self._key(token)] = self._clock() + self.max_age_s
        return token

    def valid(self, token: str) -> bool:
        with self._lock:
            self._expire()
            return self._key(token) in self._expiry

    def drop(self, token: str) -> None:
        with self._lock:
            self._expiry.pop(self._key(token), None)

    def clear(self) -> None:
        with self._lock:
            self._expiry.clear()

    def __len__(self) -> int:
        with self._lock:
            self._expire()
            return len(self._expiry)

    def _expire(self) -> None:
        now = self._clock()
        while self._expiry and next(iter(self._expiry.values())) <= now:
            self._expiry.popitem(last=False)


class Throttle:
    """Wrong passwords per client address: ``failures`` within ``window_s`` block it for
    ``block_s``. At most ``limit`` addresses are remembered (the least recent is forgotten)."""

    def __init__(self, failures: int = FAILURES, window_s: float = WINDOW_S, block_s: float = BLOCK_S,
                 limit: int = 1024, clock: Callable[[], float] = time.monotonic) -> None:
        self.failures, self.window_s, self.block_s, self.limit = failures, window_s, block_s, limit
        self._clock = clock
        self._seen: OrderedDict[str, tuple[list[float], float]] = OrderedDict()  # times, blocked until
        self._lock = threading.Lock()

    def blocked(self, client: str) -> float:
        """Seconds ``client`` is still refused for; 0 when it may try."""
        with self._lock:
            entry = self._seen.get(client)
            return max(0.0, entry[1] - self._clock()) if entry else 0.0

    def failed(self, client: str) -> tuple[int, float]:
        """Count a wrong password: (failures within the window, seconds now blocked or 0)."""
        now = self._clock()
        with self._lock:
            times, until = self._seen.pop(client, ([], 0.0))
            times = [t for t in times if t > now - self.window_s] + [now]
            count = len(times)
            if count >= self.failures:
                until, times = now + self.block_s, []
            self._seen[client] = (times, until)
            while len(self._seen) > self.limit:
                self._seen.popitem(last=False)
            return count, max(0.0, until - now)

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._seen.pop(client, None)


def parse_basic(header: str) -> tuple[str, str] | None:
    """(user, password) of an ``Authorization: Basic ...`` header; None when it is not one."""
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        text = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    user, sep, password = text.partition(":")
    return (user, password) if sep else None


# -- the login form -----------------------------------------------------------------------------

_LOGIN = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>edge-agent: log in</title>
<style>body{{font-family:system-ui,sans-serif;margin:0;display:flex;justify-content:center}}
main{{max-width:22rem;padding:2rem 1rem}}label,input,button{{display:block;width:100%;font-size:1.1rem}}
input{{margin:.3rem 0 1rem;padding:.5rem;box-sizing:border-box}}button{{padding:.6rem}}
.error{{color:#a00;font-weight:bold}}</style></head>
<body><main><h1>edge-agent</h1><p>The technician's page of this gateway.</p>
{message}<form method="post" action="/login">
<input type="hidden" name="username" value="{user}" autocomplete="username">
<label for="password">Password</label>
<input id="password" type="password" name="password" autocomplete="current-password" required autofocus>
<button type="submit">Log in</button></form></main></body></html>
"""


def login_page(message: str = "") -> bytes:
    """The login form (no script); ``message`` (a wrong password, a wait) is shown escaped."""
    from html import escape  # here, not at import: see server.page

    shown = f'<p class="error" role="alert">{escape(message)}</p>\n' if message else ""
    return _LOGIN.format(message=shown, user=escape(USER)).encode("utf-8")
