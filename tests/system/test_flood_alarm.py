"""A flood alarm, end to end with real parts: our Modbus simulator (a level sensor on a rising
river, over TCP) -> the agent as a subprocess (`edge-agent run`, alarms from its config) -> a
real Mosquitto -> a platform subscriber on R/events.

Checks what the platform relies on: the threshold and rate-of-rise alarms arrive as critical
events, a silent device raises offline and stale, and an alarm raised while the broker is down
overtakes the telemetry backlog once the broker returns.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from edge_agent.sim.devices import LevelSensor
from edge_agent.sim.modbus import ModbusSimulator
from support.agent import start_agent, status, stop_agent, wait_until
from support.broker import Mosquitto, Subscriber
from support.keys import init_keys
from support.wire import events as wire_events

ROOT = "edge/v1/flood-site/gw-flood"
EVENTS, TELEMETRY = f"{ROOT}/events", f"{ROOT}/telemetry"


def write_config(tmp_path: Path, broker: Mosquitto, modbus_port: int, **mqtt: object) -> Path:
    cfg = {
        "gateway": {"id": "gw-flood", "site": "flood-site", "state_dir": str(tmp_path / "state")},
        "mqtt": {"host": broker.host, "port": broker.port, "keepalive": "5s", "reconnect_min": "200ms",
                 "reconnect_max": "1s", **mqtt},
        "buffer": {"max_bytes": "16MiB", "commit_interval": "50ms"},
        "buses": [{"name": "river-tcp", "protocol": "modbus-tcp", "host": "127.0.0.1", "port": modbus_port,
                   "timeout": "200ms"}],
        "devices": [{
            "name": "river-1", "bus": "river-tcp", "driver": "qdy_level", "address": 1, "interval": "200ms",
            "retries": 0,
            "alarms": [
                {"point": "level_m", "above": 3.0, "hysteresis": 0.1, "prio": "critical"},
                {"point": "level_m", "rise_per_minute": 1.0, "window": "10s", "prio": "critical"},
                {"stale_after": 3},
            ],
        }],
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    init_keys(path)
    return path


def events(messages) -> list[dict]:
    """The events on R/events, each payload checked as a v2 envelope of this gateway (support.wire)."""
    return wire_events(messages, EVENTS, gw="gw-flood")


def alarm(rule: str):
    return lambda ms: [e for e in events(ms) if e["type"] == "alarm" and e["data"].get("rule") == rule]


def pending(config: Path, prio: str) -> int:
    """Unsent rows of ``prio`` in the agent's buffer (0 before the buffer exists)."""
    return status(config).get("pending_by_prio", {}).get(prio, 0)


def carries_alarm(message) -> bool:
    return message.topic == EVENTS and any(e["type"] == "alarm" for e in json.loads(message.payload)["events"])


@pytest.fixture
def river():
    """A level sensor at 2.5 m rising 6 m/min (0.1 m/s: above 3.0 m after about 5 s) on Modbus TCP."""
    sensor = LevelSensor(level_m=2.5, rise_m_per_min=6.0)
    sim = ModbusSimulator({1: sensor})
    _, port = sim.serve_tcp()
    yield sensor, port
    sim.stop()


def test_flood_alarms_reach_the_platform_as_critical_events(tmp_path, river):
    sensor, port = river
    with Mosquitto(tmp_path) as broker, Subscriber(broker, f"{ROOT}/#") as platform:
        config = write_config(tmp_path, broker, port)
        log = tmp_path / "agent.log"
        agent = start_agent(config, log)
        try:
            platform.wait_for(alarm("level_m_above"), 30, "the threshold alarm")
            platform.wait_for(alarm("level_m_rise"), 30, "the rate-of-rise alarm")
            sensor.set_faults(silence=True)  # the sensor stops answering (flooded, powered off)
            platform.wait_for(lambda ms: {"offline", "stale"} <= {e["type"] for e in events(ms)}, 30,
                              "offline and stale events")
        finally:
            stop_agent(agent, log, timeout=20)
        got = platform.messages

    evs = events(got)
    for e in evs:
        assert {"type", "prio", "ts", "data"} <= set(e), e
        assert e["dev"] == "river-1" and isinstance(e["ts"], int)
    above = alarm("level_m_above")(got)[0]
    assert above["prio"] == "critical" and above["data"]["state"] == "raised"
    assert above["data"]["value"] > 3.0 and above["data"]["threshold"] == 3.0
    rise = alarm("level_m_rise")(got)[0]
    assert rise["prio"] == "critical" and rise["data"]["rate_per_min"] >= 1.0
    assert rise["data"]["threshold_per_min"] == 1.0 and rise["data"]["window_s"] == 10.0
    types = [e["type"] for e in evs]
    assert types[0] == "online" and types.count("online") == 1  # the device never came back
    assert types.count("offline") == 1 and types.count("stale") == 1  # raised once, not per poll
    offline = next(e for e in evs if e["type"] == "offline")
    assert offline["prio"] == "high" and offline["data"]["failed_polls"] == 3
    assert "Traceback" not in log.read_text()


def test_an_alarm_raised_while_the_broker_is_down_overtakes_the_backlog(tmp_path, river):
    _, port = river
    broker = Mosquitto(tmp_path, persistence=True).start()
    # a persistent session: the broker keeps the platform's QoS 1 messages while it reconnects
    platform = Subscriber(broker, f"{ROOT}/#", client_id="platform", clean_session=False).start()
    broker.stop()
    config = write_config(tmp_path, broker, port, batch_max=5)  # a backlog of many small messages
    log = tmp_path / "agent.log"
    agent = start_agent(config, log)
    try:
        # the level crosses 3.0 m after about 5 s; then let more telemetry pile up behind it
        wait_until(lambda: pending(config, "critical") >= 2, 30, "both alarms buffered")
        time.sleep(2)
        backlog = pending(config, "normal")
        assert backlog >= 30, backlog
        broker.start()
        got = platform.wait_for(lambda ms: sum(m.topic == TELEMETRY for m in ms) >= backlog // 5, 30,
                                "the telemetry backlog")
    finally:
        stop_agent(agent, log, timeout=20)
        platform.stop()
        broker.stop()

    flow = [m for m in got if m.topic in (EVENTS, TELEMETRY)]
    first_alarm = next(i for i, m in enumerate(flow) if carries_alarm(m))
    telemetry_after = sum(m.topic == TELEMETRY for m in flow[first_alarm:])
    telemetry_before = sum(m.topic == TELEMETRY for m in flow[:first_alarm])
    assert telemetry_before <= 1 and telemetry_after >= backlog // 5 - 1, (telemetry_before, telemetry_after)
    assert {e["data"].get("rule") for e in events(flow[:first_alarm + 1]) if e["type"] == "alarm"} == \
        {"level_m_above", "level_m_rise"}  # both alarms in that first events message
    assert all(e["prio"] == "critical" for e in events(flow) if e["type"] == "alarm")
