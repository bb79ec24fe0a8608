"""The agent as a process facing a broken or full buffer: a corrupt or truncated file between
runs is quarantined and record ids continue above the old ones; a full buffer evicts the
oldest normal records and the agent keeps polling."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import yaml

from edge_agent.sim.devices import EnergyMeter, LevelSensor
from edge_agent.sim.modbus import ModbusSimulator
from support.agent import start_agent, status, stop_agent, wait_until
from support.broker import Mosquitto, Subscriber, free_port
from support.keys import init_keys
from support.wire import records

ROOT = "edge/v1/rec-site/gw-rec"


@pytest.fixture
def sim():
    simulator = ModbusSimulator({1: LevelSensor(rise_m_per_min=1.0), 2: EnergyMeter()})
    _, port = simulator.serve_tcp("127.0.0.1", 0)
    yield port
    simulator.stop()


def write_config(tmp_path: Path, broker_port: int, modbus_port: int, **buffer) -> Path:
    cfg = {
        "gateway": {"id": "gw-rec", "site": "rec-site", "state_dir": str(tmp_path / "state")},
        "mqtt": {"host": "127.0.0.1", "port": broker_port, "reconnect_min": "100ms", "reconnect_max": "500ms"},
        "buffer": {"commit_interval": "50ms", **buffer},
        "buses": [{"name": "plant", "protocol": "modbus-tcp", "host": "127.0.0.1", "port": modbus_port}],
        "devices": [
            {"name": "river-1", "bus": "plant", "driver": "qdy_level", "address": 1, "interval": "20ms"},
            {"name": "meter-1", "bus": "plant", "driver": "eastron_meter", "address": 2, "interval": "20ms"},
        ],
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    init_keys(path)
    return path


def scribble(path: Path) -> None:
    """Garbage over the middle of the file, header left intact."""
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.seek(size // 3)
        f.write(os.urandom(max(4096, size // 3)))


def truncate(path: Path) -> None:
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size // 2)


@pytest.mark.parametrize("damage", [scribble, truncate], ids=["scribbled", "truncated"])
def test_a_damaged_buffer_is_quarantined_and_ids_continue(tmp_path, sim, damage):
    log = tmp_path / "agent.log"
    broker = Mosquitto(tmp_path)  # down for the first run: the records stay in the buffer
    cfg = write_config(tmp_path, broker.port, sim)
    agent = start_agent(cfg, log)
    # 400 records: a level record and a ten-point meter record per pair, over 2,000 values
    wait_until(lambda: (tmp_path / "state" / "buffer.db").exists() and status(cfg)["pending"] > 400, 30,
               "a backlog")
    stop_agent(agent, log)
    before = status(cfg)
    db = tmp_path / "state" / "buffer.db"
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)  # a clean stop checkpointed; damage the main file
    damage(db)

    with broker, Subscriber(broker, f"{ROOT}/#") as platform:
        agent = start_agent(cfg, log)
        try:
            msgs = platform.wait_for(lambda ms: any(m.topic.endswith("/telemetry") for m in ms), 30,
                                     "records after the quarantine")
        finally:
            stop_agent(agent, log)
    quarantined = sorted(p.name for p in db.parent.iterdir() if ".corrupt-" in p.name)
    assert quarantined, list(db.parent.iterdir())
    text = log.read_text()
    assert any("quarantin" in line and quarantined[0] in line for line in text.splitlines() if "ERROR" in line), text
    first_new = min(r["id"] for r in records(msgs, f"{ROOT}/telemetry", gw="gw-rec"))
    assert first_new >= before["next_id"], (first_new, before["next_id"])
    assert "Traceback" not in text


def test_a_full_buffer_evicts_oldest_normal_and_keeps_polling(tmp_path, sim):
    log = tmp_path / "agent.log"
    cfg = write_config(tmp_path, free_port(), sim, max_bytes="1MiB")
    agent = start_agent(cfg, log)
    try:
        wait_until(lambda: (tmp_path / "state" / "buffer.db").exists() and status(cfg)["evicted"]["normal"] > 0,
                   90, "evictions")
        first = status(cfg)
        time.sleep(2)
        second = status(cfg)
        assert agent.poll() is None
    finally:
        stop_agent(agent, log)
    assert second["next_id"] > first["next_id"], "polling stopped while the buffer was full"
    assert second["evicted"]["normal"] >= first["evicted"]["normal"] > 0
    assert second["evicted"]["critical"] == 0
    db = tmp_path / "state" / "buffer.db"
    on_disk = db.stat().st_size
    assert on_disk <= 1024 * 1024 + 512 * 1024, on_disk
    assert "Traceback" not in log.read_text()
