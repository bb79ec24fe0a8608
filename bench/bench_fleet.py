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

The peer in the same run (``--tb N``, default 10; 0: none): N ThingsBoard IoT Gateways 3.8.5 from
PyPI (bench/.tb-venv, ``--tb-venv``; _cmp_gateways.py), started after the agents are online, each
in its own directory under the work dir with SQLite storage and a Modbus connector reading the same
two devices on the same simulator processes every 1 s, one timeseries entry per register our
drivers read: the level sensor's holding 3 (``decimals``, 16uint) and 4 (``level_raw``, 16int),
the meter's ten input-register floats (32float, 2 registers, byte and word order BIG). Their
devices are named ``tb-007-river`` and ``tb-007-meter`` (unique per gateway: that is how the
Observer tells whose telemetry it is). ThingsBoard's gateway takes one broker host and has no
failover list: TB gateway i is on node (i % 2) + 1 for good, half on node 1, half on node 2. Each
has its own MQTT client id (``security.type: usernamePassword``, ``clientId: tb-007``; user
guest, as RabbitMQ maps our anonymous agents; its ``accessToken`` type would make the token the
MQTT user name, which RabbitMQ refuses, and leave the client id empty). The Observer subscribes
also to ``v1/gateway/telemetry`` and answers TB's ``getSessionLimits`` RPC as its server would
(without an answer TB never sends after its first connect). Two departures from TB as shipped,
both made at launch in its process: the update check is a no-op (as in compare_thingsboard.py),
and its MQTT client speaks 3.1.1: tb-mqtt-client 1.13.13, which 3.8.5 pins, always connects with
MQTT 5, which RabbitMQ 3.10 refuses (it has 3.1.1 only; MQTT 5 came in 3.13). Measured for the TB
group in the same windows: CPU and RSS per gateway; steady latency (arrival - ts of each reading);
and after each loss, for each TB gateway on the lost node, the time to its first telemetry after
the node was down (after the stop command returned: before, a clean stop still delivers what it
sent), seen on node 3: within the loss's wait (the agents' wait, at most 60 s) it counts as
reconnected; later (once the node is back) it is reported as the time it came back, and the
run waits up to 60 s after the last restart for those.

Printed: per-gateway CPU (share of a core, steady state and whole run) and RSS, the nodes' memory
(Erlang ``memory(total)`` and VmRSS), latency p50/p99 (steady, and over the whole run with its
failovers), reconnect times per loss (max, p99), delivery; ``--out FILE`` keeps it all as JSON.
Each figure of the TB group is printed under the agents' (``TB:``), with the ratio edge/TB where
the two measure the same thing; the goal line is about the agents alone.

    python bench/bench_fleet.py [--agents 100] [--tb 10] [--steady 60] [--gap 45] [--out fleet.json]
    python bench/bench_fleet.py --cluster-only     # the cluster alone: start, memory, stop

What RabbitMQ 3.10 changes for this bench (docs/brokers.md): retained messages are node-local and
never delivered to wildcard subscriptions, so online-ness is judged from live ``state``; no Last
Will reaches the platform when a node dies; ``$share`` subscriptions deliver nothing.

The bench's nodes are rabbit1..3@localhost (one bench cluster a machine at a time); the test
suite's cluster (``EDGE_RABBIT_NAME=edgetest``, its own ports) can run beside it.
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

from _cmp_gateways import TB_LAUNCH, Gateway, _tb_logs, _tb_main, ensure_tb_venv
from _common import PY, ROOT, Proc, percentiles, rss_mb, start_simulator
from support.rabbitmq import RabbitCluster, RabbitError  # noqa: E402 (_common put tests/ on the path)

AGENTS_PER_SIM = 25  # one simulator process serves this many agents
# ThingsBoard's side: the gateway telemetry topic, its client-side RPC topics, and the answer its
# server gives to getSessionLimits (no rate limits, 100 in flight, 64 KiB: compare_thingsboard.py)
TB_TELEMETRY = "v1/gateway/telemetry"
TB_RPC_REQUEST, TB_RPC_RESPONSE = "v1/devices/me/rpc/request/", "v1/devices/me/rpc/response/"
TB_SESSION_LIMITS = {"maxPayloadSize": 65536, "maxInflightMessages": 100, "rateLimits": {}, "gatewayRateLimits": {}}
# tb-mqtt-client 1.13.13 (pinned by 3.8.5) makes paho.Client(protocol=5) and has no setting for it;
# RabbitMQ 3.10 closes an MQTT 5 connection at once. The one change: 5 becomes 3.1.1.
TB_MQTT311 = ("import paho.mqtt.client as _paho\n"
              "_init = _paho.Client.__init__\n"
              "def _init_311(self, *args, **kwargs):\n"
              "    if kwargs.get('protocol') == _paho.MQTTv5:\n"
              "        kwargs['protocol'] = _paho.MQTTv311\n"
              "    _init(self, *args, **kwargs)\n"
              "_paho.Client.__init__ = _init_311\n")
TB_BACK_WAIT_S = 60  # after the last restart: how long the run waits for TB gateways not yet back


class Cluster(RabbitCluster):
    """The suite's driver of scripts/rabbitmq_cluster.sh (tests/support/rabbitmq.py: probed free
    ports, the node's pid checked), with the bench's node names and its memory figures."""

    def __init__(self, base: Path) -> None:
        super().__init__(base, name="rabbit")

    def memory(self) -> dict[int, dict[str, float | None]]:
        """Per node: Erlang's memory(total) in MB and the VM's VmRSS in MiB (None when down)."""
        figures: dict[int, dict[str, float | None]] = {}
        for n in (1, 2, 3):
            pid = self.vm_pid(n)
            erl = None
            if pid:
                try:
                    out = self.ctl(n, "eval", "erlang:memory(total).").strip()
                    erl = int(out) / 1e6 if out.isdigit() else None
                except RabbitError:
                    pass
            figures[n] = {"erlang_mb": erl, "rss_mib": rss_mb(pid) if pid else None}
        return figures


# -- the platform's side on node 3 ---------------------------------------------------------------
class Observer:
    """The bench's own subscriber on node 3: end-to-end latency of every record, and every gateway's
    ``state`` as it arrives (``broker``: the node it is on). Feeds on paho's thread, one lock."""

    def __init__(self, broker: str, prefix: str = "edge/v1", tb: bool = False) -> None:
        from edge_agent.fleet.broker import Link

        self.prefix = prefix
        self.lock = threading.Lock()
        self.latency: list[tuple[float, int]] = []  # (arrival, ms)
        self.states: dict[str, list[tuple[float, dict[str, Any]]]] = {}  # gw -> [(arrival, state)]
        # ThingsBoard gateways: per gateway (tb-007) the arrival of each telemetry message, and
        # (arrival, ms, values) of each reading in them
        self.tb_arrivals: dict[str, list[float]] = {}
        self.tb_readings: dict[str, list[tuple[float, int, int]]] = {}
        self.tb_answers: list[str] = []  # getSessionLimits requests to answer (topic suffix)
        self._tb_wake = threading.Condition(self.lock)
        self._closed = False
        self.link = Link(broker, on_message=self._message, role="bench").connect()
        self.link.subscribe([f"{prefix}/+/+/telemetry", f"{prefix}/+/+/state"])
        if tb:
            self.link.subscribe([TB_TELEMETRY, TB_RPC_REQUEST + "+"])
            threading.Thread(target=self._answer_tb, daemon=True).start()

    def _tb_message(self, now: float, topic: str, body: Any) -> None:
        if topic.startswith(TB_RPC_REQUEST):
            if isinstance(body, dict) and body.get("method") == "getSessionLimits":
                self.tb_answers.append(topic[len(TB_RPC_REQUEST):])
                self._tb_wake.notify()
            return
        if not isinstance(body, dict):
            return
        now_ms = now * 1000
        for device, readings in body.items():
            gw = device.rsplit("-", 1)[0]  # tb-007-river -> tb-007
            self.tb_arrivals.setdefault(gw, []).append(now)
            for reading in readings if isinstance(readings, list) else ():
                if isinstance(reading, dict) and "ts" in reading:
                    self.tb_readings.setdefault(gw, []).append(
                        (now, int(now_ms - reading["ts"]), len(reading.get("values") or ())))

    def _answer_tb(self) -> None:
        """ThingsBoard's server answers getSessionLimits; its gateway sends nothing until it has one
        (first connect). Every TB gateway subscribes to the response topic of every other: the same
        answer to the same request id, harmless."""
        while True:
            with self._tb_wake:
                self._tb_wake.wait_for(lambda: self.tb_answers or self._closed)
                if self._closed:
                    return
                suffix = self.tb_answers.pop(0)
            try:
                self.link.publish(TB_RPC_RESPONSE + suffix, json.dumps(TB_SESSION_LIMITS).encode())
            except ConnectionError:
                pass

    def _message(self, topic: str, payload: bytes) -> None:
        now = time.time()
        parts = topic.split("/")
        try:
            body = json.loads(payload)
        except ValueError:
            return
        if topic.startswith("v1/"):
            with self.lock:
                self._tb_message(now, topic, body)
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

    def tb_published(self, gw: str) -> bool:
        with self.lock:
            return bool(self.tb_arrivals.get(gw))

    def tb_back_after(self, gw: str, since: float) -> float | None:
        """Arrival time of the first telemetry of TB gateway ``gw`` at or after ``since``."""
        with self.lock:
            return next((t for t in self.tb_arrivals.get(gw, ()) if t >= since), None)

    def tb_latencies(self, start: float = 0.0, end: float = float("inf")) -> list[int]:
        with self.lock:
            return [ms for rows in self.tb_readings.values() for t, ms, _ in rows if start <= t < end]

    def tb_values(self, gw: str, start: float, end: float) -> int:
        with self.lock:
            return sum(n for t, _, n in self.tb_readings.get(gw, ()) if start <= t < end)

    def close(self) -> None:
        with self._tb_wake:
            self._closed = True
            self._tb_wake.notify_all()
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


def _tb_series(tag: str, kind: str, function: int, address: int) -> dict[str, Any]:
    return {"tag": tag, "type": kind, "functionCode": function,
            "objectsCount": 2 if kind.startswith("32") else 1, "address": address}


# what drivers/qdy_level.py and drivers/eastron_meter.py read, one timeseries entry per register
TB_LEVEL = [_tb_series("decimals", "16uint", 3, 0x0003), _tb_series("level_raw", "16int", 3, 0x0004)]
TB_METER = [_tb_series(name, "32float", 4, address) for name, address in (
    ("voltage_V", 0x0000), ("current_A", 0x0006), ("power_W", 0x000C), ("apparent_power_VA", 0x0012),
    ("reactive_power_var", 0x0018), ("power_factor", 0x001E), ("frequency_Hz", 0x0046),
    ("energy_import_kWh", 0x0048), ("energy_export_kWh", 0x004A), ("energy_total_kWh", 0x0156))]


def tb_config(python: Path, directory: Path, i: int, node: str, sim_port: int) -> Gateway:
    """TB gateway i: one host (``node``), its own client id, the two devices every 1 s as tb-00i-river
    and tb-00i-meter; ThingsBoard's shipped settings otherwise (_cmp_gateways._tb_main)."""
    name = f"tb-{i:03d}"
    conf = directory / "config"
    for sub in (conf, directory / "data", directory / "logs"):
        sub.mkdir(parents=True, exist_ok=True)
    host, port = node.rsplit(":", 1)
    main = _tb_main(int(port))
    main["thingsboard"]["host"] = host
    main["thingsboard"]["security"] = {"type": "usernamePassword", "clientId": name,
                                       "username": "guest", "password": "guest"}

    def slave(unit: int, device: str, series: list[dict[str, Any]]) -> dict[str, Any]:
        return {"host": "127.0.0.1", "port": sim_port, "type": "tcp", "method": "socket", "unitId": unit,
                "deviceName": f"{name}-{device}", "deviceType": "default", "timeout": 35,
                "byteOrder": "BIG", "wordOrder": "BIG", "retries": 3, "retryOnEmpty": True, "retryOnInvalid": True,
                "pollPeriod": 1000, "connectAttemptTimeMs": 5000, "connectAttemptCount": 5,
                "waitAfterFailedAttemptsMs": 300000, "attributes": [], "timeseries": series,
                "attributeUpdates": [], "rpc": []}

    modbus = {"master": {"slaves": [slave(1, "river", TB_LEVEL), slave(2, "meter", TB_METER)]}}
    (conf / "tb_gateway.json").write_text(json.dumps(main, indent=2))
    (conf / "modbus.json").write_text(json.dumps(modbus, indent=2))
    (conf / "logs.json").write_text(json.dumps(_tb_logs(directory / "logs" / "gateway.log"), indent=2))
    return Gateway(name, [str(python), "-c", TB_MQTT311 + TB_LAUNCH], directory,
                   env={"TB_GW_CONFIG_DIR": str(conf) + os.sep}, stop_signal=signal.SIGINT, storage=directory / "data")


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


LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ")


def lost_at(log: Path, node: str, after: float) -> float | None:
    """When the agent saw its connection to ``node`` end (its log line "connection to NODE lost",
    local time, the bench's clock), the first such line at or after ``after``; None without one."""
    for line in log.read_text(errors="replace").splitlines():
        if f"connection to {node} lost" not in line or not (m := LOG_TIME.match(line)):
            continue
        at = time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")) + int(m.group(2)) / 1000
        if at >= after - 0.5:
            return at
    return None


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
        self.tb: list[Gateway] = []  # ThingsBoard gateways (--tb), tb-000 ...
        self.tb_node: dict[str, int] = {}  # tb-007 -> the node it is on (1 or 2), for good
        self.tb_losses: list[dict[str, Any]] = []  # per loss: its TB gateways and moments

    def say(self, text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)

    # -- phases ------------------------------------------------------------------------------------
    def start(self) -> None:
        if self.work.exists():
            shutil.rmtree(self.work)
        self.work.mkdir(parents=True)
        took = self.cluster.start().started_in or 0.0
        self.nodes = self.cluster.hosts()
        self.say(f"cluster started in {took:.1f} s: {' '.join(self.nodes)}")
        self.result["cluster_start_s"] = round(took, 1)
        n_sims = max(1, -(-self.args.agents // AGENTS_PER_SIM))
        ports = []
        for _ in range(n_sims):
            proc, _, port = start_simulator([(1, "qdy_level"), (2, "eastron_meter")])
            self.sims.append(proc)
            ports.append(port)
        self.watch = Watch(self.nodes[2], self.work / "watch.log")
        self.observer = Observer(self.nodes[2], tb=self.args.tb > 0)
        tb_python = ensure_tb_venv(self.args.tb_venv, self.say) if self.args.tb > 0 else None
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
        if tb_python is not None:
            self.start_tb(tb_python, ports)

    def start_tb(self, python: Path, ports: list[int]) -> None:
        """The ThingsBoard gateways, after the agents: tb-i on node (i % 2) + 1, simulator i % n."""
        t0 = time.monotonic()
        for i in range(self.args.tb):
            n = i % 2 + 1
            gateway = tb_config(python, self.work / f"tb-{i:03d}", i, self.nodes[n - 1], ports[i % len(ports)])
            self.tb.append(gateway.start())
            self.tb_node[gateway.name] = n
            time.sleep(self.args.stagger)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            silent = [g for g in self.tb if not self.observer.tb_published(g.name)]
            if not silent:
                break
            dead = [g for g in silent if not g.alive()]
            if dead:
                raise RuntimeError(f"TB gateway {dead[0].name} exited:\n{dead[0].log_tail()}")
            time.sleep(1)
        else:
            raise RuntimeError(f"{len(silent)} of {len(self.tb)} TB gateways sent no telemetry in 120 s "
                               f"({silent[0].name}: {silent[0].workdir}):\n{silent[0].log_tail()}")
        self.say(f"{len(self.tb)} TB gateways publishing {time.monotonic() - t0:.0f} s after the first was started "
                 f"(node 1: {sum(1 for n in self.tb_node.values() if n == 1)}, node 2: "
                 f"{sum(1 for n in self.tb_node.values() if n == 2)})")

    def sample(self) -> dict[str, Any]:
        return {"t": time.monotonic(), "cpu": [cpu_seconds(a.pid) for a in self.agents],
                "rss": [rss_mb(a.pid) for a in self.agents],
                "tb_cpu": [cpu_seconds(g.pid) for g in self.tb], "tb_rss": [rss_mb(g.pid) for g in self.tb]}

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
        if self.tb:
            shares = [(y - x) / window * 100 for x, y in zip(a["tb_cpu"], b["tb_cpu"]) if x is not None and y is not None]
            rss = [r for r in b["tb_rss"] if r is not None]
            span = self.marks["steady_end"] - self.marks["steady_start"]
            rates = [self.observer.tb_values(g.name, self.marks["steady_start"], self.marks["steady_end"]) / span
                     for g in self.tb]
            self.result["tb"] = {
                "gateways": len(self.tb), "on_node": {str(n): sum(1 for v in self.tb_node.values() if v == n)
                                                      for n in (1, 2)},
                "steady": {"cpu_pct_of_core": percentiles(shares, (50, 99)) | {"mean": statistics.fmean(shares)},
                           "rss_mib": percentiles(rss, (50, 99)) | {"mean": statistics.fmean(rss), "max": max(rss)},
                           "fleet_cpu_pct": sum(shares), "gateways_measured": len(shares),
                           "values_per_s_per_gateway": {"min": min(rates), "mean": statistics.fmean(rates)}}}

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
        if self.tb:
            tb_on = sorted(name for name, m in self.tb_node.items() if m == n)
            self.tb_losses.append({"node": n, "how": how, "gateways": tb_on, "t_loss": t_loss,
                                   "t_down": t_loss + stopped, "t_wait_end": time.time(), "t_up": None})
            tb_back = [gw for gw in tb_on if self.observer.tb_back_after(gw, t_loss + stopped)]
        moved = [v for v in times.values() if v is not None]
        # a clean stop closes the node's connections only near its end (seconds with 100 of them):
        # the node is lost for a gateway when its connection ends, as its own log line says
        since_lost = []
        for gw, v in times.items():
            at = lost_at(self.logs[self.gws.index(gw)], node, t_loss) if v is not None else None
            if at is not None:
                since_lost.append(t_loss + v - at)
        where = {}
        for gw in on_it:
            b = self.observer.broker_of(gw)
            where[b] = where.get(b, 0) + 1
        out = {"node": n, "how": how, "gateways": len(on_it), "reconnected": len(moved),
               "not_reconnected": sorted(gw for gw, v in times.items() if v is None),
               "seconds": {"p50": percentiles(moved, (50,))[50] if moved else None,
                           "p99": percentiles(moved, (99,))[99] if moved else None,
                           "max": max(moved) if moved else None},
               "since_connection_lost": {"n": len(since_lost),
                                         "p50": percentiles(since_lost, (50,))[50] if since_lost else None,
                                         "p99": percentiles(since_lost, (99,))[99] if since_lost else None,
                                         "max": max(since_lost) if since_lost else None},
               "stop_command_s": round(stopped, 2), "now_on": where}
        self.say(f"  reconnected {len(moved)}/{len(on_it)}: {stats(moved)} s after the {how} began, "
                 f"{stats(since_lost)} s after the connection ended; the {how} command took {stopped:.1f} s; "
                 f"now on {where}")
        if self.tb:
            self.say(f"  TB: {len(tb_back)}/{len(tb_on)} TB gateways on node {n} published again within the wait")
        return out

    def run(self) -> None:
        self.start()
        self.steady()
        gap = self.args.gap
        losses = [self.lose(1, "kill")]
        time.sleep(gap)
        t = time.monotonic()
        self.cluster.start_node(1)
        self.tb_up(1)
        self.say(f"node 1 started again in {time.monotonic() - t:.1f} s")
        time.sleep(gap)
        losses.append(self.lose(2, "stop"))
        t = time.monotonic()
        self.cluster.start_node(2)
        self.tb_up(2)
        self.say(f"node 2 started again in {time.monotonic() - t:.1f} s")
        time.sleep(gap)
        self.result["losses"] = losses
        self.result["nodes_end"] = self.cluster.memory()
        self.finish()

    def tb_up(self, n: int) -> None:
        """The moment node n is up again after its loss (TB gateways can only come back after it)."""
        for loss in self.tb_losses:
            if loss["node"] == n and loss["t_up"] is None:
                loss["t_up"] = time.time()

    def finish_tb(self, end: dict[str, Any], run_s: float) -> None:
        """The TB group's whole-run figures and losses; then the TB gateways stop (SIGINT)."""
        tb = self.result["tb"]
        shares = [(y - x) / run_s * 100 for x, y in zip(self.first_sample["tb_cpu"], end["tb_cpu"])
                  if x is not None and y is not None]
        rss = [r for r in end["tb_rss"] if r is not None]
        tb["whole_run"] = {"seconds": round(run_s), "cpu_pct_of_core": percentiles(shares, (50, 99)) |
                           {"mean": statistics.fmean(shares) if shares else None},
                           "rss_mib_end": {"max": max(rss) if rss else None,
                                           "mean": statistics.fmean(rss) if rss else None},
                           "alive_at_end": sum(1 for g in self.tb if g.alive())}
        lat_all = self.observer.tb_latencies(self.marks["steady_start"])
        lat_steady = self.observer.tb_latencies(self.marks["steady_start"], self.marks["steady_end"])
        tb["latency_ms"] = {"steady": percentiles(lat_steady, (50, 99)) | {"n": len(lat_steady)},
                            "whole_run": percentiles(lat_all, (50, 99)) | {"n": len(lat_all),
                                                                           "max": max(lat_all, default=None)}}
        # the gateways that lost their node and have not published since: up to 60 s after the last restart
        last_up = max((loss["t_up"] or time.time()) for loss in self.tb_losses) if self.tb_losses else time.time()
        deadline = last_up + TB_BACK_WAIT_S
        waited = False
        while time.time() < deadline and any(self.observer.tb_back_after(gw, loss["t_down"]) is None
                                             for loss in self.tb_losses for gw in loss["gateways"]):
            if not waited:
                self.say(f"waiting up to {deadline - time.time():.0f} s for TB gateways not back since their node's loss")
                waited = True
            time.sleep(1)
        tb["losses"] = []
        for loss in self.tb_losses:
            back = {gw: self.observer.tb_back_after(gw, loss["t_down"]) for gw in loss["gateways"]}
            within = [b - loss["t_loss"] for b in back.values() if b is not None and b <= loss["t_wait_end"]]
            late = {gw: b for gw, b in back.items() if b is not None and b > loss["t_wait_end"]}
            late_s = [b - loss["t_loss"] for b in late.values()]
            after_up = [b - loss["t_up"] for b in late.values() if loss["t_up"] is not None]
            tb["losses"].append({
                "node": loss["node"], "how": loss["how"], "gateways": len(loss["gateways"]),
                "wait_s": round(loss["t_wait_end"] - loss["t_loss"], 2),
                "node_down_s": round(loss["t_up"] - loss["t_loss"], 1) if loss["t_up"] else None,
                "reconnected": len(within),
                "seconds": {"p50": percentiles(within, (50,))[50] if within else None,
                            "p99": percentiles(within, (99,))[99] if within else None,
                            "max": max(within) if within else None},
                "not_reconnected": sorted(gw for gw, b in back.items() if b is None or b > loss["t_wait_end"]),
                "came_back_later": len(late),
                "came_back_s": {"p50": percentiles(late_s, (50,))[50] if late_s else None,
                                "max": max(late_s) if late_s else None},
                "came_back_after_node_up_s": {"p50": percentiles(after_up, (50,))[50] if after_up else None,
                                              "max": max(after_up) if after_up else None},
                "never_back": sorted(gw for gw, b in back.items() if b is None)})
        self.say(f"stopping the {len(self.tb)} TB gateways (SIGINT)")
        with ThreadPoolExecutor(len(self.tb)) as pool:
            list(pool.map(lambda g: g.stop(grace=20), self.tb))

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
        if self.tb:
            self.finish_tb(end, run_s)
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
        if self.tb:
            with ThreadPoolExecutor(len(self.tb)) as pool:
                list(pool.map(lambda g: g.stop(grace=10), self.tb))
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


def _ratio(edge: float | None, tb: float | None) -> str:
    """edge/TB, as printed beside a figure ("" when either is missing or TB's is 0)."""
    if edge is None or tb is None or tb != tb or edge != edge or tb == 0:
        return ""
    return f"; edge/TB {edge / tb:.2f}"


def _s(value: float | None, fmt: str = ".2f") -> str:
    return "-" if value is None else format(value, fmt)


def report(r: dict[str, Any]) -> bool:
    s, w = r["steady"], r["whole_run"]
    tb = r.get("tb")
    print()
    print(f"fleet: {r['agents']} agents, 2 devices each polled every 1 s, three RabbitMQ nodes")
    if tb:
        print(f"  TB: {tb['gateways']} ThingsBoard IoT Gateways 3.8.5 in the same run, the same 2 devices every 1 s, "
              f"one host each, no failover list (node 1: {tb['on_node']['1']}, node 2: {tb['on_node']['2']}); "
              f"values/s per gateway: mean {tb['steady']['values_per_s_per_gateway']['mean']:.1f}, min "
              f"{tb['steady']['values_per_s_per_gateway']['min']:.1f} (12 offered)")
    print(f"per-gateway CPU, % of one core: steady p50 {s['cpu_pct_of_core'][50]:.2f}, p99 {s['cpu_pct_of_core'][99]:.2f},"
          f" mean {s['cpu_pct_of_core']['mean']:.2f} (fleet {s['fleet_cpu_pct']:.0f}%); whole run mean "
          f"{w['cpu_pct_of_core']['mean']:.2f}, p99 {w['cpu_pct_of_core'][99]:.2f}")
    if tb:
        ts, tw = tb["steady"], tb["whole_run"]
        print(f"  TB: steady p50 {ts['cpu_pct_of_core'][50]:.2f}, p99 {ts['cpu_pct_of_core'][99]:.2f}, mean "
              f"{ts['cpu_pct_of_core']['mean']:.2f} (group {ts['fleet_cpu_pct']:.0f}%); whole run mean "
              f"{_s(tw['cpu_pct_of_core']['mean'])}, p99 {tw['cpu_pct_of_core'][99]:.2f}"
              f"{_ratio(s['cpu_pct_of_core']['mean'], ts['cpu_pct_of_core']['mean'])} (steady mean)")
    print(f"per-gateway RSS, MiB: steady p50 {s['rss_mib'][50]:.1f}, p99 {s['rss_mib'][99]:.1f}, max "
          f"{s['rss_mib']['max']:.1f}; at the end max {w['rss_mib_end']['max']:.1f}")
    if tb:
        print(f"  TB: steady p50 {ts['rss_mib'][50]:.1f}, p99 {ts['rss_mib'][99]:.1f}, max {ts['rss_mib']['max']:.1f}; "
              f"at the end max {_s(tw['rss_mib_end']['max'], '.1f')}{_ratio(s['rss_mib'][50], ts['rss_mib'][50])} "
              f"(steady p50)")
    for label in ("nodes_steady", "nodes_end"):
        figs = "; ".join(f"rabbit{n}: {f['erlang_mb'] or 0:.0f} MB erlang, {f['rss_mib'] or 0:.0f} MiB RSS"
                         for n, f in r[label].items())
        print(f"broker memory ({label.split('_')[1]}): {figs}")
    lat = r["latency_ms"]
    print(f"latency (arrival - record ts), ms: steady p50 {lat['steady'][50]}, p99 {lat['steady'][99]} "
          f"(n={lat['steady']['n']}); whole run with failovers p50 {lat['whole_run'][50]}, p99 "
          f"{lat['whole_run'][99]}, max {lat['whole_run']['max']}")
    if tb:
        tl = tb["latency_ms"]
        print(f"  TB: steady p50 {tl['steady'][50]}, p99 {tl['steady'][99]} (n={tl['steady']['n']}); whole run "
              f"p50 {tl['whole_run'][50]}, p99 {tl['whole_run'][99]}, max {tl['whole_run']['max']}"
              f"{_ratio(lat['steady'][50], tl['steady'][50])} (steady p50)"
              f"{_ratio(lat['steady'][99], tl['steady'][99])} (steady p99)")
    ok = True
    tb_losses = {(x["node"], x["how"]): x for x in (tb or {}).get("losses", ())}
    for loss in r["losses"]:
        sec, lost = loss["seconds"], loss.get("since_connection_lost") or {}
        print(f"node {loss['node']} {'killed' if loss['how'] == 'kill' else 'stopped cleanly'}: "
              f"{loss['reconnected']}/{loss['gateways']} gateways on a live node again; reconnect after the "
              f"connection ended p50 {lost.get('p50') or 0:.2f} s, p99 {lost.get('p99') or 0:.2f} s, max "
              f"{lost.get('max') or 0:.2f} s (n={lost.get('n')}); after the {loss['how']} command began p50 "
              f"{sec['p50']:.2f} s, max {sec['max']:.2f} s (the command took {loss['stop_command_s']:.1f} s); "
              f"now on {loss['now_on']}")
        ok &= (loss["gateways"] > 0 and loss["reconnected"] == loss["gateways"] == lost.get("n")
               and (lost.get("max") or 99) < 10)
        t = tb_losses.get((loss["node"], loss["how"]))
        if t:
            ts_ = t["seconds"]
            line = (f"  TB: {t['reconnected']}/{t['gateways']} published again within the wait "
                    f"({t['wait_s']:.1f} s, the node down throughout)")
            if t["reconnected"]:
                line += f"; reconnect p50 {ts_['p50']:.2f} s, max {ts_['max']:.2f} s{_ratio(sec['max'], ts_['max'])} (max)"
            if t["came_back_later"]:
                cb, au = t["came_back_s"], t["came_back_after_node_up_s"]
                line += (f"; {t['came_back_later']} came back only after the node's restart: p50 {_s(cb['p50'])} s, "
                         f"max {_s(cb['max'])} s after the loss ({_s(au['p50'])} / {_s(au['max'])} s after the node "
                         f"was up again; it was down {_s(t['node_down_s'], '.1f')} s)")
            if t["never_back"]:
                line += f"; {len(t['never_back'])} never published again: {', '.join(t['never_back'])}"
            print(line)
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
    print(f"goal (every gateway on a live node within 10 s of its connection ending, 0 unexplained gaps, duplicates "
          f"identical): {'met' if ok else 'NOT met'}")
    return ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", type=Path, default=Path("/tmp/edge-rabbit-bench"), help="the cluster's directory")
    ap.add_argument("--work", type=Path, default=Path("/tmp/edge-fleet-bench"), help="the agents' directories")
    ap.add_argument("--agents", type=int, default=100)
    ap.add_argument("--tb", type=int, default=10, metavar="N",
                    help="ThingsBoard IoT Gateways 3.8.5 in the same run, half on node 1, half on node 2 (0: none)")
    ap.add_argument("--tb-venv", type=Path, default=ROOT / "bench" / ".tb-venv",
                    help="ThingsBoard gateway's own venv (made and filled once; default bench/.tb-venv)")
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
            took = cluster.start().started_in or 0.0
            print(f"cluster started in {took:.1f} s: mqtt " + " ".join(cluster.hosts()))
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
