"""The plots' memory: the last hour and the last day of every numeric point, and of the backlog.

Why min/max buckets and not every sample: a plot is at most ~600 points wide, so a day of 1 s
polls (86,400 samples) shows no more than 480 buckets of it, and the technician's page may add at
most 5 MiB to the agent. Each series keeps two rings on a fixed time grid:

- ``HOUR``: 360 buckets of 10 s (the last hour), ``DAY``: 480 buckets of 3 min (the last 24 h);
- a bucket holds the lowest and highest value that fell in it (float32: plots only, never the
  wire), so a one-poll spike survives in both views; an empty bucket is NaN.

That is 6.7 KiB a series whatever the poll rate: 20 devices x 20 points cost ~2.7 MiB
(``docs/web.md``, "Pages", has the measured RSS). Nothing goes to disk; the history starts empty
after a restart. Appends are O(1) (amortised: moving the ring's head clears the buckets skipped,
at most once each) under one lock. At most ``max_series`` series are kept (a hub's thousand
bands must not grow it): records of a unit inside a device (``sub``) are not plotted, and new
series past the cap are counted in ``refused`` and dropped.

Fed from wire bodies only (``add_record``, ``add_event``), so it holds nothing the wire does not
carry: numbers (int and float, not bool) of ``vals``; strings, pseudonyms, ``null`` and seals are
skipped.
"""

from __future__ import annotations

import math
import threading
import time
from array import array
from typing import Any, Callable, Mapping

__all__ = ["History", "Tier", "HOUR", "DAY", "MAX_SERIES"]

MAX_SERIES = 500
NAN = float("nan")


class Tier:
    """A ring of ``slots`` buckets of ``step_ms`` each; the newest bucket's index says where its head is."""

    __slots__ = ("step_ms", "slots", "lo", "hi", "newest")

    def __init__(self, step_ms: int, slots: int) -> None:
        self.step_ms, self.slots = step_ms, slots
        self.lo = array("f", [NAN]) * slots
        self.hi = array("f", [NAN]) * slots
        self.newest: int | None = None  # absolute bucket index (ts // step_ms) of the head

    def add(self, ts: int, value: float) -> None:
        index = ts // self.step_ms
        newest = self.newest
        if newest is None or index > newest:
            start = index - self.slots + 1 if newest is None else max(newest + 1, index - self.slots + 1)
            for i in range(start, index + 1):  # the buckets passed over are empty now
                self.lo[i % self.slots] = self.hi[i % self.slots] = NAN
            self.newest = newest = index
        elif index <= newest - self.slots:
            return  # older than the ring (a clock that stepped back far)
        slot = index % self.slots
        lo, hi = self.lo[slot], self.hi[slot]
        if lo != lo or value < lo:  # NaN: an empty bucket
            self.lo[slot] = value
        if hi != hi or value > hi:
            self.hi[slot] = value

    def read(self, since_ms: int) -> list[tuple[int, float]]:
        """(ts ms, value) of the buckets starting at or after ``since_ms``, oldest first: one point
        per bucket when its low and high are equal, else both, the one nearer the previous point
        first, so a ramp draws as a line and a spike as a spike."""
        if self.newest is None:
            return []
        step, slots = self.step_ms, self.slots
        found: list[tuple[int, float, float]] = []  # (bucket start, low, high) of the buckets with values
        for index in range(max(self.newest - slots + 1, -(-since_ms // step)), self.newest + 1):
            lo = self.lo[index % slots]
            if lo == lo:  # not NaN
                found.append((index * step, _decimal(lo), _decimal(self.hi[index % slots])))
        out: list[tuple[int, float]] = []
        for i, (start, lo, hi) in enumerate(found):
            if lo == hi:
                out.append((start + step // 2, lo))
                continue
            if out:  # start at the extreme nearer the previous point
                lo_first = abs(out[-1][1] - lo) <= abs(out[-1][1] - hi)
            elif i + 1 < len(found):  # the first bucket: end at the extreme nearer the next bucket
                after = (found[i + 1][1] + found[i + 1][2]) / 2
                lo_first = abs(after - hi) <= abs(after - lo)
            else:
                lo_first = True
            out.append((start + step // 4, lo if lo_first else hi))
            out.append((start + 3 * step // 4, hi if lo_first else lo))
        return out


def _decimal(value: float) -> float:
    """A float32 back as the decimal it most likely was (1.23, not 1.2300000190734863)."""
    return float(f"{value:.7g}")


HOUR = (10_000, 360)  # step ms, buckets: the last hour
DAY = (180_000, 480)  # the last 24 h


class _Series:
    __slots__ = ("hour", "day")

    def __init__(self) -> None:
        self.hour, self.day = Tier(*HOUR), Tier(*DAY)

    def add(self, ts: int, value: float) -> None:
        self.hour.add(ts, value)
        self.day.add(ts, value)

    def read(self, seconds: float, now_ms: int) -> list[tuple[int, float]]:
        tier = self.hour if seconds <= HOUR[0] * HOUR[1] / 1000 else self.day
        return tier.read(now_ms - int(seconds * 1000))


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


class History:
    """Every plotted series of a running agent; thread-safe (one lock)."""

    def __init__(self, *, max_series: int = MAX_SERIES, clock: Callable[[], float] = time.time) -> None:
        self.max_series = max_series
        self.refused = 0  # series not kept because ``max_series`` was reached
        self._clock = clock
        self._lock = threading.Lock()
        self._series: dict[tuple[str, str], _Series] = {}
        self._points: dict[str, list[str]] = {}  # device -> its plotted points, in the order first seen
        self._backlog = _Series()

    def _add(self, device: str, point: str, ts: int, value: float) -> None:
        """Under the lock."""
        series = self._series.get((device, point))
        if series is None:
            if len(self._series) >= self.max_series:
                self.refused += 1
                return
            series = self._series[(device, point)] = _Series()
            self._points.setdefault(device, []).append(point)
        series.add(ts, value)

    def add_record(self, body: Mapping[str, Any]) -> None:
        """A record's wire body (``Record.to_wire()``): its numeric ``vals``; a unit's (``sub``) are not kept."""
        if "sub" in body or not isinstance(body.get("dev"), str) or not isinstance(body.get("ts"), int):
            return
        device, ts = body["dev"], body["ts"]
        values = [(pt, v) for pt, v in (body.get("vals") or {}).items() if isinstance(pt, str)]
        with self._lock:
            for point, value in values:
                number = _number(value)
                if number is not None:
                    self._add(device, point, ts, number)

    def add_event(self, body: Mapping[str, Any]) -> None:
        """An event's wire body: a threshold alarm's value (``data.point``, ``data.value``), which a
        report filter may have kept out of the records."""
        data = body.get("data")
        if not isinstance(data, Mapping) or not isinstance(body.get("dev"), str) or not isinstance(body.get("ts"), int):
            return
        point, number = data.get("point"), _number(data.get("value"))
        if isinstance(point, str) and number is not None and "sub" not in body:
            with self._lock:
                self._add(body["dev"], point, body["ts"], number)

    def add_backlog(self, ts: int, pending: int) -> None:
        with self._lock:
            self._backlog.add(ts, float(pending))

    def read(self, device: str, point: str, seconds: float) -> list[tuple[int, float]]:
        """(ts ms, value) over the last ``seconds`` (at most 3,600: the hour ring, else the day's)."""
        now = int(self._clock() * 1000)
        with self._lock:
            series = self._series.get((device, point))
            return [] if series is None else series.read(seconds, now)

    def backlog(self, seconds: float) -> list[tuple[int, int]]:
        now = int(self._clock() * 1000)
        with self._lock:
            return [(ts, int(v)) for ts, v in self._backlog.read(seconds, now)]

    def points(self, device: str) -> list[str]:
        with self._lock:
            return list(self._points.get(device, ()))

    def __len__(self) -> int:
        with self._lock:
            return len(self._series)
