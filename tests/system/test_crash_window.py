"""The crash window: a poll's values survive a kill -9 that comes right after its answer, long
before the group commit (issue 13).

The agent runs as a subprocess with ``commit_interval: 5s`` against our Modbus simulator, whose
unit counts its reads and logs each value it serves. Right after the second answer arrived and
the agent appended it to its intake log, the agent is SIGKILLed: nothing was committed yet (the
buffer is empty). The next start replays the log, and both polls' values reach a real mosquitto
subscriber, under the ids they were taken with (ids at intake: the first run may have published
them before their commit already). The same kill with ``intake_log: false`` loses them: the test
can see a loss.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
import yaml

from edge_agent.buffer.intakelog import log_paths
from edge_agent.buffer.stats import read_rows
from edge_agent.model import Reg
from edge_agent.sim.devices import DeviceModel
from edge_agent.sim.modbus import ModbusSimulator
from support.agent import start_agent, status, stop_agent
from support.broker import Mosquitto, Subscriber
from support.keys import init_keys
from support.waiting import wait_until

ROOT = "edge/v1/crash-site/gw-crash"
POINTS = 4


class CountingUnit(DeviceModel):
    """Each read from register 0 serves the next count n: registers 0..3 hold n, n+1000, ...;
    ``served`` logs (CLOCK_MONOTONIC, n) per answer."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.served: list[tuple[float, int]] = []
        self.set(Reg.HOLDING, 0, [0] * POINTS)

    def read(self, table: Reg, address: int, count: int) -> list[int] | None:
        with self._lock:
            if table is Reg.HOLDING and address == 0:
                self.count += 1
                self.set(Reg.HOLDING, 0, [self.count + 1000 * i for i in range(POINTS)])
                self.served.append((time.monotonic(), self.count))
            return super().read(table, address, count)

    def served_count(self) -> int:
        with self._lock:
            return len(self.served)


def config(tmp_path: Path, broker: Mosquitto, port: int, intake_log: bool) -> Path:
    cfg = {
        "gateway": {"id": "gw-crash", "site": "crash-site", "state_dir": str(tmp_path / "state")},
        "mqtt": {"host": broker.host, "port": broker.port, "keepalive": "5s", "reconnect_min": "100ms",
                 "reconnect_max": "500ms"},
        "buffer": {"commit_interval": "5s", "intake_log": intake_log},
        "buses": [{"name": "plant", "protocol": "modbus-tcp", "host": "127.0.0.1", "port": port, "timeout": "1s"}],
        "devices": [{"name": "counter-1", "bus": "plant", "driver": "modbus_generic", "address": 1, "interval": "1s",
                     "points": [{"name": f"c{i}", "reg": "holding", "address": i, "type": "uint16"}
                                for i in range(POINTS)]}],
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    init_keys(path)
    return path


def delivered_counts(messages) -> dict[int, list[int]]:
    """count n -> the ids of the records that carried it (c0 == n, every point right)."""
    out: dict[int, list[int]] = {}
    for m in messages:
        if m.topic == f"{ROOT}/telemetry":
            for rec in json.loads(m.payload)["recs"]:
                n = rec["vals"]["c0"]
                assert rec["vals"] == {f"c{i}": n + 1000 * i for i in range(POINTS)}
                out.setdefault(n, []).append(rec["id"])
    return out


def log_bytes(db: Path) -> int:
    return sum(p.stat().st_size for p in log_paths(db) if p.exists())


@pytest.mark.parametrize("intake_log", [True, False], ids=["intake-log", "no-intake-log"])
def test_a_poll_answered_just_before_a_kill_reaches_the_platform(tmp_path: Path, intake_log: bool) -> None:
    unit = CountingUnit()
    sim = ModbusSimulator({1: unit})
    _, port = sim.serve_tcp("127.0.0.1", 0)
    db = tmp_path / "state" / "buffer.db"
    log = tmp_path / "agent.log"
    try:
        with Mosquitto(tmp_path) as broker, Subscriber(broker, f"{ROOT}/#", client_id="platform-crash",
                                                       clean_session=False) as platform:
            cfg = config(tmp_path, broker, port, intake_log)
            agent = start_agent(cfg, log)
            try:
                wait_until(lambda: unit.served_count() >= 1, 30, "the first poll")
                size_after_first = 0.0
                if intake_log:
                    wait_until(lambda: log_bytes(db) > 0, 5, "the first poll in the intake log", interval=0.001)
                    size_after_first = log_bytes(db)
                wait_until(lambda: unit.served_count() >= 2, 10, "the second poll", interval=0.001)
                served_at, second = unit.served[1]
                if intake_log:  # the kill comes as soon as the second poll is in the log
                    wait_until(lambda: log_bytes(db) > size_after_first, 5, "the second poll in the intake log",
                               interval=0.0005)
                else:
                    time.sleep(0.2)  # longer than the poll takes, far shorter than the commit interval
                agent.send_signal(signal.SIGKILL)
                killed_after = time.monotonic() - served_at
                agent.wait(10)
            finally:
                if agent.poll() is None:
                    agent.kill()
                    agent.wait(10)
            assert status(cfg)["next_id"] == 1, "something was committed before the kill: the window is not tested"
            assert agent.returncode == -signal.SIGKILL
            lost_before_restart = [n for _, n in unit.served[:2]]

            agent = start_agent(cfg, log)
            try:
                if intake_log:
                    got = platform.wait_for(lambda ms: {1, 2} <= set(delivered_counts(ms)), 30,
                                            "both polls answered before the kill")
                    seen = delivered_counts(got)
                    # each under the id it was taken with at intake; the first run may have published
                    # it already (before its commit): then it comes again, identical (at least once)
                    assert set(seen[1]) == {1} and set(seen[2]) == {2}, seen
                else:
                    wait_until(lambda: unit.served_count() >= 4, 10, "polls after the restart")
                    got = platform.wait_for(lambda ms: set(delivered_counts(ms)) & set(range(3, 100)), 30,
                                            "a poll after the restart")
                    assert not {1, 2} & set(delivered_counts(got)), "values lost without the log arrived"
            finally:
                stop_agent(agent, log)
    finally:
        sim.stop()
    text = log.read_text()
    assert "Traceback" not in text
    if intake_log:
        assert "intake log: committed 2 rows a stopped run had received but not committed (ids 1-2)" in text
    else:
        assert "intake log: committed" not in text
    print(f"\ncrash window ({'intake log' if intake_log else 'no intake log'}): killed {killed_after * 1000:.1f} ms "
          f"after the simulator served count {second}; polls {lost_before_restart} "
          f"{'delivered after the restart' if intake_log else 'lost'}")


def test_a_poll_reaches_the_platform_before_its_group_commit(tmp_path: Path) -> None:
    """Ids at intake: with ``commit_interval: 5s`` a poll's record is on the platform within a
    fraction of a second, its id already taken, while the buffer file holds nothing yet."""
    unit = CountingUnit()
    sim = ModbusSimulator({1: unit})
    _, port = sim.serve_tcp("127.0.0.1", 0)
    log = tmp_path / "agent.log"
    try:
        with Mosquitto(tmp_path) as broker, Subscriber(broker, f"{ROOT}/#") as platform:
            cfg = config(tmp_path, broker, port, intake_log=True)
            agent = start_agent(cfg, log)
            try:
                wait_until(lambda: unit.served_count() >= 1, 30, "the first poll")
                served_at = unit.served[0][0]
                platform.wait_for(lambda ms: 1 in delivered_counts(ms), 3, "the first poll's record")
                arrived_after = time.monotonic() - served_at
                assert read_rows(tmp_path / "state" / "buffer.db") == [], "committed already: not the early path"
            finally:
                stop_agent(agent, log)
            assert arrived_after < 1.0, f"{arrived_after:.3f} s: the record waited for something"
            assert [rid for rid, _, _ in read_rows(tmp_path / "state" / "buffer.db")][:1] == [1]  # stop committed it
            assert delivered_counts(platform.messages)[1][0] == 1
    finally:
        sim.stop()
