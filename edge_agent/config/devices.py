"""The ``devices`` list: each device's bus, driver, address, points, options and its own rules.

Called by ``schema`` after the buses; a device's ``alarms``/``report``/``offline_after``
(``alarms``), ``writable`` (``commands``) and ``privacy`` (``privacy``) are read by those
modules, and two devices at one address by ``addresses``. Point names are checked against
what the device publishes. Problems go to the same ``Report``. No I/O.
"""

from __future__ import annotations

from typing import Any

from ..field.registry import DriverError, drivers, point_problems
from ..model import DRIVER_PROTOCOLS, DataClass, DType, Driver, Point, Reg
from ..settings import BusSettings, DeviceSettings
from .addresses import report_address_clashes
from .alarms import ALARM_KEYS, read_alarm_config
from .commands import read_writable
from .privacy import read_device_privacy
from .source import (Convert, Report, Section, boolean, choice, did_you_mean, duration, identifier, integer,
                     number, number_pair, string)

__all__ = ["METER_DIGITS", "read_devices", "meter_address"]

METER_DIGITS = {"dlt645": 12, "cjt188": 14}  # address digits per meter protocol
METER_BROADCAST = {"dlt645": "999999999999"}  # for time sync and the like: no meter answers a read sent there
_DEVICE_KEYS = ("name", "bus", "driver", "address", "interval", "timeout", "retries", "max_block", "merge_gap",
                "enabled", "points", "privacy", "options", "writable", *ALARM_KEYS)
_POINT_KEYS = ("name", "reg", "address", "type", "length", "bit", "byte_order", "word_order", "scale", "offset",
               "valid", "class", "writable", "internal")

Buses = dict[str, BusSettings | None]


def read_devices(report: Report, top: Section, buses: Buses | None,
                 platform_key_given: bool) -> tuple[DeviceSettings, ...] | None:
    """Every device (also those with problems: the caller drops the lot on any problem), or None
    when the list itself is missing or the installed drivers are unsound."""
    items = top.items("devices", required=True)
    if items is None:
        return None
    try:
        known = drivers()
    except DriverError as exc:
        report.add(None, "devices", f"the installed drivers are unsound: {exc}")
        return None
    out, first = [], {}
    located: list[tuple[Section, DeviceSettings]] = []
    line_users: dict[str, list[tuple[Section, str]]] = {}  # json-lines bus -> its devices
    for i, node in enumerate(items):
        s = Section.of(report, node, f"devices[{i}]", node.line, _DEVICE_KEYS)
        if s is None:
            continue
        name = s.get("name", identifier())
        if name in first:
            report.add(s.line_of("name"), s.sub("name"), f"duplicate device name '{name}' (first at line {first[name]})")
        elif name is not None:
            first[name] = s.line_of("name")
        out.append(_device(report, s, name, buses, known, platform_key_given))
        located.append((s, out[-1]))
        bus = buses.get(out[-1].bus) if buses else None
        if bus is not None and bus.protocol == "json-lines":
            line_users.setdefault(out[-1].bus, []).append((s, out[-1].name))
    for bus_name, users in line_users.items():
        for s, dev in users[1:]:
            report.add(s.line_of("bus"), s.sub("bus"), f"bus '{bus_name}' already carries device "
                       f"'{users[0][1]}': a json-lines bus has one device (each would take the other's lines)")
    report_address_clashes(report, located, buses)
    return tuple(out)


def _device(report: Report, s: Section, name: str | None, buses: Buses | None, known: dict[str, Driver],
            platform_key_given: bool) -> DeviceSettings:
    bus_name = s.get("bus", string)
    if buses is None:  # the buses list itself is broken: already reported, do not echo
        buses = {bus_name: None} if bus_name else {}
    if bus_name is not None and bus_name not in buses:
        hint = did_you_mean(bus_name, buses) or (f"; declared buses: {', '.join(buses)}" if buses else
                                                 "; no bus is declared under buses")
        report.add(s.line_of("bus"), s.sub("bus"), f"unknown bus '{bus_name}'{hint}")
    driver_id = s.get("driver", choice(sorted(known), "driver"))
    driver = known.get(driver_id) if driver_id else None
    bus = buses.get(bus_name) if bus_name else None
    if driver is not None and bus is not None and bus.protocol not in DRIVER_PROTOCOLS[driver.protocol]:
        wanted = " or ".join(DRIVER_PROTOCOLS[driver.protocol])
        report.add(s.line_of("driver"), s.sub("driver"), f"driver '{driver.id}' speaks {driver.protocol}, "
                   f"but bus '{bus_name}' is {bus.protocol}: put it on a {wanted} bus")
    address = _address(report, s, bus, driver)
    max_block = s.get("max_block", integer(1, 125), None)
    mark = report.mark()
    points = _points(report, s, driver, max_block) if driver else ()
    published = _published(driver, points) if driver and not report.since(mark) else None
    overrides = read_device_privacy(report, s, driver, points, published, platform_key_given)
    declared = driver.points if driver and not driver.points_from_config else points
    internal = [q.name for q in declared if q.internal]
    rules, report_filter, offline_after = read_alarm_config(report, s, published, internal)
    writable = read_writable(report, s, driver, points, published, internal)
    interval = s.get("interval", duration(0.01, 86400), driver.default_interval_s if driver else None)
    return DeviceSettings(
        name=name or "", bus=bus_name or "", driver=driver_id or "", address=address, interval_s=interval,
        timeout_s=s.get("timeout", duration(0.01, 60), None), retries=s.get("retries", integer(0, 10), 1),
        max_block=max_block, merge_gap=s.get("merge_gap", integer(0, 125), 8), points=points,
        enabled=s.get("enabled", boolean, True), privacy=overrides, alarms=rules, report=report_filter,
        offline_after=offline_after, options=_options(report, s, driver), writable=writable)


def _address(report: Report, s: Section, bus: BusSettings | None, driver: Driver | None) -> int | str | None:
    """The device's address in its bus's protocol: a Modbus unit id, a meter's BCD digits
    (a quoted string: YAML reads unquoted leading zeros as an octal number), or none."""
    protocol = bus.protocol if bus is not None else None
    if protocol is None and driver is not None and driver.protocol != "modbus":
        protocol = DRIVER_PROTOCOLS[driver.protocol][0]
    if protocol in METER_DIGITS:
        return s.get("address", meter_address(METER_DIGITS[protocol], protocol))
    if protocol == "json-lines":
        if s.given("address"):
            report.add(s.line_of("address"), s.sub("address"), "a json-lines device has no address: "
                       "it is alone on its line; remove address")
        return None
    if bus is None:  # unknown or broken bus: only what holds on every link, no false alarm
        return s.get("address", integer(0, 255, "a Modbus unit id"))
    if bus.link == "tcp":
        return s.get("address", integer(0, 255, "the unit id on a modbus-tcp link"))
    return s.get("address", integer(1, 247, "Modbus device ids on a serial line; 0 is broadcast"))


def _options(report: Report, s: Section, driver: Driver | None) -> dict[str, object]:
    """The driver's options, defaults filled in; unknown names and values outside choices reported."""
    declared = {o.name: o for o in driver.options} if driver else {}
    if not s.given("options"):
        return {name: o.default for name, o in declared.items()}
    if driver is None:  # an unknown or missing driver is reported already: its options cannot be checked
        return {}
    if driver is not None and not declared:
        report.add(s.line_of("options"), s.sub("options"), f"driver '{driver.id}' takes no options")
        return {}
    o = s.section("options", list(declared), noun="option")
    out = {name: opt.default for name, opt in declared.items()}
    for name, opt in declared.items():
        if o is not None and o.given(name):
            value = o.get(name, choice(opt.choices, name.replace("_", " ")) if opt.choices else _plain, None)
            if value is not None:
                out[name] = value
    return out


def _points(report: Report, s: Section, driver: Driver, max_block: int | None) -> tuple[Point, ...]:
    if not driver.points_from_config:
        if "points" in s.values:
            generic = ", ".join(d for d, v in drivers().items() if v.points_from_config)
            report.add(s.line_of("points"), s.sub("points"),
                       f"driver '{driver.id}' declares its own points; points only apply to {generic}")
        else:
            widest = max((p.count for p in driver.points if not p.reg.is_bit), default=1)
            if max_block is not None and max_block < widest:
                report.add(s.line_of("max_block"), s.sub("max_block"), f"must be at least {widest}: "
                           f"driver '{driver.id}' has points that span {widest} registers")
        return ()
    if "points" not in s.values:
        report.add(s.line, s.sub("points"), f"required for driver '{driver.id}': it reads only the points declared here")
        return ()
    items = s.items("points", required=True)
    if items is not None and not items:
        report.add(s.line_of("points"), s.sub("points"), f"driver '{driver.id}' needs at least one point")
    located: list[tuple[Point, int, str]] = []
    for j, node in enumerate(items or ()):
        p = Section.of(report, node, f"{s.sub('points')}[{j}]", node.line, _POINT_KEYS)
        point = _point(report, p) if p else None
        if point is not None:
            located.append((point, node.line, p.path))  # type: ignore[union-attr]
    points = tuple(p for p, _, _ in located)
    for msg in point_problems(points, max_block or driver.max_block):
        named = [(line, where) for p, line, where in located
                 if msg.startswith((f"{p.name}:", f"point name {p.name!r}"))]
        line, where = (named[-1] if "declared twice" in msg else named[0]) if named else \
            (s.line_of("points"), s.sub("points"))
        report.add(line, where, msg)
    return points


def _point(report: Report, s: Section) -> Point | None:
    mark = report.mark()
    fields = dict(
        name=s.get("name", string), reg=s.get("reg", choice([str(r) for r in Reg], "reg")),
        address=s.get("address", integer(0, 65535, "0-based protocol address, not 40001-style")),
        dtype=s.get("type", choice([str(t) for t in DType], "type")),
        length=s.get("length", integer(1, 125), 0), bit=s.get("bit", integer(0, 15), None),
        byte_order=s.get("byte_order", choice(("big", "little"), "byte order"), "big"),
        word_order=s.get("word_order", choice(("big", "little"), "word order"), "big"),
        scale=s.get("scale", number, 1.0), offset=s.get("offset", number, 0.0),
        valid=s.get("valid", number_pair, None),
        data_class=s.get("class", choice([str(c) for c in DataClass], "class"), DataClass.TELEMETRY),
        writable=s.get("writable", boolean, False), internal=s.get("internal", boolean, False))
    if report.since(mark):
        return None
    fields.update(reg=Reg(fields["reg"]), dtype=DType(fields["dtype"]), data_class=DataClass(fields["data_class"]))
    return Point(**fields)


def _published(driver: Driver, points: tuple[Point, ...]) -> list[str]:
    """The names a device's readings can carry: its non-internal points and the driver's outputs."""
    declared = points if driver.points_from_config else driver.points
    return [p.name for p in declared if not p.internal] + [o.name for o in driver.outputs]


def meter_address(digits: int, protocol: str) -> Convert:
    """A meter address: a quoted string of up to ``digits`` decimal digits, zero-filled."""
    def convert(value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError(f"write the {protocol} meter address as a quoted string of {digits} digits, "
                             f"e.g. \"{'0' * (digits - 6)}123456\" (unquoted, YAML reads leading zeros as an octal "
                             "number)")
        text = value.strip()
        if not text.isdigit() or not text.isascii() or len(text) > digits:
            raise ValueError(f"{value!r} is not a {protocol} meter address: up to {digits} digits, as printed "
                             "on the meter's name plate")
        if text.zfill(digits) == METER_BROADCAST.get(protocol):
            raise ValueError(f"{value!r} is the DL/T 645 broadcast address, which no meter answers: write the "
                             "address on the meter's name plate ('edge-agent scan --port PORT --protocol dlt645' "
                             "reads it)")
        return text.zfill(digits)
    return convert


def _plain(value: Any) -> Any:
    return value
