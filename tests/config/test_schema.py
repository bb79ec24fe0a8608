"""Config loading: error cases as folders (Telegraf style), every shipped example, defaults, paths.

Error cases live in ``tests/config_cases/<case>/``: ``config.yaml`` and ``expected.err``, the
exact lines ``edge-agent check`` would print. The runner changes into the case folder and
passes the relative name ``config.yaml``, so ``Problem.file`` is the path exactly as given and
``expected.err`` reads as a user would see it. Add a case by adding a folder.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.config.schema import ConfigError, Problem, check_file, load_settings, parse_settings
from edge_agent.model import DataClass, DType, Reg
from edge_agent.settings import Settings

from support.paths import ROOT, TESTS

CASES = sorted(p for p in (TESTS / "config" / "cases").iterdir() if p.is_dir())
EXAMPLES = sorted((ROOT / "config").glob("*.yaml"))

MINIMAL = """\
gateway: {id: gw-001, site: demo-site}
mqtt: {host: 127.0.0.1}
buses: []
devices: []
"""


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_error_case(case: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(case)
    expected = (case / "expected.err").read_text(encoding="utf-8").splitlines()
    assert expected, "a case must expect at least one problem"
    assert [str(p) for p in check_file("config.yaml")] == expected
    with pytest.raises(ConfigError) as raised:
        load_settings("config.yaml")
    assert str(raised.value).splitlines() == expected


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.name for e in EXAMPLES])
def test_every_shipped_config_loads(example: Path) -> None:
    assert check_file(example) == []
    assert isinstance(load_settings(example), Settings)


def test_examples_exist() -> None:
    assert {"example.yaml", "minimal.yaml"} <= {e.name for e in EXAMPLES}


def test_example_covers_the_community_setup() -> None:
    s = load_settings(ROOT / "config" / "example.yaml")
    drivers = {d.driver for d in s.devices}
    assert {"qdy_level", "eastron_meter", "modbus_generic"} <= drivers
    gate = next(d for d in s.devices if d.driver == "modbus_generic")
    assert s.bus(gate.bus).link == "rtu-over-tcp"
    assert any(p.reg is Reg.COIL and p.writable for p in gate.points)


def _write(tmp_path: Path, text: str, name: str = "site.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_applied(tmp_path: Path) -> None:
    text = MINIMAL.replace("buses: []\ndevices: []\n", """\
buses: [{name: rs485-1, protocol: modbus-rtu, serial: /dev/ttyUSB0},
        {name: plc, protocol: modbus-tcp, host: 10.0.0.5}]
devices:
  - {name: river-1, bus: rs485-1, driver: qdy_level, address: 1}
  - {name: meter-1, bus: rs485-1, driver: eastron_meter, address: 2, interval: 1m}
""")
    s = load_settings(_write(tmp_path, text))
    assert s.gateway.state_dir == Path("/var/lib/edge-agent")
    assert s.buffer.path == Path("/var/lib/edge-agent/buffer.db")
    assert s.buffer.max_bytes == 512 * 1024**2
    assert s.mqtt.port == 1883 and not s.mqtt.tls.enabled and s.mqtt.protocol == "3.1.1"
    assert s.root_topic == "edge/v1/demo-site/gw-001"
    river, meter = s.devices
    assert river.interval_s == 5.0  # the driver's default_interval
    assert meter.interval_s == 60.0
    assert river.timeout_s is None and river.retries == 1 and river.enabled
    assert s.bus("plc").port == 502 and s.bus("rs485-1").port is None
    assert s.bus("rs485-1").baud == 9600 and s.bus("rs485-1").parity == "N"
    assert s.privacy.actions == {} and s.privacy.platform_key_file is None
    assert s.privacy.key_file == Path("/var/lib/edge-agent/keys/pseudonym.key")  # pseudonymize is a default
    assert s.source == tmp_path / "site.yaml"


def test_tls_changes_the_default_port(tmp_path: Path) -> None:
    s = load_settings(_write(tmp_path, MINIMAL.replace("{host: 127.0.0.1}", "{host: b, tls: {enabled: true}}")))
    assert s.mqtt.port == 8883 and s.mqtt.tls.enabled and s.mqtt.tls.verify_hostname
    s = load_settings(_write(tmp_path, MINIMAL.replace("{host: 127.0.0.1}", "{host: b, port: 9883, tls: {enabled: true}}")))
    assert s.mqtt.port == 9883


def test_buffer_path_follows_state_dir(tmp_path: Path) -> None:
    s = load_settings(_write(tmp_path, MINIMAL.replace("site: demo-site}", "site: demo-site, state_dir: state}")))
    assert s.gateway.state_dir == tmp_path / "state"
    assert s.buffer.path == tmp_path / "state" / "buffer.db"


def test_relative_paths_are_resolved_against_the_config_directory(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp_path / "etc"
    conf.mkdir()
    text = MINIMAL.replace("mqtt: {host: 127.0.0.1}", """\
mqtt:
  host: 127.0.0.1
  tls: {enabled: true, ca_file: tls/ca.pem, cert_file: tls/gw.crt, key_file: /abs/gw.key}
  credentials: {username: gw-001, password_file: mqtt.pass}
buffer: {path: data/buffer.db}
privacy: {key_file: keys/pseudonym.key, platform_key_file: keys/platform.pub}""")
    path = _write(conf, text)
    monkeypatch.chdir(tmp_path)  # somewhere else: the result must not depend on it
    s = load_settings(Path("etc") / "site.yaml")
    assert s.mqtt.tls.ca_file == conf / "tls" / "ca.pem"
    assert s.mqtt.tls.cert_file == conf / "tls" / "gw.crt"
    assert s.mqtt.tls.key_file == Path("/abs/gw.key")
    assert s.mqtt.password_file == conf / "mqtt.pass"
    assert s.buffer.path == conf / "data" / "buffer.db"
    assert s.privacy.key_file == conf / "keys" / "pseudonym.key"
    assert s.privacy.platform_key_file == conf / "keys" / "platform.pub"
    assert all(p.is_absolute() for p in (s.buffer.path, s.mqtt.password_file, s.privacy.key_file))
    assert parse_settings(path.read_text(), base_dir=tmp_path / "x").buffer.path == tmp_path / "x" / "data" / "buffer.db"


def test_generic_points_become_model_points(tmp_path: Path) -> None:
    text = MINIMAL.replace("buses: []\ndevices: []\n", """\
buses: [{name: conv, protocol: modbus-rtu, host: 192.168.1.50, port: 4196}]
devices:
  - name: gate-1
    bus: conv
    driver: modbus_generic
    address: 1
    points:
      - {name: barrier, reg: coil, address: 0, type: bool, writable: true}
      - {name: temp_C, reg: holding, address: 0, type: int16, scale: 0.1, valid: [-40, 125]}
      - {name: card_no, reg: input, address: 10, type: string, length: 4, class: identifier}
      - {name: alarm_bit, reg: holding, address: 20, type: bool, bit: 3}
""")
    s = load_settings(_write(tmp_path, text))
    barrier, temp, card, alarm = s.device("gate-1").points
    assert (barrier.reg, barrier.dtype, barrier.writable) == (Reg.COIL, DType.BOOL, True)
    assert temp.scale == 0.1 and temp.valid == (-40.0, 125.0) and temp.data_class is DataClass.TELEMETRY
    assert card.length == 4 and card.data_class is DataClass.IDENTIFIER
    assert alarm.bit == 3
    assert s.device("gate-1").interval_s == 10.0


def test_privacy_actions_map_to_data_classes(tmp_path: Path) -> None:
    text = MINIMAL + "privacy: {key_file: k, actions: {identifier: pseudonymize, name: drop}, geohash_length: 5}\n"
    s = load_settings(_write(tmp_path, text))
    assert s.privacy.actions == {DataClass.IDENTIFIER: "pseudonymize", DataClass.NAME: "drop"}
    assert s.privacy.geohash_length == 5


def test_mqtt_protocol_5_may_be_an_integer() -> None:
    s = parse_settings(MINIMAL.replace("{host: 127.0.0.1}", "{host: h, protocol: 5, keepalive: 1m}"))
    assert s.mqtt.protocol == "5" and s.mqtt.keepalive_s == 60.0


def test_yaml_merge_keys_share_settings() -> None:
    text = MINIMAL.replace("buses: []\ndevices: []\n", """\
buses: [{name: b, protocol: modbus-tcp, host: 10.0.0.1}]
devices:
  - &meter {name: m1, bus: b, driver: eastron_meter, address: 1, interval: 30s}
  - <<: *meter
    name: m2
    address: 2
""")
    m1, m2 = parse_settings(text).devices
    assert (m2.name, m2.address, m2.interval_s) == ("m2", 2, 30.0)


def test_unreadable_file_is_a_problem_not_a_traceback(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    [problem] = check_file(missing)
    assert problem.file == str(missing) and problem.line is None
    assert str(problem) == f"{missing}: cannot read the file: No such file or directory"
    [problem] = check_file(tmp_path)  # a directory
    assert "cannot read the file" in problem.message
    with pytest.raises(ConfigError):
        load_settings(missing)


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"gateway:\n  site: caf\xe9\n")
    [problem] = check_file(path)
    assert problem.message.startswith("not UTF-8 text")


def test_problem_format() -> None:
    assert str(Problem("site.yaml", 14, "devices[1].interval", "has no time unit, did you mean '60s'?")) == \
        "site.yaml:14: devices[1].interval: has no time unit, did you mean '60s'?"
    assert str(Problem("site.yaml", None, "mqtt", "required key is missing")) == "site.yaml: mqtt: required key is missing"
    assert str(Problem("site.yaml", 3, "", "YAML syntax error: x")) == "site.yaml:3: YAML syntax error: x"


def test_parse_settings_reports_its_source_name() -> None:
    with pytest.raises(ConfigError) as raised:
        parse_settings("gateway: {id: a, site: b}\n", source="apply:c-7d1e")
    assert [p.file for p in raised.value.problems] == ["apply:c-7d1e"] * 3
    assert str(raised.value).splitlines()[0] == "apply:c-7d1e: mqtt: required key is missing"


def test_problems_are_sorted_by_line() -> None:
    text = "devices: [{name: x, bus: nope, driver: qdy_level, address: 1}]\nbuses: []\ngateway: {id: a/b, site: s}\n"
    lines = [p.line or 0 for p in check_text(text)]
    assert lines == sorted(lines) and len(lines) >= 3


def check_text(text: str) -> list[Problem]:
    with pytest.raises(ConfigError) as raised:
        parse_settings(text)
    return raised.value.problems


def test_device_privacy_overrides(tmp_path: Path) -> None:
    text = MINIMAL.replace("buses: []\ndevices: []\n", """\
privacy: {platform_key_file: platform.pub}
buses: [{name: conv, protocol: modbus-tcp, host: 10.0.0.5}]
devices:
  - name: gate-1
    bus: conv
    driver: modbus_generic
    address: 1
    points:
      - {name: card_no, reg: input, address: 10, type: string, length: 4, class: identifier}
      - {name: owner_name, reg: input, address: 20, type: string, length: 4, class: name}
    privacy: {card_no: mask, owner_name: seal}
  - {name: river-1, bus: conv, driver: qdy_level, address: 2, privacy: {level_m: generalize}}
  - {name: river-2, bus: conv, driver: qdy_level, address: 3}
""")
    s = load_settings(_write(tmp_path, text))
    assert s.device("gate-1").privacy == {"card_no": "mask", "owner_name": "seal"}
    assert s.device("river-2").privacy == {}
    assert s.privacy_overrides == {("gate-1", "card_no"): "mask", ("gate-1", "owner_name"): "seal",
                                   ("river-1", "level_m"): "generalize"}
    assert s.privacy.key_file == Path("/var/lib/edge-agent/keys/pseudonym.key")


def test_key_file_default_follows_state_dir(tmp_path: Path) -> None:
    s = load_settings(_write(tmp_path, MINIMAL.replace("site: demo-site}", "site: demo-site, state_dir: st}")))
    assert s.privacy.key_file == tmp_path / "st" / "keys" / "pseudonym.key"
    s = load_settings(_write(tmp_path, MINIMAL + "privacy: {key_file: k/site.key}\n"))
    assert s.privacy.key_file == tmp_path / "k" / "site.key"


def test_the_examples_show_every_dialect() -> None:
    """Issue 14: example.yaml (edge), thingsboard.yaml and sparkplug.yaml, each with the dialect's
    own sections and the ops it lets through unsigned."""
    dialects = {e.name: load_settings(e).mqtt.dialect for e in EXAMPLES}
    assert (dialects["example.yaml"], dialects["thingsboard.yaml"], dialects["sparkplug.yaml"]) == (
        "edge", "thingsboard", "sparkplug")
    tb, spb = load_settings(ROOT / "config" / "thingsboard.yaml"), load_settings(ROOT / "config" / "sparkplug.yaml")
    assert tb.mqtt.username_file is not None and tb.commands.unsigned == {"thingsboard": ("agent.ping", "device.poll")}
    assert (spb.mqtt.sparkplug.group_id, spb.mqtt.sparkplug.primary_host) == ("community-7", "scada-1")
    assert spb.commands.unsigned == {"sparkplug": ("device.write",)}
