"""A device right behind an absent unit on one RTU line (docs/devices.md, "A device fails right
after an absent one"): some slaves, libmodbus's among them, drop a request that comes within
their own response timeout (0.5 s) of an unanswered request to another unit. With a short
timeout on the absent unit the next device loses its slot; each documented fix gives it back.

Real parts: the agent in-process (its buses, readers, scheduler and health, as ``run`` wires
them), our simulator on a pseudo-terminal pair with its ``deaf`` fault playing that slave. No
broker: the uplink retries in the background, which polling does not wait for.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from edge_agent.config.schema import load_settings
from edge_agent.agent.daemon import Agent
from edge_agent.sim.devices import LevelSensor
from edge_agent.sim.modbus import ModbusSimulator
from edge_agent.sim.ptypair import PtyPair
from support.broker import free_port
from support.keys import init_keys

PRESENT, ABSENT = 1, 9  # unit ids; nothing answers as unit 9


@pytest.fixture
def line():
    """An RS-485 line: the agent's end of a pty pair, a libmodbus-like level sensor on the other."""
    pair = PtyPair()
    simulator = ModbusSimulator({PRESENT: LevelSensor(level_m=0.8)})
    simulator.set_faults(PRESENT, deaf_s=0.5)  # libmodbus' default response timeout
    simulator.serve_serial(pair.b, baud=9600)
    yield pair.a
    simulator.stop()
    pair.close()


def config(tmp_path: Path, serial: str, *, bus: dict | None = None, absent: dict | None = None) -> Path:
    cfg = {
        "gateway": {"id": "gw-absent", "site": "absent-site", "state_dir": str(tmp_path / "state")},
        "mqtt": {"host": "127.0.0.1", "port": free_port()},
        "buses": [{"name": "rs485-1", "protocol": "modbus-rtu", "serial": serial, "timeout": "200ms",
                   **(bus or {})}],
        "devices": [  # the absent one first: each round polls it, then the present one
            {"name": "river-9", "bus": "rs485-1", "driver": "qdy_level", "address": ABSENT, "interval": "1s",
             **(absent or {})},
            {"name": "river-1", "bus": "rs485-1", "driver": "qdy_level", "address": PRESENT, "interval": "1s"},
        ],
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    init_keys(path)
    return path


def present_after_polls(path: Path, polls: int) -> dict:
    """The present device's health once it has been polled ``polls`` times."""
    agent = Agent(load_settings(path))
    agent.start()
    try:
        deadline = time.monotonic() + 30
        while True:
            health = {h["name"]: h for h in agent.health.snapshot()}
            if health["river-1"]["polls"] >= polls:
                return health["river-1"]
            assert time.monotonic() < deadline, f"river-1 was not polled {polls} times: {health}"
            time.sleep(0.1)
    finally:
        agent.stop()


def test_a_short_timeout_on_the_absent_unit_costs_the_next_device_its_slot(tmp_path, line) -> None:
    health = present_after_polls(config(tmp_path, line), 2)
    assert health["answered_polls"] == 0 and health["errors"] >= 2
    assert "device 1 did not answer within 0.2s (2 attempts)" in health["last_error"]


@pytest.mark.parametrize("fix", [
    {"absent": {"timeout": "700ms"}},  # the absent device outwaits the slave's 0.5 s
    {"bus": {"gap": "500ms"}},  # silence after every transaction, answered or not
    {"absent": {"enabled": False}},  # not polled at all
], ids=["absent-timeout", "bus-gap", "absent-disabled"])
def test_each_documented_fix_gives_the_slot_back(tmp_path, line, fix) -> None:
    health = present_after_polls(config(tmp_path, line, **fix), 2)
    assert health["errors"] == 0 and health["answered_polls"] == health["polls"], health
