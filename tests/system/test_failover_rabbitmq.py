"""Broker failover on a real RabbitMQ cluster (issue 16): three RabbitMQ 3.10 nodes with the MQTT
plugin, started once for this module by ``scripts/rabbitmq_cluster.sh`` (``support.rabbitmq``:
its own node names ``edgetest1..3@localhost``, BASE and ports, so a bench cluster may run beside
it), and the agent with ``mqtt.hosts`` naming the three nodes.

- The node in use dies mid-drain: while no node accepts connections (``suspend_listeners``) the
  agent builds a backlog; nodes 1 and 2 open, the agent connects to one of them and drains; that
  node's Erlang VM is SIGKILLed mid-drain; the agent moves to the other. The platform subscribes
  on node 3, which is never killed (the cluster routes every publish there): every record id
  from the first to the last arrives, a record received twice is identical, and ``status`` and
  ``R/state`` (``broker``) name the node in use.
- The Last Will: a ``kill -9`` of the agent connected to node 2 gives ``{"online": false}`` on
  ``R/state`` to a subscriber on node 3. RabbitMQ 3.10 keeps retained messages per node and gives
  none to wildcard subscriptions (docs/brokers.md), so the subscriber takes the exact topic, live.

No test here is skipped: a cluster that cannot start fails the module with the script's stderr.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from edge_agent.sim.devices import EnergyMeter, LevelSensor
from edge_agent.sim.modbus import ModbusSimulator
from support.agent import cli, start_agent, status, stop_agent
from support.broker import Message, Subscriber
from support.keys import init_keys
from support.rabbitmq import RabbitCluster, RabbitError
from support.waiting import wait_until
from support.wire import records

ROOT = "edge/v1/rfo-site/gw-rfo"
LW_ROOT = "edge/v1/rfo-site/gw-rlw"
BACKLOG = 2000  # records buffered while no node takes the agent: the drain outlasts a node's death
BATCH_MAX, INFLIGHT = 10, 2  # records a message, messages awaiting PUBACK: the drain takes seconds
KILL_AFTER = 10  # telemetry messages (at most 100 records) on the platform's side, then the node dies


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitCluster]:
    rabbit = RabbitCluster(tmp_path_factory.mktemp("rabbit") / "base", name="edgetest")
    try:
        try:
            rabbit.start()
        except RabbitError as exc:
            pytest.fail(f"the RabbitMQ cluster did not start: {exc}", pytrace=False)
        print(f"\nrabbitmq: cluster {rabbit.name}1..3 started in {rabbit.started_in:.1f} s, "
              f"mqtt {' '.join(rabbit.hosts())}")
        yield rabbit
    finally:
        rabbit.stop()


@pytest.fixture
def modbus_port() -> Iterator[int]:
    sim = ModbusSimulator({1: LevelSensor(rise_m_per_min=3.0), **{u: EnergyMeter() for u in range(2, 8)}})
    _, port = sim.serve_tcp("127.0.0.1", 0)
    try:
        yield port
    finally:
        sim.stop()


def config(tmp_path: Path, gw: str, hosts: list[str], modbus_port: int, units: range) -> Path:
    cfg = {
        "gateway": {"id": gw, "site": "rfo-site", "state_dir": str(tmp_path / "state")},
        "mqtt": {"hosts": hosts, "batch_max": BATCH_MAX, "inflight": INFLIGHT,
                 "keepalive": "5s", "reconnect_min": "200ms", "reconnect_max": "1s"},
        "buffer": {"commit_interval": "50ms"},
        "buses": [{"name": "plant", "protocol": "modbus-tcp", "host": "127.0.0.1", "port": modbus_port,
                   "timeout": "500ms"}],
        "devices": [{"name": "river-1", "bus": "plant", "driver": "qdy_level", "address": 1, "interval": "20ms"}] + [
            {"name": f"meter-{u}", "bus": "plant", "driver": "eastron_meter", "address": u, "interval": "20ms"}
            for u in units],
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    init_keys(path)
    return path


def by_id(messages: list[Message]) -> dict[int, list[dict]]:
    seen: dict[int, list[dict]] = {}
    for r in records(messages, f"{ROOT}/telemetry", gw="gw-rfo"):
        seen.setdefault(r["id"], []).append(r)
    return seen


def states(messages: list[Message], root: str) -> list[dict]:
    return [json.loads(m.payload) for m in messages if m.topic == f"{root}/state"]


def pending_once_up(cfg: Path) -> int:
    """The agent's backlog, 0 while it is still starting: ``status`` then has no buffer to read
    (no ``pending`` key), or exits 1 on a buffer file without its schema yet (a known window)."""
    out = cli("status", "-c", str(cfg), "--json", timeout=30)
    return json.loads(out.stdout).get("pending", 0) if out.returncode == 0 else 0


def open_listeners(rabbit: RabbitCluster) -> None:
    """Every running node accepts connections again (a test may have left some suspended)."""
    for n in (1, 2, 3):
        if rabbit.vm_pid(n) is not None:
            rabbit.resume(n)


def test_the_node_in_use_dies_mid_drain_and_another_takes_over(cluster: RabbitCluster, modbus_port: int,
                                                                   tmp_path: Path) -> None:
    nodes = cluster.nodes
    cfg = config(tmp_path, "gw-rfo", cluster.hosts(), modbus_port, range(2, 6))
    log = tmp_path / "agent.log"
    platform = Subscriber(nodes[2], f"{ROOT}/#", client_id="platform-rfo").start()
    agent = None
    try:
        for n in (1, 2, 3):  # no node takes new connections; the platform's stays open
            cluster.suspend(n)
        assert not any(cluster.accepting(n) for n in (1, 2, 3)), "a node still accepts connections"
        agent = start_agent(cfg, log)
        wait_until(lambda: pending_once_up(cfg) >= BACKLOG, 90, f"a backlog of {BACKLOG} records", interval=0.5)
        assert not platform.messages, "the agent published while no node accepted it"
        backlog_last = status(cfg)["next_id"] - 1  # every id up to here was buffered before any node opened
        cluster.resume(1)
        cluster.resume(2)
        platform.wait_for(lambda ms: sum(m.topic == f"{ROOT}/telemetry" for m in ms) >= KILL_AFTER, 60,
                          f"{KILL_AFTER} messages of the drain")
        births = [s for s in states(platform.messages, ROOT) if s.get("online")]
        assert births, "no R/state birth before the telemetry"
        in_use = next(node for node in nodes if node.address == births[-1]["broker"])
        cluster.kill_node(in_use.n)  # mid-drain: its Erlang VM is gone, no clean close
        seen_at_kill = set(by_id(platform.messages))
        other = nodes[1] if in_use.n == 1 else nodes[0]

        def moved() -> bool:
            st = status(cfg)
            return st["pending"] == 0 and st["uplink"]["connected"] and st["uplink"]["broker"] == other.address

        wait_until(moved, 90, f"the drain to finish on {other.name}", interval=0.5)
        stop_agent(agent, log)
        last_id = status(cfg)["next_id"] - 1
        wait_until(lambda: set(by_id(platform.messages)) >= set(range(1, last_id + 1)), 60,
                   f"every id 1..{last_id} on {nodes[2].name}", interval=0.2)
        platform.wait_for(lambda ms: states(ms, ROOT)[-1].get("online") is False, 30, "the offline R/state of the stop")
        messages = platform.messages
    finally:
        if agent is not None and agent.poll() is None:  # a failed step must not leave the agent running
            agent.kill()
            agent.wait(10)
        platform.stop()
        open_listeners(cluster)

    seen = by_id(messages)
    assert sorted(seen) == list(range(1, last_id + 1)), "ids missing or extra"
    assert all(all(c == copies[0] for c in copies) for copies in seen.values()), "a duplicate that differs"
    assert seen_at_kill and not set(range(1, backlog_last + 1)) <= seen_at_kill, \
        f"{len(seen_at_kill)} ids had arrived of a backlog of {backlog_last}: the kill was not mid-drain"
    online = [s for s in states(messages, ROOT) if s.get("online")]
    assert [s["broker"] for s in online][:1] == [in_use.address], online
    assert any(s["broker"] == other.address for s in online), online
    text = log.read_text()
    assert f"connection to {in_use.address} lost" in text and "Traceback" not in text, text[-3000:]
    print(f"\nrabbitmq failover: {last_id} records (backlog {backlog_last}), {len(seen_at_kill)} ids had "
          f"arrived when {in_use.name} was killed, the rest via {other.name}; "
          f"{sum(len(c) - 1 for c in seen.values())} identical duplicates")


def test_a_killed_agent_s_last_will_reaches_a_subscriber_on_another_node(cluster: RabbitCluster, modbus_port: int,
                                                                         tmp_path: Path) -> None:
    open_listeners(cluster)
    on_2, on_3 = cluster.node(2), cluster.node(3)
    cfg = config(tmp_path, "gw-rlw", [on_2.address], modbus_port, range(2, 3))
    log = tmp_path / "agent.log"
    # the exact topic: RabbitMQ 3.10 gives a wildcard subscription no retained message, and node 3
    # holds none of this gateway's (the agent only ever connects to node 2): every message is live
    platform = Subscriber(on_3, f"{LW_ROOT}/state", client_id="platform-rlw").start()
    agent = None
    try:
        agent = start_agent(cfg, log)
        platform.wait_for(lambda ms: any(json.loads(m.payload).get("online") for m in ms), 60,
                          f"the agent's online R/state via {on_2.name}")
        assert status(cfg)["uplink"]["broker"] == on_2.address
        agent.send_signal(signal.SIGKILL)
        agent.wait(10)
        killed_at = time.monotonic()
        platform.wait_for(lambda ms: any(json.loads(m.payload).get("online") is False for m in ms), 60,
                          "the Last Will on node 3")
        took = time.monotonic() - killed_at
        messages = platform.messages
    finally:
        if agent is not None and agent.poll() is None:
            agent.kill()
            agent.wait(10)
        platform.stop()

    got = [(json.loads(m.payload), m.retain) for m in messages]
    online = [p for p, _ in got if p.get("online")]
    assert online and all(p["broker"] == on_2.address and p["gw"] == "gw-rlw" for p in online), got
    offline = [p for p, _ in got if p.get("online") is False]
    assert offline == [{"online": False, "gw": "gw-rlw"}], f"not the Last Will (a clean stop adds 'stopped'): {got}"
    assert got[-1][0] == offline[0], "an online state after the Last Will"
    print(f"\nrabbitmq last will: published via {on_2.name}, on {on_3.name} {took:.1f} s after the kill: {offline[0]}")
