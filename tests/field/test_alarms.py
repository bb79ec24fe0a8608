"""Alarms and reporting: thresholds with hysteresis (no flapping), rate of rise (a trend, not
noise, and not before enough readings), stale devices, online/offline, the report filter.
Everything is driven with explicit timestamps in ms; nothing sleeps."""

import doctest
import json

import pytest
from hypothesis import given, settings, strategies as st

import edge_agent.field.alarms
from edge_agent.field.alarms import RATE_CLEAR_FACTOR, DeviceAlarms
from edge_agent.model import DataClass, Priority, Quality, Reading
from edge_agent.rules import RateOfRise, Report, Stale, Threshold

DEV = "river-1"
S = 1000  # ms per second


def r(val, ts, pt="level_m", q=Quality.GOOD, data_class=DataClass.TELEMETRY):
    return Reading(DEV, pt, val, ts, q, data_class=data_class)


def feed(alarms, values, step_s=10, pt="level_m"):
    """Poll once per value (None: an unanswered poll); -> [(t_s, type, state)] of every event."""
    out = []
    for n, value in enumerate(values):
        t = n * step_s
        readings = [] if value is None else [r(value, t * S, pt)]
        _, events = alarms.on_poll(readings, value is not None, t * S)
        out += [(t, e.type, e.data.get("state")) for e in events if e.type not in ("online", "offline")]
    return out


def test_the_docstring_example_runs():
    assert doctest.testmod(edge_agent.field.alarms).failed == 0


# -- thresholds ----------------------------------------------------------------------------
@pytest.mark.parametrize("rule, values, expected", [
    # oscillating inside the band (2.9, 3.0] after a raise: one raise, no flapping
    (Threshold("level_m", above=3.0, hysteresis=0.1),
     [2.5, 3.05, 2.95, 3.05, 2.92, 3.2, 2.95, 2.85, 2.95, 3.01],
     [(10, "alarm", "raised"), (70, "alarm_clear", "cleared"), (90, "alarm", "raised")]),
    # exactly at the limit does not raise; exactly at limit - hysteresis clears
    (Threshold("level_m", above=3.0, hysteresis=0.5), [3.0, 3.5, 2.6, 2.5, 3.0],
     [(10, "alarm", "raised"), (30, "alarm_clear", "cleared")]),
    # no hysteresis: every crossing counts
    (Threshold("level_m", above=3.0), [3.1, 3.0, 3.1, 2.0],
     [(0, "alarm", "raised"), (10, "alarm_clear", "cleared"), (20, "alarm", "raised"), (30, "alarm_clear", "cleared")]),
    # below, mirrored: raise under 1.0, clear at >= 1.2
    (Threshold("level_m", below=1.0, hysteresis=0.2), [1.5, 0.9, 1.1, 0.5, 1.19, 1.2, 1.0, 0.99],
     [(10, "alarm", "raised"), (50, "alarm_clear", "cleared"), (70, "alarm", "raised")]),
    # both sides in one rule, each with its own state
    (Threshold("level_m", above=10, below=2, hysteresis=1), [5, 11, 9.5, 9, 1, 2.5, 3],
     [(10, "alarm", "raised"), (30, "alarm_clear", "cleared"), (40, "alarm", "raised"), (60, "alarm_clear", "cleared")]),
    # unanswered polls in between change nothing
    (Threshold("level_m", above=3.0, hysteresis=0.1), [3.5, None, None, 2.0],
     [(0, "alarm", "raised"), (30, "alarm_clear", "cleared")]),
])
def test_threshold(rule, values, expected):
    assert feed(DeviceAlarms(DEV, 10, [rule]), values) == expected


def test_threshold_event_data_and_classes():
    alarms = DeviceAlarms(DEV, 10, [Threshold("hr_bpm", above=120, hysteresis=5, prio=Priority.CRITICAL)])
    _, events = alarms.on_poll([r(131, 5 * S, pt="hr_bpm", data_class=DataClass.HEALTH)], True, 6 * S)
    alarm = events[-1]
    assert (alarm.dev, alarm.type, alarm.prio, alarm.ts) == (DEV, "alarm", Priority.CRITICAL, 5 * S)  # reading's time
    assert alarm.data == {"state": "raised", "rule": "hr_bpm_above", "point": "hr_bpm", "value": 131.0,
                          "direction": "above", "threshold": 120, "hysteresis": 5}
    assert alarm.classes["value"] is DataClass.HEALTH  # privacy treats it as it treats the reading
    assert all(alarm.classes[k] is DataClass.TELEMETRY for k in alarm.data if k != "value")
    json.dumps(alarm.to_wire())


@pytest.mark.parametrize("reading", [
    r(9.0, 0, q=Quality.BAD), r(9.0, 0, q=Quality.STALE), r(None, 0, q=Quality.BAD), r("9", 0), r(True, 0, ),
    r(float("nan"), 0), r(float("inf"), 0), r(9.0, 0, pt="other"),
])
def test_rules_ignore_what_is_not_a_good_number_of_their_point(reading):
    alarms = DeviceAlarms(DEV, 10, [Threshold("level_m", above=0.5), RateOfRise("level_m", per_minute=0.1)])
    _, events = alarms.on_poll([reading], True, 0)
    assert [e.type for e in events] == ["online"]


def test_a_bad_reading_neither_raises_nor_clears():
    alarms = DeviceAlarms(DEV, 10, [Threshold("level_m", above=3.0)])
    assert feed(alarms, [3.5]) == [(0, "alarm", "raised")]
    _, events = alarms.on_poll([r(0.0, 10 * S, q=Quality.BAD)], True, 10 * S)
    assert events == []


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.floats(min_value=-10, max_value=10), max_size=60),
       hysteresis=st.sampled_from([0.0, 0.1, 1.0, 5.0]))
def test_threshold_events_alternate_starting_with_raised(values, hysteresis):
    alarms = DeviceAlarms(DEV, 10, [Threshold("level_m", above=3.0, below=-3.0, hysteresis=hysteresis)])
    events = [e for n, v in enumerate(values) for e in alarms.on_poll([r(v, n * S)], True, n * S)[1]
              if e.type.startswith("alarm")]
    for side in ("above", "below"):
        states = [e.data["state"] for e in events if e.data["direction"] == side]
        assert states == ["raised", "cleared"] * (len(states) // 2) + ["raised"] * (len(states) % 2)


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.floats(min_value=2.91, max_value=100), min_size=1, max_size=60))
def test_hovering_inside_the_band_raises_at_most_once(values):
    alarms = DeviceAlarms(DEV, 10, [Threshold("level_m", above=3.0, hysteresis=0.1)])
    types = [e.type for n, v in enumerate(values) for e in alarms.on_poll([r(v, n * S)], True, n * S)[1]]
    assert types.count("alarm") == (max(values) > 3.0) and "alarm_clear" not in types


# -- rate of rise --------------------------------------------------------------------------
RISE = RateOfRise("level_m", per_minute=0.2, window_s=60)


def ramp(rate_per_min, seconds, step_s=5, start=2.0):
    return [start + rate_per_min * t / 60 for t in range(0, seconds, step_s)]


NOISE_ALTERNATING = [2.0 + 0.25 * (n % 2) for n in range(48)]
NOISE_THREE_STEP = [2.0 + 0.125 * (n % 3) for n in range(48)]


@pytest.mark.parametrize("name, values, step_s, expected", [
    # 0.5 m/min: fires at 30 s, the first moment the window holds >= 3 readings over >= 30 s
    ("steady rise", ramp(0.5, 120), 5, [(30, "alarm", "raised")]),
    ("steady rise, 10 s polls", ramp(0.5, 120, 10), 10, [(30, "alarm", "raised")]),
    ("slow rise under the rate", ramp(0.15, 300), 5, []),
    # no trend, the amplitude the 0.5 m/min rise makes over the 30 s it needs to be judged
    ("alternating noise", NOISE_ALTERNATING, 5, []),
    ("three-step noise", NOISE_THREE_STEP, 5, []),
    ("a falling level", ramp(-0.5, 120), 5, []),
    # steep, but never 3 readings within the window: never enough to judge
    ("sparse polls", ramp(0.5, 400, 40), 40, []),
    # rise for 60 s then flat: one raise, one clear, nothing more
    ("rise then stop", ramp(0.5, 60) + [2.5] * 24, 5, [(30, "alarm", "raised"), (95, "alarm_clear", "cleared")]),
])
def test_rate_of_rise(name, values, step_s, expected):
    assert feed(DeviceAlarms(DEV, step_s, [RISE]), values, step_s) == expected


@pytest.mark.parametrize("noise", [NOISE_ALTERNATING, NOISE_THREE_STEP])
def test_first_last_difference_would_have_fired_on_the_noise(noise):
    """Why the rule fits a line: the two-sample difference over the same windows crosses 0.2."""
    step_ms, window_ms = 5 * S, 60 * S
    worst = 0.0
    for end in range(6, len(noise)):  # every window spanning >= 30 s, as the rule judges them
        start = max(0, end - 11)
        worst = max(worst, (noise[end] - noise[start]) / ((end - start) * step_ms) * window_ms)
    assert worst > RISE.per_minute


def test_rate_of_rise_is_not_judged_before_enough_readings():
    # 0.5 m/min from the first reading, but the window spans 25 s at most before 30 s
    assert feed(DeviceAlarms(DEV, 5, [RISE]), ramp(0.5, 30), 5) == []
    assert feed(DeviceAlarms(DEV, 5, [RISE]), ramp(0.5, 35), 5) == [(30, "alarm", "raised")]


def test_rate_alarm_holds_down_to_80_percent_of_the_rate():
    # 0.5 m/min for a minute, then 0.18 m/min: under the trigger (0.2), above the clear (0.16)
    values = ramp(0.5, 60) + [2.5 + 0.18 * t / 60 for t in range(5, 300, 5)]
    assert feed(DeviceAlarms(DEV, 5, [RISE]), values, 5) == [(30, "alarm", "raised")]
    assert 0.2 * RATE_CLEAR_FACTOR < 0.18 < 0.2


def test_rate_event_data():
    alarms = DeviceAlarms(DEV, 5, [RateOfRise("level_m", per_minute=0.2, name="flood")])
    events = [e for t in range(0, 35, 5) for e in alarms.on_poll([r(2.0 + 0.5 * t / 60, t * S)], True, t * S)[1]]
    alarm = events[-1]
    assert (alarm.type, alarm.prio, alarm.ts) == ("alarm", Priority.CRITICAL, 30 * S)
    assert alarm.data == {"state": "raised", "rule": "flood", "point": "level_m", "value": 2.25,
                          "rate_per_min": 0.5, "threshold_per_min": 0.2, "window_s": 60}
    json.dumps(alarm.to_wire())


def test_bad_readings_stay_out_of_the_rate_window():
    # the bad readings would make a steep rise if counted; the good ones are flat
    alarms = DeviceAlarms(DEV, 5, [RISE])
    events = []
    for n in range(24):
        q, val = (Quality.BAD, 50.0 + n) if n % 2 else (Quality.GOOD, 2.0)
        events += alarms.on_poll([r(val, n * 5 * S, q=q)], True, n * 5 * S)[1]
    assert [e.type for e in events] == ["online"]


def test_a_clock_step_back_restarts_the_window():
    alarms = DeviceAlarms(DEV, 5, [RISE])
    for t in range(0, 30, 5):
        alarms.on_poll([r(2.0 + t / 60, (1000 + t) * S)], True, (1000 + t) * S)
    _, events = alarms.on_poll([r(2.6, 10 * S)], True, 10 * S)  # clock stepped back ~1000 s
    assert events == []  # judged on one reading, not on times that no longer compare


# -- stale, online/offline -----------------------------------------------------------------
@pytest.mark.parametrize("polls, expected", [
    # (t_s, quality or None for an unanswered poll); stale after 3 intervals + 0.5 of grace
    ([(0, "good"), (10, "bad"), (20, "bad"), (30, "bad"), (40, "bad"), (50, "good"), (60, "good")],
     [(40, "stale"), (50, "fresh")]),
    ([(0, "good"), (10, None), (20, None), (30, None), (40, None)], [(40, "stale")]),  # silence is not good
    # a late poll: the gap is seen before its good reading, ticks or not
    ([(0, "good"), (10, None), (20, None), (29, "bad"), (36, "good")], [(36, "stale"), (36, "fresh")]),
    ([(0, "bad"), (10, "bad"), (20, "bad"), (30, "bad"), (40, "bad")], [(40, "stale")]),  # never good: from the start
    # two failed polls, the third good but late by its jitter: no stale
    ([(0, "good"), (10, "good"), (20, "bad"), (30, "bad"), (40.2, "good"), (50, "good")], []),
])
def test_stale(polls, expected):
    alarms = DeviceAlarms(DEV, 10, [Stale(after_intervals=3)])
    got = []
    for t, q in polls:
        readings = [] if q is None else [r(1.0, int(t * S), q=Quality(q))]
        got += [(e.ts // S, e.type) for e in alarms.on_poll(readings, q is not None, int(t * S))[1]
                if e.type in ("stale", "fresh")]
    assert got == expected


def test_stale_between_polls_by_tick():
    alarms = DeviceAlarms(DEV, 10, [Stale(after_intervals=3, prio=Priority.CRITICAL)])
    alarms.on_poll([r(1.0, 0)], True, 0)
    assert alarms.tick(34_999) == []
    [stale] = alarms.tick(35_000)
    assert (stale.type, stale.prio, stale.ts) == ("stale", Priority.CRITICAL, 35_000)
    assert stale.data == {"state": "raised", "intervals": 3, "last_good_ts": 0}
    assert alarms.tick(40_000) == [] and alarms.tick(90_000) == []  # once
    _, events = alarms.on_poll([r(1.0, 95_000)], True, 95_000)
    assert [(e.type, e.data) for e in events] == [("fresh", {"state": "cleared"})]


def test_stale_after_a_clock_step_back_waits_from_the_new_time():
    alarms = DeviceAlarms(DEV, 10, [Stale()])
    alarms.on_poll([r(1.0, 1_000_000)], True, 1_000_000)
    assert alarms.tick(100_000) == []  # the clock stepped back 900 s: the wait restarts here
    assert alarms.tick(134_999) == [] and [e.type for e in alarms.tick(135_000)] == ["stale"]


def test_no_stale_rule_no_stale_events():
    alarms = DeviceAlarms(DEV, 10, [])
    assert alarms.tick(0) == [] and alarms.tick(10**9) == []


@pytest.mark.parametrize("answers, expected", [
    ("YNNNNNY", [(0, "online"), (30, "offline"), (60, "online")]),
    ("NNNY", [(20, "offline"), (30, "online")]),  # never answered: offline after 3 as well
    ("YNNYNNY", [(0, "online")]),  # two failures then an answer: the count starts again
    ("YYYY", [(0, "online")]),
])
def test_online_offline(answers, expected):
    alarms = DeviceAlarms(DEV, 10, [], offline_after=3)
    got = []
    for n, a in enumerate(answers):
        got += [(e.ts // S, e.type) for e in alarms.on_poll([], a == "Y", n * 10 * S)[1]]
    assert got == expected


def test_link_event_data():
    alarms = DeviceAlarms(DEV, 10, [], offline_after=2)
    [first] = alarms.on_poll([], True, 0)[1]
    alarms.on_poll([], False, 10 * S)
    [offline] = alarms.on_poll([], False, 20 * S, clk_synced=False)[1]
    [again] = alarms.on_poll([], True, 30 * S)[1]
    assert (first.data, offline.data, again.data) == (
        {"state": "online", "first": True}, {"state": "offline", "failed_polls": 2}, {"state": "online", "first": False})
    assert offline.prio is Priority.HIGH and offline.to_wire()["clk"] == "unsynced"


# -- reporting -----------------------------------------------------------------------------
def reported(report, values, step_s=10):
    """-> [(t_s, val)] of the readings that pass; a value may be (val, quality)."""
    alarms = DeviceAlarms(DEV, step_s, [], report)
    out = []
    for n, v in enumerate(values):
        val, q = v if isinstance(v, tuple) else (v, Quality.GOOD)
        passed, _ = alarms.on_poll([r(val, n * step_s * S, q=q)], True, n * step_s * S)
        out += [(p.ts // S, p.val) for p in passed]
    return out


BAD = Quality.BAD
ON_CHANGE = Report("on_change", deadband=2)


@pytest.mark.parametrize("report, values, expected", [
    (Report(), [1, 1, 1, 2], [(0, 1), (10, 1), (20, 1), (30, 2)]),  # every poll
    # deadband 2 against the last *reported* value: a slow drift still gets through
    (ON_CHANGE, [10, 11, 12, 13, 15, 14, 10], [(0, 10), (30, 13), (60, 10)]),
    (ON_CHANGE, [10, 11, 12, 13.5, 12, 12, 11.4], [(0, 10), (30, 13.5), (60, 11.4)]),
    # bad readings always pass; the good one after them passes on the quality change
    (ON_CHANGE, [10, (None, BAD), (None, BAD), 10, 10], [(0, 10), (10, None), (20, None), (30, 10)]),
    (ON_CHANGE, [10, (10, Quality.STALE), 10], [(0, 10), (10, 10), (20, 10)]),
    # non-numbers pass when they change, whatever the deadband
    (ON_CHANGE, ["open", "open", "closed", "closed", "open"], [(0, "open"), (20, "closed"), (40, "open")]),
    (ON_CHANGE, [True, True, False], [(0, True), (20, False)]),
    # heartbeat: one reading per 60 s at least, counted from the last one reported
    (Report("on_change", deadband=1, heartbeat_s=60), [5] * 14, [(0, 5), (60, 5), (120, 5)]),
    (Report("on_change", deadband=1, heartbeat_s=60), [5, 5, 7, 7, 7, 7, 7, 7, 7, 7],
     [(0, 5), (20, 7), (80, 7)]),
])
def test_report(report, values, expected):
    assert reported(report, values) == expected


def test_report_per_point_unlisted_points_every_poll():
    alarms = DeviceAlarms(DEV, 10, [], {"level_m": Report("on_change", deadband=1)})
    got = []
    for n in range(3):
        passed, _ = alarms.on_poll([r(1.0, n * S), r(20.0, n * S, pt="temp_C")], True, n * S)
        got += [(p.pt, p.ts) for p in passed]
    assert got == [("level_m", 0), ("temp_C", 0), ("temp_C", 1000), ("temp_C", 2000)]


def test_alarms_see_readings_the_report_filter_holds_back():
    alarms = DeviceAlarms(DEV, 10, [Threshold("level_m", above=3.0)], Report("on_change", deadband=5))
    alarms.on_poll([r(2.9, 0)], True, 0)
    passed, events = alarms.on_poll([r(3.1, 10 * S)], True, 10 * S)
    assert passed == [] and [e.type for e in events] == ["alarm"]


# -- construction --------------------------------------------------------------------------
@pytest.mark.parametrize("make", [  # the rules' own checks: tests/test_rules.py
    lambda: DeviceAlarms(DEV, 0, []),
    lambda: DeviceAlarms(DEV, 10, [], offline_after=0),
    lambda: DeviceAlarms(DEV, 10, [Stale(), Stale()]),
    lambda: DeviceAlarms(DEV, 10, ["level_m > 3"]),
])
def test_bad_device_alarms_fail_at_construction(make):
    with pytest.raises(ValueError):
        make()
