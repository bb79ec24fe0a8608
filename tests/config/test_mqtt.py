"""The ``mqtt`` section's ``compress`` (issue 13): off by default (the contract's JSON), true turns
xz on, anything else is a problem on its line (the exact line is the folder case
``cases/mqtt_compress_not_a_boolean``). ``dialect``, ``sparkplug`` and ``commands.unsigned``
(issue 14): which platform dialect, its settings, and the ops its unsigned commands may run."""

from __future__ import annotations

import pytest

from edge_agent.config.schema import ConfigError, parse_settings

CONFIG = "gateway: {{id: gw-1, site: s1}}\nmqtt: {{host: h{extra}}}\nbuses: []\ndevices: []\n"


def test_compress_is_off_unless_set() -> None:
    assert parse_settings(CONFIG.format(extra="")).mqtt.compress is False
    assert parse_settings(CONFIG.format(extra=", compress: false")).mqtt.compress is False
    assert parse_settings(CONFIG.format(extra=", compress: true")).mqtt.compress is True


@pytest.mark.parametrize("value, named", [("gzip", "a string ('gzip')"), ('"true"', "a string ('true')"),
                                          ("1", "an integer (1)"), ("[xz]", "a list")])
def test_compress_takes_true_or_false_only(value: str, named: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_settings(CONFIG.format(extra=f", compress: {value}"))
    assert str(raised.value).splitlines() == [
        f"<string>:2: mqtt.compress: expected true (telemetry and events as xz) or false, got {named}"]


# -- mqtt.dialect, mqtt.sparkplug and commands.unsigned (issue 14) ----------------------------------
def _problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        parse_settings(text)
    return str(raised.value).splitlines()


def test_dialect_is_edge_unless_set_and_names_one_of_three() -> None:
    assert parse_settings(CONFIG.format(extra="")).mqtt.dialect == "edge"
    for dialect in ("edge", "thingsboard", "sparkplug"):
        assert parse_settings(CONFIG.format(extra=f", dialect: {dialect}")).mqtt.dialect == dialect
    assert _problems(CONFIG.format(extra=", dialect: thingsbord")) == [
        "<string>:2: mqtt.dialect: unknown dialect 'thingsbord' (did you mean 'thingsboard'?)"]


def test_sparkplug_section_is_read_with_its_dialect_only() -> None:
    mqtt = parse_settings(CONFIG.format(extra=", dialect: sparkplug, sparkplug: {group_id: g-1, primary_host: scada}"))
    assert (mqtt.mqtt.sparkplug.group_id, mqtt.mqtt.sparkplug.primary_host) == ("g-1", "scada")
    assert parse_settings(CONFIG.format(extra=", dialect: sparkplug")).mqtt.sparkplug.group_id is None
    assert _problems(CONFIG.format(extra=", sparkplug: {group_id: g}")) == [
        "<string>:2: mqtt.sparkplug: only read with dialect: sparkplug (the dialect is edge)"]
    assert _problems(CONFIG.format(extra=", dialect: sparkplug, sparkplug: {group_id: a/b}")) == [
        "<string>:2: mqtt.sparkplug.group_id: 'a/b' may only use letters, digits, '_', '.' and '-' "
        "(Sparkplug topic levels exclude '/', '+' and '#')"]


def test_compress_is_for_the_edge_dialect_only() -> None:
    assert _problems(CONFIG.format(extra=", dialect: thingsboard, compress: true")) == [
        "<string>:2: mqtt.compress: applies to the edge dialect only; the thingsboard dialect's platform reads "
        "its own payloads (remove it, or use dialect: edge)"]


COMMANDS = CONFIG + "commands:\n  unsigned:\n{lists}"


def test_unsigned_ops_per_dialect_need_no_keys_and_must_be_enabled() -> None:
    s = parse_settings(COMMANDS.format(extra=", dialect: thingsboard",
                                       lists="    thingsboard: [agent.ping, device.poll]\n    sparkplug: []\n"))
    assert s.commands.unsigned == {"thingsboard": ("agent.ping", "device.poll"), "sparkplug": ()}
    assert s.commands.keys == ()
    assert _problems(COMMANDS.format(extra="", lists="    thingsboard: [config.apply, agent.pong]\n    edge: []\n")) == [
        "<string>:7: commands.unsigned.thingsboard[0]: 'config.apply' is not enabled in commands.ops: add it there too",
        "<string>:7: commands.unsigned.thingsboard[1]: unknown command op 'agent.pong' (did you mean 'agent.ping'?)",
        "<string>:8: commands.unsigned.edge: unknown key 'edge' (expected one of: thingsboard, sparkplug)",
    ]


def test_linger_is_a_short_duration() -> None:
    """``mqtt.linger`` (issue 13): how long a newly polled record waits for company before it is
    published ahead of its group commit; 25 ms unless set, 0s..10s."""
    assert parse_settings(CONFIG.format(extra="")).mqtt.linger_s == 0.025
    assert parse_settings(CONFIG.format(extra=", linger: 0s")).mqtt.linger_s == 0.0
    assert parse_settings(CONFIG.format(extra=", linger: 100ms")).mqtt.linger_s == 0.1
    problem, = _problems(CONFIG.format(extra=", linger: 11s"))
    assert problem.startswith("<string>:2: mqtt.linger: ")


def test_a_user_name_may_come_from_a_file_as_a_thingsboard_token_must(tmp_path) -> None:
    """``mqtt.credentials.username_file`` (issue 14): a ThingsBoard device's access token is its MQTT
    user name and a secret, so it is read from a file like a password; inline ``token`` is refused."""
    s = parse_settings(CONFIG.format(extra=", credentials: {username_file: /etc/edge-agent/tb.token}"))
    assert str(s.mqtt.username_file) == "/etc/edge-agent/tb.token" and s.mqtt.username is None
    assert _problems(CONFIG.format(extra=", credentials: {username: a, username_file: /x}")) == [
        "<string>:2: mqtt.credentials.username_file: give username or username_file, not both"]
    problem, = _problems(CONFIG.format(extra=", credentials: {token: abc}"))
    assert "never written inline: use username_file" in problem


def test_the_user_name_file_is_sent_as_the_mqtt_user_name(tmp_path) -> None:
    from edge_agent.settings import GatewaySettings
    from edge_agent.uplink.client import MqttConfigError, build_client, read_username

    token = tmp_path / "tb.token"
    token.write_text("A1b2C3d4E5\n")
    s = parse_settings(CONFIG.format(extra=f", credentials: {{username_file: {token}}}"))
    assert read_username(s.mqtt) == "A1b2C3d4E5"
    client = build_client(s.mqtt, GatewaySettings("gw-1", "s1", tmp_path))
    assert client.username == "A1b2C3d4E5"
    token.write_text("")
    with pytest.raises(MqttConfigError, match="mqtt.username_file: .* is empty"):
        read_username(s.mqtt)


def test_hosts_lists_the_brokers_nodes_instead_of_host() -> None:
    """``mqtt.hosts`` (issue 16): the nodes tried in turn, ``HOST[:PORT]`` each (``port`` or the
    TLS-aware default fills in), IPv6 in brackets; ``host`` alone stays valid."""
    s = parse_settings(CONFIG.replace("{{host: h{extra}}}", "{{hosts: {extra}}}").format(
        extra='["a.example:1884", b.example, "[fd00::7]:1885"]')).mqtt
    assert s.nodes == (("a.example", 1884), ("b.example", 1883), ("fd00::7", 1885))
    assert (s.host, s.port) == ("a.example", 1884)
    assert parse_settings(CONFIG.format(extra="")).mqtt.nodes == (("h", 1883),)
    assert _problems(CONFIG.format(extra=", hosts: [a]")) == ["<string>:2: mqtt.hosts: give host or hosts, not both"]
    hosts = CONFIG.replace("{{host: h{extra}}}", "{{hosts: {extra}}}")
    assert _problems(hosts.format(extra="[]")) == [
        "<string>:2: mqtt.hosts: lists no broker: give one HOST:PORT at least"]
    assert _problems(hosts.format(extra='["::1", "a:0", a, a]')) == [
        "<string>:2: mqtt.hosts[0]: '::1': an IPv6 address goes in brackets: '[::1]:1883'",
        "<string>:2: mqtt.hosts[1]: 'a:0': the port must be 1..65535",
        "<string>:2: mqtt.hosts[3]: a:1883 is listed twice"]
