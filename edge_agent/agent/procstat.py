"""What the process costs and how fast something moves: CPU, RSS, disk free, rates.

For the state message (``R/state``) and ``edge-agent status``. Standard library only, Linux
``/proc`` where it has the better answer; every function returns ``None`` rather than raise
when the figure cannot be had, because a health figure must never stop the agent.

``RateMeter`` turns a counter that only grows (items acked, CPU seconds) into a rate over the
last ``window_s`` seconds of monotonic time: samples are kept at most every ``min_step_s``,
so memory stays a few dozen entries whatever the call rate.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from pathlib import Path
from typing import Callable

__all__ = ["cpu_seconds", "rss_bytes", "disk_free_bytes", "RateMeter"]


def cpu_seconds() -> float:
    """User plus system CPU time of this process (all its threads), in seconds."""
    t = os.times()
    return t.user + t.system


def rss_bytes() -> int | None:
    """Resident set size now (``/proc/self/statm``); None where there is no /proc."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def disk_free_bytes(path: Path | str) -> int | None:
    """Bytes an unprivileged writer may still use on the filesystem holding ``path`` (or its
    nearest existing parent: the buffer may not exist yet)."""
    p = Path(path)
    for candidate in (p, *p.parents):
        try:
            st = os.statvfs(candidate)
        except FileNotFoundError:
            continue
        except OSError:
            return None
        return st.f_bavail * st.f_frsize
    return None


class RateMeter:
    """Rate of a growing counter over the last ``window_s`` seconds. Thread-safe."""

    def __init__(self, window_s: float = 60.0, *, min_step_s: float = 1.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self._min_step = min_step_s
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._samples: deque[tuple[float, float]] = deque()

    def sample(self, value: float) -> None:
        """Record the counter's value now (skipped when the last sample is younger than ``min_step_s``)."""
        now = self._monotonic()
        with self._lock:
            if self._samples and now - self._samples[-1][0] < self._min_step:
                return
            self._samples.append((now, value))
            # keep one sample at or before the window's start, so the span covers the window
            while len(self._samples) > 2 and self._samples[1][0] <= now - self.window_s:
                self._samples.popleft()

    def rate(self, value: float) -> tuple[float | None, float]:
        """(per second over the span, the span in seconds) with ``value`` as the counter now;
        (None, span) until a second of history exists."""
        now = self._monotonic()
        self.sample(value)
        with self._lock:
            if not self._samples:
                return None, 0.0
            t0, v0 = self._samples[0]
        span = now - t0
        if span < 1.0:
            return None, span
        return max(0.0, value - v0) / span, span
