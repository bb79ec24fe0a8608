"""The ``commands`` section and device ``writable`` mappings: what they parse into, and defaults.

The error forms are folder cases (``tests/config_cases/commands_section_problems``,
``writable_problems``) run by ``test_config.py``; here the values a valid config yields.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.config.schema import ConfigError, check_file, load_settings
from edge_agent.settings import OPS, CommandSettings, TrustedKey, WriteRule
from support.agent import cli

BASE = """\
gateway: {id: gw-001, site: demo-site, state_dir: state}
mqtt: {host: 127.0.0.1}
buses:
  - {name: conv, protocol: modbus-tcp, host: 10.0.0.5}
  - {name: gate-line, protocol: json-lines, serial: /dev/ttyUSB1}
devices:
  - name: relay-1
    bus: conv
    driver: modbus_generic
    address: 1
    points:
      - {name: relay, reg: coil, address: 0, type: bool, writable: true}
      - {name: setpoint_C, reg: holding, address: 1, type: int16, scale: 0.1, writable: true}
      - {name: mode, reg: holding, address: 2, type: uint16, writable: true}
      - {name: temp_C, reg: input, address: 0, type: int16}
WRITABLE
  - name: gate-1
    bus: gate-line
    driver: gate_controller
GATE
"""


def _load(tmp_path: Path, text: str) -> object:
    path = tmp_path / "site.yaml"
    path.write_text(text, encoding="utf-8")
    return load_settings(path)


def _config(writable: str = "", gate: str = "", commands: str = "") -> str:
    return BASE.replace("WRITABLE\n", writable).replace("GATE\n", gate) + commands


def test_commands_absent_means_off_and_nothing_writable(tmp_path: Path) -> None:
    s = _load(tmp_path, _config())
    assert s.commands == CommandSettings()
    assert not s.commands.enabled
    assert "config.apply" not in s.commands.ops  # the riskiest op is opt-in
    assert all(d.writable == {} for d in s.devices)


def test_commands_section_parsed_with_units_and_relative_key_paths(tmp_path: Path) -> None:
    s = _load(tmp_path, _config(commands="""\
commands:
  keys:
    - {id: platform-2026, public_key_file: keys/platform-2026.pub}
    - {public_key_file: /etc/edge-agent/platform-2027.pub}
  ops: [agent.ping, config.apply]
  max_bytes: 64KiB
  max_skew: 30s
  max_lifetime: 10m
  rollback_after: 45s
  config_backups: 3
  replay_rate: 500
"""))
    c = s.commands
    assert c.enabled
    assert c.keys == (TrustedKey("platform-2026", tmp_path / "keys" / "platform-2026.pub"),
                      TrustedKey("", Path("/etc/edge-agent/platform-2027.pub")))  # "": id derived from the key
    assert c.ops == ("agent.ping", "config.apply")
    assert (c.max_bytes, c.max_skew_s, c.max_lifetime_s) == (64 * 1024, 30.0, 600.0)
    assert (c.rollback_after_s, c.config_backups, c.replay_rate) == (45.0, 3, 500)


def test_defaults_fill_what_is_left_out(tmp_path: Path) -> None:
    s = _load(tmp_path, _config(commands="commands:\n  keys: [{id: k1, public_key_file: k1.pub}]\n"))
    defaults = CommandSettings()
    assert s.commands.ops == defaults.ops and set(s.commands.ops) < set(OPS)
    assert (s.commands.max_bytes, s.commands.rollback_after_s, s.commands.config_backups) == \
        (defaults.max_bytes, defaults.rollback_after_s, defaults.config_backups)


def test_empty_key_list_keeps_commands_off(tmp_path: Path) -> None:
    s = _load(tmp_path, _config(commands="commands:\n  keys: []\n  ops: []\n"))
    assert not s.commands.enabled and s.commands.ops == ()


def test_missing_key_file_is_not_a_config_problem(tmp_path: Path) -> None:
    """Existence is checked at run, like the privacy key files: a config can be checked before
    the key is copied to the gateway."""
    text = _config(commands="commands:\n  keys: [{id: k1, public_key_file: nowhere/k1.pub}]\n")
    (tmp_path / "site.yaml").write_text(text, encoding="utf-8")
    assert check_file(tmp_path / "site.yaml") == []


def test_writable_rules(tmp_path: Path) -> None:
    s = _load(tmp_path, _config(writable="""\
    writable:
      relay: [true, false]
      setpoint_C: {min: 5, max: 30}
      mode: {max: 3}
""", gate="""\
    writable:
      barrier: [open, close]
"""))
    relay = s.device("relay-1").writable
    assert relay == {"relay": WriteRule(values=(True, False)), "setpoint_C": WriteRule(min=5.0, max=30.0),
                     "mode": WriteRule(max=3.0)}
    assert relay["relay"].allows(True) and not relay["relay"].allows(1)  # a bool is not a number here
    assert relay["setpoint_C"].allows(21.5) and not relay["setpoint_C"].allows(31)
    assert relay["mode"].allows(-2) and not relay["mode"].allows("2")
    gate = s.device("gate-1").writable["barrier"]
    assert gate.allows("open") and gate.allows("close") and not gate.allows("raise")


def test_one_value_only(tmp_path: Path) -> None:
    s = _load(tmp_path, _config(gate="    writable: {barrier: [open]}\n"))
    assert s.device("gate-1").writable["barrier"].allows("open")
    assert not s.device("gate-1").writable["barrier"].allows("close")


def test_top_level_typo_suggests_commands(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        _load(tmp_path, _config(commands="command:\n  keys: []\n"))
    assert str(raised.value).endswith("command: unknown key 'command' (did you mean 'commands'?)")


def test_check_prints_writable_problem_with_line(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(_config(writable="    writable:\n      temp_C: {min: 0}\n"), encoding="utf-8")
    out = cli("check", "-c", str(path))
    assert out.returncode == 1
    assert out.stdout.splitlines() == [
        f"{path}:17: devices[0].writable.temp_C: 'temp_C' has reg: input, which is read-only in Modbus (only reg: coil or holding can be written)"]
