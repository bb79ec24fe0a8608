"""The alarm and report rules (``edge_agent/rules.py``): every check at construction, with a
message naming the rule; rules are frozen; ``Report.passes`` decides what a report filter keeps.
How ``DeviceAlarms`` applies them: tests/field/test_alarms.py."""

from __future__ import annotations

import dataclasses

import pytest

from edge_agent.model import Priority, Quality, Reading
from edge_agent.rules import RateOfRise, Report, Stale, Threshold, finite


@pytest.mark.parametrize("make, message", [
    (lambda: Threshold("level_m"), "threshold on 'level_m': needs above, below or both"),
    (lambda: Threshold("level_m", above=1, below=2), "threshold on 'level_m': below must be lower than above"),
    (lambda: Threshold("level_m", above=1, hysteresis=-0.1), "threshold on 'level_m': hysteresis must be >= 0"),
    (lambda: Threshold("level_m", above=float("nan")), "threshold on 'level_m': above must be a finite number"),
    (lambda: Threshold("", above=1), "threshold on '': needs a point name"),
    (lambda: Threshold("level_m", above=1, prio="critical"),
     "threshold on 'level_m': prio must be a Priority, not 'critical'"),
    (lambda: RateOfRise("level_m", per_minute=0), "rate of rise on 'level_m': per_minute must be > 0"),
    (lambda: RateOfRise("level_m", per_minute=0.2, window_s=0), "rate of rise on 'level_m': window_s must be > 0"),
    (lambda: Stale(after_intervals=0), "stale: after_intervals must be a whole number >= 1"),
    (lambda: Stale(after_intervals=2.5), "stale: after_intervals must be a whole number >= 1"),
    (lambda: Report("sometimes"), "report: mode is 'every_poll' or 'on_change'"),
    (lambda: Report("on_change", deadband=-1), "report: deadband must be >= 0"),
    (lambda: Report("on_change", heartbeat_s=0), "report: heartbeat_s must be > 0"),
])
def test_bad_rules_fail_at_construction_naming_the_rule(make, message):
    with pytest.raises(ValueError) as caught:
        make()
    assert str(caught.value) == message


def test_rules_are_frozen_values():
    rule = Threshold("level_m", above=3.0, hysteresis=0.1, prio=Priority.CRITICAL)
    with pytest.raises(dataclasses.FrozenInstanceError):
        rule.above = 4.0  # type: ignore[misc]
    assert rule == Threshold("level_m", above=3.0, hysteresis=0.1, prio=Priority.CRITICAL)
    assert RateOfRise("level_m", 0.2).prio is Priority.CRITICAL and Stale().after_intervals == 3


@pytest.mark.parametrize("value, expected", [
    (1, 1.0), (2.5, 2.5), (True, None), ("3", None), (None, None), (float("inf"), None), (float("nan"), None),
])
def test_finite(value, expected):
    assert finite(value) == expected


def at(val, ts, q=Quality.GOOD):
    return Reading("river-1", "level_m", val, ts, q)


@pytest.mark.parametrize("report, reading, last, passes", [
    (Report(), at(1.0, 10_000), at(1.0, 0), True),  # every poll
    (Report("on_change", deadband=1), at(1.0, 0), None, True),  # a point's first reading
    (Report("on_change", deadband=1), at(1.5, 10_000), at(1.0, 0), False),  # within the deadband
    (Report("on_change", deadband=1), at(2.5, 10_000), at(1.0, 0), True),  # past it
    (Report("on_change", deadband=1), at(None, 10_000, Quality.BAD), at(1.0, 0), True),  # not good
    (Report("on_change", deadband=1), at(1.0, 10_000), at(1.0, 0, Quality.BAD), True),  # quality changed
    (Report("on_change"), at("open", 10_000), at("open", 0), False),  # not a number: unchanged
    (Report("on_change"), at("closed", 10_000), at("open", 0), True),  # changed
    (Report("on_change", deadband=1, heartbeat_s=60), at(1.0, 60_000), at(1.0, 0), True),  # heartbeat
    (Report("on_change", deadband=1, heartbeat_s=60), at(1.0, 59_000), at(1.0, 0), False),
    (Report("on_change", deadband=1, heartbeat_s=60), at(1.0, 0), at(1.0, 10_000), True),  # clock stepped back
])
def test_report_passes(report, reading, last, passes):
    assert report.passes(reading, last) is passes
