"""Broker failover over TLS (issue 16: "``mqtt.hosts`` ... TLS host-name checks apply per host").

Two real Mosquitto nodes with TLS listeners and ``require_certificate``, their certificates from
one test CA (``support.certs``). The agent dials node A as ``localhost`` and node B as
``127.0.0.1``; each certificate is checked against the name dialled for *that* node:

- A's certificate names ``wrong.example`` only: the agent refuses A with one ERROR line naming
  A's address and the cause (host-name verification), never speaks MQTT to it (A's log shows no
  client under the agent's id, nor a plaintext attempt on its TLS port), and delivers every record
  to B. B's certificate names the IP ``127.0.0.1`` only, so checking B against A's name (or A's
  against B's) would fail this test too.
- Both valid: A serves first, is killed, B takes over and every record arrives (the non-TLS
  version, mid-drain, is ``test_failover.py``).

The platform listens on both nodes (they are not bridged); it dials 127.0.0.1, so its client on A
skips the host-name check (A names another host) but still verifies the chain.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import pytest
import yaml

from edge_agent.sim.devices import LevelSensor
from edge_agent.sim.modbus import ModbusSimulator
from support.agent import start_agent, status, stop_agent
from support.broker import Mosquitto, Subscriber
from support.certs import Pki, make_pki
from support.keys import init_keys
from support.waiting import wait_until
from support.wire import records

GW = "gw-fotls"
ROOT = f"edge/v1/fotls-site/{GW}"
CLIENT_ID = f"edge-agent-{GW}"


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def modbus_port() -> Iterator[int]:
    sim = ModbusSimulator({1: LevelSensor(rise_m_per_min=3.0)})
    _, port = sim.serve_tcp("127.0.0.1", 0)
    yield port
    sim.stop()


def node(tmp_path: Path, pki: Pki, name: str, *, dns: tuple[str, ...] = (), ips: tuple[str, ...] = ()) -> Mosquitto:
    """A TLS node whose server certificate names only ``dns`` and ``ips``."""
    (tmp_path / name).mkdir()
    cert, key = pki.issue_server(f"node-{name}", dns=dns, ips=ips)
    return Mosquitto(tmp_path / name, tls=pki.broker_tls(certfile=cert, keyfile=key))


def platform(broker: Mosquitto, pki: Pki, name: str, *, check_hostname: bool = True) -> Subscriber:
    cert, key = pki.issue_client(f"platform-{name}")
    sub = Subscriber(broker, f"{ROOT}/#", client_id=f"platform-{name}",
                     tls={"ca_certs": pki.ca_file, "certfile": cert, "keyfile": key})
    if not check_hostname:
        sub.client.tls_insecure_set(True)  # the chain is still verified
    return sub


def config(tmp_path: Path, pki: Pki, hosts: list[str], modbus_port: int) -> Path:
    cfg = {
        "gateway": {"id": GW, "site": "fotls-site", "state_dir": str(tmp_path / "state")},
        "mqtt": {"hosts": hosts, "batch_max": 20, "keepalive": "5s", "reconnect_min": "200ms",
                 "reconnect_max": "1s",
                 "tls": {"enabled": True, "ca_file": str(pki.ca_file), "cert_file": str(pki.client_cert),
                         "key_file": str(pki.client_key)}},
        "buffer": {"commit_interval": "50ms"},
        "buses": [{"name": "plant", "protocol": "modbus-tcp", "host": "127.0.0.1", "port": modbus_port,
                   "timeout": "500ms"}],
        "devices": [{"name": "river-1", "bus": "plant", "driver": "qdy_level", "address": 1, "interval": "50ms"}],
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    init_keys(path)
    return path


def ids(*subscribers: Subscriber) -> set[int]:
    return {r["id"] for sub in subscribers for r in records(sub.messages, f"{ROOT}/telemetry", gw=GW)}


def agent_connected(broker: Mosquitto) -> bool:
    """Whether mosquitto ever accepted an MQTT connection under the agent's client id."""
    return f" as {CLIENT_ID} " in broker.log_path.read_text(errors="replace")


def run_until_drained(cfg: Path, log: Path, broker: str, *, between: Callable[[], None] = lambda: None) -> int:
    """Run the agent until it has delivered 40 records at least and nothing is pending, on the
    node ``broker`` (host:port as the agent names it); stop it; the last record id."""
    def drained() -> bool:
        st = status(cfg)
        return st.get("next_id", 0) > 40 and st["pending"] == 0 and st["uplink"]["connected"] \
            and st["uplink"]["broker"] == broker

    agent = start_agent(cfg, log)
    try:
        wait_until(lambda: status(cfg).get("next_id", 0) > 20, 30, "records to be buffered", interval=0.2)
        between()
        wait_until(drained, 30, f"the backlog to drain to {broker}", interval=0.2)
    except BaseException:
        agent.kill()  # a failed step must not leave the agent running
        agent.wait(10)
        raise
    stop_agent(agent, log)
    return status(cfg)["next_id"] - 1


def test_a_node_whose_certificate_names_another_host_is_refused_and_the_other_gets_every_record(
        tmp_path: Path, pki: Pki, modbus_port: int) -> None:
    a = node(tmp_path, pki, "a", dns=("wrong.example",))
    b = node(tmp_path, pki, "b", ips=("127.0.0.1",))
    log = tmp_path / "agent.log"
    with a, b, platform(a, pki, "a", check_hostname=False) as on_a, platform(b, pki, "b") as on_b:
        cfg = config(tmp_path, pki, [f"localhost:{a.port}", f"127.0.0.1:{b.port}"], modbus_port)
        last_id = run_until_drained(cfg, log, f"127.0.0.1:{b.port}")
        wait_until(lambda: ids(on_b) >= set(range(1, last_id + 1)), 20, f"ids 1..{last_id} on node b", interval=0.2)
        a_log = a.log_path.read_text(errors="replace")

    assert not ids(on_a) and not agent_connected(a), a.log_tail()
    assert "wrong version number" not in a_log and "http request" not in a_log.lower(), "plaintext on a TLS port"
    text = log.read_text()
    refusals = [line for line in text.splitlines() if f" ERROR edge_agent.uplink: mqtt: cannot connect to "
                f"localhost:{a.port}: " in line]
    assert len(refusals) == 1, text[-3000:]  # once, at ERROR: repeats (if any) go to DEBUG
    line = refusals[0]
    assert "TLS certificate verification failed: Hostname mismatch, certificate is not valid for " \
           "'localhost'" in line and "mqtt.tls.verify_hostname" in line, line
    assert f"cannot connect to 127.0.0.1:{b.port}" not in text, "node b was checked against another name"
    assert "Traceback" not in text


def test_both_nodes_valid_the_first_is_killed_and_the_second_takes_over(
        tmp_path: Path, pki: Pki, modbus_port: int) -> None:
    a = node(tmp_path, pki, "a", dns=("localhost",))
    b = node(tmp_path, pki, "b", ips=("127.0.0.1",))
    log = tmp_path / "agent.log"
    with a, b, platform(a, pki, "a", check_hostname=False) as on_a, platform(b, pki, "b") as on_b:
        cfg = config(tmp_path, pki, [f"localhost:{a.port}", f"127.0.0.1:{b.port}"], modbus_port)

        def kill_a() -> None:
            wait_until(lambda: ids(on_a), 20, "records on node a", interval=0.1)
            a.stop()

        last_id = run_until_drained(cfg, log, f"127.0.0.1:{b.port}", between=kill_a)
        wait_until(lambda: ids(on_a, on_b) >= set(range(1, last_id + 1)), 20, f"ids 1..{last_id}", interval=0.2)

    assert ids(on_a) and ids(on_b) - ids(on_a), "not both nodes carried records"
    text = log.read_text()
    assert f"connection to localhost:{a.port} lost" in text and "Traceback" not in text
    assert "certificate verification failed" not in text
