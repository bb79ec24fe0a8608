"""Per-device health and the "log once, then count" rule for failures.

A dead meter polled every 5 s would otherwise write 17,000 identical ERROR lines a day and
bury the one line a technician needs. The first failure is logged at ERROR, repeats at DEBUG,
the recovery once at INFO. Messages here are built by the poller and never carry values.
"""

from __future__ import annotations

import logging
import threading
import traceback
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["DeviceHealth", "HealthBoard", "FailureLog", "bug_location"]


def bug_location(exc: BaseException) -> str:
    """``ExcType at file.py:LINE`` of the innermost frame: enough to find the bug, no values."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return type(exc).__name__
    last = frames[-1]
    return f"{type(exc).__name__} at {last.filename.rsplit('/', 1)[-1]}:{last.lineno}"


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


@dataclass
class DeviceHealth:
    name: str
    bus: str
    polls: int = 0
    answered_polls: int = 0
    errors: int = 0
    overruns: int = 0
    readings: int = 0
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
