"""sd_notify: what systemd hears from the agent, on a NOTIFY_SOCKET the test listens on.

- ``notify`` alone: one datagram per call, to a path or an abstract ``@name``; nothing without
  ``$NOTIFY_SOCKET``; ``WATCHDOG_USEC``/``WATCHDOG_PID`` read as sd_watchdog_enabled(3) does.
- The real agent (``edge-agent run``, a simulated level sensor, a real Mosquitto) with
  ``WATCHDOG_USEC`` small: READY=1 once it is up, STATUS= with the backlog and the uplink,
  WATCHDOG=1 pings, STOPPING=1 on SIGTERM.
- A stalled poll loop stops the pings: a real ``BusWorker`` whose reader's poll blocks, watched
  by ``Liveness`` and a real ``Watchdog`` on the socket; the pings come back when it unblocks.
  A dead writer or drain thread stops them too.
- A ``config.apply`` restart says RELOADING=1, then READY=1 again (in-process ``Supervisor``).
- Stall limits follow the longest legitimate poll (``liveness.stall_after_s``).
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from edge_agent.agent import sdnotify
from edge_agent.config.schema import load_settings
from edge_agent.field.health import HealthBoard
from edge_agent.agent.liveness import Liveness, StatusLine, poll_budget_s, stall_after_s
from edge_agent.field.scheduler import BusWorker, Schedule
from edge_agent.model import PollResult
from edge_agent.agent.sdnotify import Watchdog, notify, watchdog_interval
from edge_agent.sim.devices import LevelSensor
from edge_agent.sim.modbus import ModbusSimulator
from support.agent import start_agent, stop_agent, wait_until
from support.broker import Mosquitto
from support.keys import init_keys


class Listener:
    """systemd's side: a datagram socket collecting notifications (one list of lines each)."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.settimeout(0.1)
        self.messages: list[list[str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-notify", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except (socket.timeout, OSError):
                continue
            with self._lock:
                self.messages.append(data.decode().split("\n"))

    def lines(self) -> list[str]:
        with self._lock:
            return [line for message in self.messages for line in message]

    def count(self, line: str) -> int:
        return self.lines().count(line)

    def statuses(self) -> list[str]:
        return [line[len("STATUS="):] for line in self.lines() if line.startswith("STATUS=")]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def listener(tmp_path):
    lst = Listener(str(tmp_path / "notify.sock"))
    yield lst
    lst.close()


# --- notify alone -----------------------------------------------------------------------------

def test_notify_sends_one_datagram_to_a_path(listener) -> None:
    assert notify("READY=1", "STATUS=up and polling", env={"NOTIFY_SOCKET": listener.address})
    wait_until(lambda: listener.messages, 5, "the datagram")
    assert listener.messages == [["READY=1", "STATUS=up and polling"]]


def test_notify_reaches_an_abstract_socket_name() -> None:
    lst = Listener(f"@edge-agent-test-{uuid.uuid4().hex}")
    try:
        assert notify("STOPPING=1", env={"NOTIFY_SOCKET": lst.address})
        wait_until(lambda: lst.messages, 5, "the datagram")
        assert lst.messages == [["STOPPING=1"]]
    finally:
        lst.close()


def test_without_notify_socket_nothing_is_sent(monkeypatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify("READY=1") is False
    assert not sdnotify.enabled()
    watchdog = Watchdog(lambda: True, lambda: "fine", interval_s=0.01).start()
    assert watchdog._thread is None  # no thread at all
    watchdog.stop()
    assert notify("READY=1", env={"NOTIFY_SOCKET": "vsock:2:9999"}) is False  # a kind we do not speak


def test_a_missing_socket_is_reported_not_raised(tmp_path, caplog) -> None:
    env = {"NOTIFY_SOCKET": str(tmp_path / "nobody-listens.sock")}
    with caplog.at_level("DEBUG", logger="edge_agent.sdnotify"):
        assert notify("WATCHDOG=1", env=env) is False
        assert notify("WATCHDOG=1", env=env) is False
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "cannot notify systemd" in errors[0].getMessage()


def test_watchdog_interval_is_half_of_watchdog_usec_when_the_watchdog_is_ours() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": str(os.getpid())}) == 0.1
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None  # another process's
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None


# --- the real agent -----------------------------------------------------------------------------

def agent_config(tmp_path: Path, broker: Mosquitto, modbus_port: int) -> Path:
    cfg = {
        "gateway": {"id": "gw-sd", "site": "sd-site", "state_dir": str(tmp_path / "state")},
        "mqtt": {"host": broker.host, "port": broker.port, "reconnect_min": "100ms", "reconnect_max": "500ms"},
        "buffer": {"commit_interval": "50ms"},
        "buses": [{"name": "plant", "protocol": "modbus-tcp", "host": "127.0.0.1", "port": modbus_port,
                   "timeout": "500ms"}],
        "devices": [{"name": "river-1", "bus": "plant", "driver": "qdy_level", "address": 1, "interval": "200ms"}],
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    init_keys(path)
    return path


def test_the_running_agent_says_ready_status_pings_and_stopping(tmp_path, listener) -> None:
    sim = ModbusSimulator({1: LevelSensor(rise_m_per_min=1.0)})
    _, modbus_port = sim.serve_tcp("127.0.0.1", 0)
    log = tmp_path / "agent.log"
    try:
        with Mosquitto(tmp_path) as broker:
            cfg = agent_config(tmp_path, broker, modbus_port)
            agent = start_agent(cfg, log, env={"NOTIFY_SOCKET": listener.address, "WATCHDOG_USEC": "200000"})
            try:
                wait_until(lambda: "READY=1" in listener.lines() or agent.poll() is not None, 30, "READY=1")
                assert agent.poll() is None, log.read_text()
                wait_until(lambda: listener.count("WATCHDOG=1") >= 5, 10, "watchdog pings every 0.1 s")
                wait_until(lambda: any("uplink connected to" in s for s in listener.statuses()), 15,
                           "a status saying the uplink is connected")
            finally:
                stop_agent(agent, log)
    finally:
        sim.stop()
    lines = listener.lines()
    assert lines.index("READY=1") < lines.index("WATCHDOG=1")  # no ping before the agent is up
    assert "STOPPING=1" in lines and lines.index("STOPPING=1") > lines.index("READY=1")
    status = next(s for s in listener.statuses() if "uplink connected to" in s)
    assert "polling 1 device(s) on 1 bus(es)" in status and "backlog " in status and "unsent" in status, status
    assert not any(s.startswith("STALLED") for s in listener.statuses())
    assert "Traceback" not in log.read_text()


# --- a stalled poll loop stops the pings ----------------------------------------------------

class BlockingReader:
    """A reader whose poll hangs while ``gate`` is clear: a driver stuck in a read."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.polls = 0

    def poll(self) -> PollResult:
        self.polls += 1
        self.gate.wait()
        return PollResult(answered=True)


class LiveThread:
    """Stands for the writer or the uplink: what ``Liveness`` looks at is its ``_thread``."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._stop.wait, daemon=True)
        self._thread.start()

    def end(self) -> None:
        self._stop.set()
        self._thread.join(2)


def test_a_stalled_poll_loop_stops_the_pings_and_a_recovered_one_resumes_them(listener) -> None:
    reader = BlockingReader()
    worker = BusWorker("plant", [Schedule("river-1", reader, 0.05)], lambda readings: None, HealthBoard())
    writer, uplink = LiveThread(), LiveThread()
    agent = SimpleNamespace(workers=[worker], writer=writer, uplink=uplink, readers={"river-1": reader})
    liveness = Liveness(agent, {"plant": 0.5})
    watchdog = Watchdog(liveness, lambda: liveness.problem or "fine", interval_s=0.05,
                        env={"NOTIFY_SOCKET": listener.address})
    worker.start()
    watchdog.start()
    try:
        wait_until(lambda: listener.count("WATCHDOG=1") >= 5, 5, "pings while the loop goes round")
        reader.gate.clear()  # the next poll hangs
        wait_until(lambda: "STATUS=the poll loop of bus plant is stuck" in
                   " ".join(listener.lines()), 5, "the stall to be noticed")
        stalled_at = listener.count("WATCHDOG=1")
        time.sleep(0.5)
        assert listener.count("WATCHDOG=1") == stalled_at, "pings went on while the poll loop hung"
        assert liveness.problem.startswith("the poll loop of bus plant is stuck")
        reader.gate.set()
        wait_until(lambda: listener.count("WATCHDOG=1") >= stalled_at + 3, 5, "pings again after the stall")
        assert listener.statuses()[-1] == "fine"
        assert reader.polls > 3
    finally:
        watchdog.stop()
        reader.gate.set()
        worker.stop()
        worker.join(5)
        writer.end()
        uplink.end()


@pytest.mark.parametrize("which", ["writer", "uplink"])
def test_a_dead_writer_or_drain_thread_stops_the_pings(listener, which) -> None:
    worker = BusWorker("plant", [], lambda readings: None, HealthBoard())
    parts = {"writer": LiveThread(), "uplink": LiveThread()}
    agent = SimpleNamespace(workers=[worker], readers={}, **parts)
    liveness = Liveness(agent)
    watchdog = Watchdog(liveness, interval_s=0.05, env={"NOTIFY_SOCKET": listener.address})
    worker.start()
    try:
        assert watchdog.tick() and listener  # alive: pinged
        parts[which].end()
        assert not watchdog.tick()
        wanted = "buffer writer" if which == "writer" else "uplink drain"
        assert wanted in liveness.problem
        worker.stop()
        worker.join(5)
        parts[which] = LiveThread()
        agent.writer, agent.uplink = parts["writer"], parts["uplink"]
        assert not watchdog.tick() and "has ended" in liveness.problem  # a finished worker is no worker
        wait_until(lambda: listener.count("WATCHDOG=1") == 1, 5, "the one ping")
        assert watchdog.pings == 1
    finally:
        worker.stop()
        for part in parts.values():
            part.end()


def test_a_failing_liveness_check_counts_as_dead(listener, caplog) -> None:
    def broken() -> bool:
        raise RuntimeError("bug")

    watchdog = Watchdog(broken, interval_s=0.05, env={"NOTIFY_SOCKET": listener.address})
    with caplog.at_level("ERROR", logger="edge_agent.sdnotify"):
        assert not watchdog.tick() and not watchdog.tick()
    assert watchdog.pings == 0
    assert sum("liveness check failed" in r.getMessage() for r in caplog.records) == 1


# --- stall limits ---------------------------------------------------------------------------

def test_the_stall_limit_covers_the_longest_legitimate_poll(tmp_path) -> None:
    from edge_agent.field.readers import make_reader, open_link
    from edge_agent.field.registry import get_driver

    points = [{"name": f"p{i}_V", "reg": "holding", "address": i * 200, "type": "uint16", "class": "telemetry"}
              for i in range(10)]  # 200 apart: ten requests, never merged
    cfg = {
        "gateway": {"id": "gw-lim", "site": "s", "state_dir": str(tmp_path / "state")},
        "mqtt": {"host": "127.0.0.1", "port": 1},
        "buses": [{"name": "slow", "protocol": "modbus-tcp", "host": "127.0.0.1", "port": 1, "timeout": "2s"}],
        "devices": [{"name": "many", "bus": "slow", "driver": "modbus_generic", "address": 1, "interval": "1s",
                     "retries": 1, "points": points},
                    {"name": "level", "bus": "slow", "driver": "qdy_level", "address": 2, "interval": "1s"}],
    }
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    settings = load_settings(path)
    bus = settings.bus("slow")
    link = open_link(bus)  # lazy: nothing is opened
    readers = {d.name: make_reader(d, get_driver(d.driver), link) for d in settings.devices}
    many = settings.device("many")
    assert len(readers["many"].plan) == 10
    assert poll_budget_s(many, readers["many"], bus) == 10 * 2 * 2.0  # requests x attempts x timeout
    worker = SimpleNamespace(bus="slow")
    liveness = Liveness.for_agent(SimpleNamespace(settings=settings, workers=[worker], readers=readers))
    assert liveness._limits == {"slow": 80.0}  # twice the dead device's 40 s poll
    assert stall_after_s([1.0, 2.0]) == 30.0  # the floor
    link.close()


def test_the_status_line_shows_devices_uplink_backlog_and_a_stall() -> None:
    stats = SimpleNamespace(pending=1200, pending_bytes=96 * 1024, oldest_pending_ts=int((time.time() - 90) * 1000),
                            pending_by_prio={"critical": 0, "high": 0, "normal": 1200})
    calls = []

    def read_stats():
        calls.append(1)
        return stats

    uplink = SimpleNamespace(address="broker:8883",
                             stats=lambda: SimpleNamespace(connected=False, last_error="connection refused"))
    agent = SimpleNamespace(workers=[SimpleNamespace()], readers={"a": 1, "b": 2}, uplink=uplink,
                            buffer=SimpleNamespace(stats=read_stats))
    liveness = SimpleNamespace(problem=None)
    line = StatusLine(agent, liveness)
    text = line()
    assert text == ("polling 2 device(s) on 1 bus(es); uplink disconnected from broker:8883 (connection refused); "
                    "backlog 1200 unsent (96.0 KiB, oldest 1m30s) [normal 1200]"), text
    liveness.problem = "the poll loop of bus plant is stuck (45 s without a round, limit 30 s)"
    assert line().startswith("STALLED: the poll loop of bus plant is stuck")
    assert len(calls) == 1  # the backlog is re-read at most every 10 s


# --- config.apply: RELOADING=1, then READY=1 again -------------------------------------------

class FakeService:
    def submit(self, payload: bytes) -> None:
        pass

    def start(self, publish_result) -> None:
        pass

    def stop(self) -> None:
        pass


def test_a_config_apply_restart_says_reloading_then_ready(tmp_path, listener, monkeypatch) -> None:
    from edge_agent.commands.types import Command
    from edge_agent.agent.supervisor import Supervisor
    from edge_agent.commands.signing import generate

    monkeypatch.setenv("NOTIFY_SOCKET", listener.address)
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    generate(tmp_path / "platform")
    sim = ModbusSimulator({1: LevelSensor()})
    _, modbus_port = sim.serve_tcp("127.0.0.1", 0)

    def config(interval: str) -> dict:
        return {
            "gateway": {"id": "gw-rl", "site": "s", "state_dir": "state"},
            "mqtt": {"host": "127.0.0.1", "port": 1, "reconnect_min": "100ms", "reconnect_max": "500ms"},
            "buses": [{"name": "plant", "protocol": "modbus-tcp", "host": "127.0.0.1", "port": modbus_port}],
            "devices": [{"name": "river-1", "bus": "plant", "driver": "qdy_level", "address": 1,
                         "interval": interval}],
            "commands": {"keys": [{"id": "platform", "public_key_file": "platform/command.pub"}],
                         "rollback_after": "1s"},
        }

    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config("1s"), sort_keys=False))
    path.chmod(0o640)
    (tmp_path / "state").mkdir()
    init_keys(path)
    stop = threading.Event()
    sup = Supervisor(load_settings(path), stop, build_service=lambda *_: FakeService())
    errors: list[BaseException] = []
    thread = threading.Thread(target=lambda: _run(sup, errors), daemon=True)
    thread.start()
    try:
        wait_until(lambda: "READY=1" in listener.lines() or errors, 15, "READY=1")
        wait_until(lambda: listener.count("WATCHDOG=1") >= 2 or errors, 10, "pings")
        new = yaml.safe_dump(config("500ms"))
        apply_config = sup.agent.command_view().apply_config  # what the command worker calls
        apply_config(Command(id="c-rl", op="config.apply", target=None, args={"config": new}, iat=0, exp=1,
                             signer="k-test"))
        # no broker: the trial fails after 1 s and rolls back, a second restart
        wait_until(lambda: listener.count("READY=1") >= 3 or errors, 20, "READY=1 after the restarts")
    finally:
        stop.set()
        thread.join(30)
        sim.stop()
    assert not errors, errors
    lines = listener.lines()
    firsts = [i for i, line in enumerate(lines) if line in ("READY=1", "RELOADING=1")]
    assert [lines[i] for i in firsts][:5] == ["READY=1", "RELOADING=1", "READY=1", "RELOADING=1", "READY=1"]
    reloading = lines.index("RELOADING=1")
    assert lines[reloading + 1].startswith("MONOTONIC_USEC=")
    assert "STATUS=restarting with a new config (config.apply c-rl)" in lines
    assert any(line.startswith("STATUS=rolling back config.apply c-rl") for line in lines)
    assert lines[-1].startswith("STATUS=stopping") and "STOPPING=1" in lines


def _run(sup, errors: list) -> None:
    try:
        sup.run()
    except BaseException as exc:  # shown by the test
        errors.append(exc)
