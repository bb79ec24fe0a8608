"""The ``commands`` section and each device's ``writable`` mapping, read into ``settings`` objects.

Called by ``schema`` (the section) and ``devices`` (``writable``); problems go to the same
``Report`` in the same ``FILE:LINE: key.path: message`` form. No I/O: a trusted key file is only
named here; the daemon loads it at start and refuses to run when it is missing (like the
privacy key files).

``commands`` (off when absent; see ``CommandSettings``)::

    commands:
      keys:                                   # platform keys whose signatures are accepted
        - {id: platform-2026, public_key_file: keys/platform-2026.pub}
      ops: [agent.ping, device.poll, device.write, config.apply, buffer.replay]
      max_bytes: 16KiB      rollback_after: 2m      config_backups: 5
      max_skew: 5m          max_lifetime: 1h        replay_rate: 2000
      unsigned:                               # ops a dialect's unsigned command may run (default none)
        thingsboard: [agent.ping, device.poll]
        sparkplug: [device.write]

``writable`` (per device; nothing is writable unless listed)::

    writable:
      barrier: [open, close]                  # one of these values
      setpoint_C: {min: 5, max: 30}           # a number in this range

A listed point must be one the device publishes and can write: a Modbus point declared
``writable: true`` (coil or holding), or a name in the driver's ``writable`` for other protocols.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..model import DType, Driver, Point, Reg
from ..settings import OPS, CommandSettings, TrustedKey, WriteRule
from ..units import format_size, parse_size
from .source import (Convert, Node, Report, Section, choice, describe, did_you_mean, duration, identifier,
                         integer, number, path)

__all__ = ["COMMAND_KEYS", "read_commands", "read_writable"]

COMMAND_KEYS = ("keys", "ops", "max_bytes", "max_skew", "max_lifetime", "rollback_after", "config_backups",
                "replay_rate", "unsigned")
UNSIGNED_DIALECTS = ("thingsboard", "sparkplug")  # edge commands are always signed
MIN_COMMAND_BYTES, MAX_COMMAND_BYTES = 1024, 4 * 1024**2
_DEFAULTS = CommandSettings()
_SCALARS = (str, int, float, bool)


def read_commands(report: Report, top: Section, base: Path) -> CommandSettings:
    """``commands:``; absent means off (no key, no subscription to ``R/cmd``)."""
    s = top.section("commands", COMMAND_KEYS)
    if s is None:
        return CommandSettings()
    keys = _keys(report, s, base, required=not s.given("unsigned"))
    ops = _ops(report, s)
    unsigned = _unsigned(report, s, ops)
    fields = dict(
        max_bytes=s.get("max_bytes", _bytes_between(MIN_COMMAND_BYTES, MAX_COMMAND_BYTES), _DEFAULTS.max_bytes),
        max_skew_s=s.get("max_skew", duration(0, 86400), _DEFAULTS.max_skew_s),
        max_lifetime_s=s.get("max_lifetime", duration(1, 7 * 86400), _DEFAULTS.max_lifetime_s),
        rollback_after_s=s.get("rollback_after", duration(1, 86400), _DEFAULTS.rollback_after_s),
        config_backups=s.get("config_backups", integer(1, 100, "previous config files kept"),
                             _DEFAULTS.config_backups),
        replay_rate=s.get("replay_rate", integer(1, 100000, "rows per second"), _DEFAULTS.replay_rate))
    return CommandSettings(keys=keys, ops=ops, unsigned=unsigned,
                           **{k: v for k, v in fields.items() if v is not None})


def _unsigned(report: Report, s: Section, ops: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """``unsigned``: per dialect, the ops a command without our signature may run (each also in ``ops``)."""
    if not s.given("unsigned"):
        return {}
    node = s.values["unsigned"]
    given = list(node.value) if isinstance(node.value, dict) else []
    u = Section.of(report, node, s.sub("unsigned"), s.line_of("unsigned"), UNSIGNED_DIALECTS)
    if u is None:
        return {}
    return {dialect: _op_list(report, u, dialect, ops) for dialect in UNSIGNED_DIALECTS if dialect in given}


def _keys(report: Report, s: Section, base: Path, *, required: bool = True) -> tuple[TrustedKey, ...]:
    items = s.items("keys", required=required)
    out: list[TrustedKey] = []
    ids: dict[str, int] = {}
    files: dict[Path, int] = {}
    for i, node in enumerate(items or ()):
        k = Section.of(report, node, f"{s.sub('keys')}[{i}]", node.line, ("id", "public_key_file"))
        if k is None:
            continue
        kid = k.get("id", identifier("it names the signer in commands and the audit log"), "")
        file = k.get("public_key_file", path(base))
        if kid and kid in ids:
            report.add(k.line_of("id"), k.sub("id"), f"duplicate key id '{kid}' (first at line {ids[kid]})")
        elif kid:
            ids[kid] = k.line_of("id") or 0
        if file is not None and file in files:
            report.add(k.line_of("public_key_file"), k.sub("public_key_file"),
                       f"the same key file is listed twice (first at line {files[file]})")
        elif file is not None:
            files[file] = k.line_of("public_key_file") or 0
        if kid is not None and file is not None:
            out.append(TrustedKey(id=kid, public_key_file=file))
    return tuple(out)


def _ops(report: Report, s: Section) -> tuple[str, ...]:
    if not s.given("ops"):
        return _DEFAULTS.ops
    return _op_list(report, s, "ops")


def _op_list(report: Report, s: Section, key: str, enabled: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """A list of known ops without repeats; with ``enabled``, each must also be one of those."""
    out: list[str] = []
    for i, node in enumerate(s.items(key) or ()):
        where = f"{s.sub(key)}[{i}]"
        try:
            op = choice(OPS, "command op")(node.value)
        except ValueError as exc:
            report.add(node.line, where, str(exc))
            continue
        if enabled is not None and op not in enabled:
            report.add(node.line, where, f"'{op}' is not enabled in commands.ops: add it there too")
        elif op in out:
            report.add(node.line, where, f"'{op}' is listed twice")
        else:
            out.append(op)
    return tuple(out)


def _bytes_between(lo: int, hi: int) -> Convert:
    def convert(value: Any) -> int:
        n = parse_size(value)
        if not lo <= n <= hi:
            raise ValueError(f"{value} is outside {format_size(lo)}..{format_size(hi)}")
        return n
    return convert


# --- writable -------------------------------------------------------------------------------

def read_writable(report: Report, s: Section, driver: Driver | None, points: tuple[Point, ...],
                  known: list[str] | None, internal: list[str]) -> dict[str, WriteRule]:
    """The device's ``writable`` mapping. ``known`` (published names) is None when the driver or
    its points are broken (already reported): names are then not checked."""
    if not s.given("writable"):
        return {}
    node = s.values["writable"]
    given = list(node.value) if isinstance(node.value, dict) else []
    w = Section.of(report, node, s.sub("writable"), s.line_of("writable"), given, noun="point")
    if w is None:
        return {}
    declared = {p.name: p for p in (points if driver is None or driver.points_from_config else driver.points)}
    can_write = _writable_names(driver, points)
    out: dict[str, WriteRule] = {}
    for name, value in w.values.items():
        line = w.values[name].line
        if known is not None and name not in known:
            if name in internal:
                why = f"'{name}' is an internal point: it is never published, so commands cannot write it"
            else:
                why = f"unknown point '{name}'" + (did_you_mean(name, can_write or known) or
                                                   f" (the device publishes: {', '.join(known) or 'nothing'})")
            report.add(line, w.sub(name), why)
            continue
        if known is not None and driver is not None and name not in can_write:
            report.add(line, w.sub(name), _not_writable(name, driver, can_write, declared.get(name)))
            continue
        rule = _rule(report, w, name, value, declared.get(name))
        if rule is not None:
            out[name] = rule
    return out


def _writable_names(driver: Driver | None, points: tuple[Point, ...]) -> list[str]:
    if driver is None:
        return []
    if driver.protocol != "modbus":
        return list(driver.writable)
    declared = points if driver.points_from_config else driver.points
    return [p.name for p in declared if p.writable and not p.internal]


def _not_writable(name: str, driver: Driver, can_write: list[str], point: Point | None) -> str:
    if point is not None and point.reg in (Reg.INPUT, Reg.DISCRETE):
        return f"'{name}' has reg: {point.reg}, which is read-only in Modbus (only reg: coil or holding can be written)"
    if driver.points_from_config:
        return (f"point '{name}' is not declared writable: add writable: true to it under points "
                "(reg: coil or holding only)")
    others = f"; writable: {', '.join(can_write)}" if can_write else "; it has no writable points"
    return f"'{name}' is read-only in driver '{driver.id}'{others}"


def _rule(report: Report, w: Section, name: str, node: Node, point: Point | None) -> WriteRule | None:
    where, kind = w.sub(name), _kind(point)
    if isinstance(node.value, list):
        return _values(report, where, node, kind)
    if isinstance(node.value, dict):
        r = Section(report, node, where, node.line, ("min", "max"))
        if kind != "number" and kind is not None:
            report.add(node.line, where, f"a range applies to numbers; '{name}' is a {kind}: list the allowed "
                       "values instead" + (", e.g. [true, false]" if kind == "bool" else ""))
            return None
        if not r.given("min") and not r.given("max"):
            report.add(node.line, where, "give min, max or both")
            return None
        mark = report.mark()
        lo, hi = r.get("min", number, None), r.get("max", number, None)
        if lo is not None and hi is not None and lo > hi:
            report.add(r.line_of("max"), r.sub("max"), f"must be at least min ({lo:g})")
        return None if report.since(mark) else WriteRule(min=lo, max=hi)
    report.add(node.line, where, "expected a list of allowed values (e.g. [open, close]) or a range "
               f"(e.g. {{min: 0, max: 100}}), got {describe(node.value)}")
    return None


def _kind(point: Point | None) -> str | None:
    """What a Modbus point takes: bool, string or number; None for a non-Modbus output (its
    reader checks the value)."""
    if point is None:
        return None
    if point.dtype is DType.BOOL:
        return "bool"
    return "string" if point.dtype is DType.STRING else "number"


def _values(report: Report, where: str, node: Node, kind: str | None) -> WriteRule | None:
    if not node.value:
        report.add(node.line, where, "an empty list allows nothing: remove the point to keep it read-only")
        return None
    values: list[Any] = []
    for j, item in enumerate(node.value):
        value, why = item.value, None
        if isinstance(value, (dict, list)) or value is None or not isinstance(value, _SCALARS):
            why = f"an allowed value must be a plain value, got {describe(value)}"
        elif kind == "bool" and not isinstance(value, bool):
            why = f"the point is a bool: write true or false, got {describe(value)}"
        elif kind == "number" and (isinstance(value, bool) or not isinstance(value, (int, float))):
            why = f"the point is a number, got {describe(value)}"
        elif kind == "string" and not isinstance(value, str):
            why = f"the point is a string, got {describe(value)}"
        elif any(value == v and type(value) is type(v) for v in values):
            why = f"{value!r} is listed twice"
        if why:
            report.add(item.line, f"{where}[{j}]", why)
        else:
            values.append(value)
    return WriteRule(values=tuple(values)) if len(values) == len(node.value) else None
