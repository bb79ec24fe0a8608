"""The ``alarms``, ``report`` and ``offline_after`` keys of one device, read into ``rules`` objects.

Called by ``devices`` for every device; problems go to the same ``Report`` with the same
``FILE:LINE: key.path: message`` form. A rule's kind is told by its keys: ``above``/``below``
make a ``Threshold``, ``rise_per_minute`` a ``RateOfRise``, ``stale_after`` a ``Stale``; one
rule is one kind. Point names are checked against what the device publishes. No I/O here.
"""

from __future__ import annotations

from typing import Any, Sequence

from ..model import Priority
from ..rules import RateOfRise, Report as ReportFilter, Stale, Threshold
from .source import Report, Section, choice, did_you_mean, duration, identifier, integer, number

__all__ = ["ALARM_KEYS", "AlarmConfig", "read_alarm_config"]

ALARM_KEYS = ("alarms", "report", "offline_after")  # the device keys read here
PRIOS = ("critical", "high")
_RULE_KEYS = ("point", "above", "below", "hysteresis", "rise_per_minute", "window", "stale_after", "prio", "name")
_KIND_KEYS = {"threshold": ("above", "below", "hysteresis"), "rate": ("rise_per_minute", "window"),
              "stale": ("stale_after",)}
_KIND_NAMES = {"threshold": "above/below (a threshold)", "rate": "rise_per_minute (a rate of rise)",
               "stale": "stale_after (stale data)"}

AlarmConfig = tuple[tuple[Threshold | RateOfRise | Stale, ...], ReportFilter, int | None]


def read_alarm_config(report: Report, s: Section, known: list[str] | None,
                      internal: Sequence[str] = ()) -> AlarmConfig:
    """(rules, report filter, offline_after or None) of the device section ``s``. ``known`` is the list
    of published point names, or None when the driver or its points are broken (already
    reported): point names are then not checked."""
    rules = _rules(report, s, known, set(internal))
    return rules, _report_filter(s), s.get("offline_after", integer(1, 1000, "unanswered polls in a row"), None)


def _rules(report: Report, s: Section, known: list[str] | None, internal: set[str]) -> tuple:
    items = s.items("alarms")
    out: list = []
    stale_line: int | None = None
    for i, node in enumerate(items or ()):
        r = Section.of(report, node, f"{s.sub('alarms')}[{i}]", node.line, _RULE_KEYS)
        if r is None:
            continue
        mark = report.mark()
        rule = _rule(report, r, known, internal)
        if rule is None or report.since(mark):
            continue
        if isinstance(rule, Stale):
            if stale_line is not None:
                report.add(r.line, r.path, f"one stale rule per device at most (first at line {stale_line})")
                continue
            stale_line = r.line
        out.append(rule)
    return tuple(out)


def _rule(report: Report, r: Section, known: list[str] | None, internal: set[str]) -> Any:
    kinds = [k for k, keys in _KIND_KEYS.items() if any(r.given(key) for key in keys)]
    if not kinds:
        report.add(r.line, r.path, "needs above or below (a threshold), rise_per_minute (a rate of rise) "
                                   "or stale_after (stale data)")
        return None
    if len(kinds) > 1:
        second = next(key for key in _RULE_KEYS if key in _KIND_KEYS[kinds[1]] and r.given(key))
        report.add(r.line_of(second), r.sub(second), f"one rule is one kind: give {_KIND_NAMES[kinds[0]]} or "
                   f"{_KIND_NAMES[kinds[1]]}, not both (write two rules)")
        return None
    kind = kinds[0]
    mark = report.mark()  # a rule with a problem already reported is not built: its own check would repeat it
    prio_text = r.get("prio", choice(PRIOS, "prio"), None)
    prio = Priority.parse(prio_text) if prio_text else None
    if kind == "stale":
        for key in ("point", "name"):
            if r.given(key):
                report.add(r.line_of(key), r.sub(key), "does not apply to stale_after: it watches the whole device")
        after = r.get("stale_after", integer(1, 1000, "poll intervals without a good reading"))
        return _build(report, r, Stale, after_intervals=after, **({"prio": prio} if prio else {}))
    point = _point(report, r, known, internal)
    name = r.get("name", identifier("it names the alarm in events"), None)
    extra: dict[str, Any] = {"name": name, **({"prio": prio} if prio else {})}
    if kind == "threshold":
        above, below = r.get("above", number, None), r.get("below", number, None)
        hysteresis = r.get("hysteresis", number, 0.0)
        if hysteresis is not None and hysteresis < 0:
            report.add(r.line_of("hysteresis"), r.sub("hysteresis"), f"{hysteresis:g} is negative; it must be >= 0")
        if above is not None and below is not None and below >= above:
            report.add(r.line_of("below"), r.sub("below"), f"must be lower than above ({above:g})")
        if report.since(mark):
            return None
        return _build(report, r, Threshold, point=point, above=above, below=below, hysteresis=hysteresis, **extra)
    rise = r.get("rise_per_minute", number)
    if rise is not None and rise <= 0:
        report.add(r.line_of("rise_per_minute"), r.sub("rise_per_minute"), f"{rise:g} must be > 0 (units per minute)")
    window = r.get("window", duration(1, 86400), 60.0)
    if report.since(mark):
        return None
    return _build(report, r, RateOfRise, point=point, per_minute=rise, window_s=window, **extra)


def _point(report: Report, r: Section, known: list[str] | None, internal: set[str]) -> str | None:
    point = r.get("point", identifier())
    if point is None or known is None or point in known:
        return point
    if point in internal:
        why = f"'{point}' is an internal point: it is never published, so no alarm can watch it"
    else:
        why = f"unknown point '{point}'" + (did_you_mean(point, known) or
                                            f" (the device publishes: {', '.join(known) or 'nothing'})")
    report.add(r.line_of("point"), r.sub("point"), why)
    return None


def _build(report: Report, r: Section, cls: type, **fields: Any) -> Any:
    """The rule, unless a field is already reported (None) or the rule's own check refuses it."""
    if any(v is None for k, v in fields.items() if k not in ("above", "below", "name")):
        return None
    try:
        return cls(**fields)
    except ValueError as exc:  # a check of rules.py not mirrored above: still a located problem
        report.add(r.line, r.path, str(exc))
        return None


def _report_filter(s: Section) -> ReportFilter:
    p = s.section("report", ("mode", "deadband", "heartbeat"))
    if p is None:
        return ReportFilter()
    mark = p.report.mark()
    mode = p.get("mode", choice(("every_poll", "on_change"), "mode"), "every_poll")
    deadband = p.get("deadband", number, 0.0)
    heartbeat = p.get("heartbeat", duration(1, 7 * 86400), None)
    if deadband is not None and deadband < 0:
        p.report.add(p.line_of("deadband"), p.sub("deadband"), f"{deadband:g} is negative; it must be >= 0")
    if mode == "every_poll":
        for key in ("deadband", "heartbeat"):
            if p.given(key):
                p.report.add(p.line_of(key), p.sub(key), "only applies to mode on_change (every_poll sends every reading)")
    if p.report.since(mark):
        return ReportFilter()
    return ReportFilter(mode, deadband, heartbeat)
