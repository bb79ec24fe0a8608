"""The health of the devices that talk unprompted (the wearables hub, the gate controller), as the
technician and the platform see it: ``edge-agent simulate hub|gate --fault garbage`` (our real
simulators as subprocesses) -> the agent as a subprocess -> ``status`` and a real Mosquitto.

A bad frame is not a failed poll (no ERROR and "recovered" pair per garbage line; counted in
``bad_frames``, logged once at WARNING then once a minute at most), and a good frame (a reading or
an event) is a good poll (``last_good_ms`` advances, ``readings``/``events`` count)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from support.agent import cli, start_agent, status, stop_agent, wait_until
from support.broker import Mosquitto, Subscriber
from support.keys import init_keys
from support.simproc import line_with, start_simulator, stop_simulator

GW, SITE = "gw-stream", "stream-site"
STATE_TOPIC = f"edge/v1/{SITE}/{GW}/state"


def write_config(tmp_path: Path, broker: Mosquitto, hub_port: str, gate_port: int) -> Path:
    cfg = {
        "gateway": {"id": GW, "site": SITE, "state_dir": str(tmp_path / "state")},
        "mqtt": {"host": broker.host, "port": broker.port, "keepalive": "5s", "reconnect_min": "200ms",
                 "reconnect_max": "1s"},
        "buffer": {"commit_interval": "50ms"},
        "buses": [{"name": "wearables", "protocol": "json-lines", "serial": hub_port, "baud": 115200},
                  {"name": "car-park", "protocol": "json-lines", "host": "127.0.0.1", "port": gate_port}],
        "devices": [{"name": "hub-1", "bus": "wearables", "driver": "wearables_hub"},
                    {"name": "gate-1", "bus": "car-park", "driver": "gate_controller"}],
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    init_keys(path)
    return path


def device(data: dict, name: str) -> dict:
    return next(d for d in data["devices"] if d["name"] == name)


def run_agent(tmp_path: Path, log: Path, hub, gate) -> tuple[dict, str, list]:
    """The agent against the two simulators until each device sent 8 bad frames: its status
    (JSON and text), then the R/state messages after a broker restart (the birth is fresh)."""
    try:
        hub_port = line_with(hub, "serial port for the agent:").rsplit(" ", 1)[1]
        gate_port = int(line_with(gate, "gate TCP on 127.0.0.1:").rsplit(":", 1)[1])
        with Mosquitto(tmp_path) as broker, Subscriber(broker, STATE_TOPIC) as platform:
            config = write_config(tmp_path, broker, hub_port, gate_port)
            agent = start_agent(config, log)
            try:
                wait_until(lambda: (lambda s: s["source"] == "daemon"
                                    and device(s, "hub-1")["bad_frames"] >= 8
                                    and device(s, "gate-1")["bad_frames"] >= 8)(status(config)),
                           60, "eight bad frames from each device")
                live = status(config)
                text = cli("status", "-c", str(config)).stdout
                broker.restart()  # the birth on reconnect carries the health as it is now
                states = platform.wait_for(lambda ms: any(  # the birth's snapshot may be up to 2 s old
                    json.loads(m.payload).get("online") and
                    min(json.loads(m.payload).get("bad_frames", {}).get(d, 0) for d in ("hub-1", "gate-1")) > 0
                    for m in ms), 30, "a state with the bad frames of both devices")
            finally:
                stop_agent(agent, log)
    finally:
        for proc in (hub, gate):
            stop_simulator(proc)
    return live, text, states


def test_garbage_from_hub_and_gate_is_counted_not_failed_and_good_frames_keep_them_online(tmp_path: Path) -> None:
    log = tmp_path / "agent.log"
    with start_simulator("hub", "--pty", "--residents", "4", "--vitals-every", "400ms", "--fault", "garbage") as hub, \
            start_simulator("gate", "--tcp", "127.0.0.1:0", "--lanes", "1", "--passage-every", "200ms",
                            "--fault", "garbage") as gate:
        live, text, states = run_agent(tmp_path, log, hub, gate)

    hub_1, gate_1 = device(live, "hub-1"), device(live, "gate-1")
    for d in (hub_1, gate_1):  # good frames keep arriving: online, last good recent, no failure
        assert d["state"] == "online" and d["consecutive_failures"] == 0, d
        assert isinstance(d["last_good_ms"], int) and d["errors"] == 0 and d["last_error"] is None, d
    assert hub_1["readings"] > 0 and gate_1["events"] >= 8  # passages are the gate's good frames
    assert live["device_counts"] == {"online": 2, "offline": 0, "unknown": 0}
    assert re.search(r"hub-1 +online +last good .*, \d+ bad frame\(s\)", text), text
    assert re.search(r"gate-1 +online +last good .*, \d+ event\(s\), \d+ bad frame\(s\)", text), text

    state = next(json.loads(m.payload) for m in reversed(states) if json.loads(m.payload).get("online"))
    assert set(state["bad_frames"]) == {"hub-1", "gate-1"} and min(state["bad_frames"].values()) > 0
    assert state["devices"] == {"online": 2, "offline": 0, "unknown": 0}

    lines = log.read_text(errors="replace").splitlines()
    assert not [x for x in lines if " ERROR " in x], lines
    assert not [x for x in lines if "recovered" in x], lines
    for name in ("hub-1", "gate-1"):  # the first one, with its reason; the rest once a minute at most
        warned = [x for x in lines if f"device {name}: " in x and "bad frame" in x]
        assert len(warned) == 1 and " WARNING " in warned[0], warned
        assert re.search(r"bad frame skipped \(line \d+: (not UTF-8|not JSON|not a JSON object|"
                         r"unknown message type|no band|no lane)\)", warned[0]), warned


def test_a_hub_heard_at_the_wrong_baud_rate_goes_offline_by_offline_after(tmp_path: Path) -> None:
    """Nothing usable for the device's interval, though it talks: unanswered polls, so the health
    says offline and, after ``offline_after`` of them, the platform gets the ``offline`` event."""
    log = tmp_path / "agent.log"
    with start_simulator("hub", "--pty", "--residents", "4", "--vitals-every", "200ms", "--fault", "garbled") as hub:
        try:
            hub_port = line_with(hub, "serial port for the agent:").rsplit(" ", 1)[1]
            with Mosquitto(tmp_path) as broker, Subscriber(broker, f"edge/v1/{SITE}/{GW}/events") as platform:
                config = write_config(tmp_path, broker, hub_port, 9)  # the gate is not part of this test
                cfg = yaml.safe_load(config.read_text())
                cfg["buses"], cfg["devices"] = cfg["buses"][:1], [{**cfg["devices"][0], "interval": "1s",
                                                                   "offline_after": 3}]
                config.write_text(yaml.safe_dump(cfg, sort_keys=False))
                agent = start_agent(config, log)
                try:
                    platform.wait_for(lambda ms: any(e["type"] == "offline" and e["dev"] == "hub-1"
                                                     for m in ms for e in json.loads(m.payload)["events"]),
                                      30, "hub-1 offline")
                    live = status(config)
                finally:
                    stop_agent(agent, log)
        finally:
            stop_simulator(hub)
    hub_1 = device(live, "hub-1")
    assert hub_1["state"] == "offline" and hub_1["bad_frames"] > 0 and hub_1["readings"] == 0, hub_1
    assert hub_1["last_good_ms"] is None and "nothing usable for 1s, only bad frames" in hub_1["last_error"]
    errors = [x for x in log.read_text(errors="replace").splitlines() if " ERROR " in x]
    assert len(errors) == 1 and "device hub-1: " in errors[0] and "wrong baud rate" in errors[0], errors
