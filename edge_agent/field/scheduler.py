"""One worker per bus polls that bus's devices in turn, each at its own interval.

An RS-485 line carries one transaction at a time, so the bus is the unit of concurrency: a
slow or dead bus never holds up another. A poll that overruns its slot is never stacked
(queued polls would only produce late readings and a growing lag); the slots it missed are
skipped and counted in the device's ``overruns``.

A device with alarms (``Schedule.alarms``) has its poll results passed through its
``DeviceAlarms`` first: the readings it keeps go to ``sink``, the events it raises to
``events_sink``; between polls the loop (awake at least once a second) calls its ``tick``, so a
device whose polls stopped still goes stale. An alarms failure is logged and never ends the bus.

A streaming device (a hub or gate that talks unprompted, ``Schedule.stream``) has its reader's
``poll()`` (which waits for lines itself) called again as soon as it returns: no interval, no
overruns. The events a device reports itself (``PollResult.events``: SOS, passages) go to
``events_sink`` with the alarms' events, and count as good news like a good reading
(``last_good_ms``, ``events``). Bad frames (``PollResult.bad_frames``) are counted and logged
by ``health.BadFrameLog``, never as a failure: only ``errors`` and ``answered`` say that.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Protocol, Sequence

from .alarms import DeviceAlarms
from ..errors import bug_location
from .health import BadFrameLog, FailureLog, HealthBoard
from ..model import Event, Quality, Reading

__all__ = ["Schedule", "BusWorker", "next_due"]

log = logging.getLogger("edge_agent.poll")


class Reader(Protocol):
    def poll(self): ...  # -> model.PollResult


@dataclass
class Schedule:
    """A device's place in its bus's rotation."""

    name: str
    reader: Reader
    interval_s: float
    due: float = 0.0
    alarms: DeviceAlarms | None = None
    stream: bool = False  # the reader waits for data itself: poll again at once


def next_due(due: float, interval: float, now: float) -> tuple[float, int]:
    """The next slot after ``due`` that is still ahead of ``now``, and how many were skipped."""
    following = due + interval
    if following > now:
        return following, 0
    skipped = int((now - following) // interval) + 1
    return following + skipped * interval, skipped


class BusWorker(threading.Thread):
    """Polls the devices of one bus in due order and hands readings to ``sink``."""

    def __init__(self, bus: str, schedules: Sequence[Schedule], sink: Callable[[list[Reading]], None],
                 health: HealthBoard, *, events_sink: Callable[[list[Event]], None] | None = None,
                 monotonic: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        super().__init__(name=f"bus-{bus}", daemon=True)
        self.bus = bus
        self._schedules = list(schedules)
        self._sink = sink
        self._events_sink = events_sink
        self._health = health
        self._monotonic = monotonic
        self._wall = wall
        self._stop_event = threading.Event()
        self._poll_now: set[str] = set()
        self._poll_now_lock = threading.Lock()
        self._failures = {s.name: FailureLog(log, f"device {s.name}") for s in self._schedules}
        self._alarm_failures = {s.name: FailureLog(log, f"device {s.name}: alarms") for s in self._schedules}
        self._bad_frames = {s.name: BadFrameLog(log, f"device {s.name}") for s in self._schedules}
        self._events_failed = False  # events_sink failures are logged once per failure streak
        self.heartbeat = monotonic()  # last time the loop went round: the watchdog reads it
        for schedule in self._schedules:
            health.add(schedule.name, bus)

    def stop(self) -> None:
        self._stop_event.set()

    def request_poll(self, device: str) -> None:
        """Poll ``device`` at the next opportunity, outside its interval."""
        with self._poll_now_lock:
            self._poll_now.add(device)

    def run(self) -> None:
        start = self._monotonic()
        for i, schedule in enumerate(self._schedules):
            # spread first polls a little so devices on a bus do not all fall due together
            schedule.due = start + i * min(0.05, schedule.interval_s / 10)
        while not self._stop_event.is_set():
            self.heartbeat = self._monotonic()
            self._tick_alarms()
            if not self._schedules:
                self._stop_event.wait(1.0)
                continue
            schedule = self._take_requested() or min(self._schedules, key=lambda s: s.due)
            delay = schedule.due - self._monotonic()
            if delay > 0:
                self._stop_event.wait(min(delay, 1.0))  # wake at least once a second for the watchdog
                continue
            self._poll(schedule)

    def _take_requested(self) -> Schedule | None:
        with self._poll_now_lock:
            for schedule in self._schedules:
                if schedule.name in self._poll_now:
                    self._poll_now.discard(schedule.name)
                    schedule.due = self._monotonic()
                    return schedule
        return None

    def _tick_alarms(self) -> None:
        """``tick`` every device's alarms: a device whose polls stopped still goes stale."""
        now_ms = int(self._wall() * 1000)
        for schedule in self._schedules:
            if schedule.alarms is None:
                continue
            try:
                events = schedule.alarms.tick(now_ms)
            except Exception as exc:  # an alarms bug must not end the bus worker
                self._alarm_failures[schedule.name].failed(f"tick failed unexpectedly ({type(exc).__name__})")
                continue
            self._send_events(schedule.name, events)

    def _send_events(self, name: str, events: Iterable[Event]) -> None:
        events = list(events)
        if not events or self._events_sink is None:
            return
        try:
            self._events_sink(events)
            self._events_failed = False
        except Exception as exc:  # never take the bus down; the reason names no value
            if not self._events_failed:
                log.error("device %s: %d event(s) could not be buffered: %s", name, len(events), type(exc).__name__)
            self._events_failed = True

    def _apply_alarms(self, schedule: Schedule, result, now_ms: int) -> list[Reading]:
        """The readings to buffer; the events the poll raised go to ``events_sink``."""
        if schedule.alarms is None:
            return result.readings
        try:
            readings, events = schedule.alarms.on_poll(result.readings, result.answered, now_ms)
        except Exception as exc:  # an alarms bug must not end the bus worker nor lose the readings
            self._alarm_failures[schedule.name].failed(f"on_poll failed unexpectedly ({type(exc).__name__})")
            return result.readings
        self._alarm_failures[schedule.name].recovered()
        self._send_events(schedule.name, events)
        return readings

    def _poll(self, schedule: Schedule) -> None:
        name = schedule.name
        try:
            result = schedule.reader.poll()
        except Exception as exc:  # a driver bug must not end the bus worker
            # the location, never the message or the traceback's locals: a driver bug's message
            # can carry the value it choked on; logged once per failure streak like any failure
            self._failures[name].failed(f"poll failed unexpectedly ({bug_location(exc)}); the bus keeps running")
            self._health.bump(name, polls=1, errors=1, consecutive_failures=1)
            schedule.due, _ = next_due(schedule.due, schedule.interval_s, self._monotonic())
            return
        now_ms = int(self._wall() * 1000)
        readings = self._apply_alarms(schedule, result, now_ms)
        own_events = getattr(result, "events", ())  # readers of register devices report none
        if own_events:
            self._send_events(name, own_events)
        bad_frames = getattr(result, "bad_frames", 0)
        self._bad_frames[name].seen(bad_frames, getattr(result, "bad_frame_notes", ()))
        if bad_frames or own_events:
            self._health.bump(name, bad_frames=bad_frames, events=len(own_events))
        if readings:
            try:
                self._sink(readings)
            except Exception as exc:  # never take the bus down; the reason names no value
                log.error("device %s: %d reading(s) could not be buffered: %s", name, len(readings),
                          type(exc).__name__)
        self._health.bump(name, polls=1, errors=len(result.errors), readings=len(result.readings))
        changes: dict = {"requests_per_poll": result.requests}
        if result.answered:
            changes["consecutive_failures"] = 0
            self._health.bump(name, answered_polls=1)
            if own_events or any(r.q is Quality.GOOD for r in result.readings):
                changes["last_good_ms"] = now_ms
        else:
            self._health.bump(name, consecutive_failures=1)
        if result.errors:
            changes.update(last_error=result.errors[-1], last_error_ms=now_ms)
            self._failures[name].failed("; ".join(result.errors))
        else:
            self._failures[name].recovered()
        self._health.update(name, **changes)
        if schedule.stream:
            schedule.due = self._monotonic()
            return
        schedule.due, skipped = next_due(schedule.due, schedule.interval_s, self._monotonic())
        if skipped:
            self._health.bump(name, overruns=skipped)
            log.debug("device %s: poll overran its interval, %d slot(s) skipped", name, skipped)
