"""``check`` and ``run`` through the command line, as an installer meets them: the rules that span
devices (two at one address) stop both verbs the same way (the rules' exact lines are folder
cases in ``tests/config_cases/``, ``duplicate_*``); the files a valid config names are looked
for by ``check`` and reported as warnings, which ``check --strict`` fails on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from support.paths import ROOT
from support.agent import cli
from support.users import as_another_user, shared_dir, unreadable_mode
from support.keys import init_keys


def _config(tmp_path: Path, devices: list[dict], **over: object) -> Path:
    cfg = {
        "gateway": {"id": "gw-1", "site": "s1", "state_dir": str(tmp_path / "state")},
        "mqtt": {"host": "127.0.0.1", "port": 1},
        "buses": [{"name": "rs485-1", "protocol": "modbus-rtu", "serial": str(tmp_path / "no-such-port")}],
        "devices": devices,
        **over,
    }
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


TWO_AT_ONE = [{"name": "river-1", "bus": "rs485-1", "driver": "qdy_level", "address": 1},
              {"name": "river-2", "bus": "rs485-1", "driver": "qdy_level", "address": 1}]
CLASH = ("devices[1].address: address 1 is already used by river-1 (line 16) on bus 'rs485-1'; two devices at "
         "one address answer the same requests: give each its own")


def test_check_and_run_refuse_two_devices_at_one_address(tmp_path: Path) -> None:
    init_keys(_config(tmp_path, TWO_AT_ONE[:1]))  # run's own start-up checks pass: the config alone stops it
    path = _config(tmp_path, TWO_AT_ONE)
    out = cli("check", "-c", str(path))
    assert out.returncode == 1
    assert out.stdout.splitlines() == [f"{path}:20: {CLASH}"]
    out = cli("run", "-c", str(path), timeout=30)
    assert out.returncode == 1
    assert f"{path}:20: {CLASH}" in out.stderr.splitlines()
    assert "nothing was started" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "state" / "buffer.db").exists()


# -- files the config names: warnings, and --strict ----------------------------------------------

NAMED = """\
gateway:
  id: gw-1
  site: s1
  state_dir: state
mqtt:
  host: 127.0.0.1
  tls:
    enabled: true
    ca_file: tls/ca.pem
    cert_file: tls/gw.crt
    key_file: tls/gw.key
  credentials:
    username: gw-1
    password_file: mqtt.pass
privacy:
  key_file: keys/pseudonym.key
  platform_key_file: keys/platform.pub
  actions: {health: seal}
buses: []
devices: []
commands:
  keys:
    - {id: platform-1, public_key_file: keys/command.pub}
"""


def _named(tmp_path: Path, text: str = NAMED) -> Path:
    path = tmp_path / "gw.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_check_warns_about_every_named_file_that_is_absent_and_strict_fails(tmp_path: Path) -> None:
    path = _named(tmp_path)
    t = tmp_path
    keys_init = f"'edge-agent keys init -c {path}' creates it"
    tls_fix = "copy the file the broker's operator gave you there, or correct the path"
    absent = "does not exist; 'run' refuses to start without it:"
    expected = [
        f"{path}:9: mqtt.tls.ca_file: warning: {t}/tls/ca.pem {absent} {tls_fix}",
        f"{path}:10: mqtt.tls.cert_file: warning: {t}/tls/gw.crt {absent} {tls_fix}",
        f"{path}:11: mqtt.tls.key_file: warning: {t}/tls/gw.key {absent} {tls_fix}",
        f"{path}:14: mqtt.credentials.password_file: warning: {t}/mqtt.pass {absent} write the broker password "
        "there (one line), mode 0600, owned by the agent's user",
        f"{path}:16: privacy.key_file: warning: {t}/keys/pseudonym.key {absent} {keys_init}",
        f"{path}:17: privacy.platform_key_file: warning: {t}/keys/platform.pub {absent} ask the platform operator "
        "for its public key ('edge-agent platform keygen DIR' makes DIR/platform.pub) and copy it there",
        f"{path}:23: commands.keys[0].public_key_file: warning: {t}/keys/command.pub {absent} ask the platform "
        "operator for its command key ('edge-agent platform signkey DIR' makes DIR/command.pub) and copy it there",
    ]
    out = cli("check", "-c", str(path))
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == expected + [f"{path}: ok (0 bus(es), 0 device(s), 7 warning(s))"]
    out = cli("check", "--strict", "-c", str(path))
    assert out.returncode == 1
    assert out.stdout.splitlines() == expected
    assert out.stderr.splitlines() == [f"{path}: 7 warning(s), and --strict fails on any"]


def test_strict_check_passes_once_every_file_is_there(tmp_path: Path) -> None:
    path = _named(tmp_path)
    (tmp_path / "tls").mkdir()
    for name in ("tls/ca.pem", "tls/gw.crt", "tls/gw.key", "mqtt.pass"):
        (tmp_path / name).write_text("not checked beyond being there\n", encoding="utf-8")
    assert cli("platform", "keygen", str(tmp_path / "keys")).returncode == 0  # keys/platform.pub
    assert cli("platform", "signkey", str(tmp_path / "keys")).returncode == 0  # keys/command.pub
    init_keys(path)  # keys/pseudonym.key
    out = cli("check", "--strict", "-c", str(path))
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.splitlines() == [f"{path}: ok (0 bus(es), 0 device(s))"] and out.stderr == ""


def test_the_default_key_file_is_reported_at_the_state_dir_line(tmp_path: Path) -> None:
    path = _named(tmp_path, "gateway:\n  id: gw-1\n  site: s1\n  state_dir: state\nmqtt: {host: h}\n"
                            "buses: []\ndevices: []\n")
    out = cli("check", "-c", str(path))
    assert out.returncode == 0
    assert out.stdout.splitlines()[0] == (
        f"{path}:4: privacy.key_file: warning: {tmp_path}/state/keys/pseudonym.key does not exist (the default key "
        f"file, {{state_dir}}/keys/pseudonym.key); 'run' refuses to start without it: 'edge-agent keys init -c "
        f"{path}' creates it")


def test_only_the_files_run_reads_are_looked_for(tmp_path: Path) -> None:
    """No action pseudonymizes: no key file is read. TLS off: its files are not loaded."""
    text = NAMED.replace("enabled: true", "enabled: false").replace("actions: {health: seal}",
                                                                     "actions: {health: seal, identifier: mask}")
    path = _named(tmp_path, text)
    out = cli("check", "-c", str(path))
    assert out.returncode == 0
    keys = [line.split(": ")[1] for line in out.stdout.splitlines()[:-1]]
    assert keys == ["mqtt.credentials.password_file", "privacy.platform_key_file", "commands.keys[0].public_key_file"]


def test_a_directory_or_an_empty_file_is_a_warning(tmp_path: Path) -> None:
    path = _named(tmp_path, "gateway: {id: gw-1, site: s1, state_dir: state}\nmqtt:\n  host: h\n  credentials:\n"
                            "    username: u\n    password_file: mqtt.pass\nprivacy:\n  key_file: keys\n"
                            "buses: []\ndevices: []\n")
    (tmp_path / "keys").mkdir()
    (tmp_path / "mqtt.pass").write_text("", encoding="utf-8")
    out = cli("check", "-c", str(path))
    assert out.returncode == 0
    assert out.stdout.splitlines()[:2] == [
        f"{path}:6: mqtt.credentials.password_file: warning: {tmp_path}/mqtt.pass is empty; 'run' refuses to start: "
        "write the broker password there (one line), mode 0600, owned by the agent's user",
        f"{path}:8: privacy.key_file: warning: {tmp_path}/keys is not a file; 'run' refuses to start: point "
        "privacy.key_file at the file itself"]


def test_a_file_the_checking_user_cannot_read_is_a_warning() -> None:
    with shared_dir() as base:
        path = _named(base, "gateway: {id: gw-1, site: s1, state_dir: state}\nmqtt:\n  host: h\n  credentials:\n"
                            "    username: u\n    password_file: mqtt.pass\nprivacy: {actions: {identifier: drop}}\n"
                            "buses: []\ndevices: []\n")
        path.chmod(0o644)
        (base / "mqtt.pass").write_text("secret\n", encoding="utf-8")
        (base / "mqtt.pass").chmod(unreadable_mode())
        out = subprocess.run([*as_another_user(), sys.executable, "-m", "edge_agent.cli", "check", "-c", str(path)],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
        assert f"{path}:6: mqtt.credentials.password_file: warning: {base}/mqtt.pass is not readable by " \
            in out.stdout.splitlines()[0]
        assert f"'sudo edge-agent check -c {path}'" in out.stdout


EXAMPLES = sorted((ROOT / "config").glob("*.yaml"))


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.name for e in EXAMPLES])
def test_every_shipped_config_passes_check_its_files_are_only_warnings(example: Path) -> None:
    """The examples name files of a real gateway (/etc/edge-agent/...): absent here, so only
    ``check --strict`` fails on them, as it should on a gateway that lacks them."""
    from edge_agent.config.schema import check_config

    settings, found = check_config(example)
    assert settings is not None and all(p.warning for p in found), "\n".join(map(str, found))
