"""The ``mqtt`` section with its ``tls`` and ``credentials``: how the gateway reaches its broker.

Called by ``schema``; problems go to the same ``Report``. Files (password, TLS) are only named
here: ``check`` looks for them (``files``), ``run`` reads them. No I/O.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..settings import MqttSettings, SparkplugSettings, TlsSettings
from .source import Report, Section, boolean, choice, describe, duration, host, identifier, integer, path, string

__all__ = ["read_mqtt", "DIALECTS"]

DIALECTS = ("edge", "thingsboard", "sparkplug")  # uplink/dialect.py, docs/dialects.md


def read_mqtt(report: Report, top: Section, base: Path) -> MqttSettings | None:
    """``mqtt:`` (required); None when it is missing or not a mapping."""
    s = top.section("mqtt", ("host", "port", "tls", "credentials", "topic_prefix", "client_id", "protocol",
                             "keepalive", "batch_max", "inflight", "reconnect_min", "reconnect_max",
                             "compress", "dialect", "sparkplug", "linger", "hosts"), required=True)
    if s is None:
        return None
    tls = _tls(report, s, base)
    username, password_file, username_file = _credentials(report, s, base)
    reconnect_min = s.get("reconnect_min", duration(0.01, 3600), 1.0)
    reconnect_max = s.get("reconnect_max", duration(0.01, 86400), 60.0)
    if reconnect_min is not None and reconnect_max is not None and reconnect_max < reconnect_min:
        report.add(s.line_of("reconnect_max"), s.sub("reconnect_max"),
                   "must be at least reconnect_min (the first retry delay)")
    protocol = s.get("protocol", _mqtt_protocol, "3.1.1")
    port = s.get("port", integer(1, 65535), 8883 if tls.enabled else 1883)
    hosts = _hosts(report, s, port or 1883)
    dialect = s.get("dialect", choice(DIALECTS, "dialect"), "edge") or "edge"
    if dialect != "edge" and s.given("compress") and s.values["compress"].value is True:
        report.add(s.line_of("compress"), s.sub("compress"), f"applies to the edge dialect only; the {dialect} "
                   "dialect's platform reads its own payloads (remove it, or use dialect: edge)")
    sparkplug = _sparkplug(report, s, dialect)
    return MqttSettings(
        host=hosts[0][0] if hosts else ("" if s.given("hosts") else s.get("host", host)),
        port=hosts[0][1] if hosts else port,
        hosts=hosts,
        tls=tls, username=username, password_file=password_file, username_file=username_file,
        topic_prefix=s.get("topic_prefix", _topic_prefix, "edge/v1"),
        client_id=s.get("client_id", string, None), protocol=protocol,
        keepalive_s=s.get("keepalive", duration(1, 65535), 30.0),
        batch_max=s.get("batch_max", integer(1, 10000), 500), inflight=s.get("inflight", integer(1, 1000), 20),
        reconnect_min_s=reconnect_min, reconnect_max_s=reconnect_max,
        compress=s.get("compress", _compress, False), dialect=dialect, sparkplug=sparkplug,
        linger_s=s.get("linger", duration(0, 10), 0.025))


def _sparkplug(report: Report, mqtt: Section, dialect: str) -> SparkplugSettings:
    """``mqtt.sparkplug``: the group id and the primary host application, with ``dialect: sparkplug``."""
    s = mqtt.section("sparkplug", ("group_id", "primary_host"))
    if s is None:
        return SparkplugSettings()
    if dialect != "sparkplug":
        report.add(mqtt.line_of("sparkplug"), mqtt.sub("sparkplug"),
                   f"only read with dialect: sparkplug (the dialect is {dialect})")
    why = "Sparkplug topic levels exclude '/', '+' and '#'"
    return SparkplugSettings(group_id=s.get("group_id", identifier(why), None),
                             primary_host=s.get("primary_host", identifier(why), None))


def _hosts(report: Report, mqtt: Section, default_port: int) -> tuple[tuple[str, int], ...]:
    """``hosts``: the broker's nodes, ``HOST`` or ``HOST:PORT`` each (IPv6 in brackets), tried in turn;
    instead of ``host`` (one of the two is required)."""
    if not mqtt.given("hosts"):
        return ()
    if mqtt.given("host"):
        report.add(mqtt.line_of("hosts"), mqtt.sub("hosts"), "give host or hosts, not both")
    out: list[tuple[str, int]] = []
    items = mqtt.items("hosts")
    if items is not None and not items:
        report.add(mqtt.line_of("hosts"), mqtt.sub("hosts"), "lists no broker: give one HOST:PORT at least")
    for i, node in enumerate(items or ()):
        where = f"{mqtt.sub('hosts')}[{i}]"
        try:
            entry = _node(node.value, default_port)
        except ValueError as exc:
            report.add(node.line, where, str(exc))
            continue
        if entry in out:
            report.add(node.line, where, f"{entry[0]}:{entry[1]} is listed twice")
            continue
        out.append(entry)
    return tuple(out)


def _node(value: Any, default_port: int) -> tuple[str, int]:
    text = string(value).strip()
    if text.startswith("["):  # [IPv6]:port
        addr, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
        if rest and not rest.startswith(":"):
            raise ValueError(f"{text!r}: expected [ADDRESS]:PORT")
    elif text.count(":") == 1:
        addr, port_text = text.split(":")
    elif ":" in text:
        raise ValueError(f"{text!r}: an IPv6 address goes in brackets: '[{text}]:1883'")
    else:
        addr, port_text = text, ""
    port = default_port
    if port_text:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise ValueError(f"{text!r}: the port must be 1..65535")
        port = int(port_text)
    return host(addr), port


def _tls(report: Report, mqtt: Section, base: Path) -> TlsSettings:
    s = mqtt.section("tls", ("enabled", "ca_file", "cert_file", "key_file", "verify_hostname"),
                     secrets={"key": "key_file"})
    if s is None:
        return TlsSettings()
    files = {k: s.get(k, path(base), None) for k in ("ca_file", "cert_file", "key_file")}
    for have, need in (("cert_file", "key_file"), ("key_file", "cert_file")):
        if s.given(have) and not s.given(need):
            report.add(s.line_of(have), s.sub(need),
                       f"required with {have}: a client certificate and its key go together")
    if any(s.given(k) for k in files) and "enabled" not in s.values:
        report.add(s.line, s.sub("enabled"), "TLS files are given but enabled is not set: "
                   "write enabled: true (or enabled: false to connect in plain text)")
    return TlsSettings(enabled=bool(s.get("enabled", boolean, False)), **files,
                       verify_hostname=s.get("verify_hostname", boolean, True))


def _credentials(report: Report, mqtt: Section, base: Path) -> tuple[str | None, Path | None, Path | None]:
    s = mqtt.section("credentials", ("username", "username_file", "password_file"),
                     secrets={"password": "password_file", "token": "username_file"})
    if s is None:
        return None, None, None
    if s.given("username") and s.given("username_file"):
        report.add(s.line_of("username_file"), s.sub("username_file"),
                   "give username or username_file, not both")
    if s.given("password_file") and not (s.given("username") or s.given("username_file")):
        report.add(s.line_of("password_file"), s.sub("username"), "required with password_file")
    return (s.get("username", string, None), s.get("password_file", path(base), None),
            s.get("username_file", path(base), None))


def _topic_prefix(value: Any) -> str:
    text = string(value)
    if "+" in text or "#" in text:
        raise ValueError(f"{text!r} must not contain the MQTT wildcards '+' or '#'")
    if any(not part for part in text.split("/")):
        raise ValueError(f"{text!r} has an empty level (leading, trailing or doubled '/')")
    return text


def _compress(value: Any) -> bool:
    if not isinstance(value, bool):  # 'gzip', 'zlib', 'xz': there is one codec, and true names it
        raise ValueError(f"expected true (telemetry and events as xz) or false, got {describe(value)}")
    return value


def _mqtt_protocol(value: Any) -> str:
    if type(value) is int and value == 5:
        return "5"  # YAML reads an unquoted 5 as an integer
    if value in ("3.1.1", "5"):
        return str(value)
    raise ValueError(f"must be '3.1.1' or '5', got {value!r}")
