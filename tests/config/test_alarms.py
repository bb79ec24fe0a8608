"""A device's ``alarms``, ``report`` and ``offline_after`` (``config/alarms.py``), read through the
config loader as ``edge-agent check`` reads them: each rule kind with its defaults, and each
mistake as the located line a user sees (``FILE:LINE: key.path: problem``).

How the rules then behave on readings is in ``tests/field/test_alarms.py``; the three alarm
folders under ``cases/`` (bad prio, two kinds in one rule, unknown point) are not repeated here.
"""

from __future__ import annotations

import pytest

from edge_agent.config.schema import ConfigError, parse_settings
from edge_agent.model import Priority
from edge_agent.rules import RateOfRise, Report, Stale, Threshold
from edge_agent.settings import DeviceSettings

HEAD = """\
gateway: {id: gw-001, site: demo-site}
mqtt: {host: 127.0.0.1}
buses: [{name: rs485-1, protocol: modbus-rtu, serial: /dev/ttyUSB0}]
devices:
  - name: river-1
    bus: rs485-1
    driver: qdy_level
    address: 1
"""  # the device's own keys follow from line 9; qdy_level publishes level_m (decimals is internal)


def device(keys: str) -> DeviceSettings:
    return parse_settings(HEAD + keys, source="site.yaml").devices[0]


def problems(keys: str, head: str = HEAD) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        parse_settings(head + keys, source="site.yaml")
    return [str(p) for p in raised.value.problems]


# -- each kind, told by its keys, with its defaults ---------------------------------------------------
def test_above_or_below_make_a_threshold_high_by_default_without_hysteresis() -> None:
    d = device("""\
    alarms:
      - {point: level_m, above: 3.0}
      - {point: level_m, below: 0.2, hysteresis: 0.05, prio: critical, name: dry_intake}
      - {point: level_m, above: 4, below: -0.5}
""")
    assert d.alarms == (
        Threshold("level_m", above=3.0),
        Threshold("level_m", below=0.2, hysteresis=0.05, prio=Priority.CRITICAL, name="dry_intake"),
        Threshold("level_m", above=4.0, below=-0.5),
    )
    assert d.alarms[0].prio is Priority.HIGH and d.alarms[0].hysteresis == 0.0


def test_rise_per_minute_makes_a_rate_of_rise_critical_by_default_over_a_minute() -> None:
    d = device("""\
    alarms:
      - {point: level_m, rise_per_minute: 0.2}
      - {point: level_m, rise_per_minute: 0.05, window: 5m, prio: high, name: slow_rise}
""")
    assert d.alarms == (RateOfRise("level_m", per_minute=0.2, window_s=60.0, prio=Priority.CRITICAL),
                        RateOfRise("level_m", per_minute=0.05, window_s=300.0, prio=Priority.HIGH, name="slow_rise"))


def test_stale_after_makes_a_stale_rule_for_the_whole_device() -> None:
    assert device("    alarms: [{stale_after: 3}]\n").alarms == (Stale(3, Priority.HIGH),)
    assert device("    alarms: [{stale_after: 10, prio: critical}]\n").alarms == (Stale(10, Priority.CRITICAL),)


def test_the_rules_keep_the_order_they_were_written_in() -> None:
    d = device("""\
    alarms:
      - {stale_after: 3}
      - {point: level_m, rise_per_minute: 0.2}
      - {point: level_m, above: 3.0}
""")
    assert [type(rule) for rule in d.alarms] == [Stale, RateOfRise, Threshold]


@pytest.mark.parametrize("keys", ["", "    alarms: []\n    report:\n", "    alarms:\n    report: {}\n"],
                         ids=["absent", "empty list, null report", "null list, empty report"])
def test_without_rules_every_poll_is_reported_and_offline_after_is_unset(keys: str) -> None:
    d = device(keys)
    assert (d.alarms, d.report, d.offline_after) == ((), Report(), None)


def test_report_on_change_with_deadband_and_heartbeat_and_offline_after() -> None:
    d = device("    report: {mode: on_change, deadband: 0.01, heartbeat: 10m}\n    offline_after: 5\n")
    assert d.report == Report("on_change", 0.01, 600.0) and d.offline_after == 5
    assert device("    report: {mode: on_change}\n").report == Report("on_change", 0.0, None)


def test_a_generic_devices_rules_name_its_declared_points() -> None:
    head = HEAD.replace("""\
  - name: river-1
    bus: rs485-1
    driver: qdy_level
    address: 1
""", """\
  - name: pump-1
    bus: rs485-1
    driver: modbus_generic
    address: 2
    points:
      - {name: flow_m3h, reg: input, address: 0, type: float32}
      - {name: raw_status, reg: input, address: 2, type: uint16, internal: true}
""")
    rules = "    alarms:\n      - {point: flow_m3h, above: 100}\n"
    assert parse_settings(head + rules).devices[0].alarms == (Threshold("flow_m3h", above=100.0),)
    assert problems(rules + "      - {point: raw_status, above: 1}\n      - {point: flow, above: 1}\n",
                    head=head) == [
        "site.yaml:14: devices[0].alarms[1].point: 'raw_status' is an internal point: it is never published, "
        "so no alarm can watch it",
        "site.yaml:15: devices[0].alarms[2].point: unknown point 'flow' (did you mean 'flow_m3h'?)",
    ]


# -- mistakes, located -----------------------------------------------------------------------------
@pytest.mark.parametrize(("keys", "expected"), [
    pytest.param("    alarms:\n      - {point: level_m}\n", [
        "site.yaml:10: devices[0].alarms[0]: needs above or below (a threshold), rise_per_minute (a rate of rise) "
        "or stale_after (stale data)"], id="no kind"),
    pytest.param("    alarms:\n      - {point: level_m, below: 1, stale_after: 3}\n", [
        "site.yaml:10: devices[0].alarms[0].stale_after: one rule is one kind: give above/below (a threshold) or "
        "stale_after (stale data), not both (write two rules)"], id="threshold and stale"),
    pytest.param("    alarms:\n      - point: level_m\n        above: 3.0\n\n        rise_per_minute: 0.2\n", [
        "site.yaml:13: devices[0].alarms[0].rise_per_minute: one rule is one kind: give above/below (a threshold) or "
        "rise_per_minute (a rate of rise), not both (write two rules)"], id="two kinds, at the second's line"),
    pytest.param("    alarms:\n      - {stale_after: 2, point: level_m, name: x}\n", [
        "site.yaml:10: devices[0].alarms[0].point: does not apply to stale_after: it watches the whole device",
        "site.yaml:10: devices[0].alarms[0].name: does not apply to stale_after: it watches the whole device"],
        id="stale with a point"),
    pytest.param("    alarms:\n      - {stale_after: 2}\n      - {point: level_m, above: 1}\n      - {stale_after: 4}\n", [
        "site.yaml:12: devices[0].alarms[2]: one stale rule per device at most (first at line 10)"],
        id="two stale rules"),
    pytest.param("    alarms:\n      - {stale_after: 0}\n", [
        "site.yaml:10: devices[0].alarms[0].stale_after: 0 is outside 1..1000 (poll intervals without a good "
        "reading)"], id="stale_after 0"),
    pytest.param("    alarms:\n      - {point: level_m, rise_per_minute: 1, window: 30}\n", [
        "site.yaml:10: devices[0].alarms[0].window: has no time unit (did you mean '30s'?)"], id="bare window"),
    pytest.param("    alarms:\n      - {point: level_m, rise_per_minute: 1, window: 2d}\n", [
        "site.yaml:10: devices[0].alarms[0].window: 2d is outside 1s..1d"], id="window too long"),
    pytest.param("    alarms:\n      - {point: level_m, above: .inf}\n", [
        "site.yaml:10: devices[0].alarms[0]: threshold on 'level_m': above must be a finite number"],
        id="infinite limit (the rule's own check, located)"),
    pytest.param("    alarms:\n      - {point: level_m, hysteresis: 0.1}\n", [
        "site.yaml:10: devices[0].alarms[0]: threshold on 'level_m': needs above, below or both"],
        id="hysteresis alone"),
    pytest.param("    alarms:\n      - {point: level_m, rise_per_minute: .nan}\n", [
        "site.yaml:10: devices[0].alarms[0]: rate of rise on 'level_m': per_minute must be > 0"], id="NaN rise"),
    pytest.param("    alarms:\n      - {point: flow, above: 1}\n", [
        "site.yaml:10: devices[0].alarms[0].point: unknown point 'flow' (the device publishes: level_m)"],
        id="unknown point, nothing close"),
    pytest.param("    alarms:\n      - {point: level_m, abve: 1, above: 2}\n", [
        "site.yaml:10: devices[0].alarms[0].abve: unknown key 'abve' (did you mean 'above'?)"], id="unknown key"),
    pytest.param("    alarms:\n      - {point: level_m, above: 1, name: 'high water'}\n", [
        "site.yaml:10: devices[0].alarms[0].name: 'high water' may only use letters, digits, '_', '.' and '-' "
        "(it names the alarm in events)"], id="name with a space"),
    pytest.param("    alarms:\n      - above 3\n", [
        "site.yaml:10: devices[0].alarms[0]: expected a mapping, got a string ('above 3')"], id="rule not a mapping"),
    pytest.param("    alarms: {point: level_m, above: 3}\n", [
        "site.yaml:9: devices[0].alarms: expected a list, got a mapping"], id="alarms not a list"),
    pytest.param("    report: {deadband: 0.01, heartbeat: 10m}\n", [
        "site.yaml:9: devices[0].report.deadband: only applies to mode on_change (every_poll sends every reading)",
        "site.yaml:9: devices[0].report.heartbeat: only applies to mode on_change (every_poll sends every reading)"],
        id="on_change keys without on_change"),
    pytest.param("    report: {mode: onchange, deadband: -1, heartbeat: 30, every: 1}\n", [
        "site.yaml:9: devices[0].report.every: unknown key 'every' (expected one of: mode, deadband, heartbeat)",
        "site.yaml:9: devices[0].report.mode: unknown mode 'onchange' (did you mean 'on_change'?)",
        "site.yaml:9: devices[0].report.heartbeat: has no time unit (did you mean '30s'?)",
        "site.yaml:9: devices[0].report.deadband: -1 is negative; it must be >= 0"], id="report, all at once"),
    pytest.param("    report: {mode: on_change, heartbeat: 8d}\n", [
        "site.yaml:9: devices[0].report.heartbeat: 8d is outside 1s..7d"], id="heartbeat too long"),
    pytest.param("    report: on_change\n", [
        "site.yaml:9: devices[0].report: expected a mapping, got a string ('on_change')"], id="report not a mapping"),
    pytest.param("    offline_after: 0\n", [
        "site.yaml:9: devices[0].offline_after: 0 is outside 1..1000 (unanswered polls in a row)"],
        id="offline_after 0"),
    pytest.param("    offline_after: '3'\n", [
        "site.yaml:9: devices[0].offline_after: expected an integer, got a string ('3')"], id="offline_after text"),
])
def test_a_mistake_is_named_at_its_line_with_its_fix(keys: str, expected: list[str]) -> None:
    assert problems(keys) == expected


def test_every_rule_is_checked_not_only_the_first_wrong_one() -> None:
    found = problems("""\
    alarms:
      - {point: level_m}
      - {point: levl_m, above: 1}
      - {point: level_m, rise_per_minute: 1, window: 30}
      - {point: level_m, above: 2}
    offline_after: 0
""")
    assert [line.split(": ")[1] for line in found] == ["devices[0].alarms[0]", "devices[0].alarms[1].point",
                                                       "devices[0].alarms[2].window", "devices[0].offline_after"]
    assert "(did you mean 'level_m'?)" in found[1]


def test_point_names_are_not_checked_when_the_driver_itself_is_wrong() -> None:
    """An unknown driver publishes nothing known: one problem, the driver's, not one per rule."""
    found = problems("    alarms:\n      - {point: anything, above: 1}\n",
                     head=HEAD.replace("driver: qdy_level", "driver: qdy_levl"))
    assert found == ["site.yaml:7: devices[0].driver: unknown driver 'qdy_levl' (did you mean 'qdy_level'?)"]


# -- each mistake once (it was reported twice) ------------------------------------------------------
@pytest.mark.parametrize(("rule", "expected"), [
    ("{point: level_m, above: 1, hysteresis: -0.1}",
     "site.yaml:10: devices[0].alarms[0].hysteresis: -0.1 is negative; it must be >= 0"),
    ("{point: level_m, above: 1, below: 2}",
     "site.yaml:10: devices[0].alarms[0].below: must be lower than above (1)"),
    ("{point: level_m, rise_per_minute: 0}",
     "site.yaml:10: devices[0].alarms[0].rise_per_minute: 0 must be > 0 (units per minute)"),
    ("{point: level_m, above: '3'}",
     "site.yaml:10: devices[0].alarms[0].above: expected a number, got a string ('3')"),
], ids=["negative hysteresis", "below not under above", "zero rise", "limit not a number"])
def test_each_mistake_is_reported_once(rule: str, expected: str) -> None:
    assert problems(f"    alarms:\n      - {rule}\n") == [expected]
