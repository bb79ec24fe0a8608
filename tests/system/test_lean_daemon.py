"""The running daemon loads only what its config asks for. ``cryptography`` (~7 MiB of RSS) is for
signed commands and seals, protobuf for the Sparkplug dialect, the page's code for ``web:``; a
gateway with none of them must not carry them. The fleet bench found ``run`` carrying
cryptography because the CLI's parser imported the platform verbs' tracker at module level (the
agents measured 45 MiB instead of 39); this reads the real process's memory map and modules."""

from __future__ import annotations

import time
from pathlib import Path

import yaml

from edge_agent.sim.devices import EnergyMeter, LevelSensor
from edge_agent.sim.modbus import ModbusSimulator
from support.agent import start_agent, status, stop_agent
from support.broker import Mosquitto, Subscriber
from support.keys import init_keys

HEAVY = ("cryptography/hazmat/bindings", "google/_upb", "google/protobuf")


def test_a_plain_gateway_carries_no_cryptography_protobuf_or_page(tmp_path: Path) -> None:
    sim = ModbusSimulator({1: LevelSensor(), 2: EnergyMeter()})
    _, port = sim.serve_tcp("127.0.0.1", 0)
    broker = Mosquitto(tmp_path)
    cfg = {
        "gateway": {"id": "gw-lean", "site": "lean", "state_dir": str(tmp_path / "state")},
        "mqtt": {"host": "127.0.0.1", "port": broker.port},
        "buses": [{"name": "plant", "protocol": "modbus-tcp", "host": "127.0.0.1", "port": port}],
        "devices": [{"name": "river", "bus": "plant", "driver": "qdy_level", "address": 1, "interval": "200ms"},
                    {"name": "meter", "bus": "plant", "driver": "eastron_meter", "address": 2, "interval": "200ms"}],
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    init_keys(path)
    log = tmp_path / "agent.log"
    try:
        broker.start()
        platform = Subscriber(broker, "edge/v1/lean/gw-lean/#").start()
        agent = start_agent(path, log)
        platform.wait_for(lambda ms: sum(m.topic.endswith("/telemetry") for m in ms) >= 5, 30, "telemetry")
        status(path)  # the control socket answered: every thread of the daemon is up
        time.sleep(1.0)
        maps = Path(f"/proc/{agent.pid}/maps").read_text()
        stop_agent(agent, log)
    finally:
        if "agent" in locals() and agent.poll() is None:
            agent.kill()
            agent.wait(10)
        if "platform" in locals():
            platform.stop()
        broker.stop()
        sim.stop()
    loaded = sorted({line.split()[-1] for line in maps.splitlines() if any(h in line for h in HEAVY)})
    assert loaded == [], f"the daemon mapped {loaded}"
