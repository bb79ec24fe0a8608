"""Fleet bench (issue 16): 100 real agents against a three-node RabbitMQ cluster, nodes lost.

SKELETON. Only the cluster part runs today (``--cluster-only``: start the cluster with
scripts/rabbitmq_cluster.sh, print each node's memory, stop it). The fleet part below is the plan,
not code yet: ``main()`` refuses to run it.

Plan (the issue's "Fleet bench"):

1. ``Cluster.start()``: scripts/rabbitmq_cluster.sh start BASE (fresh, ~26 s here); MQTT ports
   P1 P2 P3 from its last line.
2. One Modbus simulator process serving every agent's devices (units 1..N on one TCP port, or a
   few simulators: one process per agent would double the process count), a small device set per
   agent (e.g. a qdy_level and an eastron_meter), polled every 1 s.
3. 100 agents (``edge-agent run -c``), each with ``mqtt.hosts`` listing the three nodes rotated so
   that agent i starts on node (i % 2) + 1: half of the fleet on node 1, none on node 3 at first;
   ``keepalive: 5s``, ``reconnect_min: 100ms``, ``reconnect_max: 2s``, its own state_dir and key.
4. ``edge-agent platform watch --broker 127.0.0.1:P3 --json`` as a subprocess, on node 3 (the
   node never killed), plus our own subscriber on ``edge/v1/#`` for the latency figure
   (receive time - record ts; the agents and the subscriber share the clock).
5. Steady state 60 s, then: ``stop-node 1`` (kill -9 of its beam, ``Cluster.kill_node``) -> for
   each agent that was on node 1, the reconnect time = first ``R/state`` with ``broker`` != node 1
   after the kill (seen by the subscriber), or the agent log's "connected to ... again after X s";
   every one must be < 10 s. 60 s later ``start-node 1``; 60 s later stop node 2 the same way.
6. End: stop the agents cleanly (drain), watch's last JSON: 0 unexplained gaps, duplicates
   identical; per-agent CPU (utime+stime from /proc/PID/stat over the run) and RSS (bench/_common
   rss_mb), node memory (``Cluster.memory()``), p99 end-to-end latency, reconnect times per node
   loss (max, p99); the command that reproduces them.

What RabbitMQ 3.10 changes for this bench (docs/brokers.md): the watch must subscribe with
wildcards on a live node and judge online-ness from live ``R/state`` (retained messages are
node-local and never delivered to wildcard subscriptions); no Last Will reaches the platform when
a node dies, so "offline" is "no R/state for > 2 min"; ``$share`` subscriptions deliver nothing.

    python bench/bench_fleet.py --cluster-only [--base /tmp/edge-rabbit-bench]

One cluster a machine at a time: the node names rabbit1..3@localhost are fixed.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "rabbitmq_cluster.sh"
RBIN = Path("/usr/lib/rabbitmq/bin")


class Cluster:
    """The three-node loopback cluster of scripts/rabbitmq_cluster.sh, driven from Python."""

    def __init__(self, base: Path, ports: tuple[int, int, int] | None = None) -> None:
        self.base = base
        self.ports = ports
        self.mqtt: list[tuple[str, int]] = []

    def _run(self, *args: str, timeout: float = 300) -> str:
        done = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmq_cluster.sh {' '.join(args)} exited {done.returncode}:\n{done.stderr[-2000:]}")
        return done.stdout

    def start(self) -> float:
        """Start (fresh when nothing runs); returns the seconds it took."""
        t0 = time.monotonic()
        out = self._run("start", str(self.base), *(str(p) for p in self.ports or ()))
        line = out.strip().splitlines()[-1]
        self.mqtt = [(h, int(p)) for h, p in re.findall(r"([\d.]+):(\d+)", line)]
        if len(self.mqtt) != 3:
            raise RuntimeError(f"unexpected start output: {out!r}")
        return time.monotonic() - t0

    def stop(self) -> None:
        self._run("stop", str(self.base))

    def stop_node(self, n: int) -> None:
        self._run("stop-node", str(n), str(self.base))

    def start_node(self, n: int) -> None:
        self._run("start-node", str(n), str(self.base))

    def beam_pid(self, n: int) -> int | None:
        try:
            pid = int((self.base / f"node{n}" / "pid").read_text().strip())
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError):
            return None

    def kill_node(self, n: int) -> None:
        """A node lost abruptly: SIGKILL of its VM (no clean close of its MQTT connections)."""
        pid = self.beam_pid(n)
        if pid:
            os.kill(pid, 9)

    def memory(self) -> dict[int, dict[str, float | None]]:
        """Per node: Erlang's memory(total) in MB and the VM's VmRSS in MiB (None when down)."""
        figures: dict[int, dict[str, float | None]] = {}
        env = dict(os.environ, HOME=str(self.base / "home"))
        for n in (1, 2, 3):
            pid = self.beam_pid(n)
            erl = rss = None
            if pid:
                done = subprocess.run([str(RBIN / "rabbitmqctl"), "-q", "-n", f"rabbit{n}@localhost", "eval",
                                       "erlang:memory(total)."], capture_output=True, text=True, env=env, timeout=60)
                if done.returncode == 0 and done.stdout.strip().isdigit():
                    erl = int(done.stdout.strip()) / 1e6
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        rss = int(line.split()[1]) / 1024
            figures[n] = {"erlang_mb": erl, "rss_mib": rss}
        return figures


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", type=Path, default=Path("/tmp/edge-rabbit-bench"))
    ap.add_argument("--cluster-only", action="store_true", help="start the cluster, print its figures, stop it")
    args = ap.parse_args(argv)
    if not args.cluster_only:
        print("bench_fleet: the fleet part is not written yet (see the module docstring); "
              "--cluster-only runs the cluster part", file=sys.stderr)
        return 2
    cluster = Cluster(args.base)
    try:
        took = cluster.start()
        print(f"cluster started in {took:.1f} s: mqtt " + " ".join(f"{h}:{p}" for h, p in cluster.mqtt))
        for n, fig in cluster.memory().items():
            print(f"rabbit{n}@localhost: erlang memory {fig['erlang_mb']:.1f} MB, VmRSS {fig['rss_mib']:.0f} MiB")
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
