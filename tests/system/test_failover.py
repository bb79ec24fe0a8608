"""Broker failover (issue 16): ``mqtt.hosts`` names two real Mosquitto nodes. The agent builds a
backlog while both are down, starts draining it to the first one, which is then killed mid-drain:
the agent moves to the second node and finishes there. Every record id from 1 to the last arrives
at the platform (which listens on both nodes: they are not bridged), a record received twice is
identical, and ``R/state`` and ``status`` name the node in use."""

from __future__ import annotations

import json
import time
from pathlib import Path

import yaml

from edge_agent.sim.devices import EnergyMeter, LevelSensor
from edge_agent.sim.modbus import ModbusSimulator
from support.agent import start_agent, status, stop_agent
from support.broker import Mosquitto, Subscriber
from support.keys import init_keys
from support.waiting import wait_until
from support.wire import records

ROOT = "edge/v1/fo-site/gw-fo"


def config(tmp_path: Path, a: Mosquitto, b: Mosquitto, modbus_port: int) -> Path:
    cfg = {
        "gateway": {"id": "gw-fo", "site": "fo-site", "state_dir": str(tmp_path / "state")},
        "mqtt": {"hosts": [f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"], "batch_max": 5, "inflight": 2,
                 "keepalive": "5s", "reconnect_min": "200ms", "reconnect_max": "1s"},
        "buffer": {"commit_interval": "50ms"},
        "buses": [{"name": "plant", "protocol": "modbus-tcp", "host": "127.0.0.1", "port": modbus_port,
                   "timeout": "500ms"}],
        "devices": [{"name": f"meter-{u}", "bus": "plant", "driver": "eastron_meter", "address": u, "interval": "20ms"}
                    for u in range(2, 8)] + [
            {"name": "river-1", "bus": "plant", "driver": "qdy_level", "address": 1, "interval": "20ms"}],
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    init_keys(path)
    return path


def by_id(*subscribers: Subscriber) -> dict[int, list[dict]]:
    seen: dict[int, list[dict]] = {}
    for sub in subscribers:
        for r in records(sub.messages, f"{ROOT}/telemetry", gw="gw-fo"):
            seen.setdefault(r["id"], []).append(r)
    return seen


def test_the_node_in_use_dies_mid_drain_and_the_other_takes_over(tmp_path: Path) -> None:
    sim = ModbusSimulator({1: LevelSensor(rise_m_per_min=3.0), **{u: EnergyMeter() for u in range(2, 8)}})
    _, modbus_port = sim.serve_tcp("127.0.0.1", 0)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = Mosquitto(tmp_path / "a", persistence=True)
    b = Mosquitto(tmp_path / "b", persistence=True)
    log = tmp_path / "agent.log"
    subscribers: list[Subscriber] = []
    try:
        a.start()
        b.start()
        on_a = Subscriber(a, f"{ROOT}/#", client_id="platform-a", clean_session=False).start()
        on_b = Subscriber(b, f"{ROOT}/#", client_id="platform-b", clean_session=False).start()
        subscribers = [on_a, on_b]
        a.stop()
        b.stop()
        cfg = config(tmp_path, a, b, modbus_port)
        agent = start_agent(cfg, log)
        time.sleep(4.0)  # both nodes down: a backlog builds
        backlog = status(cfg)["pending"]
        assert backlog > 300, backlog
        a.start()
        on_a.wait_for(lambda ms: any(m.topic.endswith("/telemetry") for m in ms), 20, "the drain on node a")
        b.start()
        a.stop()  # mid-drain
        mid = len(by_id(on_a))
        wait_until(lambda: status(cfg)["pending"] == 0, 60, "the drain to finish on node b", interval=0.2)
        st = status(cfg)
        assert st["uplink"]["broker"] == f"127.0.0.1:{b.port}" and st["uplink"]["connected"]
        stop_agent(agent, log)
        last_id = status(cfg)["next_id"] - 1
        wait_until(lambda: set(by_id(on_a, on_b)) >= set(range(1, last_id + 1)), 30, f"every id 1..{last_id}",
                   interval=0.2)
        states = [json.loads(m.payload) for m in on_b.messages if m.topic == f"{ROOT}/state"]
    finally:
        if "agent" in locals() and agent.poll() is None:  # a failed step must not leave the agent running
            agent.kill()
            agent.wait(10)
        for sub in subscribers:
            sub.stop()
        a.stop()
        b.stop()
        sim.stop()

    seen = by_id(on_a, on_b)
    assert sorted(seen) == list(range(1, last_id + 1)), "ids missing or extra"
    assert all(all(c == copies[0] for c in copies) for copies in seen.values()), "a duplicate that differs"
    assert 0 < mid < last_id, f"node a had {mid} of {last_id} records: the kill was not mid-drain"
    assert any(s.get("online") and s.get("broker") == f"127.0.0.1:{b.port}" for s in states), states
    text = log.read_text()
    assert f"connection to 127.0.0.1:{a.port} lost" in text and "Traceback" not in text
    print(f"\nfailover: {last_id} records, {mid} on node a before it died, the rest on node b; "
          f"{sum(len(c) - 1 for c in seen.values())} identical duplicates")
