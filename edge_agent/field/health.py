"""Per-device health and the "log once, then count" rules for failures and bad frames.

A dead meter polled every 5 s would otherwise write 17,000 identical ERROR lines a day and
bury the one line a technician needs. The first failure is logged at ERROR, repeats at DEBUG,
the recovery once at INFO. A bad frame from a talking device (a garbled hub line) is not a
failure: the first is logged at WARNING with its reason, the rest are counted and summed up at
most once per ``BAD_FRAME_LOG_EVERY_S``. Messages here are built by the poller and never carry
values or frame content.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

__all__ = ["DeviceHealth", "HealthBoard", "FailureLog", "BadFrameLog", "BAD_FRAME_LOG_EVERY_S"]

BAD_FRAME_LOG_EVERY_S = 60.0  # at most one bad-frame summary line per device per minute


class FailureLog:
    """Logs a failing thing's first error loudly, its repeats quietly, its recovery once."""

    def __init__(self, logger: logging.Logger, what: str) -> None:
        self._log = logger
        self._what = what
        self.failing = False
        self.repeats = 0

    def failed(self, message: str) -> None:
        if not self.failing:
            self._log.error("%s: %s", self._what, message)
            self.failing, self.repeats = True, 0
        else:
            self.repeats += 1
            self._log.debug("%s: %s (repeat %d)", self._what, message, self.repeats)

    def recovered(self) -> None:
        if self.failing:
            self._log.info("%s: recovered after %d repeated failure(s)", self._what, self.repeats)
        self.failing, self.repeats = False, 0


class BadFrameLog:
    """Logs a device's first bad frame at WARNING with its reason (``line N: reason``, never the
    frame), then at most one count per ``every_s`` of those that followed."""

    def __init__(self, logger: logging.Logger, what: str, every_s: float = BAD_FRAME_LOG_EVERY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._log, self._what, self._every, self._clock = logger, what, every_s, clock
        self._warned = False
        self._logged_at = 0.0
        self._count = 0  # bad frames since the last line logged
        self._example = ""

    def seen(self, count: int, notes: Sequence[str] = ()) -> None:
        """One poll's bad frames (may be 0: a summary that is due is written all the same)."""
        now = self._clock()
        notes = list(notes)
        if count and not self._warned:
            self._log.warning("%s: bad frame skipped (%s); more are counted (bad_frames in status) and "
                              "summed up here at most every %g s", self._what,
                              notes[0] if notes else "no reason given", self._every)
            self._warned, self._logged_at = True, now
            count, notes = count - 1, notes[1:]
        if count:
            self._count += count
            self._example = notes[-1] if notes else self._example
        if self._count and now - self._logged_at >= self._every:
            example = f" (e.g. {self._example})" if self._example else ""
            self._log.warning("%s: %d more bad frame(s) skipped%s", self._what, self._count, example)
            self._count, self._logged_at = 0, now


@dataclass
class DeviceHealth:
    name: str
    bus: str
    polls: int = 0
    answered_polls: int = 0
    errors: int = 0
    overruns: int = 0
    readings: int = 0
    events: int = 0  # events the device reported itself (SOS, passage), not alarms raised here
    requests_per_poll: int = 0
    bad_frames: int = 0
    last_good_ms: int | None = None
    last_error: str | None = None
    last_error_ms: int | None = None
    consecutive_failures: int = 0

    @property
    def state(self) -> str:
        if self.polls == 0:
            return "unknown"
        return "online" if self.consecutive_failures == 0 else "offline"


class HealthBoard:
    """Thread-safe table of device health, written by bus workers, read by status."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._devices: dict[str, DeviceHealth] = {}

    def add(self, name: str, bus: str) -> None:
        with self._lock:
            self._devices.setdefault(name, DeviceHealth(name, bus))

    def update(self, name: str, **changes: Any) -> None:
        with self._lock:
            health = self._devices[name]
            for key, value in changes.items():
                setattr(health, key, value)

    def bump(self, name: str, **increments: int) -> None:
        with self._lock:
            health = self._devices[name]
            for key, value in increments.items():
                setattr(health, key, getattr(health, key) + value)

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(asdict(h), state=h.state) for h in self._devices.values()]
