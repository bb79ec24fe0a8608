"""Fleet bench (issue 16): 100 real agents against a three-node RabbitMQ cluster, nodes lost.

What it does (the issue's "Fleet bench"), in one run of about 8 minutes:

1. ``scripts/rabbitmq_cluster.sh start``: rabbit1..3@localhost, MQTT on three loopback ports.
2. A few ``edge-agent simulate modbus`` processes (one per 25 agents: one process per agent would
   double the process count), each serving a water level sensor (unit 1) and an SDM meter (unit 2).
3. ``edge-agent platform watch --json`` on node 3 (never stopped), and the bench's own subscriber
   there (``Observer``): end-to-end latency (arrival - record ts; one clock) and each gateway's
   ``state``, whose ``broker`` names the node it is on.
4. N agents (``edge-agent run``), each polling both devices every 1 s, with the defaults a user
   gets except ``mqtt.hosts``: agent i lists the nodes starting at node (i % 2) + 1, so half the
   fleet is on node 1, half on node 2, none on node 3.
5. Steady state; then node 1 is killed (SIGKILL of its Erlang VM: no clean close), and started
   again; then node 2 is restarted (a clean stop, then a start). After each loss, the time each
   of its gateways took to reconnect = the first ``state`` naming another node, seen on node 3,
   minus the moment of the loss (goal: every one < 10 s).
6. The agents stop (SIGTERM: they drain first); each one's ``status --json`` gives its last id and
   what is still pending; watch's last line must show every gateway with ids 1..last, 0 missing,
   0 conflicting duplicates.

Printed: per-gateway CPU (share of a core, steady state and whole run) and RSS, the nodes' memory
(Erlang ``memory(total)`` and VmRSS), latency p50/p99 (steady, and over the whole run with its
failovers), reconnect times per loss (max, p99), delivery; ``--out FILE`` keeps it all as JSON.

    python bench/bench_fleet.py [--agents 100] [--steady 60] [--gap 45] [--out fleet.json]
    python bench/bench_fleet.py --cluster-only     # the cluster alone: start, memory, stop

What RabbitMQ 3.10 changes for this bench (docs/brokers.md): retained messages are node-local and
never delivered to wildcard subscriptions, so online-ness is judged from live ``state``; no Last
Will reaches the platform when a node dies; ``$share`` subscriptions deliver nothing.

One cluster a machine at a time: the node names rabbit1..3@localhost are fixed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from _common import PY, ROOT, Proc, percentiles, rss_mb, start_simulator

SCRIPT = ROOT / "scripts" / "rabbitmq_cluster.sh"
RBIN = Path("/usr/lib/rabbitmq/bin")
AGENTS_PER_SIM = 25  # one simulator process serves this many agents


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


# -- the platform's side on node 3 ---------------------------------------------------------------
class Observer:
    """The bench's own subscriber on node 3: end-to-end latency of every record, and every gateway's
    ``state`` as it arrives (``broker``: the node it is on). Feeds on paho's thread, one lock."""

    def __init__(self, broker: str, prefix: str = "edge/v1") -> None:
        from edge_agent.fleet.broker import Link

        self.prefix = prefix
        self.lock = threading.Lock()
        self.latency: list[tuple[float, int]] = []  # (arrival, ms)
        self.states: dict[str, list[tuple[float, dict[str, Any]]]] = {}  # gw -> [(arrival, state)]
        self.link = Link(broker, on_message=self._message, role="bench").connect()
        self.link.subscribe([f"{prefix}/+/+/telemetry", f"{prefix}/+/+/state"])

    def _message(self, topic: str, payload: bytes) -> None:
        now = time.time()
        parts = topic.split("/")
        try:
            body = json.loads(payload)
        except ValueError:
            return
        with self.lock:
            if parts[-1] == "state":
                self.states.setdefault(parts[-2], []).append((now, body))
            elif isinstance(body, dict):
                now_ms = now * 1000
                self.latency.extend((now, int(now_ms - r["ts"])) for r in body.get("recs", ()))

    def broker_of(self, gw: str) -> str | None:
        with self.lock:
            seen = self.states.get(gw)
            return seen[-1][1].get("broker") if seen else None

    def moved_after(self, gw: str, since: float, away_from: str) -> float | None:
        """Seconds from ``since`` to the first ``state`` of ``gw`` naming a node other than ``away_from``."""
        with self.lock:
            for arrival, state in self.states.get(gw, ()):
                if arrival >= since and state.get("online") and state.get("broker") not in (None, away_from):
                    return arrival - since
        return None

    def latencies(self, start: float = 0.0, end: float = float("inf")) -> list[int]:
        with self.lock:
            return [ms for t, ms in self.latency if start <= t < end]

    def close(self) -> None:
        self.link.close()


class Watch:
    """``edge-agent platform watch --json`` as a child process; keeps its last line."""

    def __init__(self, broker: str, log: Path) -> None:
        self.proc = Proc([PY, "-m", "edge_agent.cli", "platform", "watch", "--broker", broker, "--json"],
                         stdout_pipe=True)
        self.last: dict[str, Any] | None = None
        self.lines = 0
        self._log = log
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.popen.stdout is not None
        for line in self.proc.popen.stdout:
            try:
                self.last = json.loads(line)
                self.lines += 1
            except ValueError:
                with open(self._log, "a") as f:
                    f.write(line)

    def gateways(self) -> dict[str, dict[str, Any]]:
        return {g["gw"]: g for g in (self.last or {}).get("gateways", ())}


# -- the fleet -------------------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process, in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def agent_config(directory: Path, i: int, nodes: list[str], sim_port: int, key_file: Path) -> Path:
    """Agent i: both devices every 1 s; ``mqtt.hosts`` starts at node (i % 2) + 1; defaults otherwise."""
    import yaml

    first = i % 2
    cfg = {
        "gateway": {"id": f"gw-{i:03d}", "site": "fleet", "state_dir": str(directory / "state")},
        "mqtt": {"hosts": nodes[first:] + nodes[:first]},
        "privacy": {"key_file": str(key_file)},
        "buses": [{"name": "plant", "protocol": "modbus-tcp", "host": "127.0.0.1", "port": sim_port, "timeout": "1s"}],
        "devices": [{"name": "river", "bus": "plant", "driver": "qdy_level", "address": 1, "interval": "1s"},
                    {"name": "meter", "bus": "plant", "driver": "eastron_meter", "address": 2, "interval": "1s"}],
    }
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def make_key(work: Path, config: Path) -> None:
    """The site pseudonym key every agent shares (``privacy.key_file``), made by ``keys init``."""
    done = subprocess.run([PY, "-m", "edge_agent.cli", "keys", "init", "-c", str(config)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"keys init: {done.stderr.strip() or done.stdout.strip()}")


def agent_status(config: Path) -> dict[str, Any]:
    done = subprocess.run([PY, "-m", "edge_agent.cli", "status", "-c", str(config), "--json"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        return {"error": done.stderr.strip() or f"exit {done.returncode}"}
    return json.loads(done.stdout)


def reconnects_from_logs(logs: list[Path], node: str) -> list[float]:
    """The agents' own figure: "connected to X again after S s" lines after a loss of ``node``."""
    pattern = re.compile(r"mqtt: connected to (\S+) again after ([\d.]+) s")
    found = []
    for log in logs:
        lost = False
        for line in log.read_text(errors="replace").splitlines():
            if f"connection to {node} lost" in line:
                lost = True
            elif lost and (m := pattern.search(line)):
                found.append(float(m.group(2)))
                lost = False
    return found


def stats(values: list[float]) -> str:
    if not values:
        return "none"
    p = percentiles(values, (50, 99))
    return f"p50 {p[50]:.2f}, p99 {p[99]:.2f}, max {max(values):.2f} (n={len(values)})"


class FleetBench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = Path(args.work)
        self.cluster = Cluster(args.base)
        self.sims: list[Proc] = []
        self.agents: list[Proc] = []
        self.configs: list[Path] = []
        self.logs: list[Path] = []
        self.watch: Watch | None = None
        self.observer: Observer | None = None
        self.result: dict[str, Any] = {"agents": args.agents}
        self.marks: dict[str, float] = {}

    def say(self, text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)

    # -- phases ------------------------------------------------------------------------------------
    def start(self) -> None:
        if self.work.exists():
            shutil.rmtree(self.work)
        self.work.mkdir(parents=True)
        took = self.cluster.start()
        self.nodes = [f"{h}:{p}" for h, p in self.cluster.mqtt]
        self.say(f"cluster started in {took:.1f} s: {' '.join(self.nodes)}")
        self.result["cluster_start_s"] = round(took, 1)
        n_sims = max(1, -(-self.args.agents // AGENTS_PER_SIM))
        ports = []
        for _ in range(n_sims):
            proc, _, port = start_simulator([(1, "qdy_level"), (2, "eastron_meter")])
            self.sims.append(proc)
            ports.append(port)
        self.watch = Watch(self.nodes[2], self.work / "watch.log")
        self.observer = Observer(self.nodes[2])
        key = self.work / "pseudonym.key"
        for i in range(self.args.agents):
            self.configs.append(agent_config(self.work / f"gw-{i:03d}", i, self.nodes, ports[i % n_sims], key))
            self.logs.append(self.work / f"gw-{i:03d}" / "agent.log")
        make_key(self.work, self.configs[0])
        t0 = time.monotonic()
        for config, log in zip(self.configs, self.logs):
            self.agents.append(Proc([PY, "-m", "edge_agent.cli", "run", "-c", str(config), "--log-level", "info"],
                                    log=log))
            time.sleep(self.args.stagger)
        gws = [f"gw-{i:03d}" for i in range(self.args.agents)]
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            on = sum(1 for gw in gws if self.observer.broker_of(gw))
            if on == len(gws):
                break
            time.sleep(1)
        else:
            raise RuntimeError(f"only {on} of {len(gws)} gateways came online in 300 s")
        self.say(f"{len(gws)} agents online {time.monotonic() - t0:.0f} s after the first was started")
        self.gws = gws

    def sample(self) -> dict[str, Any]:
        return {"t": time.monotonic(), "cpu": [cpu_seconds(a.pid) for a in self.agents],
                "rss": [rss_mb(a.pid) for a in self.agents]}

    def steady(self) -> None:
        time.sleep(10)  # start-up settles (imports, first births, first polls)
        a = self.sample()
        self.marks["steady_start"] = time.time()
        self.say(f"steady state for {self.args.steady} s")
        time.sleep(self.args.steady)
        b = self.sample()
        self.marks["steady_end"] = time.time()
        window = b["t"] - a["t"]
        shares = [(y - x) / window * 100 for x, y in zip(a["cpu"], b["cpu"]) if x is not None and y is not None]
        rss = [r for r in b["rss"] if r is not None]
        self.result["steady"] = {"cpu_pct_of_core": percentiles(shares, (50, 99)) | {"mean": statistics.fmean(shares)},
                                 "rss_mib": percentiles(rss, (50, 99)) | {"mean": statistics.fmean(rss), "max": max(rss)},
                                 "fleet_cpu_pct": sum(shares)}
        self.result["nodes_steady"] = self.cluster.memory()
        self.first_sample = a

    def lose(self, n: int, how: str) -> dict[str, Any]:
        """Node n lost (``kill``: SIGKILL; ``stop``: a clean stop); the reconnect time of each gateway on it."""
        node = self.nodes[n - 1]
        on_it = [gw for gw in self.gws if self.observer.broker_of(gw) == node]
        self.say(f"node {n} ({node}) {'killed' if how == 'kill' else 'stopped'}: {len(on_it)} gateways on it")
        t_loss = time.time()
        if how == "kill":
            self.cluster.kill_node(n)
        else:
            self.cluster.stop_node(n)
        stopped = time.time() - t_loss
        deadline = time.monotonic() + 60
        times: dict[str, float | None] = {}
        while time.monotonic() < deadline:
            times = {gw: self.observer.moved_after(gw, t_loss, node) for gw in on_it}
            if all(v is not None for v in times.values()):
                break
            time.sleep(0.5)
        moved = [v for v in times.values() if v is not None]
        where = {}
        for gw in on_it:
            b = self.observer.broker_of(gw)
            where[b] = where.get(b, 0) + 1
        out = {"node": n, "how": how, "gateways": len(on_it), "reconnected": len(moved),
               "not_reconnected": sorted(gw for gw, v in times.items() if v is None),
               "seconds": {"p50": percentiles(moved, (50,))[50] if moved else None,
                           "p99": percentiles(moved, (99,))[99] if moved else None,
                           "max": max(moved) if moved else None},
               "stop_command_s": round(stopped, 2), "now_on": where}
        self.say(f"  reconnected {len(moved)}/{len(on_it)}: {stats(moved)} s; now on {where}")
        return out

    def run(self) -> None:
        self.start()
        self.steady()
        gap = self.args.gap
        losses = [self.lose(1, "kill")]
        time.sleep(gap)
        t = time.monotonic()
        self.cluster.start_node(1)
        self.say(f"node 1 started again in {time.monotonic() - t:.1f} s")
        time.sleep(gap)
        losses.append(self.lose(2, "stop"))
        t = time.monotonic()
        self.cluster.start_node(2)
        self.say(f"node 2 started again in {time.monotonic() - t:.1f} s")
        time.sleep(gap)
        self.result["losses"] = losses
        self.result["nodes_end"] = self.cluster.memory()
        self.finish()

    def finish(self) -> None:
        end = self.sample()
        run_s = end["t"] - self.first_sample["t"]
        shares = [(y - x) / run_s * 100 for x, y in zip(self.first_sample["cpu"], end["cpu"])
                  if x is not None and y is not None]
        rss = [r for r in end["rss"] if r is not None]
        self.result["whole_run"] = {"seconds": round(run_s), "cpu_pct_of_core": percentiles(shares, (50, 99)) |
                                    {"mean": statistics.fmean(shares)}, "rss_mib_end": {"max": max(rss),
                                                                                      "mean": statistics.fmean(rss)}}
        lat_all = self.observer.latencies(self.marks["steady_start"])
        lat_steady = self.observer.latencies(self.marks["steady_start"], self.marks["steady_end"])
        self.result["latency_ms"] = {"steady": percentiles(lat_steady, (50, 99)) | {"n": len(lat_steady)},
                                     "whole_run": percentiles(lat_all, (50, 99)) | {"n": len(lat_all), "max": max(lat_all)}}
        self.result["agent_log_reconnects_s"] = {
            str(i + 1): stats(reconnects_from_logs(self.logs, self.nodes[i])) for i in (0, 1)}
        self.say("stopping the agents (SIGTERM: each drains, then exits)")
        for a in self.agents:
            a.popen.send_signal(signal.SIGTERM)
        codes = []
        for a in self.agents:
            try:
                codes.append(a.popen.wait(60))
            except subprocess.TimeoutExpired:
                a.popen.kill()
                codes.append("killed")
        self.result["exit_codes"] = {str(c): codes.count(c) for c in set(codes)}
        with ThreadPoolExecutor(4) as pool:
            finals = list(pool.map(agent_status, self.configs))
        settle = time.monotonic() + 30  # watch sees the last drained records
        expected = {gw: f.get("next_id", 0) - 1 for gw, f in zip(self.gws, finals)}
        while time.monotonic() < settle:
            seen = self.watch.gateways()
            if all(seen.get(gw, {}).get("last_id") == last for gw, last in expected.items()):
                break
            time.sleep(1)
        time.sleep(2)
        seen = self.watch.gateways()
        rows = []
        for gw, final in zip(self.gws, finals):
            w = seen.get(gw, {})
            rows.append({"gw": gw, "last_id": expected[gw], "pending": final.get("pending"),
                         "status_error": final.get("error"), "watch_first": w.get("first_id"),
                         "watch_last": w.get("last_id"), "watch_records": w.get("records"),
                         "missing": w.get("missing"), "duplicates": w.get("duplicates"),
                         "conflicts": w.get("conflicts"), "bad": w.get("bad")})
        complete = [r for r in rows if r["watch_first"] == 1 and r["watch_last"] == r["last_id"]
                    and r["watch_records"] == r["last_id"] and not r["missing"] and not r["conflicts"]
                    and r["pending"] == 0]
        self.result["delivery"] = {
            "gateways_complete": len(complete), "gateways": len(rows),
            "records": sum(r["last_id"] for r in rows),
            "received": sum(r["watch_records"] or 0 for r in rows),
            "missing_unexplained": sum(r["missing"] or 0 for r in rows),
            "duplicates_identical": sum(r["duplicates"] or 0 for r in rows),
            "duplicates_differing": sum(r["conflicts"] or 0 for r in rows),
            "pending_after_stop": sum(r["pending"] or 0 for r in rows),
            "incomplete": [r for r in rows if r not in complete][:10]}

    def stop(self) -> None:
        for a in self.agents:
            a.stop(grace=5)
        if self.observer:
            self.observer.close()
        if self.watch:
            self.watch.proc.stop(grace=5)
        for s in self.sims:
            s.stop(grace=5)
        if not self.args.keep_cluster:
            try:
                self.cluster.stop()
            except RuntimeError as exc:
                print(exc, file=sys.stderr)


def report(r: dict[str, Any]) -> bool:
    s, w = r["steady"], r["whole_run"]
    print()
    print(f"fleet: {r['agents']} agents, 2 devices each polled every 1 s, three RabbitMQ nodes")
    print(f"per-gateway CPU, % of one core: steady p50 {s['cpu_pct_of_core'][50]:.2f}, p99 {s['cpu_pct_of_core'][99]:.2f},"
          f" mean {s['cpu_pct_of_core']['mean']:.2f} (fleet {s['fleet_cpu_pct']:.0f}%); whole run mean "
          f"{w['cpu_pct_of_core']['mean']:.2f}, p99 {w['cpu_pct_of_core'][99]:.2f}")
    print(f"per-gateway RSS, MiB: steady p50 {s['rss_mib'][50]:.1f}, p99 {s['rss_mib'][99]:.1f}, max "
          f"{s['rss_mib']['max']:.1f}; at the end max {w['rss_mib_end']['max']:.1f}")
    for label in ("nodes_steady", "nodes_end"):
        figs = "; ".join(f"rabbit{n}: {f['erlang_mb'] or 0:.0f} MB erlang, {f['rss_mib'] or 0:.0f} MiB RSS"
                         for n, f in r[label].items())
        print(f"broker memory ({label.split('_')[1]}): {figs}")
    lat = r["latency_ms"]
    print(f"latency (arrival - record ts), ms: steady p50 {lat['steady'][50]}, p99 {lat['steady'][99]} "
          f"(n={lat['steady']['n']}); whole run with failovers p50 {lat['whole_run'][50]}, p99 "
          f"{lat['whole_run'][99]}, max {lat['whole_run']['max']}")
    ok = True
    for loss in r["losses"]:
        sec = loss["seconds"]
        print(f"node {loss['node']} {'killed' if loss['how'] == 'kill' else 'stopped cleanly'}: "
              f"{loss['reconnected']}/{loss['gateways']} gateways on a live node again; reconnect p50 "
              f"{sec['p50']:.2f} s, p99 {sec['p99']:.2f} s, max {sec['max']:.2f} s; now on {loss['now_on']}")
        ok &= loss["gateways"] > 0 and loss["reconnected"] == loss["gateways"] and sec["max"] < 10
    print(f"agents' own reconnect figure (log): node 1 {r['agent_log_reconnects_s']['1']}; node 2 "
          f"{r['agent_log_reconnects_s']['2']}")
    d = r["delivery"]
    print(f"delivery (platform watch): {d['gateways_complete']}/{d['gateways']} gateways complete; "
          f"{d['records']} records sent, {d['received']} received, {d['missing_unexplained']} missing "
          f"(unexplained), {d['duplicates_identical']} identical duplicates, {d['duplicates_differing']} differing; "
          f"{d['pending_after_stop']} pending after the stop; exit codes {r['exit_codes']}")
    for row in d["incomplete"]:
        print(f"  incomplete: {row}")
    ok &= d["gateways_complete"] == d["gateways"] and d["missing_unexplained"] == 0
    print(f"goal (every gateway on a live node within 10 s of its loss, 0 unexplained gaps, duplicates "
          f"identical): {'met' if ok else 'NOT met'}")
    return ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", type=Path, default=Path("/tmp/edge-rabbit-bench"), help="the cluster's directory")
    ap.add_argument("--work", type=Path, default=Path("/tmp/edge-fleet-bench"), help="the agents' directories")
    ap.add_argument("--agents", type=int, default=100)
    ap.add_argument("--steady", type=float, default=60, help="seconds of steady state before the first loss")
    ap.add_argument("--gap", type=float, default=45, help="seconds between the loss and restart steps")
    ap.add_argument("--stagger", type=float, default=0.3, help="seconds between two agent starts")
    ap.add_argument("--out", type=Path, help="write every figure here as JSON")
    ap.add_argument("--keep-cluster", action="store_true", help="leave the cluster running at the end")
    ap.add_argument("--cluster-only", action="store_true", help="start the cluster, print its figures, stop it")
    args = ap.parse_args(argv)
    if args.cluster_only:
        cluster = Cluster(args.base)
        try:
            took = cluster.start()
            print(f"cluster started in {took:.1f} s: mqtt " + " ".join(f"{h}:{p}" for h, p in cluster.mqtt))
            for n, fig in cluster.memory().items():
                print(f"rabbit{n}@localhost: erlang memory {fig['erlang_mb']:.1f} MB, VmRSS {fig['rss_mib']:.0f} MiB")
        finally:
            cluster.stop()
        return 0
    bench = FleetBench(args)
    try:
        bench.run()
    finally:
        bench.stop()
    if args.out:
        args.out.write_text(json.dumps(bench.result, indent=1, default=str))
    return 0 if report(bench.result) else 1


if __name__ == "__main__":
    sys.exit(main())
