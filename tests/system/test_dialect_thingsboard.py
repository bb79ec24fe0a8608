"""The agent in the ThingsBoard dialect (issue 14), end to end: a real Mosquitto, our Modbus
simulator, the agent as a subprocess with ``mqtt.dialect: thingsboard``, and a subscriber on
``#`` in place of the ThingsBoard server, which also sends RPC as the server does.

What a ThingsBoard consumer can check, checked here:
- every device is connected (``v1/gateway/connect``) before its first telemetry, in every session;
- every record the gateway buffered arrives as ``(device, ts)`` on ``v1/gateway/telemetry``,
  across kill -9s and broker restarts (ThingsBoard keys telemetry by device, key and ts, so a
  duplicate overwrites itself: duplicates must only be identical);
- RPC on ``v1/gateway/rpc`` (and to the gateway device) runs an op allowed unsigned, refuses one
  that is not (``bad_signature``, audited), and answers on the same topic.
"""

from __future__ import annotations

import json
import random
import signal
import time
from pathlib import Path

import paho.mqtt.publish as publish
import yaml

from edge_agent.buffer.stats import read_rows
from edge_agent.sim.devices import EnergyMeter, LevelSensor
from edge_agent.sim.modbus import ModbusSimulator
from support.agent import start_agent, status, stop_agent
from support.broker import Message, Mosquitto, Subscriber
from support.keys import init_keys

TELEMETRY, CONNECT, RPC = "v1/gateway/telemetry", "v1/gateway/connect", "v1/gateway/rpc"
DEVICES = ("river-1", "meter-1")


def config(tmp_path: Path, broker: Mosquitto, modbus_port: int) -> Path:
    cfg = {
        "gateway": {"id": "gw-tb", "site": "tb-site", "state_dir": str(tmp_path / "state")},
        "mqtt": {"host": broker.host, "port": broker.port, "dialect": "thingsboard", "batch_max": 20,
                 "inflight": 5, "keepalive": "5s", "reconnect_min": "100ms", "reconnect_max": "500ms"},
        "buffer": {"commit_interval": "50ms", "retain_sent": "1d"},
        "commands": {"unsigned": {"thingsboard": ["agent.ping", "device.poll"]}},
        "buses": [{"name": "plant", "protocol": "modbus-tcp", "host": "127.0.0.1", "port": modbus_port,
                   "timeout": "500ms"}],
        "devices": [
            {"name": "river-1", "bus": "plant", "driver": "qdy_level", "address": 1, "interval": "100ms"},
            {"name": "meter-1", "bus": "plant", "driver": "eastron_meter", "address": 2, "interval": "200ms"},
        ],
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    init_keys(path)
    return path


def telemetry(messages: list[Message]) -> list[tuple[str, int, dict]]:
    """(device, ts, values) of every telemetry entry, in arrival order."""
    out = []
    for m in messages:
        if m.topic == TELEMETRY:
            for device, entries in json.loads(m.payload).items():
                out.extend((device, e["ts"], e["values"]) for e in entries)
    return out


def connects_precede_telemetry(messages: list[Message]) -> None:
    """In every session (a session starts at the connects of a birth) each device's connect comes
    before its telemetry."""
    connected: set[str] = set()
    for m in messages:
        if m.topic == CONNECT:
            connected.add(json.loads(m.payload)["device"])
        elif m.topic == "v1/gateway/disconnect":
            connected.discard(json.loads(m.payload)["device"])
        elif m.topic == TELEMETRY:
            devices = set(json.loads(m.payload))
            assert devices <= connected, f"telemetry for {devices - connected} before its connect"


def rpc_replies(messages: list[Message]) -> dict[int, dict]:
    """The gateway's answers on v1/gateway/rpc by request id (the server's requests are there too)."""
    bodies = [json.loads(m.payload) for m in messages if m.topic == RPC]
    return {b["id"]: b for b in bodies if "id" in b}


def rpc(broker: Mosquitto, topic: str, body: dict) -> None:
    publish.single(topic, json.dumps(body), qos=1, hostname=broker.host, port=broker.port)


def test_thingsboard_dialect_end_to_end(tmp_path: Path) -> None:
    rng = random.Random(14)
    sim = ModbusSimulator({1: LevelSensor(rise_m_per_min=3.0), 2: EnergyMeter()})
    _, modbus_port = sim.serve_tcp("127.0.0.1", 0)
    broker = Mosquitto(tmp_path, persistence=True).start()
    server = Subscriber(broker, "#", client_id="thingsboard-server", clean_session=False).start()
    cfg = config(tmp_path, broker, modbus_port)
    log = tmp_path / "agent.log"
    try:
        agent = start_agent(cfg, log)
        first = server.wait_for(lambda ms: {d for d, _, _ in telemetry(ms)} >= set(DEVICES), 20, "both devices")
        connects = [json.loads(m.payload) for m in first if m.topic == CONNECT]
        assert {"device": "river-1", "type": "qdy_level"} in connects
        assert {"device": "meter-1", "type": "eastron_meter"} in connects
        attrs = next(json.loads(m.payload) for m in first if m.topic == "v1/gateway/attributes")
        assert attrs["river-1"]["driver"] == "qdy_level" and attrs["meter-1"]["address"] == 2
        assert any(m.topic == "v1/devices/me/attributes" and json.loads(m.payload).get("gw") == "gw-tb"
                   for m in first)
        _, _, values = next(t for t in telemetry(first) if t[0] == "river-1")
        assert isinstance(values["level_m"], float)

        # RPC: allowed unsigned, refused unsigned, and to the gateway device itself
        rpc(broker, RPC, {"device": "river-1", "data": {"id": 1, "method": "device.poll", "params": {}}})
        rpc(broker, RPC, {"device": "meter-1", "data": {"id": 2, "method": "device.write",
                                                        "params": {"point": "relay", "value": True}}})
        rpc(broker, "v1/devices/me/rpc/request/5", {"method": "agent.ping", "params": {}})
        replies = server.wait_for(lambda ms: len(rpc_replies(ms)) >= 2
                                  and any(m.topic == "v1/devices/me/rpc/response/5" for m in ms), 20, "RPC replies")
        answers = rpc_replies(replies)
        assert answers[1]["device"] == "river-1" and answers[1]["data"]["ok"] is True
        assert answers[2]["data"]["ok"] is False and answers[2]["data"]["error"]["code"] == "bad_signature"
        ping = json.loads(next(m.payload for m in replies if m.topic == "v1/devices/me/rpc/response/5"))
        assert ping["ok"] is True and ping["data"]["version"]

        # kill -9s and broker restarts: every buffered record still arrives as (device, ts)
        for i in range(6):
            time.sleep(rng.uniform(0.5, 1.5))
            if i % 2:
                broker.stop()
                time.sleep(rng.uniform(0.3, 1.0))
            agent.send_signal(signal.SIGKILL)
            agent.wait(timeout=10)
            if not broker.running:
                broker.start()
            agent = start_agent(cfg, log)
        time.sleep(1.0)
        deadline = time.monotonic() + 60
        while status(cfg)["pending"] > 0 and time.monotonic() < deadline:
            time.sleep(0.3)
        stop_agent(agent, log)
        assert status(cfg)["pending"] == 0
        buffered = {(body["dev"], body["ts"]) for _, kind, body in read_rows(tmp_path / "state" / "buffer.db",
                                                                             limit=1_000_000) if kind == "record"}
        got = server.wait_for(lambda ms: {(d, ts) for d, ts, _ in telemetry(ms)} >= buffered, 30,
                              f"all {len(buffered)} buffered records")
        assert json.loads((tmp_path / "state" / "thingsboard-devices.json").read_text()) == sorted(DEVICES)

        # a device removed from the config is disconnected at the next birth
        cfg_data = yaml.safe_load(cfg.read_text())
        cfg_data["devices"] = [d for d in cfg_data["devices"] if d["name"] != "meter-1"]
        cfg.write_text(yaml.safe_dump(cfg_data, sort_keys=False))
        server.clear()
        agent = start_agent(cfg, log)
        try:
            again = server.wait_for(lambda ms: any(m.topic == "v1/gateway/disconnect" for m in ms), 20,
                                    "the removed device's disconnect")
        finally:
            stop_agent(agent, log)
        assert [json.loads(m.payload) for m in again if m.topic == "v1/gateway/disconnect"][0] == {"device": "meter-1"}
    finally:
        if "agent" in locals() and agent.poll() is None:  # a failed step must not leave the agent running
            agent.kill()
            agent.wait(10)
        server.stop()
        broker.stop()
        sim.stop()

    connects_precede_telemetry(got)
    entries: dict[tuple[str, int], list[dict]] = {}
    for device, ts, values in telemetry(got):
        entries.setdefault((device, ts), []).append(values)
    assert set(entries) == buffered, "telemetry the buffer never held"
    assert all(all(v == copies[0] for v in copies) for copies in entries.values()), "a duplicate that differs"
    assert len(buffered) > 50  # the agent really polled between the kills
    assert {json.loads(m.payload)["device"] for m in got if m.topic == "v1/gateway/disconnect"} == set(DEVICES)
    text = log.read_text()
    assert "Traceback" not in text
    print(f"\nthingsboard dialect: {len(buffered)} records as (device, ts), "
          f"{sum(len(c) - 1 for c in entries.values())} identical duplicates after 6 kills and 3 broker restarts")
