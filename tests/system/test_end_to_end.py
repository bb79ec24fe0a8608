"""The whole path with real parts: pymodbus servers (TCP, and RTU over a pseudo-terminal pair)
-> the agent as a subprocess (`edge-agent run`) -> a real Mosquitto -> a platform subscriber.

Checks what the platform relies on: every polled value arrives correctly scaled, one record per
poll (wire v2), record ids have no gaps, nothing is lost while the broker is down, and the agent
stops cleanly on SIGTERM.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import pytest
import yaml

from edge_agent.sim.ptypair import PtyPair
from support.agent import start_agent, status, stop_agent
from support.broker import Mosquitto, Subscriber
from support.keys import init_keys
from support.modbus_server import ModbusTestServer
from support.wire import records as wire_records
from support.wire import values

ROOT = "edge/v1/e2e-site/gw-e2e"
METER = {"voltage_V": 230.5, "current_A": 5.25, "power_W": 1210.0, "apparent_power_VA": 1208.0,
         "reactive_power_var": 64.0, "power_factor": 0.96875, "frequency_Hz": 50.0,
         "energy_import_kWh": 1234.5, "energy_export_kWh": 0.0, "energy_total_kWh": 1234.5}
METER_ADDR = {"voltage_V": 0x00, "current_A": 0x06, "power_W": 0x0C, "apparent_power_VA": 0x12,
              "reactive_power_var": 0x18, "power_factor": 0x1E, "frequency_Hz": 0x46,
              "energy_import_kWh": 0x48, "energy_export_kWh": 0x4A, "energy_total_kWh": 0x156}


def f32(value: float) -> list[int]:
    hi, lo = struct.unpack(">HH", struct.pack(">f", value))
    return [hi, lo]


def meter_tables() -> dict:
    block = [0] * 0x50  # the SDM answers its whole low block; fillers read as 0
    for name, address in METER_ADDR.items():
        if address < 0x50:
            block[address:address + 2] = f32(METER[name])
    return {"input": {0: block, 0x156: f32(METER["energy_total_kWh"])}}


def level_tables(raw: int, decimals: int = 2) -> dict:
    return {"holding": {0: [1, 3, 1, decimals, raw]}}


def write_config(tmp_path: Path, broker: Mosquitto, tcp_port: int, serial: str) -> Path:
    cfg = {
        "gateway": {"id": "gw-e2e", "site": "e2e-site", "state_dir": str(tmp_path / "state")},
        "mqtt": {"host": broker.host, "port": broker.port, "batch_max": 50, "keepalive": "5s",
                 "reconnect_min": "200ms", "reconnect_max": "1s"},
        "buffer": {"max_bytes": "16MiB", "commit_interval": "50ms"},
        "buses": [
            {"name": "plant-tcp", "protocol": "modbus-tcp", "host": "127.0.0.1", "port": tcp_port,
             "timeout": "1s"},
            {"name": "rs485-1", "protocol": "modbus-rtu", "serial": serial, "baud": 9600,
             "timeout": "500ms", "gap": "5ms"},
        ],
        "devices": [
            {"name": "meter-1", "bus": "plant-tcp", "driver": "eastron_meter", "address": 2,
             "interval": "200ms"},
            {"name": "river-1", "bus": "rs485-1", "driver": "qdy_level", "address": 1, "interval": "200ms"},
        ],
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    init_keys(path)
    return path


def records(messages) -> list[dict]:
    """The records on the telemetry topic, each checked against the contract (support.wire)."""
    return wire_records(messages, f"{ROOT}/telemetry", gw="gw-e2e")


@pytest.fixture
def field(tmp_path):
    """A meter on Modbus TCP and a level sensor on RTU over a pty pair, both pymodbus servers."""
    pair = PtyPair()
    meter = ModbusTestServer({2: meter_tables()}).start()
    level = ModbusTestServer({1: level_tables(123)}, serial=pair.b).start()
    yield meter, level, pair
    level.stop()
    meter.stop()
    pair.close()


def test_polled_values_reach_the_platform_scaled_and_without_id_gaps(tmp_path, field):
    meter, level, pair = field
    with Mosquitto(tmp_path) as broker, Subscriber(broker, f"{ROOT}/#") as platform:
        config = write_config(tmp_path, broker, meter.port, pair.a)
        log = tmp_path / "agent.log"
        agent = start_agent(config, log)
        try:
            platform.wait_for(lambda ms: sum(r["dev"] == "river-1" for r in records(ms)) >= 3, 20,
                              "first level records")
            level.set(1, "holding", 4, [150])  # the river rises: 1.50 m
            platform.wait_for(lambda ms: any(r["dev"] == "river-1" and r["vals"].get("level_m") == 1.5
                                             for r in records(ms)), 20, "the new level")
        finally:
            stop_agent(agent, log, timeout=20)
        final = status(config)
        assert final["pending"] == 0, final
        got = platform.wait_for(lambda ms: {r["id"] for r in records(ms)} >= set(range(1, final["next_id"])),
                                10, "every buffered record")

    births = [json.loads(m.payload) for m in got if m.topic == f"{ROOT}/state"]
    assert births[0]["online"] is True and births[-1]["online"] is False
    recs = records(got)
    ids = sorted({r["id"] for r in recs})
    assert ids == list(range(ids[0], ids[-1] + 1)), "ids have gaps"
    assert ids[-1] == final["next_id"] - 1
    for r in recs:  # one record per poll: the meter's round is one record with all its points
        assert "q" not in r and "sealed" not in r and "sub" not in r, r  # clk depends on this host
        if r["dev"] == "meter-1":
            assert r["vals"] == METER, r
        else:
            assert r["dev"] == "river-1" and set(r["vals"]) == {"level_m"} and r["vals"]["level_m"] in (1.23, 1.5), r
    assert {v.pt for v in values(recs) if v.dev == "meter-1"} == set(METER)
    log_text = log.read_text()
    assert "Traceback" not in log_text


def test_nothing_buffered_while_the_broker_is_down_is_lost(tmp_path, field):
    meter, level, pair = field
    broker = Mosquitto(tmp_path, persistence=True).start()
    # a persistent session: the broker keeps the platform's QoS 1 messages across its restart
    platform = Subscriber(broker, f"{ROOT}/#", client_id="platform", clean_session=False).start()
    log = tmp_path / "agent.log"
    config = write_config(tmp_path, broker, meter.port, pair.a)
    agent = start_agent(config, log)
    try:
        platform.wait_for(lambda ms: len(values(records(ms))) >= 20, 20, "values before the outage")
        broker.stop()
        down_ms = int(time.time() * 1000)  # a reading stamped after this cannot have been sent yet
        time.sleep(3)  # ~15 polls of each device happen with no broker
        during = status(config)
        assert during["pending"] > 0, "nothing was buffered while the broker was down"
        up_ms = int(time.time() * 1000)
        broker.start()
        deadline = time.monotonic() + 30
        while status(config)["pending"] > 0 and time.monotonic() < deadline:
            time.sleep(0.3)
    finally:
        stop_agent(agent, log, timeout=20)
        final = status(config)
    try:
        assert final["pending"] == 0, final
        last_id = final["next_id"] - 1
        got = platform.wait_for(lambda ms: {r["id"] for r in records(ms)} >= set(range(1, last_id + 1)), 20,
                                f"ids 1..{last_id}")
    finally:
        platform.stop()
        broker.stop()
    by_id: dict[int, dict] = {}
    for r in records(got):
        assert by_id.setdefault(r["id"], r) == r, "a record was sent twice with different content"
    assert sorted(by_id) == list(range(1, last_id + 1))
    # the polls made while the broker was down are among them: every point of both devices
    outage = [r for r in by_id.values() if down_ms < r["ts"] < up_ms]
    outage_values = values(outage)
    assert {v.pt for v in outage_values if v.dev == "meter-1"} == set(METER), "meter values of the outage lost"
    assert all(r["vals"] == METER for r in outage if r["dev"] == "meter-1"), "a meter poll of the outage is short"
    assert any(v.dev == "river-1" for v in outage_values), "level values of the outage lost"
    assert all(v.q == "good" for v in outage_values)
