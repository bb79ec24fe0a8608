"""config.apply's hand-over on its own: the command worker's ``submit`` checks and writes the new
config and posts a ``Restart`` (never calling the supervisor); one apply at a time; ``conclude``
publishes the one result, audits it in the real ledger and lets the next apply in. Real config
files, pending record and ledger; the supervisor's restarts are in tests/config/test_apply.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from edge_agent.agent.handover import ApplyHandover, Restart
from edge_agent.commands.ledger import Ledger, ledger_path
from edge_agent.commands.types import Command, CommandRejected
from edge_agent.config.apply import read_pending
from edge_agent.config.schema import load_settings
from edge_agent.settings import Settings
from support.keys import init_keys

NOW = 1_732_380_000.0


def config(interval: str = "1s") -> str:
    return yaml.safe_dump({
        "gateway": {"id": "gw-ho", "site": "ho-site", "state_dir": "state"},
        "mqtt": {"host": "127.0.0.1", "port": 1883},
        "buses": [{"name": "plant", "protocol": "modbus-tcp", "host": "127.0.0.1", "port": 5020}],
        "devices": [{"name": "river-1", "bus": "plant", "driver": "qdy_level", "address": 1, "interval": interval}],
        "commands": {"keys": [], "rollback_after": "5s"},
    }, sort_keys=False)


def command(text: object, cmd_id: str) -> Command:
    return Command(id=cmd_id, op="config.apply", target=None, args={"config": text}, iat=0, exp=1, signer="k-test")


@pytest.fixture
def current(tmp_path: Path) -> Settings:
    path = tmp_path / "gateway.yaml"
    path.write_text(config(), encoding="utf-8")
    path.chmod(0o640)
    (tmp_path / "state").mkdir()
    init_keys(path)
    return load_settings(path)


def test_a_new_config_is_written_and_posted_and_the_next_waits_for_its_result(tmp_path: Path, current) -> None:
    handover = ApplyHandover(current.gateway.state_dir, clock=lambda: NOW)
    assert handover.take() is None
    assert handover.submit(command(config("2s"), "c-1"), current) is None  # the result comes later
    assert current.source.read_text() == config("2s") and read_pending(tmp_path / "state").cmd_id == "c-1"
    with pytest.raises(CommandRejected) as busy:
        handover.submit(command(config("3s"), "c-2"), current)
    assert (busy.value.code, busy.value.message) == (
        "not_allowed", "config.apply c-1 is still under way; send again after its result")
    restart = handover.take()
    assert isinstance(restart, Restart) and restart.pending.cmd_id == "c-1"
    assert restart.settings.device("river-1").interval_s == 2.0
    assert handover.take() is None  # taken once
    with pytest.raises(CommandRejected):  # still under way while on trial
        handover.submit(command(config("3s"), "c-2"), current)

    published: list[dict[str, Any]] = []
    handover.conclude(restart.pending, published.append, ok=True, data={"connected_after_ms": 120})
    assert published == [{"v": 1, "id": "c-1", "ok": True, "ts": int(NOW * 1000), "data": {"connected_after_ms": 120}}]
    assert read_pending(tmp_path / "state") is None
    with Ledger(ledger_path(tmp_path / "state")) as ledger:
        (row,) = [r for r in ledger.rows() if r["kind"] == "command"]  # keys init wrote a cli row
    assert (row["cmd_id"], row["op"], row["actor"], row["outcome"], row["detail"]) == (
        "c-1", "config.apply", "k-test", "done", "applied; uplink connected after 120 ms")
    assert handover.submit(command(config("3s"), "c-2"), current) is None  # the next apply is in


def test_the_running_config_or_a_refused_one_answers_at_once_and_blocks_nothing(current) -> None:
    handover = ApplyHandover(current.gateway.state_dir)
    assert handover.submit(command(config(), "c-same"), current) == {"changed": False, "config": "gateway.yaml"}
    with pytest.raises(CommandRejected) as bad:
        handover.submit(command("gateway: {id: gw-ho}\n", "c-bad"), current)
    assert bad.value.code == "bad_request"
    assert handover.take() is None
    assert handover.submit(command(config("2s"), "c-next"), current) is None


def test_an_apply_left_by_the_previous_run_holds_the_next_until_it_concludes(tmp_path: Path, current) -> None:
    handover = ApplyHandover(current.gateway.state_dir, clock=lambda: NOW)
    handover.submit(command(config("2s"), "c-crash"), current)
    pending = handover.take().pending
    resumed = ApplyHandover(current.gateway.state_dir, clock=lambda: NOW)  # the next start
    resumed.hold(pending.cmd_id)
    with pytest.raises(CommandRejected, match="config.apply c-crash is still under way"):
        resumed.submit(command(config("3s"), "c-2"), current)
    resumed.conclude(pending, None, ok=False, code="rolled_back", message="stopped before it was confirmed")
    with Ledger(ledger_path(tmp_path / "state")) as ledger:
        (row,) = [r for r in ledger.rows() if r["kind"] == "command"]  # keys init wrote a cli row
    assert (row["outcome"], row["code"], row["detail"]) == ("failed", "rolled_back", "stopped before it was confirmed")
    assert resumed.submit(command(config("3s"), "c-2"), current) is None
