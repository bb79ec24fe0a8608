"""Platform commands end to end, with real parts only: a platform (paho, signing with
``edge_agent.commands.signing``) -> a real Mosquitto -> the agent as a subprocess (``edge-agent run``) ->
our gate simulator (TCP, recording every byte it receives) and our Modbus simulator (a level
sensor) -> results on ``R/cmd/result`` and rows in the audit log (``edge-agent audit --json``).

What these prove (issue 6):
- every rejection class, sent through the broker, gets its code in a result and an audit row,
  and nothing at all reaches the gate;
- a command id seen before is refused after a restart of the agent (the replay cache is on disk);
- a signed write to a point or value the config does not allow is refused;
- an allowed gate open is acked by the controller, the barrier moves, and it is audited;
- a Modbus write is read back; a refusal by the device is a ``device_error``;
- ``buffer.replay`` republishes exactly the asked range, original ids and bodies, marked;
- ``agent.ping`` answers; ``device.poll`` brings a reading outside the device's interval;
- no result or audit row carries a plate or card the gate sent.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.model import Reg
from edge_agent.sim.byteserver import ByteServer
from edge_agent.sim.devices import LevelSensor
from edge_agent.sim.gate import GateSim
from edge_agent.sim.modbus import ModbusSimulator
from support.agent import cli, start_agent, stop_agent, wait_until
from support.broker import Mosquitto, Subscriber
from support.keys import init_keys
from support.wire import check_envelope, check_record

GW, SITE = "gw-cmd", "cmd-site"
ROOT = f"edge/v1/{SITE}/{GW}"
CMD, RESULT, EVENTS, TELEMETRY = f"{ROOT}/cmd", f"{ROOT}/cmd/result", f"{ROOT}/events", f"{ROOT}/telemetry"
KID = "platform-test"


# -- the site: a gate and a level sensor -------------------------------------------------------------
@pytest.fixture
def gate():
    sim = GateSim(2, passage_every_s=0.4, vehicles=4, seed=7)
    server = ByteServer(sim)
    host, port = server.serve_tcp()
    yield sim, port
    server.stop()


@pytest.fixture
def river():
    # river-1 polls unit 1; river-cfg (modbus_generic, writable) is a second sensor at unit 2, since
    # two devices at one address on one link are a config error
    sensor, configured = LevelSensor(level_m=1.25), LevelSensor(level_m=0.8, address=2)
    sim = ModbusSimulator({1: sensor, 2: configured})
    _, port = sim.serve_tcp()
    yield configured, port
    sim.stop()


@pytest.fixture
def keys(tmp_path: Path):
    from edge_agent.commands.signing import generate, load_private_key

    private, public, _ = generate(tmp_path / "platform")
    other, _, _ = generate(tmp_path / "stranger")  # a key the gateway does not trust
    return load_private_key(private), public, load_private_key(other)


def write_config(tmp_path: Path, broker: Mosquitto, gate_port: int, river_port: int, public_key: Path, *,
                 river_interval: str = "1h", ops: list[str] | None = None) -> Path:
    cfg: dict[str, Any] = {
        "gateway": {"id": GW, "site": SITE, "state_dir": str(tmp_path / "state")},
        "mqtt": {"host": broker.host, "port": broker.port, "keepalive": "5s", "reconnect_min": "200ms",
                 "reconnect_max": "1s"},
        "buffer": {"retain_sent": "1h", "commit_interval": "50ms"},
        "buses": [{"name": "gates", "protocol": "json-lines", "host": "127.0.0.1", "port": gate_port,
                   "timeout": "1s"},
                  {"name": "river", "protocol": "modbus-tcp", "host": "127.0.0.1", "port": river_port,
                   "timeout": "500ms"}],
        "devices": [
            {"name": "gate-1", "bus": "gates", "driver": "gate_controller", "writable": {"barrier": ["open", "close"]}},
            {"name": "river-1", "bus": "river", "driver": "qdy_level", "address": 1, "interval": river_interval},
            {"name": "river-cfg", "bus": "river", "driver": "modbus_generic", "address": 2, "interval": "1h",
             "points": [{"name": "unit_code", "reg": "holding", "address": 2, "type": "uint16", "writable": True},
                        {"name": "decimals", "reg": "holding", "address": 3, "type": "uint16", "writable": True}],
             "writable": {"unit_code": {"min": 0, "max": 10}, "decimals": {"min": 0, "max": 9}}},
        ],
        "commands": {"keys": [{"id": KID, "public_key_file": str(public_key)}], "max_skew": "1m",
                     "max_lifetime": "10m", "ops": ops or ["agent.ping", "device.poll", "device.write",
                                                          "buffer.replay"]},
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    init_keys(path)
    return path


# -- the platform ----------------------------------------------------------------------------------------
class Platform:
    """Signs and publishes commands, and sees everything the gateway publishes."""

    def __init__(self, broker: Mosquitto, key: Any) -> None:
        self.key = key
        self.sub = Subscriber(broker, f"{ROOT}/#").start()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="platform-pub")
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self.n = 0

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self.sub.stop()

    def command(self, op: str, target: str | None = None, args: dict | None = None, *, cmd_id: str | None = None,
                iat_ms: int | None = None, ttl_ms: int = 60_000, key: Any = None, kid: str | None = KID) -> dict:
        from edge_agent.commands.signing import sign

        self.n += 1
        iat = iat_ms if iat_ms is not None else int(time.time() * 1000)
        obj = {"v": 1, "id": cmd_id or f"c-{self.n}-{time.monotonic_ns() % 10**9}", "op": op, "target": target,
               "args": args or {}, "iat": iat, "exp": iat + ttl_ms}
        return sign(obj, key or self.key, kid)

    def send(self, command: dict | bytes) -> None:
        payload = command if isinstance(command, bytes) else json.dumps(command, ensure_ascii=False).encode()
        self.client.publish(CMD, payload, qos=1).wait_for_publish(5)

    def results(self) -> list[dict]:
        return [json.loads(m.payload) for m in self.sub.on(RESULT)]

    def result(self, cmd_id: str, timeout: float = 15) -> dict:
        self.sub.wait_for(lambda ms: any(r["id"] == cmd_id for r in self.results()), timeout, f"the result of {cmd_id}")
        return next(r for r in self.results() if r["id"] == cmd_id)

    def ask(self, op: str, target: str | None = None, args: dict | None = None, **kw: Any) -> dict:
        command = self.command(op, target, args, **kw)
        self.send(command)
        return self.result(command["id"])

    def ready(self) -> None:
        """The agent is subscribed: a ping gets its answer (sent again until it does)."""
        deadline = time.monotonic() + 30
        while True:
            command = self.command("agent.ping")
            self.send(command)
            try:
                self.result(command["id"], timeout=2)
                return
            except AssertionError:
                assert time.monotonic() < deadline, "the agent never answered a ping"

    def items(self, topic: str, key: str) -> list[tuple[dict, dict]]:
        """(message envelope, item) for every record ("recs") or event received on ``topic``,
        each envelope and record checked against the contract (support.wire)."""
        out = []
        for m in self.sub.on(topic):
            body = check_envelope(json.loads(m.payload), key, topic)
            out.extend((body, check_record(item) if key == "recs" else item) for item in body[key])
        return out


def audit_rows(config: Path) -> list[dict]:
    out = cli("audit", "-c", str(config), "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["rows"]


@pytest.fixture
def site(tmp_path: Path, gate, river, keys):
    """broker, platform, config, gate sim, start(), stop(); the agent stopped at the end."""
    sim, gate_port = gate
    sensor, river_port = river
    private, public, _ = keys
    running: list = []
    log = tmp_path / "agent.log"

    with Mosquitto(tmp_path) as broker:
        platform = Platform(broker, private)

        class Site:
            pass
        s = Site()
        s.broker, s.platform, s.gate, s.sensor, s.log = broker, platform, sim, sensor, log
        s.config_for = lambda **kw: write_config(tmp_path, broker, gate_port, river_port, public, **kw)

        def start(config: Path) -> None:
            running.append(start_agent(config, log))
            platform.ready()

        def stop() -> None:
            stop_agent(running.pop(), log)
        s.start, s.stop = start, stop
        try:
            yield s
        finally:
            while running:
                stop_agent(running.pop(), log)
            platform.close()
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]
    for v in sim.vehicles:
        assert v.plate not in text and v.card not in text


def no_personal_data(site: Any, config: Path) -> None:
    """No plate or card of the gate in any result or audit row."""
    seen = json.dumps(site.platform.results(), ensure_ascii=False) + json.dumps(audit_rows(config), ensure_ascii=False)
    for v in site.gate.vehicles:
        assert v.plate not in seen and v.card not in seen


# -- refusals ----------------------------------------------------------------------------------------------
def test_every_rejection_class_is_answered_audited_and_never_reaches_the_gate(site, keys):
    _, _, stranger = keys
    config = site.config_for()
    site.start(config)
    p = site.platform
    site.gate.received.clear()
    received_before = site.gate.received_bytes
    now = int(time.time() * 1000)
    write = {"point": "barrier", "value": "open"}

    forged = p.command("device.write", "gate-1", write, cmd_id="c-forged")
    forged["args"] = {"point": "barrier", "value": "close"}  # changed after signing
    unsigned = p.command("device.write", "gate-1", write, cmd_id="c-unsigned")
    del unsigned["sig"]
    replayed = p.command("agent.ping", cmd_id="c-twice")
    cases = [  # (what is sent, the id the result carries, the code)
        (forged, "c-forged", "bad_signature"),
        (unsigned, "c-unsigned", "bad_request"),
        (p.command("device.write", "gate-1", write, cmd_id="c-stranger", key=stranger, kid=None),
         "c-stranger", "bad_signature"),
        (p.command("device.write", "gate-1", write, cmd_id="c-unknown-key", key=stranger, kid="k-stranger"),
         "c-unknown-key", "unknown_key"),
        (p.command("device.write", "gate-1", write, cmd_id="c-expired", iat_ms=now - 120_000),
         "c-expired", "expired"),
        (p.command("device.write", "gate-1", write, cmd_id="c-future", iat_ms=now + 600_000),
         "c-future", "not_yet_valid"),
        (p.command("device.write", "gate-1", write, cmd_id="c-long", ttl_ms=3_600_000), "c-long", "bad_request"),
        (p.command("gate.smash", "gate-1", write, cmd_id="c-op"), "c-op", "unknown_op"),
        (p.command("config.apply", None, {"config": "x"}, cmd_id="c-off"), "c-off", "not_allowed"),
        (p.command("device.write", "gate-1", {"point": "barrier", "value": "lift"}, cmd_id="c-value"),
         "c-value", "not_allowed"),
        (p.command("device.write", "gate-1", {"point": "lane_light", "value": "on"}, cmd_id="c-point"),
         "c-point", "not_allowed"),
        (p.command("device.write", "river-1", {"point": "level_m", "value": 1}, cmd_id="c-ro"), "c-ro", "not_allowed"),
        (p.command("device.write", "gate-9", write, cmd_id="c-nodev"), "c-nodev", "not_allowed"),
        (replayed, "c-twice", None),  # accepted the first time...
        (replayed, "c-twice", "replayed"),  # ...refused the second
        (b'{"v": 1, "id": "c-json", "op": ', None, "bad_request"),
        (b"\xff\xfe not even UTF-8", None, "bad_request"),
        (json.dumps({**p.command("agent.ping", cmd_id="c-big"), "pad": "x" * 20000}).encode(), None, "too_large"),
    ]
    for sent, _, _ in cases:
        p.send(sent)
    expected_refusals = sorted((cid or "", code) for _, cid, code in cases if code)
    p.sub.wait_for(lambda ms: sum(not r["ok"] for r in p.results()) >= len(expected_refusals), 20, "every refusal")
    time.sleep(0.5)  # nothing more comes
    refusals = [r for r in p.results() if not r["ok"]]
    assert sorted((r["id"] or "", r["error"]["code"]) for r in refusals) == expected_refusals
    for r in refusals:
        assert set(r) == {"v", "id", "ok", "ts", "error"} and r["error"]["message"], r

    rows = [r for r in audit_rows(config) if r["kind"] == "command" and r["outcome"] == "rejected"]
    assert sorted((r["cmd_id"] or "", r["code"]) for r in rows) == expected_refusals
    by_id = {r["cmd_id"]: r for r in rows}
    assert by_id["c-value"]["actor"] == KID and by_id["c-value"]["target"] == "gate-1"  # signed, then refused
    assert by_id["c-twice"]["actor"] == KID and by_id["c-forged"]["actor"] == "unverified"
    assert site.gate.received == [] and site.gate.received_bytes == received_before  # not one byte
    assert site.gate.barriers == {1: "closed", 2: "closed"}
    no_personal_data(site, config)
    assert cli("audit", "-c", str(config), "--verify").returncode == 0


def test_a_flood_on_r_cmd_loses_no_answer_to_a_handled_command(site):
    """300 signed-but-refused commands at once with the broker up: what the agent handled is all
    answered (the result queue slows the worker instead of dropping answers); what it could not
    take is dropped at its entrance, counted in one audit row. A genuine command after it works."""
    config = site.config_for()
    site.start(config)
    p = site.platform
    p.sub.clear()
    flood = [p.command("device.write", "gate-1", {"point": "lane_light", "value": "on"}, cmd_id=f"c-flood-{i}")
             for i in range(300)]
    infos = [p.client.publish(CMD, json.dumps(c).encode(), qos=1) for c in flood]
    for info in infos:
        info.wait_for_publish(10)
    p.ready()  # a ping answered after the flood (sent again while the queue is full): all handled by now

    rows = audit_rows(config)
    handled = {r["cmd_id"] for r in rows if (r["cmd_id"] or "").startswith("c-flood-")}
    answered = {r["id"] for r in p.results() if (r["id"] or "").startswith("c-flood-")}
    assert handled and answered == handled
    dropped = 300 - len(handled)
    if dropped:  # how many depends on the machine's speed; each is counted (with any ping dropped too)
        counted = [r for r in rows if r["cmd_id"] is None and "dropped" in (r["detail"] or "")]
        assert sum(int(r["detail"].split()[0]) for r in counted) >= dropped, counted
    assert site.gate.received == []
    assert "results wait to be sent" not in site.log.read_text()


def test_a_command_id_is_refused_after_a_restart_of_the_agent(site):
    config = site.config_for()
    site.start(config)
    p = site.platform
    command = p.command("device.write", "gate-1", {"point": "barrier", "value": "open", "lane": 2}, cmd_id="c-once")
    p.send(command)
    assert p.result("c-once")["ok"] is True
    assert [c["op"] for c in site.gate.commands] == ["open"]
    site.stop()
    site.start(config)
    p.sub.clear()
    p.send(command)  # the same bytes, well within exp
    assert p.result("c-once")["error"]["code"] == "replayed"
    assert [c["op"] for c in site.gate.commands] == ["open"]  # the gate saw it once
    rows = [r for r in audit_rows(config) if r["cmd_id"] == "c-once"]
    assert [(r["outcome"], r["code"]) for r in rows] == [("accepted", None), ("done", None), ("rejected", "replayed")]


# -- writes -------------------------------------------------------------------------------------------------
def test_an_allowed_gate_open_is_acked_audited_and_the_barrier_moves(site):
    config = site.config_for()
    site.start(config)
    p = site.platform
    answer = p.ask("device.write", "gate-1", {"point": "barrier", "value": "open", "lane": 1}, cmd_id="c-open")
    assert answer["ok"] is True and answer["data"] == {"point": "barrier", "acked": True, "lane": 1}
    assert site.gate.barriers[1] == "open"
    assert [(c["op"], c["lane"]) for c in site.gate.commands] == [("open", 1)]
    p.sub.wait_for(lambda ms: any(item["dev"] == "gate-1" and item["vals"].get("barrier") == "open"
                                  for _, item in p.items(TELEMETRY, "recs")), 10, "the barrier's record")
    answer = p.ask("device.write", "gate-1", {"point": "barrier", "value": "open", "lane": 7}, cmd_id="c-lane")
    assert answer["error"]["code"] == "device_error" and "bad_lane" in answer["error"]["message"]
    rows = [r for r in audit_rows(config) if r["cmd_id"] in ("c-open", "c-lane")]
    assert [(r["cmd_id"], r["outcome"], r["actor"], r["op"], r["target"]) for r in rows] == [
        ("c-open", "accepted", KID, "device.write", "gate-1"), ("c-open", "done", KID, "device.write", "gate-1"),
        ("c-lane", "accepted", KID, "device.write", "gate-1"), ("c-lane", "failed", KID, "device.write", "gate-1")]
    assert rows[1]["detail"] == "barrier=open lane 1 acked"
    no_personal_data(site, config)


def test_a_silent_gate_is_a_timeout(site):
    config = site.config_for()
    site.start(config)
    site.gate.set_faults(no_ack=True)
    answer = site.platform.ask("device.write", "gate-1", {"point": "barrier", "value": "close"})
    assert answer["error"] == {"code": "timeout",
                               "message": "gate-1: gate did not acknowledge close lane 1 within 1s"}


def test_a_modbus_write_is_read_back_and_a_refusal_is_a_device_error(site):
    config = site.config_for()
    site.start(config)
    answer = site.platform.ask("device.write", "river-cfg", {"point": "unit_code", "value": 4})
    assert answer["ok"] is True and answer["data"] == {"point": "unit_code", "read_back": "match"}
    assert site.sensor.get(Reg.HOLDING, 2) == 4
    answer = site.platform.ask("device.write", "river-cfg", {"point": "decimals", "value": 7})  # the device takes 0..3
    assert answer["error"] == {"code": "device_error", "message": "exception 3 (illegal data value)"}
    assert site.sensor.get(Reg.HOLDING, 3) == 2


# -- ping, poll, replay -----------------------------------------------------------------------------------------
def test_ping_and_poll(site):
    config = site.config_for()  # river-1 polls once an hour: a second reading needs device.poll
    site.start(config)
    p = site.platform
    answer = p.ask("agent.ping")
    assert answer["ok"] is True and answer["data"]["version"] and answer["data"]["uptime_s"] >= 0
    assert set(answer["data"]["backlog"]) == {"count", "bytes", "oldest_ts", "by_prio"}
    assert answer["data"]["uplink"]["connected"] is True

    def levels() -> list[dict]:
        return [item for _, item in p.items(TELEMETRY, "recs") if item["dev"] == "river-1"]
    p.sub.wait_for(lambda ms: len(levels()) >= 1, 10, "the first poll")
    time.sleep(1.0)
    assert len(levels()) == 1
    assert p.ask("device.poll", "river-1")["data"] == {"requested": True}
    p.sub.wait_for(lambda ms: len(levels()) >= 2, 10, "the requested poll")
    assert levels()[-1]["vals"] == {"level_m": 1.25}


def test_buffer_replay_republishes_exactly_the_range_with_original_ids_and_bodies(site):
    config = site.config_for(river_interval="300ms")  # records and passage events, interleaved
    site.start(config)
    p = site.platform
    wait_until(lambda: len(p.items(EVENTS, "events")) >= 6, 20, "some passages")
    originals: dict[int, dict] = {}
    for topic, key in ((TELEMETRY, "recs"), (EVENTS, "events")):
        for body, item in p.items(topic, key):
            assert "replay" not in body
            originals[item["id"]] = item
    ids = sorted(originals)
    low, high = ids[2], ids[-3]
    expected = [i for i in ids if low <= i <= high]
    assert {originals[i].get("type", "record") for i in expected} >= {"passage", "record"}

    answer = p.ask("buffer.replay", args={"from_id": low, "to_id": high}, cmd_id="c-replay")
    assert answer["ok"] is True and answer["data"] == {"rows": len(expected), "first_id": low, "last_id": high}

    def replayed(cmd_id: str) -> list[dict]:
        out = []
        for topic, key in ((TELEMETRY, "recs"), (EVENTS, "events")):
            out += [item for body, item in p.items(topic, key) if body.get("replay") == cmd_id]
        return sorted(out, key=lambda item: item["id"])
    p.sub.wait_for(lambda ms: len(replayed("c-replay")) >= len(expected), 20, "the replay")
    time.sleep(0.5)
    assert [item["id"] for item in replayed("c-replay")] == expected  # exactly the range, once each
    assert all(item == originals[item["id"]] for item in replayed("c-replay"))  # byte for byte the same content

    # a time range: the rows whose ts falls in it, whatever their ids
    t_low, t_high = originals[expected[0]]["ts"], originals[expected[0]]["ts"] + 500
    in_time = sorted(i for i, item in originals.items() if t_low <= item["ts"] <= t_high)
    answer = p.ask("buffer.replay", args={"from_ts": t_low, "to_ts": t_high}, cmd_id="c-replay-ts")
    assert answer["data"]["rows"] >= len(in_time)  # rows buffered since may fall in it too
    p.sub.wait_for(lambda ms: {i for i in in_time} <= {item["id"] for item in replayed("c-replay-ts")}, 20,
                   "the time-range replay")
    assert all(t_low <= item["ts"] <= t_high for item in replayed("c-replay-ts"))
    rows = [r for r in audit_rows(config) if r["cmd_id"] == "c-replay"]
    assert rows[-1]["outcome"] == "done" and rows[-1]["detail"] == f"replaying {len(expected)} row(s) ids {low}..{high}"
    no_personal_data(site, config)
