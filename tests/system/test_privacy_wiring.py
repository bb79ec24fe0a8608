"""Privacy wired into the gateway: ``keys init``, the key check at start, ``status`` and ``read``,
events through the daemon, seals opened by ``edge-agent platform unseal``, and pseudonyms that
stay the same across restarts and change with a new key version."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import stat
import time
from pathlib import Path
from typing import Any

import yaml

from edge_agent.config.schema import load_settings
from edge_agent.agent.daemon import Agent
from edge_agent.privacy.keys import load_keyring
from edge_agent.model import DataClass, Event, Priority
from edge_agent.privacy.pseudonym import mask, pseudonymize
from edge_agent.sim.modbus import ModbusSimulator
from support.agent import cli, start_agent, status, stop_agent
from support.broker import Message, Mosquitto, Subscriber, free_port
from support.keys import init_keys
from support.resident_board import ResidentBoard, phone_forms, points_config
from support.residents import residents
from support.wire import Value, events, records, values

PEOPLE = residents(10, seed=7)  # one batch: the board serves the same ten residents on every poll
ROOT = "edge/v1/wire-site/gw-wire"


def write(tmp_path: Path, *, port: int = 1, modbus_port: int = 1, privacy: dict | None = None,
          device_privacy: dict | None = None) -> Path:
    cfg: dict[str, Any] = {
        "gateway": {"id": "gw-wire", "site": "wire-site", "state_dir": str(tmp_path / "state")},
        "mqtt": {"host": "127.0.0.1", "port": port, "keepalive": "5s", "reconnect_min": "100ms",
                 "reconnect_max": "500ms"},
        "buffer": {"commit_interval": "50ms"},
        "buses": [{"name": "plant", "protocol": "modbus-tcp", "host": "127.0.0.1", "port": modbus_port,
                   "timeout": "500ms"}],
        "devices": [{"name": "residents-1", "bus": "plant", "driver": "modbus_generic", "address": 1,
                     "interval": "100ms", "points": points_config(), **({"privacy": device_privacy} if device_privacy
                                                                        else {})}],
    }
    if privacy:
        cfg["privacy"] = privacy
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


# -- keys init, status, and the key check at start -------------------------------------------------
def test_keys_init_creates_once_then_keeps_and_rotates(tmp_path: Path) -> None:
    config = write(tmp_path)
    key = tmp_path / "state" / "keys" / "pseudonym.key"
    out = cli("keys", "init", "-c", str(config))
    assert out.returncode == 0, out.stderr
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    fp1 = load_keyring(key).fingerprints()[1]
    assert f"site key v1 {fp1} (active)" in out.stdout and fp1.startswith("SHA256:")
    before = key.read_bytes()
    again = cli("keys", "init", "-c", str(config))
    assert again.returncode == 0 and "exists and is valid; kept" in again.stdout and fp1 in again.stdout
    assert key.read_bytes() == before
    rotated = cli("keys", "init", "-c", str(config), "--rotate")
    assert rotated.returncode == 0, rotated.stderr
    assert f"site key v1 {fp1}\n" in rotated.stdout and "site key v2 SHA256:" in rotated.stdout
    assert load_keyring(key).active == 2
    for secret in load_keyring(key).versions.values():  # fingerprints only, never key material
        assert secret.hex() not in rotated.stdout and base64.b64encode(secret).decode() not in rotated.stdout


def test_keys_init_replaces_an_empty_key_file_and_keeps_one_with_only_comments(tmp_path: Path) -> None:
    config = write(tmp_path)
    key = tmp_path / "state" / "keys" / "pseudonym.key"
    key.parent.mkdir(parents=True, mode=0o700)
    key.touch(mode=0o600)
    out = cli("keys", "init", "-c", str(config))
    assert out.returncode == 0 and "was empty; replacing it" in out.stdout, out.stdout + out.stderr
    assert load_keyring(key).active == 1 and stat.S_IMODE(key.stat().st_mode) == 0o600
    key.write_text("# nothing yet\n")
    refused = cli("keys", "init", "-c", str(config))
    assert refused.returncode == 1 and "delete it and" in one_line(refused.stderr)
    assert key.read_text() == "# nothing yet\n"


def test_keys_init_reports_the_platform_key(tmp_path: Path) -> None:
    out = cli("platform", "keygen", str(tmp_path / "platform"))
    assert out.returncode == 0 and "kid " in out.stdout, out.stderr
    kid = out.stdout.split("kid ")[1].split()[0]
    config = write(tmp_path, privacy={"platform_key_file": str(tmp_path / "platform" / "platform.pub")})
    out = cli("keys", "init", "-c", str(config))
    assert out.returncode == 0 and f"platform key kid {kid} SHA256:" in out.stdout, out.stdout
    config = write(tmp_path, privacy={"platform_key_file": str(tmp_path / "absent.pub")})
    out = cli("keys", "init", "-c", str(config))
    assert out.returncode == 0 and "absent.pub: not there yet" in out.stdout
    assert cli("platform", "keygen", str(tmp_path / "platform")).returncode == 1  # never overwritten


def test_rotate_without_a_key_and_a_loose_key_fail_clearly(tmp_path: Path) -> None:
    config = write(tmp_path)
    out = cli("keys", "init", "-c", str(config), "--rotate")
    assert out.returncode == 1 and "nothing to rotate" in one_line(out.stderr)
    init_keys(config)
    key = tmp_path / "state" / "keys" / "pseudonym.key"
    key.chmod(0o640)
    out = cli("keys", "init", "-c", str(config))
    assert out.returncode == 1 and f"chmod 600 {key}" in one_line(out.stderr)


def test_run_refuses_a_missing_or_loosely_permitted_key(tmp_path: Path) -> None:
    config = write(tmp_path)
    key = tmp_path / "state" / "keys" / "pseudonym.key"
    out = cli("run", "-c", str(config), timeout=30)
    line = one_line(out.stderr)
    assert out.returncode == 1 and str(key) in line and f"'edge-agent keys init -c {config}'" in line
    init_keys(config)
    key.chmod(0o644)
    out = cli("run", "-c", str(config), timeout=30)
    assert out.returncode == 1
    assert one_line(out.stderr) == (f"edge-agent: key file {key} is readable by group or others (mode 0644); "
                                    f"run: chmod 600 {key}")
    assert not (tmp_path / "state" / "buffer.db").exists()  # refused before anything was opened


def test_status_shows_the_active_key_or_why_not(tmp_path: Path) -> None:
    config = write(tmp_path)
    out = cli("status", "-c", str(config), "--json")
    key = json.loads(out.stdout)["pseudonym_key"]
    assert key["state"] == "unreadable" and "does not exist" in key["reason"]
    assert "pseudonym key unreadable: key file" in cli("status", "-c", str(config)).stdout
    init_keys(config)
    init_keys(config, rotate=True)
    ring = load_keyring(tmp_path / "state" / "keys" / "pseudonym.key")
    key = json.loads(cli("status", "-c", str(config), "--json").stdout)["pseudonym_key"]
    assert key["state"] == "ok" and key["active_version"] == 2 and key["fingerprint"] == ring.fingerprints()[2]
    assert f"pseudonym key v2 {ring.fingerprints()[2]}" in cli("status", "-c", str(config)).stdout


# -- read prints what the wire carries ---------------------------------------------------------------
def test_read_prints_values_as_the_wire_carries_them(tmp_path: Path) -> None:
    sim = ModbusSimulator({1: ResidentBoard(PEOPLE)})
    _, port = sim.serve_tcp("127.0.0.1", 0)
    try:
        config = write(tmp_path, modbus_port=port, device_privacy={"s0_name": "mask"})
        out = cli("read", "-c", str(config), "residents-1")
        assert out.returncode == 1 and "does not exist" in out.stderr  # no key: nothing is read
        init_keys(config)
        out = cli("read", "-c", str(config), "residents-1")
    finally:
        sim.stop()
    assert out.returncode == 0, out.stderr
    ring = load_keyring(tmp_path / "state" / "keys" / "pseudonym.key")
    for r in PEOPLE:
        for raw in (r.id_no, r.mobile, r.plate, r.name, *phone_forms(r.mobile)[1:]):
            assert raw not in out.stdout, raw
    assert pseudonymize(PEOPLE[1].id_no, ring, "id") in out.stdout
    assert pseudonymize(PEOPLE[2].mobile, ring, "phone") in out.stdout  # the dashed form, normalised
    assert mask(PEOPLE[0].name, name=True) in out.stdout and "s1_name" not in out.stdout  # dropped


# -- through the daemon: events, seals, restarts, rotation ------------------------------------------
def test_events_pass_privacy_before_the_buffer(tmp_path: Path) -> None:
    with Mosquitto(tmp_path) as broker, Subscriber(broker, f"{ROOT}/#") as platform:
        config = write(tmp_path, port=broker.port, modbus_port=free_port())
        init_keys(config)
        agent = Agent(dataclasses.replace(load_settings(config), devices=()))  # events only
        agent.start()
        try:
            r = PEOPLE[0]
            agent.intake.accept_events([Event("hub-1", "sos", Priority.CRITICAL, int(time.time() * 1000), data={
                "band": "B-00017", "wearer": {"id_no": r.id_no, "name": r.name, "phone": r.mobile},
                "hr_bpm": 131, "note": f"家属电话{r.mobile}"},
                classes={"wearer.id_no": DataClass.IDENTIFIER, "wearer.name": DataClass.NAME,
                         "wearer.phone": DataClass.IDENTIFIER, "hr_bpm": DataClass.HEALTH})])
            got = platform.wait_for(lambda ms: any(m.topic == f"{ROOT}/events" for m in ms), 15, "the event")
            buffer_bytes = (tmp_path / "state" / "buffer.db-wal").read_bytes()
        finally:
            agent.stop()
    ring = load_keyring(tmp_path / "state" / "keys" / "pseudonym.key")
    [event] = events(got, f"{ROOT}/events", gw="gw-wire")
    phone = pseudonymize(r.mobile, ring, "phone")
    assert event["data"] == {"band": "B-00017", "wearer": {"id_no": pseudonymize(r.id_no, ring, "id"), "phone": phone},
                             "hr_bpm": 131, "note": f"家属电话{phone}"}
    assert event["prio"] == "critical"
    for raw in (r.id_no, r.mobile):
        assert raw.encode() not in buffer_bytes


def rows(messages: list[Message], first_id: int = 1) -> list[Value]:
    """The values of the records from ``first_id`` on (support.wire checks each record)."""
    return values(r for r in records(messages, f"{ROOT}/telemetry", gw="gw-wire") if r["id"] >= first_id)


def one_run(config: Path, platform: Subscriber, log: Path) -> dict[str, set]:
    """Run the agent until it has published a few polls; the values of this run, by point."""
    first_id = status(config).get("next_id", 1)
    agent = start_agent(config, log)
    try:
        platform.wait_for(lambda ms: sum(v.pt == "s9_id_no" for v in rows(ms, first_id)) >= 3, 20, "three polls")
    finally:
        stop_agent(agent, log)
    by_point: dict[str, set] = {}
    for v in rows(platform.messages, first_id):
        by_point.setdefault(v.pt, set()).add(json.dumps(v.val, ensure_ascii=False))
    return by_point


def test_pseudonyms_are_stable_across_restarts_and_change_with_a_new_key_version(tmp_path: Path) -> None:
    sim = ModbusSimulator({1: ResidentBoard(PEOPLE)})
    _, port = sim.serve_tcp("127.0.0.1", 0)
    log = tmp_path / "agent.log"
    try:
        with Mosquitto(tmp_path) as broker, Subscriber(broker, f"{ROOT}/#") as platform:
            config = write(tmp_path, port=broker.port, modbus_port=port)
            init_keys(config)
            first, second = one_run(config, platform, log), one_run(config, platform, log)
            init_keys(config, rotate=True)
            third = one_run(config, platform, log)
    finally:
        sim.stop()
    ring = load_keyring(tmp_path / "state" / "keys" / "pseudonym.key")
    for i, r in enumerate(PEOPLE):
        v1 = json.dumps(pseudonymize(r.id_no, ring, "id", version=1))
        v2 = json.dumps(pseudonymize(r.id_no, ring, "id", version=2))
        assert first[f"s{i}_id_no"] == second[f"s{i}_id_no"] == {v1}  # one token per resident, every poll, both runs
        assert third[f"s{i}_id_no"] == {v2} and v1 != v2 and v2.startswith('"p2:')
    assert first == second  # every field
    assert "Traceback" not in log.read_text()


def test_sealed_values_open_on_the_platform_with_the_right_key_only(tmp_path: Path) -> None:
    assert cli("platform", "keygen", str(tmp_path / "platform")).returncode == 0
    assert cli("platform", "keygen", str(tmp_path / "other")).returncode == 0
    sim = ModbusSimulator({1: ResidentBoard(PEOPLE)})
    _, port = sim.serve_tcp("127.0.0.1", 0)
    log = tmp_path / "agent.log"
    try:
        with Mosquitto(tmp_path) as broker, Subscriber(broker, f"{ROOT}/#") as platform:
            config = write(tmp_path, port=broker.port, modbus_port=port,
                           privacy={"platform_key_file": str(tmp_path / "platform" / "platform.pub")},
                           device_privacy={"s0_id_no": "seal", "s0_name": "seal"})
            init_keys(config)
            one_run(config, platform, log)
            telemetry = next(m for m in platform.messages if m.topic == f"{ROOT}/telemetry")
    finally:
        sim.stop()
    payload = tmp_path / "payload.json"
    payload.write_bytes(telemetry.payload)
    recs = records([telemetry], f"{ROOT}/telemetry", gw="gw-wire")
    # one seal per record (poll), holding both sealed points; neither is among the vals
    assert recs and all(set(r["sealed"]) == {"kid", "ct"} for r in recs), recs
    assert all(not {"s0_id_no", "s0_name"} & set(r["vals"]) for r in recs)
    assert telemetry.payload.count(b'"sealed"') == len(recs)
    assert PEOPLE[0].id_no.encode() not in telemetry.payload

    opened = cli("platform", "unseal", "--key", str(tmp_path / "platform" / "platform.key"), str(payload))
    assert opened.returncode == 0, opened.stderr
    opened_recs = json.loads(opened.stdout)["recs"]
    assert [set(r) - {"sealed"} for r in recs] == [set(r) for r in opened_recs]  # each seal opened into its vals
    for r in opened_recs:
        assert r["vals"]["s0_id_no"] == PEOPLE[0].id_no and r["vals"]["s0_name"] == PEOPLE[0].name
    wrong = cli("platform", "unseal", "--key", str(tmp_path / "other" / "platform.key"), stdin=payload.read_text())
    assert wrong.returncode == 1 and "this private key is" in wrong.stderr
    assert PEOPLE[0].id_no not in wrong.stdout  # left sealed
    assert stat.S_IMODE(os.stat(tmp_path / "platform" / "platform.key").st_mode) == 0o600
