"""A three-node RabbitMQ cluster for system tests: ``scripts/rabbitmq_cluster.sh`` driven from Python.

Why a driver of the script rather than of RabbitMQ itself: the script is the one place that knows
how to boot, join and stop the nodes on this machine (and it is what the fleet bench and a person
use), so the tests run the cluster exactly as documented in docs/brokers.md. What the driver adds
is what a test needs beside a cluster someone else may be running (the fleet bench's
``rabbit1..3@localhost`` on its default ports):

- its own node name prefix (``EDGE_RABBIT_NAME``, ``edgetest`` by default), its own BASE (under
  the test's tmp dir) and ports probed free at start (MQTT, AMQP and Erlang distribution, never
  the script's defaults, which a bench may take later), passed to every call of the script, so
  that ``stop`` stops these nodes and nothing else;
- node-level faults: ``kill_node`` (SIGKILL of the node's Erlang VM, found by its pid file and
  checked to be that node's VM), ``stop_node``/``start_node``, and ``suspend``/``resume`` of a
  node's client listeners (``rabbitmqctl suspend_listeners``: new MQTT connections are refused,
  the connections already open stay), which lets a test keep an agent from publishing while
  its subscribers stay connected;
- ``node(n)``, an address object with ``host``, ``port`` and ``log_tail()``: what
  ``support.broker.Subscriber`` takes as its broker.

A failing call raises ``RabbitError`` with the script's stderr (tests fail on it, never skip)::

    cluster = RabbitCluster(tmp_path / "rabbit")
    try:
        cluster.start()                      # ~25 s
        sub = Subscriber(cluster.node(3), "edge/v1/#").start()
        cluster.kill_node(1)
    finally:
        cluster.stop()
"""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

__all__ = ["RabbitCluster", "RabbitNode", "RabbitError", "SCRIPT", "RBIN"]

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "rabbitmq_cluster.sh"
RBIN = Path("/usr/lib/rabbitmq/bin")
# the script's defaults (a bench's cluster may take them at any time) and the CLI tools' own
# distribution ports: never chosen for a test cluster
RESERVED = {*range(21880, 21890), *range(25670, 25690), *range(35672, 35683), 4369}
PORT_RANGE = (11000, 32000)  # below Linux's ephemeral range, where outgoing connections take ports


class RabbitError(RuntimeError):
    """The cluster could not be started, or a call of the script failed."""


def _bindable(port: int) -> bool:
    for host in ("127.0.0.1", "0.0.0.0"):  # Erlang distribution listens on every address
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                return False
    return True


def _free_run(taken: set[int], count: int = 3) -> int:
    """A base B with B+1..B+count free (bindable now, not reserved, not in ``taken``)."""
    rng = random.Random()
    for _ in range(500):
        base = rng.randrange(PORT_RANGE[0], PORT_RANGE[1] - count)
        ports = range(base + 1, base + count + 1)
        if not any(p in RESERVED or p in taken for p in ports) and all(_bindable(p) for p in ports):
            taken.update(ports)
            return base
    raise RabbitError(f"no {count} consecutive free ports found in {PORT_RANGE}")


class RabbitNode:
    """One node's MQTT address (``host``, ``port``) and its log, as ``Subscriber`` wants a broker."""

    host = "127.0.0.1"

    def __init__(self, cluster: "RabbitCluster", n: int, port: int) -> None:
        self.cluster, self.n, self.port = cluster, n, port

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def name(self) -> str:
        return f"{self.cluster.name}{self.n}@localhost"

    def log_tail(self, lines: int = 20) -> str:
        logs = sorted((self.cluster.base / f"node{self.n}" / "log").glob("*.log"))
        text = []
        for path in logs:
            text += [f"== {path.name}"] + path.read_text(errors="replace").splitlines()[-lines:]
        return f"{self.name} logs (tail):\n" + "\n".join(text) if text else f"(no log of {self.name})"

    def __repr__(self) -> str:
        return f"<RabbitNode {self.name} mqtt {self.address}>"


class RabbitCluster:
    """``rabbitmq_cluster.sh`` for one BASE, node prefix and port set (all chosen at construction)."""

    def __init__(self, base: Path, name: str = "edgetest") -> None:
        self.base = Path(base)
        self.name = name
        taken: set[int] = set()
        mqtt = _free_run(taken)
        self.mqtt_ports = (mqtt + 1, mqtt + 2, mqtt + 3)
        self.amqp_base = _free_run(taken)
        self.dist_base = _free_run(taken)
        self.env = {**os.environ, "EDGE_RABBIT_NAME": name, "EDGE_RABBIT_BASE": str(self.base),
                    "EDGE_RABBIT_AMQP_BASE": str(self.amqp_base), "EDGE_RABBIT_DIST_BASE": str(self.dist_base)}
        self.started_in: float | None = None

    # -- the script ------------------------------------------------------------------
    def run(self, *args: str, timeout: float = 300) -> str:
        """``rabbitmq_cluster.sh ARGS...`` with this cluster's environment; its stdout."""
        try:
            done = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                                  env=self.env, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
            raise RabbitError(f"rabbitmq_cluster.sh {' '.join(args)} did not finish within {timeout} s:\n"
                              f"{err[-3000:]}") from None
        if done.returncode != 0:
            raise RabbitError(f"rabbitmq_cluster.sh {' '.join(args)} exited {done.returncode}:\n"
                              f"{done.stderr[-3000:]}")
        return done.stdout

    def start(self) -> "RabbitCluster":
        """A fresh cluster (~25 s); raises with the script's stderr when it cannot start."""
        t0 = time.monotonic()
        out = self.run("start", str(self.base), *(str(p) for p in self.mqtt_ports))
        self.started_in = time.monotonic() - t0
        line = out.strip().splitlines()[-1] if out.strip() else ""
        got = tuple(int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", line))
        if not line.startswith("mqtt ") or got != self.mqtt_ports:
            raise RabbitError(f"unexpected output of start (asked for MQTT ports {self.mqtt_ports}): {out!r}")
        return self

    def stop(self) -> None:
        """Every node of this cluster (and epmd when the script started it and nothing else uses it)."""
        if (self.base / "ports").exists():
            self.run("stop", str(self.base))

    def stop_node(self, n: int) -> None:
        self.run("stop-node", str(n), str(self.base))

    def start_node(self, n: int) -> None:
        self.run("start-node", str(n), str(self.base))

    # -- nodes -----------------------------------------------------------------------
    def node(self, n: int) -> RabbitNode:
        return RabbitNode(self, n, self.mqtt_ports[n - 1])

    @property
    def nodes(self) -> list[RabbitNode]:
        return [self.node(n) for n in (1, 2, 3)]

    def hosts(self) -> list[str]:
        """``mqtt.hosts`` for an agent: the three nodes in order."""
        return [node.address for node in self.nodes]

    def vm_pid(self, n: int) -> int | None:
        """The pid of node ``n``'s Erlang VM when it runs (its pid file, checked: that node's beam)."""
        try:
            pid = int((self.base / f"node{n}" / "pid").read_text().strip())
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        if b"beam" not in cmdline or f"RABBITMQ_NODENAME={self.node(n).name}".encode() not in environ:
            return None
        return pid

    def kill_node(self, n: int, timeout: float = 30) -> None:
        """Node ``n`` lost abruptly: SIGKILL of its VM (no clean close of its connections); returns
        when the VM is gone."""
        pid = self.vm_pid(n)
        if pid is None:
            raise RabbitError(f"{self.node(n).name} is not running: nothing to kill")
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while Path(f"/proc/{pid}").exists() and self.vm_pid(n) == pid:
            if time.monotonic() > deadline:
                raise RabbitError(f"{self.node(n).name} (pid {pid}) still alive {timeout} s after SIGKILL")
            time.sleep(0.05)

    def ctl(self, n: int, *args: str, timeout: float = 60) -> str:
        """``rabbitmqctl -n NODE ARGS...`` against node ``n`` (the cluster's cookie: HOME=BASE/home)."""
        env = {**self.env, "HOME": str(self.base / "home")}
        done = subprocess.run([str(RBIN / "rabbitmqctl"), "-q", "-n", self.node(n).name, *args],
                              capture_output=True, text=True, env=env, timeout=timeout)
        if done.returncode != 0:
            raise RabbitError(f"rabbitmqctl -n {self.node(n).name} {' '.join(args)} exited {done.returncode}:\n"
                              f"{done.stderr[-2000:]}{done.stdout[-1000:]}")
        return done.stdout

    def suspend(self, n: int) -> None:
        """Node ``n`` refuses new client connections (MQTT and AMQP); open ones stay."""
        self.ctl(n, "suspend_listeners")

    def resume(self, n: int) -> None:
        """Node ``n`` accepts client connections again."""
        self.ctl(n, "resume_listeners")

    def accepting(self, n: int) -> bool:
        """Node ``n``'s MQTT listener takes a TCP connection."""
        try:
            with socket.create_connection(("127.0.0.1", self.mqtt_ports[n - 1]), timeout=1):
                return True
        except OSError:
            return False
