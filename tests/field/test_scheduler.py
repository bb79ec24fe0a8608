"""Scheduler: intervals, overruns skipped and counted (never stacked), health, a dead device
never stopping its bus. Fake readers stand at our own seam (the reader's poll())."""

import time
from dataclasses import dataclass, field

import pytest

from edge_agent.field.health import HealthBoard
from edge_agent.model import Quality, Reading
from edge_agent.field.scheduler import BusWorker, Schedule, next_due


@dataclass
class FakeResult:
    readings: list = field(default_factory=list)
    errors: list = field(default_factory=list)
    requests: int = 1
    answered: bool = True


class FakeReader:
    def __init__(self, name, duration=0.0, fail=False, explode=False):
        self.name, self.duration, self.fail, self.explode = name, duration, fail, explode
        self.calls: list[float] = []

    def poll(self):
        self.calls.append(time.monotonic())
        if self.explode:
            raise RuntimeError("driver bug")
        time.sleep(self.duration)
        if self.fail:
            return FakeResult(errors=[f"{self.name}: no response"], answered=False)
        return FakeResult(readings=[Reading(self.name, "x", 1, int(time.time() * 1000), Quality.GOOD)])


@pytest.mark.parametrize("due, interval, now, expected", [
    (10.0, 1.0, 10.5, (11.0, 0)),      # on time
    (10.0, 1.0, 11.0, (12.0, 1)),      # exactly one slot late
    (10.0, 1.0, 13.7, (14.0, 3)),      # three slots missed
    (10.0, 5.0, 14.9, (15.0, 0)),
])
def test_next_due_skips_missed_slots(due, interval, now, expected):
    assert next_due(due, interval, now) == expected


def run_worker(readers, intervals, seconds):
    sink: list = []
    health = HealthBoard()
    schedules = [Schedule(r.name, r, i) for r, i in zip(readers, intervals)]
    worker = BusWorker("bus-a", schedules, sink.extend, health)
    worker.start()
    time.sleep(seconds)
    worker.stop()
    worker.join(timeout=5)
    assert not worker.is_alive()
    return sink, {h["name"]: h for h in health.snapshot()}


def test_each_device_keeps_its_own_interval():
    fast, slow = FakeReader("fast"), FakeReader("slow")
    sink, health = run_worker([fast, slow], [0.1, 0.5], 1.25)
    assert 10 <= len(fast.calls) <= 14
    assert 2 <= len(slow.calls) <= 4
    assert health["fast"]["state"] == "online" and health["fast"]["last_good_ms"]
    assert len(sink) == len(fast.calls) + len(slow.calls)


class SlowThenFast(FakeReader):
    """Takes ``duration`` for its first ``slow_polls`` polls, then answers at once; records when
    each poll started and ended."""

    def __init__(self, name, duration, slow_polls):
        super().__init__(name, duration)
        self.slow_polls, self.ends = slow_polls, []

    def poll(self):
        if len(self.calls) == self.slow_polls:
            self.duration = 0.0
        try:
            return super().poll()
        finally:
            self.ends.append(time.monotonic())


def test_overrun_is_skipped_and_counted_not_stacked():
    interval, slow_polls, fast_polls = 0.1, 3, 5
    reader = SlowThenFast("slow", duration=0.35, slow_polls=slow_polls)  # each slow poll overruns 3 slots
    health = HealthBoard()
    worker = BusWorker("bus-a", [Schedule("slow", reader, interval)], lambda r: None, health)
    worker.start()
    deadline = time.monotonic() + 20
    while len(reader.ends) < slow_polls + fast_polls and time.monotonic() < deadline:
        time.sleep(0.01)
    worker.stop()
    worker.join(timeout=5)
    assert not worker.is_alive()
    polls = len(reader.ends)
    assert polls >= slow_polls + fast_polls, f"the worker polled {polls} time(s)"
    (h,) = health.snapshot()
    assert h["polls"] == polls
    # counted: every slot up to the last poll was either polled or counted as skipped
    # (the next slot is always ahead of the moment a poll ended)
    assert (h["polls"] + h["overruns"]) * interval >= reader.ends[-1] - reader.calls[0] - 1e-6
    assert h["overruns"] >= 3 * slow_polls
    # not stacked: once the polls are quick again, none runs before its slot; the first slot is
    # after the last slow poll ended, each later one an interval further (catching up would poll
    # the skipped slots back to back)
    last_slow_end = reader.ends[slow_polls - 1]
    for k, started in enumerate(reader.calls[slow_polls:]):
        assert started > last_slow_end + k * interval - 1e-6, f"fast poll {k} ran before its slot"


def test_dead_device_is_offline_and_its_bus_neighbour_still_polled():
    dead, alive = FakeReader("dead", duration=0.2, fail=True), FakeReader("alive")
    sink, health = run_worker([dead, alive], [0.3, 0.3], 1.0)
    assert health["dead"]["state"] == "offline"
    assert health["dead"]["errors"] >= 2 and "no response" in health["dead"]["last_error"]
    assert health["alive"]["state"] == "online" and len(alive.calls) >= 3
    assert all(r.dev == "alive" for r in sink)


def test_a_driver_exception_does_not_end_the_worker():
    bad, good = FakeReader("bad", explode=True), FakeReader("good")
    _, health = run_worker([bad, good], [0.1, 0.1], 0.6)
    assert len(bad.calls) >= 3 and len(good.calls) >= 3
    assert health["bad"]["errors"] >= 3


def test_request_poll_runs_a_device_outside_its_interval():
    reader = FakeReader("gate")
    health = HealthBoard()
    worker = BusWorker("bus-b", [Schedule("gate", reader, 60.0)], lambda r: None, health)
    worker.start()
    deadline = time.monotonic() + 2
    while not reader.calls and time.monotonic() < deadline:
        time.sleep(0.01)
    worker.request_poll("gate")
    while len(reader.calls) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    worker.stop()
    worker.join(timeout=5)
    assert len(reader.calls) == 2


def test_repeated_failure_logged_once_at_error(caplog):
    dead = FakeReader("dead", fail=True)
    with caplog.at_level("DEBUG", logger="edge_agent.poll"):
        run_worker([dead], [0.05], 0.5)
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "device dead" in errors[0].getMessage()
    assert sum(r.levelname == "DEBUG" for r in caplog.records) >= 3


def test_alarms_filter_readings_and_send_events_and_ticks_raise_stale():
    from edge_agent.field.alarms import DeviceAlarms
    from edge_agent.rules import Stale, Threshold

    readings, events = [], []
    reader = FakeReader("dev-a")
    alarms = DeviceAlarms("dev-a", 0.05, [Threshold("x", above=0.5), Stale(2)])
    worker = BusWorker("bus-c", [Schedule("dev-a", reader, 0.05, alarms=alarms)], readings.extend, HealthBoard(),
                       events_sink=events.extend)
    worker.start()
    time.sleep(0.4)
    reader.fail = True  # no more good readings: stale (ticks) and offline (polls)
    time.sleep(0.5)
    worker.stop()
    worker.join(timeout=5)
    types = [e.type for e in events]
    assert readings and types[:2] == ["online", "alarm"] and "stale" in types and "offline" in types


def test_an_alarms_bug_never_ends_the_bus_and_readings_still_flow(caplog):
    class Broken:
        def on_poll(self, *a):
            raise RuntimeError("bug")

        def tick(self, *a):
            raise RuntimeError("bug")

    readings: list = []
    worker = BusWorker("bus-d", [Schedule("dev-b", FakeReader("dev-b"), 0.05, alarms=Broken())], readings.extend,
                       HealthBoard(), events_sink=lambda e: None)
    worker.start()
    time.sleep(0.4)
    assert worker.is_alive()
    worker.stop()
    worker.join(timeout=5)
    assert len(readings) >= 3
    errors = [r for r in caplog.records if "alarms" in r.getMessage() and r.levelname == "ERROR"]
    assert 1 <= len(errors) <= 2  # once for on_poll, once for tick: not once per poll


def test_bad_frames_are_warned_once_with_the_reason_then_summed_at_most_once_a_minute(caplog):
    import logging

    from edge_agent.field.health import BadFrameLog

    now = [1000.0]
    frames = BadFrameLog(logging.getLogger("edge_agent.poll"), "device hub-1", clock=lambda: now[0])
    with caplog.at_level("DEBUG", logger="edge_agent.poll"):
        frames.seen(0)
        frames.seen(3, ["line 4: not UTF-8", "line 9: not JSON", "line 12: no band"])
        for _ in range(50):  # one poll every half second, a bad frame in each
            now[0] += 0.5
            frames.seen(1, ["line 20: not JSON"])
        now[0] += 36
        frames.seen(0)  # the minute is up: the count is written without waiting for another bad frame
        now[0] += 120
        frames.seen(0)  # nothing new: nothing to say
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert lines == [
        ("WARNING", "device hub-1: bad frame skipped (line 4: not UTF-8); more are counted (bad_frames in status) "
                    "and summed up here at most every 60 s"),
        ("WARNING", "device hub-1: 52 more bad frame(s) skipped (e.g. line 20: not JSON)"),
    ]
