"""One YAML file -> ``Settings``, checked completely before the daemon touches a port or a broker.

Principle 1 of the house: fail at start-up, not at 3 a.m. So every section is read even after
an error, and ``ConfigError`` lists every problem as ``FILE:LINE: key.path: message`` with the
likely fix, the way ``edge-agent check`` prints them. Reading the file is the only I/O here
(``check_config`` adds ``config_files``: a look for each key, password and TLS file the config
names, as warnings); opening ports and the broker, and key files' modes, are the doctor's. Relative paths are taken from the
config file's directory, so a config works the same whatever directory the daemon starts in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .addresses import report_address_clashes
from .alarms import ALARM_KEYS, read_alarm_config
from .commands import read_commands, read_writable
from ..model import DRIVER_PROTOCOLS, PROTOCOLS, DataClass, DType, Driver, Point, Reg
from ..field.registry import DriverError, drivers, point_problems
from ..settings import (BufferSettings, BusSettings, DeviceSettings, GatewaySettings, MqttSettings,
                       PrivacySettings, Settings, TlsSettings)
from .source import (Convert, Node, Problem, Report, Section, boolean, choice, compose, did_you_mean,
                         duration, identifier, integer, number, number_pair, path, size, string)

__all__ = ["Problem", "ConfigError", "load_settings", "check_file", "check_config", "check_text", "parse_settings"]

DEFAULT_STATE_DIR = Path("/var/lib/edge-agent")
PRIVACY_ACTIONS = ("keep", "pseudonymize", "mask", "generalize", "drop", "seal")
BAUDS = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
METER_DIGITS = {"dlt645": 12, "cjt188": 14}  # address digits per meter protocol
METER_BROADCAST = {"dlt645": "999999999999"}  # for time sync and the like: no meter answers a read sent there
# serial settings of a bus when the config leaves them out: the standards' (DL/T 645 and CJ/T 188
# are 2400 8E1 by default on the meters sold), Modbus RTU and the line protocols 9600 8N1
SERIAL_DEFAULTS = {"dlt645": {"baud": 2400, "parity": "E"}, "cjt188": {"baud": 2400, "parity": "E"}}
_TOPIC_SAFE = "it becomes part of MQTT topics"


class ConfigError(Exception):
    """The config cannot be used; ``problems`` holds every reason, one per line in ``str()``."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(problems)
        self.problems = problems

    def __str__(self) -> str:
        return "\n".join(map(str, self.problems))


def load_settings(path: str | Path) -> Settings:
    """Read and check ``path``; raise ``ConfigError`` naming every problem found."""
    settings, problems, _ = _load(path)
    if settings is None:
        raise ConfigError(problems)
    return settings


def check_file(path: str | Path) -> list[Problem]:
    """Every problem of ``path`` (``[]`` when it is valid); bad content never raises."""
    return _load(path)[1]


def check_config(path: str | Path) -> tuple[Settings | None, list[Problem]]:
    """What ``edge-agent check`` reports: every problem of ``path``; when there is none, the
    settings and a warning (``Problem.warning``) for each file they name that ``run`` would not
    find or could not read (``config_files``; a stat per file, no device or broker I/O)."""
    settings, problems, root = _load(path)
    if settings is None or root is None:
        return None, problems
    from .files import file_warnings

    return settings, file_warnings(settings, root, str(path))


def check_text(text: str, path: str | Path, *, shown_as: str | None = None) -> tuple[Settings | None, list[Problem]]:
    """Check ``text`` exactly as ``check_file`` would if it were the file at ``path`` (relative paths
    from its directory; ``Settings.source`` is ``path``); problems name ``shown_as`` (default: the
    path). For ``config.apply``, which checks a config before it is written. Never raises."""
    where = Path(path).absolute()
    return _parse(text, shown_as or str(path), where.parent, where)[:2]


def parse_settings(text: str, source: str = "<string>", base_dir: Path | None = None) -> Settings:
    """As ``load_settings``, from text; relative paths are taken from ``base_dir`` (default: cwd).

    ``source`` only names the text in problems; ``Settings.source`` stays None (no file behind it).
    """
    settings, problems, _ = _parse(text, source, base_dir if base_dir is not None else Path.cwd(), None)
    if settings is None:
        raise ConfigError(problems)
    return settings


def _load(path: str | Path) -> tuple[Settings | None, list[Problem], Node | None]:
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        return None, [Problem(file, None, "", f"not UTF-8 text ({exc.reason} at byte {exc.start})")], None
    except OSError as exc:
        return None, [Problem(file, None, "", f"cannot read the file: {exc.strerror or exc}")], None
    return _parse(text, file, Path(path).absolute().parent, Path(path).absolute())


def _parse(text: str, file: str, base_dir: Path,
           source: Path | None) -> tuple[Settings | None, list[Problem], Node | None]:
    """Settings (None on any problem), the problems by line, and the located YAML they came from."""
    report = Report(file)
    root = compose(text, report)
    settings = None
    if root is None and not report.problems:
        report.add(None, "", "the file is empty; it needs at least gateway, mqtt, buses and devices")
    elif root is not None:
        settings = _Reader(report, base_dir, source).settings(root)
    problems = sorted(report.problems, key=lambda p: p.line or 0)
    return (settings if not problems else None), problems, root


class _Reader:
    """The schema: one method per section, each reading on after a problem to find the next."""

    def __init__(self, report: Report, base_dir: Path, source: Path | None) -> None:
        self.report, self.base, self.source = report, base_dir, source
        self.platform_key_given = False  # set by privacy(), read by the devices' privacy overrides

    def settings(self, root: Node) -> Settings | None:
        if not isinstance(root.value, dict):
            self.report.add(root.line, "", "the top level must be a mapping of sections "
                            "(gateway, mqtt, buffer, privacy, buses, devices)")
            return None
        top = Section(self.report, root, "", None,
                      ("gateway", "mqtt", "buffer", "privacy", "buses", "devices", "commands"))
        gateway = self.gateway(top)
        mqtt = self.mqtt(top)
        buffer = self.buffer(top, gateway.state_dir if gateway else DEFAULT_STATE_DIR)
        privacy = self.privacy(top, gateway.state_dir if gateway else DEFAULT_STATE_DIR)
        buses = self.buses(top)
        devices = self.devices(top, buses)
        commands = read_commands(self.report, top, self.base)
        if self.report.problems or gateway is None or mqtt is None or buses is None or devices is None:
            return None
        return Settings(gateway, mqtt, buffer, privacy, tuple(b for b in buses.values() if b),
                        devices, self.source, commands)

    def gateway(self, top: Section) -> GatewaySettings | None:
        s = top.section("gateway", ("id", "site", "state_dir"), required=True)
        if s is None:
            return None
        return GatewaySettings(id=s.get("id", identifier(_TOPIC_SAFE)), site=s.get("site", identifier(_TOPIC_SAFE)),
                               state_dir=s.get("state_dir", path(self.base), DEFAULT_STATE_DIR))

    def mqtt(self, top: Section) -> MqttSettings | None:
        s = top.section("mqtt", ("host", "port", "tls", "credentials", "topic_prefix", "client_id", "protocol",
                                 "keepalive", "batch_max", "inflight", "reconnect_min", "reconnect_max"), required=True)
        if s is None:
            return None
        tls = self.tls(s)
        username, password_file = self.credentials(s)
        reconnect_min = s.get("reconnect_min", duration(0.01, 3600), 1.0)
        reconnect_max = s.get("reconnect_max", duration(0.01, 86400), 60.0)
        if reconnect_min is not None and reconnect_max is not None and reconnect_max < reconnect_min:
            self.report.add(s.line_of("reconnect_max"), s.sub("reconnect_max"),
                            "must be at least reconnect_min (the first retry delay)")
        protocol = s.get("protocol", _mqtt_protocol, "3.1.1")
        return MqttSettings(
            host=s.get("host", _host), port=s.get("port", integer(1, 65535), 8883 if tls.enabled else 1883),
            tls=tls, username=username, password_file=password_file,
            topic_prefix=s.get("topic_prefix", _topic_prefix, "edge/v1"),
            client_id=s.get("client_id", string, None), protocol=protocol,
            keepalive_s=s.get("keepalive", duration(1, 65535), 30.0),
            batch_max=s.get("batch_max", integer(1, 10000), 500), inflight=s.get("inflight", integer(1, 1000), 20),
            reconnect_min_s=reconnect_min, reconnect_max_s=reconnect_max)

    def tls(self, mqtt: Section) -> TlsSettings:
        s = mqtt.section("tls", ("enabled", "ca_file", "cert_file", "key_file", "verify_hostname"),
                         secrets={"key": "key_file"})
        if s is None:
            return TlsSettings()
        files = {k: s.get(k, path(self.base), None) for k in ("ca_file", "cert_file", "key_file")}
        for have, need in (("cert_file", "key_file"), ("key_file", "cert_file")):
            if s.given(have) and not s.given(need):
                self.report.add(s.line_of(have), s.sub(need),
                                f"required with {have}: a client certificate and its key go together")
        if any(s.given(k) for k in files) and "enabled" not in s.values:
            self.report.add(s.line, s.sub("enabled"), "TLS files are given but enabled is not set: "
                            "write enabled: true (or enabled: false to connect in plain text)")
        return TlsSettings(enabled=bool(s.get("enabled", boolean, False)), **files,
                           verify_hostname=s.get("verify_hostname", boolean, True))

    def credentials(self, mqtt: Section) -> tuple[str | None, Path | None]:
        s = mqtt.section("credentials", ("username", "password_file"), secrets={"password": "password_file"})
        if s is None:
            return None, None
        if s.given("password_file") and not s.given("username"):
            self.report.add(s.line_of("password_file"), s.sub("username"), "required with password_file")
        return s.get("username", string, None), s.get("password_file", path(self.base), None)

    def buffer(self, top: Section, state_dir: Path) -> BufferSettings:
        default_path = (state_dir or DEFAULT_STATE_DIR) / "buffer.db"
        s = top.section("buffer", ("path", "max_bytes", "retain_sent", "commit_interval", "commit_max"))
        if s is None:
            return BufferSettings(path=default_path)
        return BufferSettings(path=s.get("path", path(self.base), default_path),
                              max_bytes=s.get("max_bytes", size(1024**2), 512 * 1024**2),
                              retain_sent_s=s.get("retain_sent", duration(0, 366 * 86400), 0.0),
                              commit_interval_s=s.get("commit_interval", duration(0.001, 10), 0.2),
                              commit_max=s.get("commit_max", integer(1, 100000), 2000))

    def privacy(self, top: Section, state_dir: Path) -> PrivacySettings:
        default_key = (state_dir or DEFAULT_STATE_DIR) / "keys" / "pseudonym.key"
        s = top.section("privacy", ("key_file", "platform_key_file", "actions", "geohash_length"),
                        secrets={"key": "key_file", "platform_key": "platform_key_file"})
        self.platform_key_given = bool(s and s.given("platform_key_file"))
        if s is None:
            return PrivacySettings(key_file=default_key)
        classes = [str(c) for c in DataClass]
        a = s.section("actions", classes, noun="data class")
        actions = {DataClass(k): a.get(k, choice(PRIVACY_ACTIONS, "action"))
                   for k in (a.values if a else ()) if k in classes}
        if "seal" in actions.values() and not self.platform_key_given:
            cls = next(c for c, v in actions.items() if v == "seal")
            self.report.add(a.line_of(str(cls)) if a else None, s.sub("platform_key_file"),
                            f"required because privacy.actions.{cls} is seal")
        # key_file has a default (pseudonymize is identifier's default action), so no rule here:
        # 'edge-agent run' refuses to start while the file is missing or loosely permitted.
        return PrivacySettings(key_file=s.get("key_file", path(self.base), default_key),
                               platform_key_file=s.get("platform_key_file", path(self.base), None),
                               actions={k: v for k, v in actions.items() if v is not None},
                               geohash_length=s.get("geohash_length", integer(1, 12), 6))

    def buses(self, top: Section) -> dict[str, BusSettings | None] | None:
        """Buses by name; None for a declared bus with problems (devices on it are still checked)."""
        items = top.items("buses", required=True)
        if items is None:
            return None
        found: dict[str, BusSettings | None] = {}
        first: dict[str, int] = {}
        for i, node in enumerate(items):
            s = Section.of(self.report, node, f"buses[{i}]", node.line,
                           ("name", "protocol", "serial", "host", "port", "baud", "parity", "data_bits",
                            "stop_bits", "timeout", "gap"))
            if s is None:
                continue
            mark = self.report.mark()
            name = s.get("name", identifier())
            if name in first:
                self.report.add(s.line_of("name"), s.sub("name"),
                                f"duplicate bus name '{name}' (first at line {first[name]})")
            bus = self.bus(s, name)
            raw = s.values["name"].value if "name" in s.values else None
            key = name if name is not None else raw if isinstance(raw, str) else None  # no 'unknown bus' echo
            if key is not None and key not in first:
                first[key] = s.line_of("name") or 0
                found[key] = None if self.report.since(mark) else bus
        return found

    def bus(self, s: Section, name: str | None) -> BusSettings | None:
        protocol = s.get("protocol", choice(PROTOCOLS, "protocol"))
        serial, host = s.get("serial", string, None), s.get("host", _host, None)
        port = None
        if s.given("serial") and s.given("host"):
            self.report.add(s.line_of("host"), s.sub("host"),
                            "give serial (a local port) or host (a TCP link), not both")
        elif not s.given("serial") and not s.given("host"):
            self.report.add(s.line, s.path, "needs serial (a local RS-485 port) or host (a TCP link)")
        elif s.given("serial"):
            if protocol == "modbus-tcp":
                self.report.add(s.line_of("serial"), s.sub("serial"),
                                "modbus-tcp runs over TCP: give host, or use protocol modbus-rtu on a serial port")
            if s.given("port"):
                self.report.add(s.line_of("port"), s.sub("port"), "only applies to host links, not serial")
        else:
            if protocol not in ("modbus-tcp", None) and not s.given("port"):
                self.report.add(s.line, s.sub("port"), f"required for {protocol} over host (the converter's TCP port)")
            port = s.get("port", integer(1, 65535), 502)
        serial_opts: dict[str, Any] = dict(SERIAL_DEFAULTS.get(protocol or "", {}))
        for key, convert in (("baud", choice(BAUDS, "baud rate")), ("parity", choice(("N", "E", "O"), "parity")),
                             ("data_bits", choice((7, 8), "data_bits")), ("stop_bits", choice((1, 2), "stop_bits"))):
            if s.given(key) and not s.given("serial"):
                self.report.add(s.line_of(key), s.sub(key), "only applies to serial links; a converter's line "
                                "settings are made on the converter")
            elif s.given(key):
                serial_opts[key] = s.get(key, convert)
        return BusSettings(name=name or "", protocol=protocol, host=host, port=port, serial=serial,
                           timeout_s=s.get("timeout", duration(0.01, 60), 1.0),
                           gap_s=s.get("gap", duration(0, 10), 0.0), **serial_opts)

    def devices(self, top: Section, buses: dict[str, BusSettings | None] | None) -> tuple[DeviceSettings, ...] | None:
        items = top.items("devices", required=True)
        if items is None:
            return None
        try:
            known = drivers()
        except DriverError as exc:
            self.report.add(None, "devices", f"the installed drivers are unsound: {exc}")
            return None
        out, first = [], {}
        located: list[tuple[Section, DeviceSettings]] = []
        line_users: dict[str, list[tuple[Section, str]]] = {}  # json-lines bus -> its devices
        for i, node in enumerate(items):
            s = Section.of(self.report, node, f"devices[{i}]", node.line,
                           ("name", "bus", "driver", "address", "interval", "timeout", "retries", "max_block",
                            "merge_gap", "enabled", "points", "privacy", "options", "writable", *ALARM_KEYS))
            if s is None:
                continue
            name = s.get("name", identifier())
            if name in first:
                self.report.add(s.line_of("name"), s.sub("name"),
                                f"duplicate device name '{name}' (first at line {first[name]})")
            elif name is not None:
                first[name] = s.line_of("name")
            out.append(self.device(s, name, buses, known))
            located.append((s, out[-1]))
            bus = buses.get(out[-1].bus) if buses else None
            if bus is not None and bus.protocol == "json-lines":
                line_users.setdefault(out[-1].bus, []).append((s, out[-1].name))
        for bus_name, users in line_users.items():
            for s, dev in users[1:]:
                self.report.add(s.line_of("bus"), s.sub("bus"), f"bus '{bus_name}' already carries device "
                                f"'{users[0][1]}': a json-lines bus has one device (each would take the other's lines)")
        report_address_clashes(self.report, located, buses)
        return tuple(out)

    def device(self, s: Section, name: str | None, buses: dict[str, BusSettings | None] | None,
               known: dict[str, Driver]) -> DeviceSettings:
        bus_name = s.get("bus", string)
        if buses is None:  # the buses list itself is broken: already reported, do not echo
            buses = {bus_name: None} if bus_name else {}
        if bus_name is not None and bus_name not in buses:
            hint = did_you_mean(bus_name, buses) or (f"; declared buses: {', '.join(buses)}" if buses else
                                                     "; no bus is declared under buses")
            self.report.add(s.line_of("bus"), s.sub("bus"), f"unknown bus '{bus_name}'{hint}")
        driver_id = s.get("driver", choice(sorted(known), "driver"))
        driver = known.get(driver_id) if driver_id else None
        bus = buses.get(bus_name) if bus_name else None
        if driver is not None and bus is not None and bus.protocol not in DRIVER_PROTOCOLS[driver.protocol]:
            wanted = " or ".join(DRIVER_PROTOCOLS[driver.protocol])
            self.report.add(s.line_of("driver"), s.sub("driver"), f"driver '{driver.id}' speaks {driver.protocol}, "
                            f"but bus '{bus_name}' is {bus.protocol}: put it on a {wanted} bus")
        address = self.address(s, bus, driver)
        max_block = s.get("max_block", integer(1, 125), None)
        mark = self.report.mark()
        points = self.points(s, driver, max_block) if driver else ()
        known = _published(driver, points) if driver and not self.report.since(mark) else None
        overrides = self.device_privacy(s, driver, points, known)
        declared = driver.points if driver and not driver.points_from_config else points
        internal = [q.name for q in declared if q.internal]
        rules, report, offline_after = read_alarm_config(self.report, s, known, internal)
        writable = read_writable(self.report, s, driver, points, known, internal)
        interval = s.get("interval", duration(0.01, 86400), driver.default_interval_s if driver else None)
        return DeviceSettings(
            name=name or "", bus=bus_name or "", driver=driver_id or "", address=address, interval_s=interval,
            timeout_s=s.get("timeout", duration(0.01, 60), None), retries=s.get("retries", integer(0, 10), 1),
            max_block=max_block, merge_gap=s.get("merge_gap", integer(0, 125), 8), points=points,
            enabled=s.get("enabled", boolean, True), privacy=overrides, alarms=rules, report=report,
            offline_after=offline_after, options=self.options(s, driver), writable=writable)

    def address(self, s: Section, bus: BusSettings | None, driver: Driver | None) -> int | str | None:
        """The device's address in its bus's protocol: a Modbus unit id, a meter's BCD digits
        (a quoted string: YAML reads unquoted leading zeros as an octal number), or none."""
        protocol = bus.protocol if bus is not None else None
        if protocol is None and driver is not None and driver.protocol != "modbus":
            protocol = DRIVER_PROTOCOLS[driver.protocol][0]
        if protocol in METER_DIGITS:
            return s.get("address", meter_address(METER_DIGITS[protocol], protocol))
        if protocol == "json-lines":
            if s.given("address"):
                self.report.add(s.line_of("address"), s.sub("address"), "a json-lines device has no address: "
                                "it is alone on its line; remove address")
            return None
        if bus is None:  # unknown or broken bus: only what holds on every link, no false alarm
            return s.get("address", integer(0, 255, "a Modbus unit id"))
        if bus.link == "tcp":
            return s.get("address", integer(0, 255, "the unit id on a modbus-tcp link"))
        return s.get("address", integer(1, 247, "Modbus device ids on a serial line; 0 is broadcast"))

    def options(self, s: Section, driver: Driver | None) -> dict[str, object]:
        """The driver's options, defaults filled in; unknown names and values outside choices reported."""
        declared = {o.name: o for o in driver.options} if driver else {}
        if not s.given("options"):
            return {name: o.default for name, o in declared.items()}
        if driver is None:  # an unknown or missing driver is reported already: its options cannot be checked
            return {}
        if driver is not None and not declared:
            self.report.add(s.line_of("options"), s.sub("options"), f"driver '{driver.id}' takes no options")
            return {}
        o = s.section("options", list(declared), noun="option")
        out = {name: opt.default for name, opt in declared.items()}
        for name, opt in declared.items():
            if o is not None and o.given(name):
                value = o.get(name, choice(opt.choices, name.replace("_", " ")) if opt.choices else _plain, None)
                if value is not None:
                    out[name] = value
        return out

    def device_privacy(self, s: Section, driver: Driver | None, points: tuple[Point, ...],
                       known: list[str] | None) -> dict[str, str]:
        """``privacy: {point: action}``: one point's action over its class's. ``known`` is None
        when the driver or the point list is broken (already reported): names are not checked."""
        if not s.given("privacy"):
            return {}
        node = s.values["privacy"]
        given = list(node.value) if isinstance(node.value, dict) else []
        p = Section.of(self.report, node, s.sub("privacy"), s.line_of("privacy"), given, noun="point")
        if p is None:
            return {}
        declared = driver.points if driver and not driver.points_from_config else points
        internal = {q.name for q in declared if q.internal}
        out: dict[str, str] = {}
        for name in p.values:
            if known is not None and name not in known:
                if name in internal:
                    why = f"'{name}' is an internal point: it is never published, so it needs no action"
                else:
                    why = f"unknown point '{name}'" + (did_you_mean(name, known) or
                                                       f" (the device publishes: {', '.join(known) or 'nothing'})")
                self.report.add(p.values[name].line, p.sub(name), why)
                continue
            action = p.get(name, choice(PRIVACY_ACTIONS, "action"))
            if action == "seal" and not self.platform_key_given:
                self.report.add(p.line_of(name), "privacy.platform_key_file", f"required because {p.sub(name)} is seal")
            if action is not None:
                out[name] = action
        return out

    def points(self, s: Section, driver: Driver, max_block: int | None) -> tuple[Point, ...]:
        if not driver.points_from_config:
            if "points" in s.values:
                generic = ", ".join(d for d, v in drivers().items() if v.points_from_config)
                self.report.add(s.line_of("points"), s.sub("points"),
                                f"driver '{driver.id}' declares its own points; points only apply to {generic}")
            else:
                widest = max((p.count for p in driver.points if not p.reg.is_bit), default=1)
                if max_block is not None and max_block < widest:
                    self.report.add(s.line_of("max_block"), s.sub("max_block"), f"must be at least {widest}: "
                                    f"driver '{driver.id}' has points that span {widest} registers")
            return ()
        if "points" not in s.values:
            self.report.add(s.line, s.sub("points"),
                            f"required for driver '{driver.id}': it reads only the points declared here")
            return ()
        items = s.items("points", required=True)
        if items is not None and not items:
            self.report.add(s.line_of("points"), s.sub("points"), f"driver '{driver.id}' needs at least one point")
        located: list[tuple[Point, int, str]] = []
        for j, node in enumerate(items or ()):
            p = Section.of(self.report, node, f"{s.sub('points')}[{j}]", node.line, _POINT_KEYS)
            point = self.point(p) if p else None
            if point is not None:
                located.append((point, node.line, p.path))  # type: ignore[union-attr]
        points = tuple(p for p, _, _ in located)
        for msg in point_problems(points, max_block or driver.max_block):
            named = [(line, where) for p, line, where in located
                     if msg.startswith((f"{p.name}:", f"point name {p.name!r}"))]
            line, where = (named[-1] if "declared twice" in msg else named[0]) if named else \
                (s.line_of("points"), s.sub("points"))
            self.report.add(line, where, msg)
        return points

    def point(self, s: Section) -> Point | None:
        mark = self.report.mark()
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
        if self.report.since(mark):
            return None
        fields.update(reg=Reg(fields["reg"]), dtype=DType(fields["dtype"]), data_class=DataClass(fields["data_class"]))
        return Point(**fields)


_POINT_KEYS = ("name", "reg", "address", "type", "length", "bit", "byte_order", "word_order", "scale", "offset",
               "valid", "class", "writable", "internal")


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


def _host(value: Any) -> str:
    text = string(value)
    if "://" in text or "/" in text or " " in text.strip():
        raise ValueError(f"{text!r} is not a host name or address (no scheme, path or spaces; the port is separate)")
    return text.strip()


def _topic_prefix(value: Any) -> str:
    text = string(value)
    if "+" in text or "#" in text:
        raise ValueError(f"{text!r} must not contain the MQTT wildcards '+' or '#'")
    if any(not part for part in text.split("/")):
        raise ValueError(f"{text!r} has an empty level (leading, trailing or doubled '/')")
    return text


def _mqtt_protocol(value: Any) -> str:
    if type(value) is int and value == 5:
        return "5"  # YAML reads an unquoted 5 as an integer
    if value in ("3.1.1", "5"):
        return str(value)
    raise ValueError(f"must be '3.1.1' or '5', got {value!r}")
