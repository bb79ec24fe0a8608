"""``check`` and ``run`` through the command line, as an installer meets them: the rules that span
devices (two at one address) stop both verbs the same way. The rules' exact lines are folder
cases in ``tests/config_cases/`` (``duplicate_*``)."""

from __future__ import annotations

from pathlib import Path

import yaml

from support.agent import cli
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
