"""Leak test: 1,000 synthetic residents flow through the whole gateway and no raw identifier,
phone, plate or name comes out anywhere.

Real parts: our Modbus simulator serving a board of residents (``support.resident_board``: ten
per poll, as UTF-8 STRING registers: ID number, phone in three forms, plate, Chinese name, an
address line holding the phone), the agent as a subprocess at ``--log-level debug`` with a
``modbus_generic`` device declaring the classes (slot 1's ID and name sealed for a platform
key: one seal per record), a real Mosquitto, and a subscriber on ``#`` that records every
message. After every resident was served and drained, the raw values are searched, as bytes
(UTF-8, and the ``\\uXXXX`` escapes the buffer's JSON writes), in: all MQTT payloads (records,
their seals included), every file under the state directory (``buffer.db``, ``buffer.db-wal``,
the intake log ``buffer.db.intake-*``...) while the agent runs and again after it stopped,
``edge-agent tail``'s output, and the agent's DEBUG log. The seals do hold the raw values: they
open on the platform, with its private key, to slot 1's resident of every batch.

The same flow runs in the ThingsBoard and Sparkplug dialects (issue 14): no raw value on the
wire, in the files or in the log there either, and the residents' tokens did arrive.

The last test runs the same flow with a broken policy (identifier, name and free_text all
``keep``) and requires the same detector to find the leaks: the first test can fail.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge_agent.platform import generate_platform_keypair, load_private_key, open_record
from edge_agent.privacy.keys import load_keyring
from edge_agent.privacy.pseudonym import mask, pseudonymize
from edge_agent.sim.modbus import ModbusSimulator
from support.agent import start_agent, status, stop_agent, wait_until
from support.broker import Message, Mosquitto, Subscriber
from support.keys import init_keys
from support.resident_board import SLOTS, ResidentBoard, phone_forms, points_config
from support.residents import Resident, residents
from support.wire import Value, records, values

RESIDENTS = 1000
ROOT = "edge/v1/leak-site/gw-leak"
PEOPLE = residents(RESIDENTS, seed=20241124)


def write_config(tmp_path: Path, broker: Mosquitto, modbus_port: int, *, actions: dict[str, str] | None,
                 device_privacy: dict[str, str] | None, platform_key: Path | None = None,
                 dialect: str = "edge") -> Path:
    device: dict[str, Any] = {"name": "residents-1", "bus": "plant", "driver": "modbus_generic", "address": 1,
                              "interval": "20ms", "points": points_config()}
    if device_privacy:
        device["privacy"] = device_privacy
    cfg: dict[str, Any] = {
        "gateway": {"id": "gw-leak", "site": "leak-site", "state_dir": str(tmp_path / "state")},
        "mqtt": {"host": broker.host, "port": broker.port, "batch_max": 500, "keepalive": "5s",
                 "reconnect_min": "100ms", "reconnect_max": "500ms", "dialect": dialect},
        "buffer": {"commit_interval": "50ms"},
        "buses": [{"name": "plant", "protocol": "modbus-tcp", "host": "127.0.0.1", "port": modbus_port,
                   "timeout": "1s"}],
        "devices": [device],
    }
    if actions:
        cfg["privacy"] = {"actions": actions}
    if platform_key is not None:
        cfg.setdefault("privacy", {})["platform_key_file"] = str(platform_key)
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
    return path


def telemetry(messages: list[Message]) -> list[dict]:
    """The records on the telemetry topic (support.wire checks each against the contract)."""
    return records(messages, f"{ROOT}/telemetry", gw="gw-leak")


def snapshot(state: Path) -> dict[str, bytes]:
    """Every file under the state directory, raw bytes, by relative path."""
    return {str(p.relative_to(state)): p.read_bytes() for p in sorted(state.rglob("*")) if p.is_file()}


# -- the leak detector ---------------------------------------------------------------------------
def needles(people: list[Resident]) -> dict[bytes, str]:
    """Raw values -> kind: as UTF-8 and as the ``\\uXXXX`` escapes of ``json.dumps`` (the buffer's form)."""
    out: dict[bytes, str] = {}
    for r in people:
        plain, spaced, dashed = phone_forms(r.mobile)
        values = [("id", r.id_no), ("phone", plain), ("phone", spaced.removeprefix("+86 ")), ("phone", dashed),
                  ("plate", r.plate), ("name", r.name)]
        for kind, text in values:
            out[text.encode("utf-8")] = kind
            out[json.dumps(text)[1:-1].encode("ascii")] = kind
    return out


class Detector:
    """Finds any of the needles in a blob with ``grep -F`` (multi-pattern: 10 MB x 8k needles in ~30 ms;
    ``needle in blob`` in Python would take ~40 s per blob)."""

    def __init__(self, people: list[Resident], workdir: Path) -> None:
        self.needles = needles(people)
        self.file = workdir / "needles.txt"
        self.file.write_bytes(b"\n".join(self.needles) + b"\n")
        self.scanned = 0

    def find(self, blob: bytes) -> Counter:
        """Leaks found in ``blob``, counted by kind."""
        self.scanned += len(blob)
        out = subprocess.run(["grep", "-F", "-a", "-o", "-f", str(self.file)], input=blob, capture_output=True,
                             env={"LC_ALL": "C"}, timeout=60)
        assert out.returncode in (0, 1), out.stderr
        return Counter(self.needles[m] for m in out.stdout.split(b"\n") if m)


# -- the flow ------------------------------------------------------------------------------------
@dataclass
class Flow:
    messages: list[Message]
    running: dict[str, bytes]  # state files read while the agent ran
    stopped: dict[str, bytes]  # ... and after it stopped
    log: bytes
    config: Path
    tail: bytes  # what `edge-agent tail` printed while the agent ran


def run_flow(tmp_path: Path, people: list[Resident], *, actions: dict[str, str] | None = None,
             device_privacy: dict[str, str] | None = None, platform_key: Path | None = None,
             dialect: str = "edge") -> Flow:
    board = ResidentBoard(people)
    sim = ModbusSimulator({1: board})
    _, modbus_port = sim.serve_tcp("127.0.0.1", 0)
    state, log = tmp_path / "state", tmp_path / "agent.log"
    try:
        with Mosquitto(tmp_path) as broker, Subscriber(broker, "#") as platform:
            config = write_config(tmp_path, broker, modbus_port, actions=actions, device_privacy=device_privacy,
                                  platform_key=platform_key, dialect=dialect)
            init_keys(config)
            agent = start_agent(config, log, "--log-level", "debug")
            tail = subprocess.Popen([sys.executable, "-m", "edge_agent.cli", "tail", "-c", str(config), "-n", "0"],
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            tailed: list[bytes] = []
            reader = threading.Thread(target=lambda: tailed.extend(tail.stdout), daemon=True)
            reader.start()
            try:
                assert board.done.wait(60), f"only {board.served} residents served\n{log.read_text()[-3000:]}"
                last = board.batches - 1
                if dialect == "edge":
                    platform.wait_for(lambda ms: any(r["vals"].get("batch_no") == last for r in telemetry(ms)),
                                      30, "the last batch of residents")
                else:  # the buffer drained: the broker has every record
                    wait_until(lambda: status(config)["pending"] == 0, 30, "the buffer to drain", interval=0.2)
                running = snapshot(state)
            finally:
                stop_agent(agent, log)
            final = status(config)
            last_id = str(final["next_id"] - 1).encode()  # tail polls the file: let it reach the last id
            wait_until(lambda: any(line.split()[0] == last_id for line in list(tailed)[-50:]), 20,
                       "tail to catch up", interval=0.1)
            tail.send_signal(signal.SIGINT)
            assert tail.wait(timeout=30) == 0
            reader.join(timeout=10)
            tail.stdout.close()
            assert final["pending"] == 0, final
            if dialect == "edge":
                messages = platform.wait_for(
                    lambda ms: {r["id"] for r in telemetry(ms)} >= set(range(1, final["next_id"])), 20, "every id")
            else:  # no ids on these wires: until nothing more arrives for a second
                messages = quiet(platform)
            stopped = snapshot(state)
    finally:
        sim.stop()
    assert {"buffer.db", "buffer.db-wal", "buffer.db.intake-0"} <= set(running), sorted(running)
    return Flow(messages, running, stopped, log.read_bytes(), config, b"".join(tailed))


def quiet(platform: Subscriber, seconds: float = 1.0) -> list[Message]:
    """The messages once none more arrived for ``seconds``."""
    count = -1
    while True:
        messages = platform.messages
        if len(messages) == count:
            return messages
        count = len(messages)
        time.sleep(seconds)


def by_point(rows: list[Value], field: str) -> list[Any]:
    return [v.val for v in rows if v.pt.endswith(f"_{field}")]


def test_no_raw_personal_value_leaves_the_gateway(tmp_path: Path) -> None:
    private, public = generate_platform_keypair(tmp_path / "platform")
    flow = run_flow(tmp_path, PEOPLE, device_privacy={"s0_name": "mask", "s1_id_no": "seal", "s1_name": "seal"},
                    platform_key=public)
    detector = Detector(PEOPLE, tmp_path)
    traffic = b"\n".join(m.payload for m in flow.messages)
    found = {"mqtt": detector.find(traffic), "log": detector.find(flow.log), "tail": detector.find(flow.tail)}
    for when, files in (("running", flow.running), ("stopped", flow.stopped)):
        for name, data in files.items():
            found[f"{name} ({when})"] = detector.find(data)
    assert all(not c for c in found.values()), {k: dict(c) for k, c in found.items() if c}
    assert b"DEBUG" in flow.log and b"Traceback" not in flow.log

    # what did arrive: p1 tokens, one per resident, the same from every field and every poll
    ring = load_keyring(tmp_path / "state" / "keys" / "pseudonym.key")
    recs = telemetry(flow.messages)
    rows = values(recs)
    ids, phones, plates = (set(by_point(rows, f)) for f in ("id_no", "phone", "plate"))
    sealed_slot = set(PEOPLE[1::SLOTS])  # slot 1: ID and name sealed, never in vals
    assert ids == {pseudonymize(r.id_no, ring, "id") for r in PEOPLE if r not in sealed_slot}
    assert {v.pt for v in rows if v.pt.endswith("_id_no")} == {f"s{i}_id_no" for i in range(SLOTS) if i != 1}
    assert phones == {pseudonymize(r.mobile, ring, "phone") for r in PEOPLE}  # all three forms: one token
    assert plates == {pseudonymize(r.plate, ring, "plate") for r in PEOPLE}
    assert all(t.startswith("p1:") for t in ids | phones | plates)
    assert set(by_point(rows, "address")) == {
        r.address.replace(r.mobile, pseudonymize(r.mobile, ring, "phone")) for r in PEOPLE}
    names = by_point(rows, "name")  # class name: dropped, except slot 0 (mask) and slot 1 (sealed)
    assert {v.pt for v in rows if v.pt.endswith("_name")} == {"s0_name"}
    assert set(names) == {mask(r.name, name=True) for r in PEOPLE[::SLOTS]}
    # every poll is one record holding one seal; the seals hold slot 1's raw ID and name, and
    # open on the platform (the gateway holds no private key)
    assert all("batch_no" in r["vals"] and "sealed" in r for r in recs), "a poll split, or a record without its seal"
    key = load_private_key(private)
    opened = [open_record(r, key)["vals"] for r in recs]
    assert {(o["s1_id_no"], o["s1_name"]) for o in opened} == {(r.id_no, r.name) for r in sealed_slot}
    # tail followed the buffer live and printed every record, as the wire carries it
    tail_ids = {int(line.split()[0]) for line in flow.tail.decode().splitlines()}
    assert tail_ids >= {r["id"] for r in recs}, "tail missed records"
    assert flow.tail.count(b'"p1:') >= len(ids) and flow.tail.count(b"<sealed>") >= len(sealed_slot)
    scanned = detector.scanned
    print(f"\nleak test: {RESIDENTS} residents, {len(flow.messages)} MQTT messages, {len(recs)} records "
          f"({len(rows)} values, a seal each), "
          f"{len(detector.needles)} needles, {scanned / 1e6:.1f} MB scanned "
          f"(MQTT {len(traffic) / 1e6:.1f} MB, DEBUG log {len(flow.log) / 1e3:.1f} kB, "
          f"state files {sum(map(len, flow.running.values())) / 1e6:.1f} + "
          f"{sum(map(len, flow.stopped.values())) / 1e6:.1f} MB): no leak")


@pytest.mark.parametrize("dialect", ["thingsboard", "sparkplug"])
def test_no_raw_personal_value_leaves_in_any_dialect(tmp_path: Path, dialect: str) -> None:
    private, public = generate_platform_keypair(tmp_path / "platform")
    flow = run_flow(tmp_path, PEOPLE, device_privacy={"s0_name": "mask", "s1_id_no": "seal", "s1_name": "seal"},
                    platform_key=public, dialect=dialect)
    detector = Detector(PEOPLE, tmp_path)
    traffic = b"\n".join(m.payload for m in flow.messages)
    found = {"mqtt": detector.find(traffic), "log": detector.find(flow.log)}
    for when, files in (("running", flow.running), ("stopped", flow.stopped)):
        for name, data in files.items():
            found[f"{name} ({when})"] = detector.find(data)
    assert all(not c for c in found.values()), {k: dict(c) for k, c in found.items() if c}
    # the residents did go out, as tokens: each resident's phone token is on the wire
    ring = load_keyring(tmp_path / "state" / "keys" / "pseudonym.key")
    tokens = {pseudonymize(r.mobile, ring, "phone").encode() for r in PEOPLE}
    missing = [t for t in tokens if t not in traffic]
    assert not missing, f"{len(missing)} of {len(tokens)} residents' phone tokens never reached the broker"
    assert b"Traceback" not in flow.log
    print(f"\nleak test, {dialect} dialect: {RESIDENTS} residents, {len(flow.messages)} MQTT messages, "
          f"{detector.scanned / 1e6:.1f} MB scanned: no leak")


def test_the_leak_test_fails_under_a_broken_policy(tmp_path: Path) -> None:
    flow = run_flow(tmp_path, PEOPLE, actions={"identifier": "keep", "name": "keep", "free_text": "keep"})
    detector = Detector(PEOPLE, tmp_path)
    in_traffic = detector.find(b"\n".join(m.payload for m in flow.messages))
    in_buffer = detector.find(flow.running["buffer.db"] + flow.running["buffer.db-wal"])
    assert set(detector.find(flow.tail)) == {"id", "phone", "plate", "name"}
    assert set(in_traffic) == {"id", "phone", "plate", "name"}, in_traffic
    assert set(in_buffer) == {"id", "phone", "plate", "name"}, in_buffer
    assert in_traffic["id"] >= RESIDENTS  # every resident's ID went out raw
    print(f"\nbroken policy: the detector found {dict(in_traffic)} in MQTT, {dict(in_buffer)} in the buffer files")
