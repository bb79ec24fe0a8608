"""The hub and gate simulators and their ``simulate`` commands, and the whole gateway behind
them: a simulated care home's hub (on a pty) and car-park gate (over TCP) with synthetic
residents -> the agent as a subprocess -> a real Mosquitto, where alarms and passages must
arrive pseudonymized and no raw personal value may be found in the traffic, the buffer files
or the DEBUG log."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import edge_agent.sim.residents as package_residents
import support.residents as test_residents
from edge_agent.drivers import wearables_hub
from edge_agent.privacy.keys import load_keyring
from edge_agent.field.link import ByteLink
from edge_agent.model import Quality
from edge_agent.privacy.pseudonym import kind_of, pseudonymize
from edge_agent.sim import cli
from edge_agent.sim.byteserver import ByteServer
from edge_agent.sim.gate import GateSim
from edge_agent.sim.hub import BROKEN_KINDS, HubSim, broken_line
from edge_agent.sim.ptypair import PtyPair
from edge_agent.settings import BusSettings, DeviceSettings
from support.agent import start_agent, stop_agent
from support.broker import Mosquitto, Subscriber
from support.keys import init_keys
from support.simproc import line_with, start_simulator, stop_simulator
from support.wire import events as wire_events
from support.wire import records as wire_records
from support.wire import values

T0 = 1_732_380_000.0


def lines(data: bytes) -> list[dict]:
    return [json.loads(x) for x in data.splitlines()]


# -- residents: one copy, in the package ----------------------------------------------------------
def test_the_test_residents_are_the_package_residents():
    for name in ("Resident", "residents", "resident_id", "legacy_id", "mobile", "plate", "name", "SEPARATORS"):
        assert getattr(test_residents, name) is getattr(package_residents, name)
    assert test_residents.residents(3, seed=1) == package_residents.residents(3, seed=1)


# -- the hub ------------------------------------------------------------------------------------
def run_hub(sim: HubSim, seconds: float, step: float = 0.05) -> list[tuple[float, dict]]:
    """Tick ``sim`` every ``step`` from T0 for ``seconds``: (time, object) of each line it sends."""
    out = []
    for i in range(round(seconds / step) + 1):
        now = T0 + round(i * step, 6)
        out.extend((now, obj) for obj in lines(sim.tick(now)))
    return out


def hub_reader() -> wearables_hub.HubReader:
    return wearables_hub.HubReader(DeviceSettings("hub-1", "wb", "wearables_hub", None, 1.0), link=None)


def test_hub_sends_plausible_slowly_varying_vitals_spread_over_the_period():
    sim = HubSim(4, vitals_every_s=1.0, seed=5)
    sent = run_hub(sim, 60)
    first_round = [t - T0 for t, obj in sent if t < T0 + 1.0]
    assert [round(t, 2) for t in first_round] == [0.0, 0.25, 0.5, 0.75]  # one band at a time
    reader = hub_reader()
    for _, obj in sent:
        reader.take(json.dumps(obj).encode())
    result = reader.collect()
    assert result.bad_frames == 0 and all(r.q is Quality.GOOD for r in result.readings)
    for band in sim.bands:
        hr = [obj["hr"] for _, obj in sent if obj["band"] == band.band]
        assert len(hr) >= 60 and max(abs(a - b) for a, b in zip(hr, hr[1:])) <= 3
        wearers = {json.dumps(obj["wearer"]) for _, obj in sent if obj["band"] == band.band}
        assert wearers == {json.dumps({"id_no": band.wearer.id_no, "name": band.wearer.name,
                                       "phone": band.wearer.mobile})}
    assert all(obj["ts"] == int(t) for t, obj in sent)


def test_hub_alarms_come_once_each_on_schedule_near_the_point():
    sim = HubSim(3, vitals_every_s=10, sos_after_s=1.0, fall_after_s=2.0, off_wrist_after_s=2.0, near=(30.0, 120.0))
    alarms = [(t - T0, obj) for t, obj in run_hub(sim, 5) if obj["t"] != "vitals"]
    assert [(round(t, 2), obj["t"], obj["band"]) for t, obj in alarms] == [
        (1.0, "sos", "B-00001"), (2.0, "fall", "B-00002"), (2.0, "off_wrist", "B-00003")]
    assert all(abs(obj["lat"] - 30.0) < 0.003 and abs(obj["lon"] - 120.0) < 0.003 for _, obj in alarms)
    assert alarms[0][1]["wearer"]["id_no"] == sim.people[0].id_no


def test_hub_clock_can_be_left_out_or_skewed():
    assert all("ts" not in obj for _, obj in run_hub(HubSim(2, vitals_every_s=1, hub_clock=False), 2))
    assert {obj["ts"] - int(t) for t, obj in run_hub(HubSim(2, vitals_every_s=1, skew_s=-3600), 2)} == {-3600}


def test_a_silent_hub_sends_nothing_and_its_alarms_wait():
    sim = HubSim(2, vitals_every_s=1, sos_after_s=0.5)
    sim.set_faults(silence=True)
    assert run_hub(sim, 3) == []
    sim.set_faults(silence=False)
    kinds = [obj["t"] for obj in lines(sim.tick(T0 + 3.1))]
    assert kinds.count("sos") == 1 and kinds.count("vitals") == 2  # no burst of the missed rounds


def test_hub_broken_lines_once_per_period_while_on_and_on_demand():
    sim = HubSim(1, vitals_every_s=1.0)
    sim.set_faults(garbage=True, long_line=True)
    out = b"".join(sim.tick(T0 + i * 0.1) for i in range(30))  # three periods
    assert sum(len(x) > 4096 for x in out.split(b"\n")) == 3 and sim.sent["garbage"] == 3
    sim.set_faults(garbage=False, long_line=False)
    for kind in BROKEN_KINDS:
        sim.inject(kind)
    burst = sim.tick(T0 + 3.0).split(b"\n")
    r = hub_reader()
    for x in burst[:4]:
        r.take(x)
    assert r.collect().bad_frames == 4  # every kind is one the driver refuses
    with pytest.raises(ValueError, match="unknown broken line"):
        broken_line("nonsense", sim.rng)


def test_a_garbled_hub_sends_as_many_lines_none_of_them_usable():
    clear, garbled = HubSim(3, vitals_every_s=0.5, seed=9), HubSim(3, vitals_every_s=0.5, seed=9)
    garbled.set_faults(garbled=True)
    garbled.trigger("sos")
    clear.trigger("sos")
    ticks = [T0 + i * 0.05 for i in range(40)]
    plain, scrambled = b"".join(clear.tick(t) for t in ticks), b"".join(garbled.tick(t) for t in ticks)
    assert len(scrambled) == len(plain) and scrambled.count(b"\n") == plain.count(b"\n") >= 10
    r = hub_reader()
    for x in scrambled.split(b"\n")[:-1]:
        r.take(x)
    result = r.collect()
    assert result.bad_frames == plain.count(b"\n") and not result.readings and not result.events


def test_hub_ignores_what_it_is_sent_within_bounds():
    sim = HubSim(1)
    pending = bytearray(b'{"t":"cmd"}\n{"t":"cm')
    assert sim.feed(pending) == b"" and pending == bytearray(b'{"t":"cm')
    pending = bytearray(b"x" * 5000)
    sim.feed(pending)
    assert pending == bytearray()


@pytest.mark.parametrize("kwargs, message", [
    ({"residents_count": 0}, "residents 0"), ({"vitals_every_s": 0}, "must be positive"),
    ({"sos_after_s": -1}, "negative"), ({"near": (91.0, 0.0)}, "latitude"), ({"people": []}, "at least one"),
])
def test_hub_rejects_impossible_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        HubSim(**kwargs)


# -- the gate -----------------------------------------------------------------------------------
def test_gate_vehicles_have_plates_of_both_kinds_and_hex_cards():
    sim = GateSim(vehicles=6)
    assert [len(v.plate) for v in sim.vehicles] == [7, 8] * 3
    assert all(kind_of(v.plate) == "plate" for v in sim.vehicles)
    assert all(re.fullmatch(r"[0-9A-F]{8}", v.card) for v in sim.vehicles)


def test_gate_passages_take_the_lanes_in_turn():
    sim = GateSim(3, passage_every_s=1.0, vehicles=2)
    sent = [obj for i in range(61) for obj in lines(sim.tick(T0 + i * 0.1))]
    assert [(p["lane"], p["dir"]) for p in sent] == [(1, "in"), (2, "in"), (3, "in"), (1, "out"), (2, "out"),
                                                      (3, "out")]
    assert [p["plate"] for p in sent] == [v.plate for v in sim.vehicles] * 3
    assert all(p["t"] == "passage" and isinstance(p["ts"], int) for p in sent)


def command(sim: GateSim, *cmds: dict | bytes) -> list[dict]:
    pending = bytearray(b"".join(c if isinstance(c, bytes) else json.dumps(c).encode() + b"\n" for c in cmds))
    return lines(sim.feed(pending))


def test_gate_answers_commands():
    sim = GateSim(2, passage_every_s=100)
    assert command(sim, {"t": "cmd", "seq": 1, "op": "open", "lane": 2}) == [
        {"t": "ack", "seq": 1, "ok": True}, {"t": "state", "lane": 2, "barrier": "open"}]
    assert command(sim, {"t": "cmd", "seq": 2, "op": "open", "lane": 2}) == [{"t": "ack", "seq": 2, "ok": True}]
    assert command(sim, {"t": "cmd", "seq": 3, "op": "lift", "lane": 2},
                   {"t": "cmd", "seq": 4, "op": "open", "lane": 9}, {"t": "cmd", "seq": 5, "op": "open", "lane": [1]},
                   {"t": "hello"}, b"noise\n") == [
        {"t": "ack", "seq": 3, "ok": False, "err": "bad_op"}, {"t": "ack", "seq": 4, "ok": False, "err": "bad_lane"},
        {"t": "ack", "seq": 5, "ok": False, "err": "bad_lane"}]
    pending = bytearray(b'{"t":"cmd","seq":6,')
    assert sim.feed(pending) == b"" and pending == bytearray(b'{"t":"cmd","seq":6,')  # waits for its end
    assert [c["seq"] for c in sim.commands] == [1, 2, 3, 4, 5]


def test_gate_faults():
    sim = GateSim(1, passage_every_s=1.0)
    open_1 = {"t": "cmd", "seq": 1, "op": "open", "lane": 1}
    sim.set_faults(nack=True)
    assert command(sim, open_1) == [{"t": "ack", "seq": 1, "ok": False, "err": "jammed"}]
    sim.set_faults(nack=False, no_ack=True)
    assert command(sim, open_1) == [] and sim.barriers[1] == "closed"
    sim.set_faults(no_ack=False, silence=True)
    assert command(sim, open_1) == [] and sim.tick(T0) == b"" and sim.tick(T0 + 5) == b""
    sim.set_faults(silence=False, garbage=True)
    out = sim.tick(T0 + 6).split(b"\n")
    assert len(out) == 3 and json.loads(out[1])["t"] == "passage"  # garbage, then the passage
    sim.set_faults(garbage=False)
    sim.set_barrier(1, "fault")
    assert lines(sim.tick(T0 + 6.1)) == [{"t": "state", "lane": 1, "barrier": "fault"}]
    with pytest.raises(ValueError):
        sim.set_barrier(2, "open")


# -- the commands, as subprocesses ----------------------------------------------------------------
def bus(**where) -> ByteLink:
    return ByteLink(BusSettings("b", "json-lines", **where))


def test_simulate_hub_on_a_pty_until_sigterm():
    with start_simulator("hub", "--pty", "--residents", "2", "--vitals-every", "200ms", "--sos-after", "0.5") as proc:
        try:
            banner = line_with(proc, "serial port for the agent:")
            assert banner.startswith("hub on a pty, 115200 8N1; serial port for the agent: /dev/")
            path = banner.rsplit(" ", 1)[1]
            assert os.path.exists(path)
            link = bus(serial=path, baud=115200)
            try:
                seen = set()
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline and not {"vitals", "sos"} <= seen:
                    raw = link.read_line(0.5)
                    if raw:
                        seen.add(json.loads(raw)["t"])
                assert {"vitals", "sos"} <= seen
            finally:
                link.close()
        finally:
            code = stop_simulator(proc)
        assert code == 0, proc.stderr.read()


def test_simulate_gate_over_tcp_until_sigterm():
    with start_simulator("gate", "--tcp", "127.0.0.1:0", "--lanes", "1", "--passage-every", "10s",
                         "--fault", "nack") as proc:
        try:
            port = int(line_with(proc, "gate TCP on 127.0.0.1:").rsplit(":", 1)[1])
            assert line_with(proc, "lanes:") == "lanes: 1, a passage every 10s"
            link = bus(host="127.0.0.1", port=port)
            try:
                link.open()
                time.sleep(0.1)
                link.send(b'{"t":"cmd","seq":9,"op":"open","lane":1}\n')
                assert json.loads(link.read_line(2)) == {"t": "ack", "seq": 9, "ok": False, "err": "jammed"}
            finally:
                link.close()
        finally:
            code = stop_simulator(proc)
        assert code == 0, proc.stderr.read()


def test_simulate_with_a_bad_argument_is_one_line_and_exit_2():
    proc = subprocess.run([sys.executable, "-m", "edge_agent.sim.cli", "simulate", "gate", "--tcp", "127.0.0.1:0",
                           "--fault", "no_ak"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "did you mean 'no_ack'" in proc.stderr


@pytest.mark.parametrize("argv, expect", [
    (["hub", "--residents", "2"], "nothing to serve on"),
    (["hub", "--pty", "--residents", "0"], "residents '0' is not 1..10000"),
    (["hub", "--pty", "--vitals-every", "soon"], "is not a duration"),
    (["hub", "--pty", "--vitals-every", "0s"], "--vitals-every must be longer than 0s"),
    (["hub", "--pty", "--sos-after", "10", "--fault", "bad_jsn"], "did you mean 'bad_json'"),
    (["hub", "--pty", "--near", "22.8"], "LAT,LON"),
    (["hub", "--pty", "--serial", "/dev/null"], "not allowed with"),
    (["hub", "--tcp", "localhost"], "HOST:PORT"),
    (["hub", "--pty", "--baud", "fast"], "baud 'fast'"),
    (["gate", "--pty", "--lanes", "256"], "lanes '256' is not 1..255"),
    (["gate", "--pty", "--passage-every", "-1"], "is not a duration"),
    (["gate", "--pty", "--fault", "silence,jam"], "unknown fault 'jam'"),
])
def test_simulate_bad_arguments(capsys, argv, expect):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["simulate", *argv])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err.count("\n") == 1 and expect in err and "Traceback" not in err


def test_simulate_port_in_use_is_one_line_and_exit_1():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        proc = subprocess.run([sys.executable, "-m", "edge_agent.sim.cli", "simulate", "hub", "--tcp",
                               f"127.0.0.1:{taken.getsockname()[1]}"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("edge-agent simulate hub: ") and "Traceback" not in proc.stderr


# -- the whole gateway: nothing raw leaves it -----------------------------------------------------
ROOT = "edge/v1/care-site/gw-care"


def write_config(tmp_path: Path, broker: Mosquitto, hub_port: str, gate_port: int) -> Path:
    cfg = {
        "gateway": {"id": "gw-care", "site": "care-site", "state_dir": str(tmp_path / "state")},
        "mqtt": {"host": broker.host, "port": broker.port, "keepalive": "5s", "reconnect_min": "200ms",
                 "reconnect_max": "1s"},
        "buffer": {"commit_interval": "50ms"},
        "buses": [{"name": "wearables", "protocol": "json-lines", "serial": hub_port, "baud": 115200},
                  {"name": "car-park", "protocol": "json-lines", "host": "127.0.0.1", "port": gate_port,
                   "timeout": "500ms"}],
        "devices": [{"name": "hub-1", "bus": "wearables", "driver": "wearables_hub"},
                    {"name": "gate-1", "bus": "car-park", "driver": "gate_controller"}],
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    init_keys(path)
    return path


def published(messages, topic: str) -> list[dict]:
    """The records (R/telemetry) or events (R/events) the platform received, each payload
    checked against the contract by support.wire."""
    read = wire_records if topic == "telemetry" else wire_events
    return read(messages, f"{ROOT}/{topic}")


def needles(hub: HubSim, gate: GateSim) -> set[bytes]:
    """Every raw personal value the simulators know, as UTF-8 and as JSON's \\uXXXX escapes."""
    values = [v for p in hub.people for v in (p.id_no, p.mobile, p.name, p.plate)] + [v.plate for v in gate.vehicles]
    return {form for v in values for form in (v.encode(), json.dumps(v)[1:-1].encode())}


def test_alarms_and_passages_reach_the_platform_pseudonymized_and_nothing_raw_leaks(tmp_path):
    hub, gate = HubSim(4, vitals_every_s=0.5, seed=31), GateSim(2, passage_every_s=0.3, vehicles=4, seed=32)
    hub_server, gate_server = ByteServer(hub), ByteServer(gate)
    state, log = tmp_path / "state", tmp_path / "agent.log"
    try:
        with PtyPair(baud=115200) as pair, Mosquitto(tmp_path) as broker, Subscriber(broker, "#") as platform:
            hub_server.serve_serial(pair.b, baud=115200)
            _, gate_port = gate_server.serve_tcp("127.0.0.1", 0, baud=9600)
            config = write_config(tmp_path, broker, pair.a, gate_port)
            agent = start_agent(config, log, "--log-level", "debug")
            try:
                platform.wait_for(lambda ms: {"B-00002", "B-00003", "B-00004"} <= {
                    r.get("sub") for r in published(ms, "telemetry") if "hr_bpm" in r["vals"]}, 30,
                    "vitals of bands 2 to 4")
                for kind, band in (("sos", 1), ("fall", 2), ("off_wrist", 3)):
                    hub.trigger(kind, band)
                messages = platform.wait_for(lambda ms: {"sos", "fall", "off_wrist"} <= {
                    e["type"] for e in published(ms, "events")} and len(
                    [e for e in published(ms, "events") if e["type"] == "passage"]) >= 4, 30,
                    "the alarms and four passages")
                running = {p: p.read_bytes() for p in state.rglob("*") if p.is_file()}
            finally:
                stop_agent(agent, log)
            stopped = {p: p.read_bytes() for p in state.rglob("*") if p.is_file()}
    finally:
        hub_server.stop()
        gate_server.stop()

    ring = load_keyring(state / "keys" / "pseudonym.key")
    events = published(messages, "events")
    for kind, band in (("sos", 1), ("fall", 2), ("off_wrist", 3)):
        (alarm,) = [e for e in events if e["type"] == kind]
        person = hub.people[band]
        assert alarm["prio"] == "critical" and alarm["dev"] == "hub-1"
        assert alarm["data"]["wearer"] == pseudonymize(person.id_no, ring, "id") and alarm["data"]["wearer"].startswith("p1:")
        assert alarm["data"]["wearer_phone"] == pseudonymize(person.mobile, ring, "phone")
        assert re.fullmatch(r"[0-9b-hjkmnp-z]{6}", alarm["data"]["geohash"])
        assert isinstance(alarm["data"]["hr_bpm"], int) and alarm["data"]["band"] == f"B-{band + 1:05d}"
        assert not {"lat", "lon", "wearer_name"} & set(alarm["data"])
    passages = [e for e in events if e["type"] == "passage"]
    by_plate = {pseudonymize(v.plate, ring, "plate"): pseudonymize(v.card, ring) for v in gate.vehicles}
    assert all(e["prio"] == "normal" and by_plate[e["data"]["plate"]] == e["data"]["card"] for e in passages)
    vals = values(published(messages, "telemetry"))  # a band's vitals: one record, its band as sub
    wearers = {v.val for v in vals if v.pt == "wearer"}
    assert wearers and wearers <= {pseudonymize(p.id_no, ring, "id") for p in hub.people}
    assert all(v.sub for v in vals if v.dev == "hub-1") and not [v for v in vals if v.pt == "wearer_name"]

    raw = needles(hub, gate)
    places = {"mqtt": b"\n".join(m.payload for m in messages), "log": log.read_bytes(),
              **{f"{p.name} (running)": b for p, b in running.items()},
              **{f"{p.name} (stopped)": b for p, b in stopped.items()}}
    assert "buffer.db" in {p.name for p in running}
    leaked = {where: n for where, blob in places.items() if (n := sum(x in blob for x in raw))}
    assert not leaked, leaked  # where and how many, never the values
    assert b"DEBUG" in places["log"] and b"Traceback" not in places["log"]
