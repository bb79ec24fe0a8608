"""The platform's half of issue 16 with real parts: a real Mosquitto, two real agents polling a
simulated Modbus level sensor, and ``edge-agent platform watch`` / ``platform send`` as a platform
runs them (subprocesses of the CLI).

What these prove:
- ``watch --once 5 --json`` shows both gateways online, with records and no id missing;
- the captured stream replayed through ``Tracker`` has no gap, and with one record deleted
  exactly that id is missing, unexplained;
- ``send agent.ping`` to both gateways prints two ok results; a gateway that does not answer
  times out, exit 1; ``--site`` finds the gateways from their retained states;
- two ``watch --share g1`` consumers together see every record once (mosquitto's $share).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.platform.track import Tracker
from edge_agent.sim.devices import LevelSensor
from edge_agent.sim.modbus import ModbusSimulator
from support.agent import cli, start_agent, stop_agent
from support.broker import Mosquitto, Subscriber
from support.keys import init_keys

SITE, GWS = "fleet-site", ("gw-a", "gw-b")
KID = "platform-fleet"


def config(tmp_path: Path, gw: str, broker: Mosquitto, modbus_port: int, public_key: Path) -> Path:
    cfg = {
        "gateway": {"id": gw, "site": SITE, "state_dir": str(tmp_path / gw / "state")},
        "mqtt": {"host": broker.host, "port": broker.port, "keepalive": "5s", "reconnect_min": "200ms",
                 "reconnect_max": "1s"},
        "buffer": {"commit_interval": "50ms"},
        "buses": [{"name": "river", "protocol": "modbus-tcp", "host": "127.0.0.1", "port": modbus_port,
                   "timeout": "500ms"}],
        "devices": [{"name": "river-1", "bus": "river", "driver": "qdy_level", "address": 1, "interval": "200ms"}],
        "commands": {"keys": [{"id": KID, "public_key_file": str(public_key)}], "ops": ["agent.ping"]},
    }
    path = tmp_path / gw / "gateway.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    init_keys(path)
    return path


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    from edge_agent.commands.signing import generate

    tmp_path = tmp_path_factory.mktemp("fleet")
    private, public, _ = generate(tmp_path / "platform")
    sim = ModbusSimulator({1: LevelSensor(rise_m_per_min=1.0)})
    _, port = sim.serve_tcp()
    broker = Mosquitto(tmp_path).start()
    captured = Subscriber(broker, "edge/v1/#").start()  # before the agents: the stream from id 1
    agents = []
    try:
        for gw in GWS:
            log = tmp_path / f"{gw}.log"
            agents.append((start_agent(config(tmp_path, gw, broker, port, public), log), log))
        captured.wait_for(lambda ms: {m.topic.split("/")[3] for m in ms if m.topic.endswith("/telemetry")}
                          >= set(GWS), 30, "telemetry from both gateways")
        yield broker, private, captured
    finally:
        for proc, log in agents:
            stop_agent(proc, log)
            assert "Traceback" not in log.read_text()
        captured.stop()
        broker.stop()
        sim.stop()


def where(broker: Mosquitto) -> str:
    return f"{broker.host}:{broker.port}"


def test_watch_once_shows_both_gateways_online_with_records_and_nothing_missing(fleet):
    broker, _, _ = fleet
    run = cli("platform", "watch", "--broker", where(broker), "--once", "5", "--json")
    assert run.returncode == 0, run.stderr
    snaps = {s["gw"]: s for s in json.loads(run.stdout.strip().splitlines()[-1])["gateways"]}
    assert set(snaps) == set(GWS)
    for snap in snaps.values():
        assert snap["online"] is True and snap["version"] and snap["site"] == SITE
        assert snap["records"] >= 10 and snap["missing"] == 0 and snap["conflicts"] == 0, snap
        assert snap["devices"]["online"] == 1
    text = cli("platform", "watch", "--broker", where(broker), "--once", "2", "--site", SITE)
    assert text.returncode == 0, text.stderr
    assert [line.split()[:2] for line in text.stdout.splitlines() if line] == [[f"{SITE}/{gw}", "online"] for gw in GWS]


def test_a_record_deleted_from_the_captured_stream_is_exactly_the_gap_reported(fleet):
    _, _, captured = fleet
    stream = [(m.topic, m.payload) for m in captured.messages]
    clean = Tracker()
    clean.feed_all(stream)
    assert all(s["missing"] == 0 and s["records"] > 0 for s in clean.snapshot()), clean.snapshot()

    topic_a = f"edge/v1/{SITE}/gw-a/telemetry"
    index = [i for i, (t, _) in enumerate(stream) if t == topic_a][2]  # not the first or the last message
    body = json.loads(stream[index][1])
    deleted = body["recs"].pop(0)["id"]
    stream[index] = (topic_a, json.dumps(body).encode())
    tracker = Tracker()
    tracker.feed_all(stream)
    snaps = {s["gw"]: s for s in tracker.snapshot()}
    assert snaps["gw-a"]["missing"] == 1 and snaps["gw-a"]["gaps"] == [[deleted, deleted, False]]
    assert snaps["gw-b"]["missing"] == 0


def test_send_ping_to_both_gateways_and_a_silent_one_times_out(fleet):
    broker, key, _ = fleet
    both = ",".join(f"{SITE}/{gw}" for gw in GWS)
    run = cli("platform", "send", "--broker", where(broker), "--key", str(key), "--kid", KID, "--to", both,
              "agent.ping")
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert [(line.split()[0], line.split()[2]) for line in lines] == [(f"{SITE}/{gw}", "ok") for gw in GWS]

    run = cli("platform", "send", "--broker", where(broker), "--key", str(key), "--kid", KID, "--site", SITE,
              "agent.ping", "--json")
    assert run.returncode == 0, run.stdout + run.stderr
    results = json.loads(run.stdout)["results"]
    assert [(r["gw"], r["status"]) for r in results] == [(gw, "ok") for gw in GWS]
    assert all(r["data"]["version"] for r in results)

    start = time.monotonic()
    run = cli("platform", "send", "--broker", where(broker), "--key", str(key), "--kid", KID, "--timeout", "2",
              "--to", f"{SITE}/gw-a,{SITE}/gw-ghost", "agent.ping")
    assert run.returncode == 1 and "Traceback" not in run.stderr
    lines = dict(line.split(None, 1) for line in run.stdout.splitlines())
    assert " ok" in lines[f"{SITE}/gw-a"] and "timeout" in lines[f"{SITE}/gw-ghost"]
    assert time.monotonic() - start < 15


def test_send_with_a_key_the_gateways_do_not_trust_is_an_error_result(fleet, tmp_path):
    from edge_agent.commands.signing import generate

    broker, _, _ = fleet
    stranger, _, _ = generate(tmp_path / "stranger")
    run = cli("platform", "send", "--broker", where(broker), "--key", str(stranger), "--to", f"{SITE}/gw-b",
              "agent.ping")
    assert run.returncode == 1
    assert "error bad_signature" in run.stdout or "error unknown_key" in run.stdout, run.stdout


def test_a_broker_that_is_down_is_one_line_exit_1(tmp_path):
    from support.broker import free_port

    run = cli("platform", "watch", "--broker", f"127.0.0.1:{free_port()}", "--once", "1")
    assert run.returncode == 1 and run.stderr.count("\n") == 1 and "cannot connect" in run.stderr
    run = cli("platform", "watch", "--broker", "127.0.0.1:1", "--once", "0")
    assert run.returncode == 2


def test_two_shared_consumers_together_see_every_record_once(fleet):
    broker, _, _ = fleet
    site, gw, batches, per = "share-site", "gw-s", 40, 5
    watchers = [subprocess.Popen([sys.executable, "-m", "edge_agent.cli", "platform", "watch", "--broker",
                                  where(broker), "--site", site, "--share", "g1", "--once", "6", "--json"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="share-publisher")
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        time.sleep(3)  # both watchers connected and subscribed
        state = {"online": True, "gw": gw, "version": "test", "evicted": {"critical": 0, "high": 0, "normal": 0}}
        client.publish(f"edge/v1/{site}/{gw}/state", json.dumps(state), qos=1, retain=True).wait_for_publish(5)
        for b in range(batches):
            recs = [{"id": b * per + i + 1, "dev": "d", "ts": 1, "vals": {"x_m": i}} for i in range(per)]
            body = {"v": 2, "gw": gw, "sent": 1, "recs": recs}
            client.publish(f"edge/v1/{site}/{gw}/telemetry", json.dumps(body), qos=1).wait_for_publish(5)
        outs = [w.communicate(timeout=30) for w in watchers]
    finally:
        client.publish(f"edge/v1/{site}/{gw}/state", b"", qos=1, retain=True).wait_for_publish(5)
        client.loop_stop()
        client.disconnect()
        for w in watchers:
            if w.poll() is None:
                w.kill()
                w.wait()
    snaps = [json.loads(out.strip().splitlines()[-1])["gateways"][0] for out, _ in outs]
    assert [w.returncode for w in watchers] == [0, 0]  # a consumer's gaps are not losses in a share group
    assert all(s["online"] is True and s["duplicates"] == 0 for s in snaps), snaps  # every consumer has the state
    assert sum(s["records"] for s in snaps) == batches * per
    assert all(s["records"] > 0 for s in snaps), "mosquitto gave one consumer everything"
    # the group's union has no gap: each consumer's gaps are exactly the other's records
    got = [set(range(s["first_id"], s["last_id"] + 1)) - {i for g in s["gaps"] for i in range(g[0], g[1] + 1)}
           for s in snaps]
    assert not got[0] & got[1] and got[0] | got[1] == set(range(1, batches * per + 1))
