"""Is the system clock synchronised? Raspberry Pis have no RTC: until NTP has run, the time is
whatever the last shutdown (fake-hwclock) or 1970 left, and a reading stamped then carries
``clk: "unsynced"`` (docs/protocol.md).

The kernel's own answer, read with adjtimex(2) (``modes = 0``: read only, no privilege), is
what ``timedatectl``'s "System clock synchronized" shows too: the NTP daemon (systemd-timesyncd,
chrony, ntpd) clears ``STA_UNSYNC`` in ``timex.status`` once it has disciplined the clock, and
the kernel sets it again when the estimated error grows past 16 s without an update. The
call's return value is the clock state; ``TIME_ERROR`` (5) also means "not synchronised".

adjtimex is in systemd's ``@clock`` system call set, which ``ProtectClock=yes`` denies even
for reading (EPERM). Then: the file systemd-timesyncd touches on its first sync
(``/run/systemd/timesync/synchronized``) says "synced"; without it, ``clock_state(slow=True)``
(status, doctor; never a hot path) asks ``timedatectl``, and otherwise the answer is ``None``
(unknown). ``ClockWatch`` treats unknown as synchronised: a gateway that cannot tell does not
mark every reading.

``ClockWatch`` caches the answer for hot paths (the agent asks once per accepted batch): one
system call every ``interval_s`` at most, under a lock, no thread of its own.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

__all__ = ["ClockState", "clock_state", "ClockWatch", "Timex", "read_adjtimex", "STA_UNSYNC", "TIME_ERROR",
           "TIMESYNCD_FLAG"]

STA_UNSYNC = 0x0040  # <linux/timex.h>: clock not synchronised
TIME_ERROR = 5  # adjtimex's return value for an unsynchronised clock
_TIME_STATES = {0: "TIME_OK", 1: "TIME_INS", 2: "TIME_DEL", 3: "TIME_OOP", 4: "TIME_WAIT", 5: "TIME_ERROR"}
TIMESYNCD_FLAG = Path("/run/systemd/timesync/synchronized")
TIMEDATECTL_S = 2.0  # the slow fallback's time limit


@dataclass(frozen=True)
class ClockState:
    """``synced``: True, False, or None when this process cannot tell. ``source``: who said so
    (``adjtimex``, ``timesyncd``, ``timedatectl``, ``none``); ``detail``: one line for people."""

    synced: bool | None
    source: str
    detail: str


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class Timex(ctypes.Structure):
    """``struct timex`` of glibc's ``adjtimex`` symbol (``long`` fields: right on 32- and 64-bit),
    with room to spare past the kernel's size: it writes its own length, never ours."""

    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long), ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long), ("precision", ctypes.c_long), ("tolerance", ctypes.c_long),
        ("time", _Timeval),
        ("tick", ctypes.c_long), ("ppsfreq", ctypes.c_long), ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long), ("jitcnt", ctypes.c_long), ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long), ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("_reserved", ctypes.c_int * 11),
        ("_spare", ctypes.c_char * 128),
    ]


_libc_lock = threading.Lock()
_adjtimex: Callable[..., int] | None = None
_libc_error: str | None = None


def _load_adjtimex() -> Callable[..., int] | None:
    global _adjtimex, _libc_error
    with _libc_lock:
        if _adjtimex is None and _libc_error is None:
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
                fn = libc.adjtimex
                fn.argtypes = [ctypes.POINTER(Timex)]
                fn.restype = ctypes.c_int
                _adjtimex = fn
            except (OSError, AttributeError) as exc:
                _libc_error = f"adjtimex is not available here ({exc})"
        return _adjtimex


def read_adjtimex() -> tuple[int, Timex]:
    """adjtimex(2) with ``modes = 0``: (return value, the filled struct). OSError on failure."""
    fn = _load_adjtimex()
    if fn is None:
        raise OSError(0, _libc_error or "adjtimex is not available")
    tx = Timex()
    tx.modes = 0
    rc = fn(ctypes.byref(tx))
    if rc < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return rc, tx


def _us(us: int) -> str:
    return f"{us / 1e6:g} s" if abs(us) >= 1_000_000 else f"{us / 1000:g} ms"


def _from_adjtimex() -> ClockState | str:
    """The kernel's answer, or why it could not be read (a str)."""
    try:
        rc, tx = read_adjtimex()
    except OSError as exc:
        why = exc.strerror or str(exc)
        if exc.errno in (1, 13):  # EPERM/EACCES: a seccomp filter (systemd's ProtectClock=yes)
            why += " (denied: is ProtectClock= or a @clock SystemCallFilter= set on the unit?)"
        return f"adjtimex failed: {why}"
    state = _TIME_STATES.get(rc, str(rc))
    unsync = bool(tx.status & STA_UNSYNC)
    synced = not unsync and rc != TIME_ERROR
    detail = (f"{state}, STA_UNSYNC {'set' if unsync else 'clear'}, max error {_us(tx.maxerror)}, "
              f"estimated error {_us(tx.esterror)}")
    return ClockState(synced, "adjtimex", ("synchronised: " if synced else "not synchronised: ") + detail)


def _from_timedatectl() -> ClockState | None:
    try:
        out = subprocess.run(["timedatectl", "show", "-p", "NTPSynchronized", "--value"], capture_output=True,
                             text=True, timeout=TIMEDATECTL_S)
    except (OSError, subprocess.SubprocessError):
        return None
    value = out.stdout.strip()
    if out.returncode != 0 or value not in ("yes", "no"):
        return None
    return ClockState(value == "yes", "timedatectl", f"timedatectl says NTPSynchronized={value}")


def clock_state(*, slow: bool = False) -> ClockState:
    """Whether the system clock is synchronised, as far as this process can tell.

    ``slow``: also ask ``timedatectl`` (a subprocess, up to ``TIMEDATECTL_S``) when adjtimex is
    denied; for ``status`` and ``doctor``, never for a hot path.
    """
    found = _from_adjtimex()
    if isinstance(found, ClockState):
        return found
    if TIMESYNCD_FLAG.exists():
        return ClockState(True, "timesyncd", f"{TIMESYNCD_FLAG} exists (systemd-timesyncd has synchronised); "
                                             f"{found}")
    if slow:
        asked = _from_timedatectl()
        if asked is not None:
            return ClockState(asked.synced, asked.source, f"{asked.detail}; {found}")
    return ClockState(None, "none", f"unknown: {found}")


class ClockWatch:
    """``clock_state()`` cached for ``interval_s``: ``.synced`` is cheap enough for every batch.

    Unknown counts as synchronised (module docstring). ``probe`` is the seam tests replace.
    """

    def __init__(self, interval_s: float = 5.0, *, probe: Callable[[], ClockState] = clock_state,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self._probe = probe
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._state: ClockState | None = None
        self._checked = 0.0

    @property
    def state(self) -> ClockState:
        """The cached state, refreshed when older than ``interval_s``."""
        now = self._monotonic()
        with self._lock:
            if self._state is None or now - self._checked >= self.interval_s:
                try:
                    self._state = self._probe()
                except Exception as exc:  # the watch must never stop a poll
                    self._state = ClockState(None, "none", f"unknown: {type(exc).__name__}: {exc}")
                self._checked = now
            return self._state

    @property
    def synced(self) -> bool:
        return self.state.synced is not False
