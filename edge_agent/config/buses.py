"""The ``buses`` list: each physical link (a serial port or a TCP host) and its line settings.

Called by ``schema`` before the devices, which name their bus. A bus with problems is kept
by name (as None) so its devices are still checked without an echo of "unknown bus".
Problems go to the same ``Report``. No I/O: a port is only named here.
"""

from __future__ import annotations

from typing import Any

from ..model import PROTOCOLS
from ..settings import BusSettings
from .source import Report, Section, choice, duration, host, identifier, integer, string

__all__ = ["BAUDS", "SERIAL_DEFAULTS", "read_buses"]

BAUDS = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
# serial settings of a bus when the config leaves them out: the standards' (DL/T 645 and CJ/T 188
# are 2400 8E1 by default on the meters sold), Modbus RTU and the line protocols 9600 8N1
SERIAL_DEFAULTS = {"dlt645": {"baud": 2400, "parity": "E"}, "cjt188": {"baud": 2400, "parity": "E"}}
_BUS_KEYS = ("name", "protocol", "serial", "host", "port", "baud", "parity", "data_bits", "stop_bits", "timeout",
             "gap")


def read_buses(report: Report, top: Section) -> dict[str, BusSettings | None] | None:
    """Buses by name; None for a declared bus with problems (devices on it are still checked)."""
    items = top.items("buses", required=True)
    if items is None:
        return None
    found: dict[str, BusSettings | None] = {}
    first: dict[str, int] = {}
    for i, node in enumerate(items):
        s = Section.of(report, node, f"buses[{i}]", node.line, _BUS_KEYS)
        if s is None:
            continue
        mark = report.mark()
        name = s.get("name", identifier())
        if name in first:
            report.add(s.line_of("name"), s.sub("name"), f"duplicate bus name '{name}' (first at line {first[name]})")
        bus = _bus(report, s, name)
        raw = s.values["name"].value if "name" in s.values else None
        key = name if name is not None else raw if isinstance(raw, str) else None  # no 'unknown bus' echo
        if key is not None and key not in first:
            first[key] = s.line_of("name") or 0
            found[key] = None if report.since(mark) else bus
    return found


def _bus(report: Report, s: Section, name: str | None) -> BusSettings | None:
    protocol = s.get("protocol", choice(PROTOCOLS, "protocol"))
    serial, address = s.get("serial", string, None), s.get("host", host, None)
    port = None
    if s.given("serial") and s.given("host"):
        report.add(s.line_of("host"), s.sub("host"), "give serial (a local port) or host (a TCP link), not both")
    elif not s.given("serial") and not s.given("host"):
        report.add(s.line, s.path, "needs serial (a local RS-485 port) or host (a TCP link)")
    elif s.given("serial"):
        if protocol == "modbus-tcp":
            report.add(s.line_of("serial"), s.sub("serial"),
                       "modbus-tcp runs over TCP: give host, or use protocol modbus-rtu on a serial port")
        if s.given("port"):
            report.add(s.line_of("port"), s.sub("port"), "only applies to host links, not serial")
    else:
        if protocol not in ("modbus-tcp", None) and not s.given("port"):
            report.add(s.line, s.sub("port"), f"required for {protocol} over host (the converter's TCP port)")
        port = s.get("port", integer(1, 65535), 502)
    serial_opts: dict[str, Any] = dict(SERIAL_DEFAULTS.get(protocol or "", {}))
    for key, convert in (("baud", choice(BAUDS, "baud rate")), ("parity", choice(("N", "E", "O"), "parity")),
                         ("data_bits", choice((7, 8), "data_bits")), ("stop_bits", choice((1, 2), "stop_bits"))):
        if s.given(key) and not s.given("serial"):
            report.add(s.line_of(key), s.sub(key), "only applies to serial links; a converter's line "
                       "settings are made on the converter")
        elif s.given(key):
            serial_opts[key] = s.get(key, convert)
    return BusSettings(name=name or "", protocol=protocol, host=address, port=port, serial=serial,
                       timeout_s=s.get("timeout", duration(0.01, 60), 1.0),
                       gap_s=s.get("gap", duration(0, 10), 0.0), **serial_opts)
