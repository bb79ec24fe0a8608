"""The plots' memory (``web/history.py``): what it keeps of wire bodies, its two rings on a time
grid, spikes kept by min/max, a clock that jumps, the series cap, threads, and its size."""

from __future__ import annotations

import math
import threading
import tracemalloc

from edge_agent.web.history import DAY, HOUR, History, Tier

T0 = 1732380000000  # 2024-11-23T16:40:00Z, on the 10 s and 3 min grids


class Clock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> float:
        return self.ms / 1000


def fed(seconds: int, value=lambda t: float(t), step_s: int = 1) -> tuple[History, Clock]:
    clock = Clock(T0)
    history = History(clock=clock)
    for t in range(0, seconds, step_s):
        clock.ms = T0 + t * 1000
        history.add_record({"dev": "river-1", "ts": clock.ms, "vals": {"level_m": value(t)}})
    return history, clock


def test_only_numbers_of_a_devices_own_records_are_kept() -> None:
    history = History(clock=Clock(T0 + 1000))
    history.add_record({"dev": "gate-1", "ts": T0, "vals": {
        "level_m": 1.25, "count": 3, "open": True, "card_no": "p1:6Q2WZ7", "phone": "138****1234", "bad": None,
        "nan": math.nan}, "sealed": {"kid": "97d5", "ct": "AAAA"}})
    history.add_record({"dev": "hub-1", "sub": "B-00023", "ts": T0, "vals": {"hr_bpm": 72}})  # a unit: not plotted
    assert history.points("gate-1") == ["level_m", "count"]
    assert history.points("hub-1") == [] and len(history) == 2
    assert history.read("gate-1", "level_m", 3600) == [(T0 + 5000, 1.25)]  # the bucket's middle, value as written
    assert history.read("gate-1", "count", 3600) == [(T0 + 5000, 3.0)]
    assert history.read("gate-1", "card_no", 3600) == [] and history.read("nobody", "x", 3600) == []


def test_a_threshold_alarm_adds_its_value_other_events_nothing() -> None:
    history = History(clock=Clock(T0 + 1000))
    history.add_event({"dev": "river-1", "type": "alarm", "prio": "critical", "ts": T0,
                       "data": {"state": "raised", "point": "level_m", "value": 3.2, "threshold": 3.0}})
    history.add_event({"dev": "hub-1", "type": "sos", "prio": "critical", "ts": T0, "data": {"wearer": "p1:AB"}})
    history.add_event({"dev": "river-1", "type": "offline", "prio": "high", "ts": T0, "data": {}})
    assert history.points("river-1") == ["level_m"] and history.points("hub-1") == []
    assert history.read("river-1", "level_m", 3600) == [(T0 + 5000, 3.2)]


def test_an_hour_of_one_second_polls_is_360_buckets_and_a_day_480() -> None:
    history, clock = fed(86_400, value=lambda t: float(t % 600))
    hour = history.read("river-1", "level_m", 3600)
    day = history.read("river-1", "level_m", 86_400)
    assert HOUR[1] - 1 <= len({ts // HOUR[0] for ts, _ in hour}) <= HOUR[1]
    assert len({ts // DAY[0] for ts, _ in day}) <= DAY[1] and len(day) <= 2 * DAY[1]
    assert all(clock.ms - 3600_000 <= ts <= clock.ms for ts, _ in hour)
    assert min(v for _, v in day) == 0 and max(v for _, v in day) == 599  # every bucket's extremes


def test_a_one_poll_spike_survives_both_rings() -> None:
    history, clock = fed(7200, value=lambda t: 50.0 if t == 5000 else 1.0)
    assert max(v for _, v in history.read("river-1", "level_m", 3600)) == 50.0
    assert max(v for _, v in history.read("river-1", "level_m", 86_400)) == 50.0


def test_a_bucket_draws_its_extremes_nearest_first_so_a_ramp_stays_a_line() -> None:
    tier = Tier(10_000, 6)
    for t in range(60):  # falls by 1 a second: each bucket holds a drop of 9
        tier.add(T0 + t * 1000, 100.0 - t)
    values = [v for _, v in tier.read(T0)]
    assert values == sorted(values, reverse=True)


def test_a_clock_that_jumps_forward_empties_the_ring_and_one_far_back_is_ignored() -> None:
    tier = Tier(10_000, 6)
    tier.add(T0, 1.0)
    tier.add(T0 + 3_600_000, 2.0)  # an hour later: every older bucket is gone
    assert [v for _, v in tier.read(0)] == [2.0]
    tier.add(T0, 9.0)  # far older than the ring: dropped
    tier.add(T0 + 3_600_000 - 20_000, 3.0)  # inside the ring: kept in its place
    assert [v for _, v in tier.read(0)] == [3.0, 2.0]


def test_series_past_the_cap_are_refused_and_counted() -> None:
    history = History(max_series=3, clock=Clock(T0))
    history.add_record({"dev": "m", "ts": T0, "vals": {f"p{i}": i for i in range(5)}})
    assert history.points("m") == ["p0", "p1", "p2"] and history.refused == 2


def test_backlog_is_kept_as_whole_rows() -> None:
    history = History(clock=Clock(T0 + 60_000))
    for i, pending in enumerate((0, 12, 40, 7)):
        history.add_backlog(T0 + i * 15_000, pending)
    assert [v for _, v in history.backlog(3600)] == [0, 12, 40, 7]
    assert all(isinstance(v, int) for _, v in history.backlog(86_400))


def test_appends_from_many_threads_lose_nothing() -> None:
    history = History(clock=Clock(T0 + 4_000_000))

    def feed(dev: str) -> None:
        for t in range(2000):
            history.add_record({"dev": dev, "ts": T0 + t * 1000, "vals": {"x": float(t)}})
    workers = [threading.Thread(target=feed, args=(f"d{i}",)) for i in range(8)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    for i in range(8):
        values = [v for _, v in history.read(f"d{i}", "x", 86_400)]
        assert min(values) == 0 and max(values) == 1999


def test_a_series_costs_under_8_KiB_whatever_it_was_fed() -> None:
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        history = History(clock=Clock(T0))
        for d in range(20):
            history.add_record({"dev": f"dev-{d}", "ts": T0, "vals": {f"point_{p}": 1.0 for p in range(20)}})
        size = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(history) == 400 and size / 400 < 8 * 1024, size


def measure(devices: int = 20, points: int = 20, seconds: int = 86_400) -> None:
    """What the history costs in RSS: ``devices`` x ``points`` polled every second for ``seconds``,
    fed as the intake feeds it (one wire body a device a second). VmRSS before and after."""
    import time

    def rss_kib() -> int:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))

    clock = Clock(T0)
    names = [f"point_{p}_m" for p in range(points)]
    before, started = rss_kib(), time.perf_counter()
    history = History(clock=clock)
    for t in range(seconds):
        clock.ms = ts = T0 + t * 1000
        for d in range(devices):
            history.add_record({"dev": f"dev-{d}", "ts": ts, "vals": {n: 1.0 + (t % 997) / 100 + d for n in names}})
    took = time.perf_counter() - started
    after = rss_kib()
    appends = devices * points * seconds
    print(f"{devices} devices x {points} points, {seconds} s of 1 s polls ({appends:,} values, "
          f"{took / appends * 1e6:.2f} us each): {len(history)} series, RSS +{(after - before) / 1024:.2f} MiB "
          f"({before / 1024:.1f} -> {after / 1024:.1f} MiB)")


if __name__ == "__main__":  # .venv/bin/python tests/web/test_history.py
    measure()
