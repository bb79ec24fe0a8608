"""Alarms and reporting for one device: thresholds, rate of rise, stale data, online/offline.

Why on the gateway: the uplink is most likely down exactly when the river rises, so the alarm
must be decided here and wait in the buffer's critical lane, which overtakes any backlog.
Why pure (no I/O, no threads, no clock, no logging): rules run on readings *before* privacy,
and time is passed in as ms, so tests replay any history with explicit timestamps.

Rules (declared in ``edge_agent/rules.py``, frozen; a config loader builds them), as applied here:

- ``Threshold``: ``alarm`` at ``v > above`` (or ``v < below``), ``alarm_clear`` only once the
  value is back past the limit by ``hysteresis`` (``v <= above - hysteresis``), so a value
  hovering at the limit raises once and never flaps.
- ``RateOfRise``: the least-squares slope (units/minute) of the good readings in ``window_s``.
  Not the first/last difference: it rests on two samples, so one noisy endpoint fakes a trend
  (a level flicking 0.25 m up and down every 5 s reads up to 0.43 m/min by first/last, at most
  0.15 by the fit). Fires at ``slope >= per_minute`` once >= 3 readings span >= half the
  window; clears below ``per_minute * RATE_CLEAR_FACTOR`` (a 20 % hysteresis); too few readings
  keep the state. The fit filters no noise: large trendless noise over few readings still reads
  as a rise, so ``per_minute`` must stand well above what noise makes over half a window.
- ``Stale``: no good reading for ``after_intervals`` intervals, plus ``STALE_GRACE`` (half an
  interval: with one poll fewer failed, good readings are ``after_intervals`` apart give or take
  jitter) -> ``stale``; the next good reading -> ``fresh``. Bad readings and silence do not
  count; the clock starts at the first ``on_poll``/``tick``. ``tick`` catches a device whose
  polls stopped; ``on_poll`` checks before reading, so the outcome is the same with or without
  ticks. Times are wall-clock ms: a step back restarts the wait; a step forward (the first NTP
  sync) may raise one stale/fresh pair.
- online/offline, always on: ``online`` at the first answered poll ever (the platform learns
  the state after a gateway restart) and at the first after ``offline``; ``offline`` once after
  ``offline_after`` unanswered polls in a row. A device answering with errors is online.

Alarm rules see good, finite numbers only (bool, strings, bad readings are ignored, so a failing
sensor neither raises nor clears). Event data holds rule and point names, config numbers and
the triggering value; the value and rate carry the reading's class in ``Event.classes``, so
privacy treats them as it treats the reading (a ``health`` point stays ``health``). Both events
of a pair (alarm/clear, stale/fresh, offline/online) share a lane, so they arrive in order.

Reporting: a ``Report`` (``rules.py`` says what passes) per device or per point; points missing
from a per-point mapping are reported every poll: losing data quietly is worse than sending too
much.

Wiring: one ``DeviceAlarms`` per device, owned by its bus worker (not thread-safe). After a poll,
``readings, events = alarms.on_poll(result.readings, result.answered, now_ms)``; sink the
readings, ``events_sink(events)``; between polls, ``events_sink(alarms.tick(now_ms))``.

A flood warning: a level rising 0.5 m/min, polled every 10 s.

>>> alarms = DeviceAlarms("river-1", 10, [RateOfRise("level_m", per_minute=0.2),
...     Threshold("level_m", above=3.0, hysteresis=0.1, prio=Priority.CRITICAL)])
>>> for t in range(0, 140, 10):
...     level = 2.0 + 0.5 * t / 60
...     _, events = alarms.on_poll([Reading("river-1", "level_m", level, t * 1000)], True, t * 1000)
...     for e in events:
...         print(t, e.type, e.prio.label, e.data.get("rule"), e.data.get("rate_per_min"))
0 online high None None
30 alarm critical level_m_rise 0.5
130 alarm critical level_m_above None
"""

from __future__ import annotations

from collections import deque
from typing import Any, Mapping, Sequence

from ..model import DataClass, Event, Priority, Quality, Reading
from ..rules import RateOfRise, Report, Rule, Stale, Threshold, finite

__all__ = ["DeviceAlarms", "RATE_CLEAR_FACTOR", "LINK_PRIO", "STALE_GRACE"]

RATE_CLEAR_FACTOR = 0.8  # a rate alarm clears below 80 % of its trigger rate
LINK_PRIO = Priority.HIGH  # online/offline events
STALE_GRACE = 0.5  # intervals added to Stale.after_intervals, for poll jitter
_HISTORY_MAX = 1024  # readings kept per rate rule, whatever the poll rate (every queue is bounded)


def _check(ok: bool, where: str, what: str) -> None:
    if not ok:
        raise ValueError(f"{where}: {what}")


_EVERY_POLL = Report()


def _slope_per_minute(points: Sequence[tuple[int, float]]) -> float:
    """Least-squares slope of (ms, value) points, in units per minute."""
    t0 = points[0][0]
    xs = [(t - t0) / 60_000 for t, _ in points]
    ys = [v for _, v in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx


class DeviceAlarms:
    """The alarm and reporting state of one device. Not thread-safe: its bus worker owns it."""

    def __init__(self, device: str, interval_s: float, rules: Sequence[Rule] = (),
                 report: Report | Mapping[str, Report] = _EVERY_POLL, *, offline_after: int = 3) -> None:
        where = f"device {device!r}"
        _check(finite(interval_s) is not None and interval_s > 0, where, "interval_s must be > 0")
        _check(isinstance(offline_after, int) and offline_after >= 1, where, "offline_after must be >= 1")
        for rule in rules:
            _check(isinstance(rule, (Threshold, RateOfRise, Stale)), where, f"unknown alarm rule {rule!r}")
        stale = [r for r in rules if isinstance(r, Stale)]
        _check(len(stale) <= 1, where, "one stale rule per device at most")
        self.device = device
        self._interval_ms = interval_s * 1000
        self._offline_after = offline_after
        self._rules = [(i, r) for i, r in enumerate(rules) if not isinstance(r, Stale)]
        self._stale = stale[0] if stale else None
        self._report = report
        self._reported: dict[str, Reading] = {}
        self._active: set[tuple[int, str]] = set()  # (rule index, side) of raised alarms
        self._history: dict[int, deque[tuple[int, float]]] = {}
        self._link: str | None = None  # None until the first outcome, then "online" / "offline"
        self._failed = 0
        self._since_ms: int | None = None  # last good reading, or when we first looked
        self._last_good_ms: int | None = None
        self._stale_raised = False

    def on_poll(self, readings: list[Reading], answered: bool, now_ms: int, *,
                clk_synced: bool = True) -> tuple[list[Reading], list[Event]]:
        """One poll's outcome -> (the readings to buffer, the events raised), both in order."""
        events = self._link_events(answered, now_ms, clk_synced)
        events += self.tick(now_ms, clk_synced=clk_synced)  # first: the same outcome with or without ticks
        for reading in readings:
            if reading.q is not Quality.GOOD:
                continue
            events.extend(self._fresh(reading))
            value = finite(reading.val)
            if value is None:
                continue
            for i, rule in self._rules:
                if rule.point == reading.pt:
                    if isinstance(rule, Threshold):
                        events.extend(self._threshold(i, rule, reading, value))
                    else:
                        events.extend(self._rate(i, rule, reading, value))
        return [r for r in readings if self._passes(r)], events

    def tick(self, now_ms: int, *, clk_synced: bool = True) -> list[Event]:
        """Between polls: the ``stale`` event once no good reading came for the rule's intervals."""
        if self._since_ms is None or now_ms < self._since_ms:  # first look, or the clock stepped back
            self._since_ms = now_ms
        rule = self._stale
        limit_ms = (rule.after_intervals + STALE_GRACE) * self._interval_ms if rule else 0
        if rule is None or self._stale_raised or now_ms - self._since_ms < limit_ms:
            return []
        self._stale_raised = True
        data: dict[str, Any] = {"state": "raised", "intervals": rule.after_intervals}
        if self._last_good_ms is not None:
            data["last_good_ts"] = self._last_good_ms
        return [self._event("stale", rule.prio, now_ms, data, clk_synced)]

    # -- the parts --------------------------------------------------------------------------
    def _event(self, type_: str, prio: Priority, ts: int, data: dict[str, Any], clk_synced: bool,
               reading: Reading | None = None) -> Event:
        classes = {key: DataClass.TELEMETRY for key in data}
        if reading is not None:  # values read from the device keep the reading's class
            classes.update({key: reading.data_class for key in ("value", "rate_per_min") if key in data})
        return Event(self.device, type_, prio, ts, data, clk_synced, classes)

    def _link_events(self, answered: bool, now_ms: int, clk_synced: bool) -> list[Event]:
        if answered:
            self._failed = 0
            if self._link == "online":
                return []
            first, self._link = self._link is None, "online"
            return [self._event("online", LINK_PRIO, now_ms, {"state": "online", "first": first}, clk_synced)]
        self._failed += 1
        if self._failed < self._offline_after or self._link == "offline":
            return []
        self._link = "offline"
        data = {"state": "offline", "failed_polls": self._failed}
        return [self._event("offline", LINK_PRIO, now_ms, data, clk_synced)]

    def _fresh(self, reading: Reading) -> list[Event]:
        self._since_ms = self._last_good_ms = reading.ts
        if self._stale is None or not self._stale_raised:
            return []
        self._stale_raised = False
        return [self._event("fresh", self._stale.prio, reading.ts, {"state": "cleared"}, reading.clk_synced)]

    def _alarm(self, key: tuple[int, str], raised: bool, prio: Priority, reading: Reading,
               data: dict[str, Any]) -> list[Event]:
        (self._active.add if raised else self._active.discard)(key)
        data = {"state": "raised" if raised else "cleared", **data}
        type_ = "alarm" if raised else "alarm_clear"
        return [self._event(type_, prio, reading.ts, data, reading.clk_synced, reading)]

    def _threshold(self, i: int, rule: Threshold, reading: Reading, value: float) -> list[Event]:
        events: list[Event] = []
        for side, limit in (("above", rule.above), ("below", rule.below)):
            if limit is None:
                continue
            if side == "above":
                trips, resets = value > limit, value <= limit - rule.hysteresis
            else:
                trips, resets = value < limit, value >= limit + rule.hysteresis
            active = (i, side) in self._active
            if active == (not resets if active else trips):
                continue
            data = {"rule": rule.name or f"{rule.point}_{side}", "point": rule.point, "value": value,
                    "direction": side, "threshold": limit, "hysteresis": rule.hysteresis}
            events += self._alarm((i, side), not active, rule.prio, reading, data)
        return events

    def _rate(self, i: int, rule: RateOfRise, reading: Reading, value: float) -> list[Event]:
        history = self._history.setdefault(i, deque(maxlen=_HISTORY_MAX))
        if history and reading.ts == history[-1][0]:
            return []  # the same instant twice: keep the first
        if history and reading.ts < history[-1][0]:
            history.clear()  # the clock stepped back: the old times no longer compare
        history.append((reading.ts, value))
        window_ms = rule.window_s * 1000
        while history[0][0] <= reading.ts - window_ms:
            history.popleft()
        if len(history) < 3 or history[-1][0] - history[0][0] < window_ms / 2:
            return []
        slope = _slope_per_minute(history)
        active = (i, "rate") in self._active
        if active == (slope >= rule.per_minute * (RATE_CLEAR_FACTOR if active else 1.0)):
            return []  # no change: still rising (a raised alarm holds down to 80 % of the rate) or still calm
        data = {"rule": rule.name or f"{rule.point}_rise", "point": rule.point, "value": value,
                "rate_per_min": round(slope, 6), "threshold_per_min": rule.per_minute, "window_s": rule.window_s}
        return self._alarm((i, "rate"), not active, rule.prio, reading, data)

    def _passes(self, reading: Reading) -> bool:
        report = self._report if isinstance(self._report, Report) else self._report.get(reading.pt, _EVERY_POLL)
        if not report.passes(reading, self._reported.get(reading.pt)):
            return False
        self._reported[reading.pt] = reading
        return True
