"""The alarm and reporting rules a device's config declares: frozen values, checked when built.

Why on the floor: ``settings.py`` holds them and ``config/alarms.py`` builds them, and neither
should climb into the field room for a declaration; ``field/alarms.py`` (``DeviceAlarms``)
applies them to readings and documents how each one raises and clears.

- ``Threshold(point, above=, below=, hysteresis=)``: an alarm past a limit, cleared only once
  the value is back past it by ``hysteresis``.
- ``RateOfRise(point, per_minute, window_s=)``: an alarm at a least-squares slope of at least
  ``per_minute`` over ``window_s``.
- ``Stale(after_intervals=)``: an event once no good reading came for that many intervals.
- ``Report("every_poll")`` passes every reading; ``Report("on_change", deadband, heartbeat_s)``
  passes a number that moved more than ``deadband`` from the last one reported, any other value
  that changed, and always the first reading of a point, every non-good reading, a quality
  change and one reading per ``heartbeat_s``.

Every check is in ``__post_init__`` (a ``ValueError`` naming the rule), so a rule that exists is
sound. Only the model is imported: no I/O, no clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from .model import Priority, Quality, Reading

__all__ = ["Threshold", "RateOfRise", "Stale", "Report", "Rule", "finite"]


def finite(value: Any) -> float | None:
    """``value`` as a finite float, or None for anything an alarm rule must not look at."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _check(ok: bool, where: str, what: str) -> None:
    if not ok:
        raise ValueError(f"{where}: {what}")


def _check_prio(prio: Any, where: str) -> None:
    _check(isinstance(prio, Priority), where, f"prio must be a Priority, not {prio!r}")


@dataclass(frozen=True)
class Threshold:
    point: str
    above: float | None = None
    below: float | None = None
    hysteresis: float = 0.0
    prio: Priority = Priority.HIGH
    name: str | None = None

    def __post_init__(self) -> None:
        where = f"threshold on {self.point!r}"
        _check(bool(self.point) and isinstance(self.point, str), where, "needs a point name")
        _check(self.above is not None or self.below is not None, where, "needs above, below or both")
        for key in ("above", "below", "hysteresis"):
            value = getattr(self, key)
            _check(value is None or finite(value) is not None, where, f"{key} must be a finite number")
        _check(self.hysteresis >= 0, where, "hysteresis must be >= 0")
        if self.above is not None and self.below is not None:
            _check(self.below < self.above, where, "below must be lower than above")
        _check_prio(self.prio, where)


@dataclass(frozen=True)
class RateOfRise:
    point: str
    per_minute: float
    window_s: float = 60.0
    prio: Priority = Priority.CRITICAL
    name: str | None = None

    def __post_init__(self) -> None:
        where = f"rate of rise on {self.point!r}"
        _check(bool(self.point) and isinstance(self.point, str), where, "needs a point name")
        _check(finite(self.per_minute) is not None and self.per_minute > 0, where, "per_minute must be > 0")
        _check(finite(self.window_s) is not None and self.window_s > 0, where, "window_s must be > 0")
        _check_prio(self.prio, where)


@dataclass(frozen=True)
class Stale:
    after_intervals: int = 3
    prio: Priority = Priority.HIGH

    def __post_init__(self) -> None:
        _check(isinstance(self.after_intervals, int) and self.after_intervals >= 1, "stale",
               "after_intervals must be a whole number >= 1")
        _check_prio(self.prio, "stale")


@dataclass(frozen=True)
class Report:
    mode: Literal["every_poll", "on_change"] = "every_poll"
    deadband: float = 0.0
    heartbeat_s: float | None = None

    def __post_init__(self) -> None:
        _check(self.mode in ("every_poll", "on_change"), "report", "mode is 'every_poll' or 'on_change'")
        _check(finite(self.deadband) is not None and self.deadband >= 0, "report", "deadband must be >= 0")
        _check(self.heartbeat_s is None or (finite(self.heartbeat_s) is not None and self.heartbeat_s > 0),
               "report", "heartbeat_s must be > 0")

    def passes(self, reading: Reading, last: Reading | None) -> bool:
        """Whether ``reading`` is buffered, given the point's ``last`` reported reading."""
        if self.mode == "every_poll" or last is None or reading.q is not Quality.GOOD or reading.q != last.q:
            return True
        since = reading.ts - last.ts
        if self.heartbeat_s is not None and (since >= self.heartbeat_s * 1000 or since < 0):  # < 0: clock stepped back
            return True
        new, old = finite(reading.val), finite(last.val)
        if new is not None and old is not None:
            return abs(new - old) > self.deadband
        return bool(reading.val != last.val)


Rule = Threshold | RateOfRise | Stale
