"""``edge-agent status`` with the daemon running (its control socket answers) and stopped (the
buffer file), the control socket itself (permissions, bounds, never blocking), and the health
the agent puts in ``R/state``: real Mosquitto, a pymodbus server, the agent as a subprocess."""

from __future__ import annotations

import grp
import json
import os
import socket
import stat
import threading
import time
from pathlib import Path

import pytest
import yaml

from edge_agent import cli as cli_module
from edge_agent.agent.control import (MAX_REQUEST, SERVICE_GROUP, ControlError, ControlServer, ControlUnavailable, query,
                                socket_path)
from support.agent import cli, start_agent, status, stop_agent, wait_until
from support.broker import Mosquitto, Subscriber, free_port
from support.keys import init_keys
from support.modbus_server import ModbusTestServer

GW, SITE = "gw-st", "st-site"
STATE_TOPIC = f"edge/v1/{SITE}/{GW}/state"


def write_config(tmp_path: Path, broker_port: int, modbus_port: int) -> Path:
    cfg = {
        "gateway": {"id": GW, "site": SITE, "state_dir": str(tmp_path / "state")},
        "mqtt": {"host": "127.0.0.1", "port": broker_port, "keepalive": "5s",
                 "reconnect_min": "200ms", "reconnect_max": "1s"},
        "buffer": {"commit_interval": "50ms"},
        "buses": [{"name": "plant", "protocol": "modbus-tcp", "host": "127.0.0.1", "port": modbus_port,
                   "timeout": "300ms"},
                  {"name": "dead", "protocol": "modbus-tcp", "host": "127.0.0.1", "port": free_port(),
                   "timeout": "300ms"}],
        "devices": [{"name": "river-1", "bus": "plant", "driver": "qdy_level", "address": 1, "interval": "200ms"},
                    {"name": "meter-9", "bus": "dead", "driver": "eastron_meter", "address": 1,
                     "interval": "200ms"}],
    }
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    init_keys(path)
    return path


def device(data: dict, name: str) -> dict:
    return next(d for d in data["devices"] if d["name"] == name)


# -- status, running and stopped ------------------------------------------------------------------
def test_status_asks_the_running_daemon_then_reads_the_buffer_file_once_it_stopped(tmp_path: Path) -> None:
    with ModbusTestServer({1: {"holding": {0: [1, 3, 1, 2, 123]}}}).start() as modbus, Mosquitto(tmp_path) as broker:
        config = write_config(tmp_path, broker.port, modbus.port)
        log = tmp_path / "agent.log"
        agent = start_agent(config, log)
        try:
            wait_until(lambda: socket_path(tmp_path / "state").exists(), 30, "the control socket")
            wait_until(lambda: (lambda s: s["source"] == "daemon" and s["uplink"]["connected"]
                                and device(s, "river-1")["state"] == "online" and s["next_id"] > 5
                                and device(s, "meter-9")["errors"] > 0 and s["pending"] == 0
                                and s["drain"]["rate_per_s"] is not None)(status(config)),
                       30, "a connected daemon with one device online and one failing")
            live = status(config)
            mode = os.stat(socket_path(tmp_path / "state")).st_mode
            out = cli("status", "-c", str(config))
        finally:
            stop_agent(agent, log)
        stopped = status(config)
        out_stopped = cli("status", "-c", str(config))

    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o660
    # the daemon's view: every field the technician needs
    assert live["source"] == "daemon" and live["daemon"]["pid"] == agent.pid
    assert live["control_socket"] == str(socket_path(tmp_path / "state"))
    up = live["uplink"]
    assert up["connected"] is True and up["broker"] == f"127.0.0.1:{broker.port}"
    assert isinstance(up["last_publish"], int) and up["reconnects"] == 0 and "last_error" in up
    assert live["drain"]["rate_per_s"] >= 0 and live["drain"]["eta_s"] == 0.0  # nothing waits
    assert set(live["pending_by_prio"]) == {"critical", "high", "normal"}
    for key in ("pending", "pending_bytes", "oldest_pending_ts", "evicted", "next_id", "retained_sent",
                "last_sent_at", "file_bytes", "buffer"):  # the keys scripts already read
        assert key in live, key
    river, meter = device(live, "river-1"), device(live, "meter-9")
    assert river["polls"] > 0 and river["errors"] == 0 and isinstance(river["last_good_ms"], int)
    assert meter["state"] == "offline" and meter["last_good_ms"] is None and meter["last_error"]
    assert "bad_frames" in river
    assert live["device_counts"] == {"online": 1, "offline": 1, "unknown": 0}
    assert live["pseudonym_key"]["state"] == "ok"
    assert live["key_in_use"]["fingerprint"] == live["pseudonym_key"]["fingerprint"]
    assert live["clock"]["source"] and live["clock"]["synced"] in (True, False, None)
    assert live["process"]["rss_bytes"] > 0 and live["disk_free_bytes"] > 0
    text = out.stdout
    assert out.returncode == 0, out.stderr
    assert f"daemon (pid {agent.pid}" in text and f"connected to 127.0.0.1:{broker.port}" in text
    assert "by priority critical 0  high 0  normal 0" in text and "records/s acked (events included)" in text
    assert "unsent records and events" in text
    assert "1 online, 1 offline, 0 unknown" in text
    assert "river-1" in text and "meter-9" in text and "last error" in text
    assert "clock " in text and "pseudonym key v1 SHA256:" in text

    # the daemon is down: the buffer file, saying so
    assert stopped["source"] == "buffer file" and stopped["daemon"] is None and stopped["uplink"] is None
    assert "no control socket" in stopped["fallback_reason"]
    assert stopped["next_id"] == live["next_id"] or stopped["next_id"] > live["next_id"]
    assert stopped["pending"] == 0 and set(stopped["pending_by_prio"]) == {"critical", "high", "normal"}
    assert {d["name"] for d in stopped["devices"]} == {"river-1", "meter-9"}
    assert stopped["clock"]["source"] and stopped["pseudonym_key"]["state"] == "ok"
    assert out_stopped.returncode == 0
    assert "source        buffer file (no control socket" in out_stopped.stdout
    assert "not running (the daemon is down)" in out_stopped.stdout
    assert "health is known only while the daemon runs" in out_stopped.stdout


def test_status_falls_back_when_the_socket_does_not_answer(tmp_path: Path, monkeypatch, capsys) -> None:
    """A hung daemon (the socket accepts, nobody answers) costs the wait, then the file is read."""
    from edge_agent.buffer.outbox import Buffer
    from edge_agent.model import Reading

    cfg = {"gateway": {"id": GW, "site": SITE, "state_dir": str(tmp_path / "state")},
           "mqtt": {"host": "127.0.0.1", "port": 1}, "buses": [], "devices": []}
    config = tmp_path / "gw.yaml"
    config.write_text(yaml.safe_dump(cfg))
    init_keys(config)
    with Buffer(tmp_path / "state" / "buffer.db") as buf:
        buf.append([Reading("river-1", "level_m", 1.0, 1732380000000)])
    mute = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    mute.bind(str(socket_path(tmp_path / "state")))
    mute.listen(1)
    monkeypatch.setattr(cli_module, "STATUS_ASK_S", 0.5)
    capsys.readouterr()  # what keys init printed
    try:
        began = time.monotonic()
        assert cli_module.main(["status", "-c", str(config), "--json"]) == 0
        took = time.monotonic() - began
    finally:
        mute.close()
    data = json.loads(capsys.readouterr().out)
    assert data["source"] == "buffer file" and "did not answer" in data["fallback_reason"]
    assert data["pending"] == 1 and took < 5


# -- the control socket ---------------------------------------------------------------------------
def other_group() -> grp.struct_group:
    """An existing group that is not this process's, to see the socket given to it."""
    for g in grp.getgrall():
        if g.gr_gid != os.getgid():
            return g
    pytest.skip("no second group on this machine")


def test_control_socket_is_0660_and_given_to_the_service_group(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    server = ControlServer(path, {"status": lambda req: {"hello": 1}})
    server.start()
    try:
        st = os.stat(path)
        try:
            expected = grp.getgrnam(SERVICE_GROUP).gr_gid
        except KeyError:
            expected = os.getgid()  # no edge-agent group here: the process's
        assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == expected
        assert query(path, {"cmd": "status"}) == {"ok": True, "status": {"hello": 1}}
    finally:
        server.stop()
    assert not path.exists()
    if os.geteuid() == 0:  # only root may give a file to a group it is not in
        group = other_group()
        server = ControlServer(path, {}, group=group.gr_name)
        server.start()
        try:
            st = os.stat(path)
            assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == group.gr_gid
        finally:
            server.stop()
    assert [p.name for p in tmp_path.iterdir()] == []  # no temporary name left behind


def test_control_socket_bounds_requests_and_a_stalled_client_blocks_nobody(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    server = ControlServer(path, {"status": lambda req: {"n": 1}}, io_timeout_s=3.0)
    server.start()
    stalled = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        stalled.connect(str(path))  # connects, sends nothing
        began = time.monotonic()
        assert query(path, {"cmd": "status"}, timeout=2)["status"] == {"n": 1}
        assert time.monotonic() - began < 1.0
        assert "unknown cmd" in query(path, {"cmd": "reboot"})["error"]
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as big:
            big.connect(str(path))
            big.sendall(b"{" + b" " * (MAX_REQUEST + 10))
            reply = json.loads(big.makefile("rb").readline())
            assert reply["ok"] is False and "too large" in reply["error"]
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as junk:
            junk.connect(str(path))
            junk.sendall(b"not json\n")
            assert "not a JSON object" in json.loads(junk.makefile("rb").readline())["error"]
    finally:
        stalled.close()
        server.stop()


def test_a_stale_socket_is_replaced_and_a_live_one_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens: what a crash leaves
    first = ControlServer(path, {"status": lambda req: "first"})
    first.start()
    try:
        assert query(path, {"cmd": "status"})["status"] == "first"
        with pytest.raises(ControlError, match="another edge-agent answers"):
            ControlServer(path, {}).start()
        assert query(path, {"cmd": "status"})["status"] == "first"
    finally:
        first.stop()
    with pytest.raises(ControlUnavailable, match="no control socket"):
        query(path, {"cmd": "status"})


def test_a_failing_handler_is_an_error_reply_not_a_dead_server(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    calls = []

    def status(req):
        calls.append(req)
        if len(calls) == 1:
            raise RuntimeError("buffer busy")
        return {"ok": "now"}

    server = ControlServer(path, {"status": status})
    server.start()
    try:
        assert "buffer busy" in query(path, {"cmd": "status"})["error"]
        assert query(path, {"cmd": "status"})["status"] == {"ok": "now"}
        replies = []
        threads = [threading.Thread(target=lambda: replies.append(query(path, {"cmd": "ping"}))) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(replies) == 8 and all(r["ok"] or "busy" in r["error"] for r in replies)
    finally:
        server.stop()


# -- R/state ---------------------------------------------------------------------------------------
def test_state_carries_health_and_is_published_again_when_device_counts_change(tmp_path: Path) -> None:
    with ModbusTestServer({1: {"holding": {0: [1, 3, 1, 2, 123]}}}).start() as modbus, \
            Mosquitto(tmp_path) as broker, Subscriber(broker, STATE_TOPIC) as sub:
        config = write_config(tmp_path, broker.port, modbus.port)
        log = tmp_path / "agent.log"
        agent = start_agent(config, log)
        try:
            # the birth comes before any poll; the counts change within seconds, far sooner than
            # the 60 s interval: only "on change" can publish the state that says so
            msgs = sub.wait_for(lambda ms: any(json.loads(m.payload).get("devices", {}).get("online") == 1
                                               and json.loads(m.payload)["devices"]["offline"] == 1 for m in ms),
                                20, "a state with one device online and one offline")
        finally:
            stop_agent(agent, log)
    states = [json.loads(m.payload) for m in msgs]
    online = [s for s in states if s.get("online")]
    assert len(online) >= 2, states
    assert sum(online[0]["devices"].values()) == 2, online[0]  # the birth counts every configured device
    last = next(s for s in online if s["devices"] == {"online": 1, "offline": 1, "unknown": 0})
    assert last["gw"] == GW and last["version"] and isinstance(last["started"], int)
    assert last["uptime_s"] >= 0 and last["write_errors"] == 0
    assert set(last["backlog"]) == {"count", "bytes", "oldest_ts", "by_prio"}
    assert last["evicted"] == {"critical": 0, "high": 0, "normal": 0}
    assert last["cpu_s"] > 0 and last["rss_bytes"] > 1_000_000 and last["disk_free_bytes"] > 0
    assert "cpu_pct" in last and last["clock"] in ("synced", "unsynced", "unknown")
