"""The agent in the Sparkplug B dialect (issue 14), end to end, judged by a host application built
on another library (pysparkplug, ``support/spb_host.py`` in ``tests/.spb-venv``): a real
Mosquitto, our Modbus simulator, the agent as a subprocess with ``mqtt.dialect: sparkplug`` and
``primary_host: scada``.

What a Sparkplug host can check, checked here:
- births wait for the primary host's STATE online; NBIRTH, then a DBIRTH per device, before any
  DDATA; every DDATA metric's alias resolves (pysparkplug decodes it by the births);
- ``seq`` runs 0, 1, 2 ... (mod 256) from each NBIRTH; NCMD Rebirth births again with the same bdSeq;
- kill -9: the broker publishes the NDEATH will with the bdSeq of the NBIRTH before it, and the
  restart births with the next bdSeq; a broker restart starts a session with the one after;
- the host goes offline: data stops; back online: births again, and what was polled meanwhile
  arrives with ``is_historical``;
- DCMD: a write the config allows reaches the device; one to a point that is not writable is
  refused (audited), the device untouched.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.publish as publish
import pytest
import yaml

from edge_agent.model import Reg
from edge_agent.sim.devices import DeviceModel, LevelSensor
from edge_agent.sim.modbus import ModbusSimulator
from support.agent import start_agent, stop_agent
from support.broker import Mosquitto
from support.keys import init_keys
from support.paths import ROOT as CHECKOUT
from support.waiting import wait_until

HOST_PY = CHECKOUT / "tests" / ".spb-venv" / "bin" / "python"
GROUP, NODE, HOST = "spb-site", "gw-spb", "scada"
STATE = f"spBv1.0/STATE/{HOST}"


class Boiler(DeviceModel):
    """Holding 0: a setpoint (writable in the config), holding 1: a limit (not writable)."""

    def __init__(self) -> None:
        super().__init__()
        self.set(Reg.HOLDING, 0, [20, 90])


class Host:
    """support/spb_host.py (pysparkplug) as a subprocess: its JSON lines, and stdin commands."""

    def __init__(self, broker: Mosquitto) -> None:
        self.proc = subprocess.Popen([str(HOST_PY), str(CHECKOUT / "tests" / "support" / "spb_host.py"),
                                      "--port", str(broker.port), "--group", GROUP],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.lines: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        self.wait(lambda ls: any(x["type"] == "ready" for x in ls), 20, "the host to subscribe")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(json.loads(line))
                self._cond.notify_all()

    def wait(self, predicate, timeout: float, what: str) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(list(self.lines)):
                left = deadline - time.monotonic()
                assert left > 0, f"timed out waiting for {what}; last lines: {self.lines[-5:]}"
                self._cond.wait(left)
            return list(self.lines)

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        try:
            self.send("quit")
            self.proc.wait(5)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait(5)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass


def config(tmp_path: Path, broker: Mosquitto, port: int) -> Path:
    cfg = {
        "gateway": {"id": NODE, "site": GROUP, "state_dir": str(tmp_path / "state")},
        "mqtt": {"host": broker.host, "port": broker.port, "dialect": "sparkplug", "batch_max": 50,
                 "keepalive": "5s", "reconnect_min": "100ms", "reconnect_max": "500ms",
                 "sparkplug": {"primary_host": HOST}},
        "buffer": {"commit_interval": "50ms"},
        "commands": {"unsigned": {"sparkplug": ["device.write"]}},
        "buses": [{"name": "plant", "protocol": "modbus-tcp", "host": "127.0.0.1", "port": port, "timeout": "500ms"}],
        "devices": [
            {"name": "river-1", "bus": "plant", "driver": "qdy_level", "address": 1, "interval": "100ms"},
            {"name": "boiler-1", "bus": "plant", "driver": "modbus_generic", "address": 2, "interval": "200ms",
             "points": [{"name": "setpoint_C", "reg": "holding", "address": 0, "type": "uint16", "writable": True},
                        {"name": "limit_C", "reg": "holding", "address": 1, "type": "uint16", "writable": True}],
             "writable": {"setpoint_C": {"min": 5, "max": 30}}},
        ],
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    init_keys(path)
    return path


def state(broker: Mosquitto, online: bool) -> None:
    body = json.dumps({"online": online, "timestamp": int(time.time() * 1000)})
    publish.single(STATE, body, qos=1, retain=True, hostname=broker.host, port=broker.port)


def of(lines: list[dict[str, Any]], *kinds: str) -> list[dict[str, Any]]:
    return [x for x in lines if x["type"] in kinds]


def check_sessions(lines: list[dict[str, Any]]) -> int:
    """Births before data and seq continuous in every session (from an NBIRTH to the next);
    pysparkplug decoded every message (aliases resolved). The number of sessions."""
    msgs = [x for x in lines if x["type"] in ("NBIRTH", "DBIRTH", "DDATA", "NDATA", "DDEATH")]
    assert not [x for x in lines if "error" in x], [x for x in lines if "error" in x][:3]
    sessions, seq, born = 0, None, set()
    for x in msgs:
        if x["type"] == "NBIRTH":
            sessions += 1
            assert x["seq"] == 0
            seq, born = 0, set()
            continue
        assert seq is not None, f"{x['type']} before any NBIRTH"
        assert x["seq"] == (seq + 1) % 256, f"seq {x['seq']} after {seq} ({x['type']})"
        seq = x["seq"]
        if x["type"] == "DBIRTH":
            born.add(x["device"])
        elif x["type"] == "DDATA":
            assert x["device"] in born, f"DDATA of {x['device']} before its DBIRTH"
            assert all(m["name"] for m in x["metrics"]), "a metric whose alias did not resolve"
    return sessions


def test_sparkplug_dialect_end_to_end(tmp_path: Path) -> None:
    if not HOST_PY.exists():
        pytest.fail("tests/.spb-venv is missing: run scripts/setup.sh (it installs pysparkplug there)")
    boiler = Boiler()
    sim = ModbusSimulator({1: LevelSensor(rise_m_per_min=3.0), 2: boiler})
    _, port = sim.serve_tcp("127.0.0.1", 0)
    broker = Mosquitto(tmp_path, persistence=True).start()
    host = Host(broker)
    cfg = config(tmp_path, broker, port)
    log = tmp_path / "agent.log"
    try:
        state(broker, False)
        agent = start_agent(cfg, log)
        time.sleep(2.0)  # the host is offline: no birth, no data
        assert not of(host.lines, "NBIRTH", "DDATA"), "births before the primary host was online"
        state(broker, True)
        lines = host.wait(lambda ls: {x["device"] for x in of(ls, "DDATA")} >= {"river-1", "boiler-1"}, 20,
                          "data from both devices")
        nbirth = of(lines, "NBIRTH")[0]
        bdseq = nbirth["bdSeq"]
        assert any(m["name"] == "Node Control/Rebirth" for m in nbirth["metrics"])
        dbirth = {x["device"]: x for x in of(lines, "DBIRTH")}
        assert {m["name"]: m["datatype"] for m in dbirth["boiler-1"]["metrics"]}["setpoint_C"] == "UInt16"
        assert {m["name"]: m["datatype"] for m in dbirth["river-1"]["metrics"]}["level_m"] == "Double"

        # NCMD rebirth: births again, same bdSeq
        host.send(f"rebirth {GROUP} {NODE}")
        lines = host.wait(lambda ls: len(of(ls, "NBIRTH")) >= 2, 10, "the rebirth")
        assert of(lines, "NBIRTH")[1]["bdSeq"] == bdseq

        # DCMD: an allowed write reaches the device; a write to a point not writable is refused
        host.send("dcmd boiler-1 setpoint_C 25")
        wait_until(lambda: boiler.read(Reg.HOLDING, 0, 1) == [25], 10, "the setpoint written")
        host.send("dcmd boiler-1 limit_C 10")
        time.sleep(1.0)
        assert boiler.read(Reg.HOLDING, 1, 1) == [90], "a write the config does not allow reached the device"

        # the host goes away: data stops; its return births again, and the gap comes as historical
        state(broker, False)
        time.sleep(0.5)
        before = len(of(host.lines, "DDATA"))
        time.sleep(1.5)
        assert len(of(host.lines, "DDATA")) - before <= 2, "data kept flowing while the host was offline"
        mark = len(host.lines)
        state(broker, True)
        lines = host.wait(lambda ls: any(m["is_historical"] for x in of(ls[mark:], "DDATA") for m in x["metrics"]),
                          20, "historical data after the host's return")
        after = lines[mark:]
        assert of(after, "NBIRTH") and after.index(of(after, "NBIRTH")[0]) < after.index(of(after, "DDATA")[0])

        # kill -9: the will is an NDEATH with this session's bdSeq; the restart births with the next
        agent.send_signal(signal.SIGKILL)
        agent.wait(10)
        lines = host.wait(lambda ls: bool(of(ls, "NDEATH")), 15, "the NDEATH will")
        assert of(lines, "NDEATH")[0]["bdSeq"] == bdseq
        agent = start_agent(cfg, log)
        lines = host.wait(lambda ls: len({x["bdSeq"] for x in of(ls, "NBIRTH")}) >= 2, 20, "the next session")
        assert [x["bdSeq"] for x in of(lines, "NBIRTH")][-1] == (bdseq + 1) % 256
        host.wait(lambda ls: len(of(ls, "DDATA")) > len(of(lines, "DDATA")) + 2, 20, "data in the new session")

        # a broker restart: a new connection is a new session, with the next bdSeq. The host, back
        # after the gateway, missed that NBIRTH and asks for a rebirth, as a Sparkplug host does
        restart_mark = len(host.lines)
        broker.stop()
        time.sleep(1.0)
        broker.start()
        deadline = time.monotonic() + 30
        while (bdseq + 2) % 256 not in {x["bdSeq"] for x in of(host.lines[restart_mark:], "NBIRTH")}:
            assert time.monotonic() < deadline, f"no NBIRTH after the broker restart: {host.lines[-3:]}"
            time.sleep(1.0)
            host.send(f"rebirth {GROUP} {NODE}")
        lines = host.wait(lambda ls: bool(of(ls[restart_mark:], "NBIRTH")), 5, "the rebirth")
        reborn = len(lines) - 1 - lines[::-1].index(of(lines[restart_mark:], "NBIRTH")[-1])
        host.wait(lambda ls: len(of(ls[reborn:], "DDATA")) > 2, 20, "data after the broker restart")
        stop_agent(agent, log)
        final = host.wait(lambda ls: len(of(ls, "NDEATH")) >= 2, 10, "the NDEATH of the clean stop")
    finally:
        if "agent" in locals() and agent.poll() is None:  # a failed step must not leave the agent running
            agent.kill()
            agent.wait(10)
        host.stop()
        broker.stop()
        sim.stop()

    sessions = check_sessions(final[:restart_mark]) + check_sessions(final[reborn:])
    assert sessions >= 5
    audit = sqlite3.connect(tmp_path / "state" / "commands.db")
    rows = audit.execute("SELECT actor, outcome, code FROM audit WHERE op = 'device.write' ORDER BY rowid").fetchall()
    audit.close()
    assert ("unsigned:sparkplug", "done", None) in rows
    assert ("unsigned:sparkplug", "rejected", "not_allowed") in rows
    assert "Traceback" not in log.read_text()
    print(f"\nsparkplug dialect: {sessions} sessions, {len(of(final, 'DDATA'))} DDATA decoded by pysparkplug, "
          f"bdSeq {bdseq} -> {(bdseq + 1) % 256} across a kill -9")
