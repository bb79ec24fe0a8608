"""Side by side with ThingsBoard IoT Gateway 3.8.5: how a user checks our claims (on demand, not a test).

    .venv/bin/python bench/compare_thingsboard.py [--quick] [--only edge,tb,tb-tags,edge-xz]
        [--workloads W1,W2,W3,W10ms,outage,kill,kill-down] [--edge-at REV] [--tb-venv bench/.tb-venv] [--seconds S]
        [--json FILE] [--keep DIR] [--seed N] [--kills N] [--kill-gap MIN,MAX] [--edge-set KEY=VALUE]

The same Modbus TCP simulator (20 units x 20 holding registers, a new value on every read, every
served value logged with its time: _cmp_sim.py), the same mosquitto (a fresh one per run, on a
free loopback port, persistent sessions), QoS 1 on both sides, runs interleaved gateway by
gateway within each workload. ThingsBoard's gateway runs from its own venv (installed once,
then reused: _cmp_gateways.py), with SQLite storage; "tb" reads each device with one "0-19"
range tag (20 requests a poll), "tb-tags" with one tag per register, its usual configuration
(400 requests a poll; W1 and W2 only). Our agent runs `edge-agent run` with every setting at
its default. A subscriber on '#' stamps each message's arrival (CLOCK_MONOTONIC, the clock of
the simulator's log) and answers ThingsBoard's `getSessionLimits` RPC, as its server would
(no rate limits, 100 messages in flight, 64 KiB payloads).

Workloads: W1, W2, W3 poll every device every 1 s, 100 ms, 20 ms (400, 4,000, 20,000 values/s
offered), and W10ms every 10 ms (40,000 values/s offered; not in the default set); "outage" cuts
the broker for 60 s at 1 s; "kill" kill -9s the gateway 10 times (--kills) at random moments at
1 s (restarting it each time); "kill-down" does the same with the broker stopped from before the
first kill to after the last (not in the default set), so that everything read between the kills
is in the buffer when a kill lands, then starts the broker and waits for the drain.

Figures (values: those the simulator served in the measured window, matched one by one to
what the subscriber got, by device, register and value):
- Modbus requests per cycle: requests the simulator served x 400 / values it served;
- CPU, % of one core: utime+stime of the gateway's process / the window;
- CPU-s per 1,000 values: utime+stime (children included) of the gateway's process over the
  window, per 1,000 values delivered; RSS: its largest VmRSS in the window (MiB);
- bytes on the wire per value: MQTT payload bytes of the data messages (our R/telemetry,
  ThingsBoard's v1/gateway/telemetry) / values in them;
- latency served -> subscriber, p50/p99 (first arrival of each value);
- delivered / served: values served in the window that reached the subscriber within the
  drain time after it (5 s after the last arrival that still counted; duplicates once);
- outage: disk per buffered value = bytes of the buffer's files (SQLite db + wal + shm, and any
  other file of the buffer) at the end of the outage / values served during it; the same after
  a checkpoint (an online backup of the database: its pages, no WAL);
- kill: values served >= 20 ms before a kill that never reached the subscriber (and in how many
  of the kills), those served in the last 20 ms before a kill, and duplicates: how many values
  arrived twice, and how many of those differed (id or ts) the second time.
The table puts the gateways side by side ("TB": ThingsBoard with range reads, its best
configuration here; "TB tags": one tag per register; "edge": our agent; "edge xz", only when
asked for with --only: our agent with mqtt.compress) with the ratios edge/TB and edge/TB tags
per row.
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from _common import PY, ROOT, Mosquitto, RssSampler, percentiles, summary
from _cmp_gateways import Gateway, cpu_seconds, edge_env, edge_gateway, ensure_tb_venv, export_revision, tb_gateway
from _cmp_sim import FLUSH_EVERY_S
from _cmp_values import Delivery, Served, is_data_topic, match, outcome, parse_served

import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion

VALUES_PER_CYCLE = 400
WORKLOADS = {"W1": 1000, "W2": 100, "W3": 20, "W10ms": 10, "outage": 1000, "kill": 1000, "kill-down": 1000}
DEFAULT_WORKLOADS = ("W1", "W2", "W3", "outage", "kill")
STEADY = ("W1", "W2", "W3", "W10ms")
GATEWAYS = ("edge", "tb", "tb-tags", "edge-xz", "edge-tb", "edge-spb")
DIALECT_OF = {"edge-tb": "thingsboard", "edge-spb": "sparkplug"}  # our agent in another dialect
DEFAULT_GATEWAYS = GATEWAYS[:3]
TAGS_WORKLOADS = ("W1", "W2")  # one request per register cannot keep up beyond (8,000 requests/s at W2)
RPC_REQUEST = "v1/devices/me/rpc/request/"
RPC_RESPONSE = "v1/devices/me/rpc/response/"
SESSION_LIMITS = {"maxPayloadSize": 65536, "maxInflightMessages": 100, "rateLimits": {}, "gatewayRateLimits": {}}
BROKER_EXTRA = ("max_queued_messages 0", "max_inflight_messages 0")
KILL_MARGIN_S = 0.020


def log(text: str) -> None:
    print(text, flush=True)


# -- the platform side: a subscriber that stamps arrivals and answers getSessionLimits ------------
class Platform:
    """A paho client on '#' (persistent session: it gets what was published while it reconnected
    after an outage) keeping ``(arrival, topic, payload)`` of every message."""

    def __init__(self, broker: Mosquitto, client_id: str) -> None:
        self.broker = broker
        self._lock = threading.Lock()
        self._messages: list[tuple[float, str, bytes]] = []
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        self.client.max_inflight_messages_set(1000)
        self.client.reconnect_delay_set(0.1, 0.5)  # type: ignore[arg-type]
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if not reason_code.is_failure:
            client.subscribe("#", qos=1)

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        now = time.monotonic()
        if msg.topic.startswith(RPC_RESPONSE):
            return  # our own answers
        if msg.topic.startswith(RPC_REQUEST):
            request = json.loads(msg.payload)
            if request.get("method") == "getSessionLimits":
                client.publish(RPC_RESPONSE + msg.topic[len(RPC_REQUEST):], json.dumps(SESSION_LIMITS), qos=1)
            return
        with self._lock:
            self._messages.append((now, msg.topic, bytes(msg.payload)))

    def start(self) -> "Platform":
        self.client.connect(self.broker.host, self.broker.port, keepalive=30)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("the subscriber got no SUBACK")
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def messages(self) -> list[tuple[float, str, bytes]]:
        with self._lock:
            return list(self._messages)

    def data_messages(self) -> int:
        with self._lock:
            return sum(1 for _, topic, _ in self._messages if is_data_topic(topic))


# -- the simulator -------------------------------------------------------------------------------
class Simulator:
    """bench/_cmp_sim.py in the project's venv, one per run (fresh sequence numbers)."""

    def __init__(self, directory: Path, source: Path | None = None) -> None:
        self.log_path = directory / "served.log"
        self.proc = subprocess.Popen([PY, str(ROOT / "bench" / "_cmp_sim.py"), str(self.log_path)], cwd=ROOT,
                                     env=edge_env(source), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     text=True)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line.startswith("modbus TCP on "):
            self.stop()
            raise RuntimeError(f"the simulator did not start: {line!r}")
        self.port = int(line.rsplit(":", 1)[1])

    def served(self) -> Served:
        """What it served so far (the log is flushed every 0.2 s; a partial last line is skipped)."""
        text = self.log_path.read_text()
        lines = text.splitlines()
        if text and not text.endswith("\n"):
            lines = lines[:-1]
        return parse_served(lines)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout:
            self.proc.stdout.close()


# -- one run ---------------------------------------------------------------------------------------
class Run:
    """One gateway on one workload: a fresh broker, simulator, subscriber and gateway directory."""

    def __init__(self, root: Path, gateway: str, workload: str, tb_python: Path | None,
                 source: Path | None = None, edge_overrides: dict[str, Any] | None = None) -> None:
        self.dir = root / f"{workload}-{gateway}"
        self.dir.mkdir(parents=True)
        self.gateway_kind, self.workload = gateway, workload
        self.interval_ms = WORKLOADS[workload]
        self.tb_python, self.source = tb_python, source
        self.edge_overrides = edge_overrides or {}

    def __enter__(self) -> "Run":
        self.broker = Mosquitto(self.dir, persistence=True, extra=BROKER_EXTRA).start()
        self.sim = Simulator(self.dir, self.source)
        self.platform = Platform(self.broker, f"bench-platform-{self.workload}-{self.gateway_kind}").start()
        workdir = self.dir / "gateway"
        workdir.mkdir()
        if self.gateway_kind.startswith("edge"):
            overrides = dict(self.edge_overrides)
            if self.gateway_kind in DIALECT_OF:
                overrides["mqtt.dialect"] = DIALECT_OF[self.gateway_kind]
            self.gw = edge_gateway(workdir, broker_port=self.broker.port, sim_port=self.sim.port,
                                   interval_ms=self.interval_ms, source=self.source,
                                   compress=self.gateway_kind == "edge-xz", overrides=overrides)
        else:
            assert self.tb_python is not None
            self.gw = tb_gateway(self.tb_python, workdir, broker_port=self.broker.port, sim_port=self.sim.port,
                                 interval_ms=self.interval_ms, style="range" if self.gateway_kind == "tb" else "tags")
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.gw.stop()
            samples: dict[str, str] = {}
            for _, topic, payload in self.platform.messages():
                samples.setdefault(topic, payload.decode(errors="replace"))
            (self.dir / "samples.json").write_text(json.dumps(samples, indent=1))
        finally:
            self.platform.stop()
            self.sim.stop()
            self.broker.stop()

    def start_and_warm(self, warmup: float, timeout: float = 120.0) -> None:
        self.gw.start()
        deadline = time.monotonic() + timeout
        while self.platform.data_messages() == 0:
            if not self.gw.alive():
                raise RuntimeError(f"{self.gw.name} exited with {self.gw.proc.returncode if self.gw.proc else '?'}:\n"
                                   f"{self.gw.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.gw.name}: no data reached the subscriber within {timeout:.0f} s:\n"
                                   f"{self.gw.log_tail()}")
            time.sleep(0.2)
        time.sleep(warmup)

    def outstanding(self, t0: float, t1: float) -> tuple[int, int]:
        """(values served in [t0, t1), of them delivered so far)."""
        served, delivery = self.snapshot()
        window = list(served.between(t0, t1))
        return len(window), sum(1 for u, r, s, _ in window if (u, r, s) in delivery.first_arrival)

    def snapshot(self) -> tuple[Served, Delivery]:
        """The messages so far, matched to the simulator's log once it holds every read before them."""
        messages = self.platform.messages()
        time.sleep(2.5 * FLUSH_EVERY_S)  # the simulator writes its log out every 0.2 s
        served = self.sim.served()
        return served, match(messages, served)

    def wait_delivered(self, t0: float, t1: float, quiet: float, deadline: float,
                       quiet_after_progress: bool = False) -> None:
        """Until every value served in [t0, t1) arrived, or none more for ``quiet`` s, or ``deadline`` s.

        ``quiet_after_progress``: the quiet time counts only once something arrived (after an
        outage a gateway may wait out its reconnect back-off first)."""
        end, first, last_change = time.monotonic() + deadline, None, time.monotonic()
        last = first
        while time.monotonic() < end:
            total, got = self.outstanding(t0, t1)
            if got >= total:
                return
            if first is None:
                first = last = got
            if got != last:
                last, last_change = got, time.monotonic()
            elif time.monotonic() - last_change > quiet and (not quiet_after_progress or got != first):
                return
            time.sleep(1.0)

    def figures(self, t0: float, t1: float, *, kills: Sequence[float] = ()) -> dict[str, Any]:
        served, delivery = self.snapshot()
        window = list(served.between(t0, t1))
        out = outcome(window, delivery, kills, margin=KILL_MARGIN_S)
        p = percentiles(out.latencies, (50, 99))
        return {
            "served": len(window), "delivered": len(out.latencies), "lost": out.lost,
            "lost_near_kill": out.lost_near_kill, "kills_losing": out.kills_losing,
            "lost_age_s": [min(out.lost_ages), max(out.lost_ages)] if out.lost_ages else None,
            "requests_per_cycle": served.requests_between(t0, t1) * VALUES_PER_CYCLE / max(1, len(window)),
            "bytes_per_value": delivery.payload_bytes / max(1, delivery.values),
            "latency_p50": p[50], "latency_p99": p[99],
            "duplicates": delivery.duplicates, "different_duplicates": delivery.different_duplicates,
            "foreign": delivery.foreign, "messages": delivery.messages,
        }


# -- storage ---------------------------------------------------------------------------------------
def storage_bytes(gw: Gateway) -> tuple[int, int, dict[str, int]]:
    """(bytes of the buffer's files now, bytes after a checkpoint, size by file name).

    The checkpointed figure backs each SQLite database up online (a consistent copy of its
    pages, WAL folded in, none of its own) beside the other files as they are."""
    files = gw.storage_files()
    sizes = {p.name: p.stat().st_size for p in files if p.exists()}
    checkpointed = 0
    with tempfile.TemporaryDirectory(prefix="cmp-ckpt-") as tmp:
        for p in files:
            if p.name.endswith(("-wal", "-shm", "-journal")):
                continue
            if _is_sqlite(p):
                copy = Path(tmp) / p.name
                src = sqlite3.connect(f"file:{p}?mode=ro", uri=True, timeout=10)
                dst = sqlite3.connect(copy)
                try:
                    src.backup(dst)
                finally:
                    src.close()
                    dst.close()
                checkpointed += copy.stat().st_size
            else:
                checkpointed += sizes.get(p.name, 0)
    return sum(sizes.values()), checkpointed, sizes


def _is_sqlite(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(16) == b"SQLite format 3\x00"
    except OSError:
        return False


# -- workloads -------------------------------------------------------------------------------------
class Plan:
    def __init__(self, quick: bool, seconds: float | None) -> None:
        self.quick = quick
        self.window = seconds or (10.0 if quick else 60.0)
        self.warmup = 2.0 if quick else 5.0
        self.outage = 15.0 if quick else 60.0
        self.kills = 3 if quick else 10
        self.kill_gap = (2.0, 4.0) if quick else (3.0, 8.0)


def steady(run: Run, plan: Plan) -> dict[str, Any]:
    run.start_and_warm(plan.warmup)
    pid = run.gw.pid
    with RssSampler(pid, every=0.5) as rss:
        t0, cpu0 = time.monotonic(), cpu_seconds(pid)
        time.sleep(plan.window)
        t1, cpu1 = time.monotonic(), cpu_seconds(pid)
    run.wait_delivered(t0, t1, quiet=5.0, deadline=60.0)
    fig = run.figures(t0, t1)
    cpu = (cpu1 or 0.0) - (cpu0 or 0.0)
    fig["cpu_s"] = cpu
    fig["cpu_per_1000"] = cpu * 1000 / max(1, fig["delivered"])
    fig["rss_mib"] = max(rss.values(), default=float("nan"))
    fig["seconds"] = t1 - t0
    return fig


def outage(run: Run, plan: Plan) -> dict[str, Any]:
    run.start_and_warm(plan.warmup)
    t0 = time.monotonic()
    time.sleep(plan.warmup)
    before, _, _ = storage_bytes(run.gw)
    t_cut = time.monotonic()
    run.broker.stop()
    time.sleep(plan.outage)
    disk, checkpointed, sizes = storage_bytes(run.gw)
    t_back = time.monotonic()
    run.broker.start()
    run.wait_delivered(t0, t_back, quiet=20.0, deadline=240.0, quiet_after_progress=True)
    drained = time.monotonic() - t_back
    buffered = sum(1 for *_, t in run.sim.served().between(t_cut, t_back))
    fig = run.figures(t0, t_back)
    fig.update(disk_before=before, disk=disk, disk_checkpointed=checkpointed, files=sizes, buffered=buffered,
               disk_per_value=disk / max(1, buffered), checkpointed_per_value=checkpointed / max(1, buffered),
               drain_s=drained)
    return fig


def kill(run: Run, plan: Plan, rng: random.Random, *, broker_down: bool = False) -> dict[str, Any]:
    """kill -9 and restart the gateway ``plan.kills`` times; with ``broker_down`` the broker is
    stopped from before the first kill until after the last (every kill lands on a buffer that
    holds all that was read since the cut), then started for the drain."""
    run.start_and_warm(plan.warmup)
    t0, kills = time.monotonic(), []
    if broker_down:
        run.broker.stop()
    for _ in range(plan.kills):
        time.sleep(rng.uniform(*plan.kill_gap))
        kills.append(time.monotonic())
        run.gw.kill9()
        run.gw.start()
    time.sleep(max(plan.kill_gap))
    t1 = time.monotonic()
    if broker_down:
        run.broker.start()
        run.wait_delivered(t0, t1, quiet=30.0, deadline=600.0, quiet_after_progress=True)
    else:
        run.wait_delivered(t0, t1, quiet=15.0, deadline=120.0)
    fig = run.figures(t0, t1, kills=kills)
    fig["kills"] = len(kills)
    return fig


# -- the table -------------------------------------------------------------------------------------
def _fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    return format(value, spec)


ROWS: list[tuple[str, str, str, Callable[[dict[str, Any]], Any], str]] = [
    # (workload, figure, unit, getter, format)
    ("W1", "values read per second", "/s", lambda f: f["served"] / f["seconds"], ",.0f"),
    ("W1", "Modbus requests per cycle", "", lambda f: f["requests_per_cycle"], ",.0f"),
    ("W1", "CPU-s per 1,000 values", "", lambda f: f["cpu_per_1000"], ".3f"),
    ("W1", "CPU, % of one core", "%", lambda f: 100 * f["cpu_s"] / f["seconds"], ".0f"),
    ("W1", "RSS", "MiB", lambda f: f["rss_mib"], ".1f"),
    ("W1", "bytes on the wire per value", "B", lambda f: f["bytes_per_value"], ".1f"),
    ("W1", "latency served -> subscriber p50", "s", lambda f: f["latency_p50"], ".3f"),
    ("W1", "latency served -> subscriber p99", "s", lambda f: f["latency_p99"], ".3f"),
    ("W1", "values delivered / served", "", lambda f: f["delivered"] / max(1, f["served"]), ".3f"),
]
for _w in STEADY[1:]:
    ROWS += [(_w, *row[1:]) for row in ROWS[:9]]
ROWS += [
    ("outage", "disk per buffered value (db + wal + shm)", "B", lambda f: f["disk_per_value"], ".1f"),
    ("outage", "same, after a checkpoint", "B", lambda f: f["checkpointed_per_value"], ".1f"),
    ("outage", "values delivered / served", "", lambda f: f["delivered"] / max(1, f["served"]), ".4f"),
    ("kill", "values lost, served >= 20 ms before a kill", "", lambda f: f["lost"], ",d"),
    ("kill", "kills that lost such values", "", lambda f: f["kills_losing"], "d"),
    ("kill", "values served < 20 ms before a kill, lost", "", lambda f: f["lost_near_kill"], ",d"),
    ("kill", "duplicates (of them different)", "", lambda f: (f["duplicates"], f["different_duplicates"]), ""),
]
ROWS += [("kill-down", *row[1:]) for row in ROWS if row[0] == "kill"]
LABEL = {"W1": "W1 (20 x 20 at 1 s: 400 values/s)", "W2": "W2 (100 ms: 4,000/s)", "W3": "W3 (20 ms: 20,000/s)",
         "W10ms": "W3 at 10 ms (40,000/s)", "outage": "60 s broker outage at 1 s", "kill": "10 x kill -9 at 1 s",
         "kill-down": "10 x kill -9 at 1 s, broker down"}


def table(results: dict[str, dict[str, dict[str, Any]]], gateways: list[str], plan: Plan) -> str:
    names = {"tb": "TB", "tb-tags": "TB tags", "edge": "edge", "edge-xz": "edge xz", "edge-tb": "edge as TB",
             "edge-spb": "edge as Sparkplug"}
    cols = [g for g in ("tb", "tb-tags", "edge", "edge-xz", "edge-tb", "edge-spb") if g in gateways]
    ratios = [(f"{names[e]}/{names[t]}", e, t) for e in ("edge", "edge-xz", "edge-tb", "edge-spb")
              for t in ("tb", "tb-tags") if {e, t} <= set(cols)]
    head = ["workload", "figure"] + [names[g] for g in cols] + [r[0] for r in ratios]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    labels = dict(LABEL, outage=f"{plan.outage:.0f} s broker outage at 1 s", kill=f"{plan.kills} x kill -9 at 1 s",
                  **{"kill-down": f"{plan.kills} x kill -9 at 1 s, broker down"})
    for workload, figure, unit, get, spec in ROWS:
        if workload not in results:
            continue
        cells, vals = [], {}
        for g in cols:
            fig = results[workload].get(g)
            if fig is None:
                cells.append("-")
                continue
            value = get(fig)
            vals[g] = value
            if isinstance(value, tuple):
                cells.append(f"{value[0]:,} ({value[1]:,})")
            else:
                sep = "" if unit.startswith("/") else " "
                cells.append(_fmt(value, spec) + (f"{sep}{unit}" if unit and value == value else ""))
        row = [labels[workload], figure] + cells
        for _, edge, tb in ratios:
            e, t = vals.get(edge), vals.get(tb)
            ok = isinstance(e, (int, float)) and isinstance(t, (int, float)) and t and e == e and t == t
            row.append(f"{e / t:.2f}" if ok else "-")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


# -- main ------------------------------------------------------------------------------------------
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10 s windows, a 15 s outage, 3 kills")
    ap.add_argument("--only", default=",".join(DEFAULT_GATEWAYS),
                    help="gateways, comma-separated: edge, tb, tb-tags, edge-xz (our agent with mqtt.compress), "
                         "edge-tb and edge-spb (our agent in its thingsboard and sparkplug dialects) "
                         "(default edge,tb,tb-tags; 'tb' alone means tb and tb-tags)")
    ap.add_argument("--workloads", default=",".join(DEFAULT_WORKLOADS),
                    help="comma-separated: " + ", ".join(WORKLOADS) + " (default " + ",".join(DEFAULT_WORKLOADS) + ")")
    ap.add_argument("--edge-set", action="append", default=[], metavar="KEY=VALUE",
                    help="set a config key of our agent (dotted, YAML value), e.g. buffer.commit_interval=20ms; "
                         "repeatable")
    ap.add_argument("--kills", type=int, default=None, help="kill -9s per kill workload (default 10, 3 with --quick)")
    ap.add_argument("--kill-gap", default=None, metavar="MIN,MAX",
                    help="seconds between kills, drawn uniformly (default 3,8; 2,4 with --quick)")
    ap.add_argument("--seconds", type=float, default=None, help="measured seconds per steady run (default 60)")
    ap.add_argument("--tb-venv", type=Path, default=ROOT / "bench" / ".tb-venv",
                    help="ThingsBoard gateway's own venv (made and filled once; default bench/.tb-venv)")
    ap.add_argument("--edge-at", default=None, metavar="REV",
                    help="run our agent (and the simulator) from this git revision, exported with git archive "
                         "(default: the working tree)")
    ap.add_argument("--json", type=Path, default=None, help="also write every figure to this file")
    ap.add_argument("--seed", type=int, default=None, help="seed for the moments of the kills")
    ap.add_argument("--table-from", type=Path, default=None, metavar="FILE",
                    help="print the table of a run saved with --json, and run nothing")
    ap.add_argument("--keep", type=Path, default=None,
                    help="keep every run's files here (configs, logs, served.log, a sample of each topic)")
    args = ap.parse_args()
    gateways = [g.strip() for g in args.only.split(",") if g.strip()]
    if gateways == ["tb"]:
        gateways = ["tb", "tb-tags"]
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    for bad in [g for g in gateways if g not in GATEWAYS] + [w for w in workloads if w not in WORKLOADS]:
        ap.error(f"unknown gateway or workload {bad!r}")
    plan = Plan(args.quick, args.seconds)
    edge_overrides: dict[str, Any] = {}
    for item in args.edge_set:
        key, sep, value = item.partition("=")
        if not sep:
            ap.error(f"--edge-set takes KEY=VALUE, got {item!r}")
        edge_overrides[key] = yaml.safe_load(value)
    if args.kills is not None:
        plan.kills = args.kills
    if args.kill_gap:
        low, _, high = args.kill_gap.partition(",")
        plan.kill_gap = (float(low), float(high or low))
    if args.table_from:
        saved = json.loads(args.table_from.read_text())
        results, meta = saved["results"], saved.get("plan", {})
        plan.outage, plan.kills = meta.get("outage", plan.outage), meta.get("kills", plan.kills)
        present = {g for per in results.values() for g in per}
        log(table(results, [g for g in GATEWAYS if g in present], plan))
        return 0
    rng = random.Random(args.seed)
    tb_python = ensure_tb_venv(args.tb_venv, log) if any(g.startswith("tb") for g in gateways) else None
    log(f"gateways {', '.join(gateways)}; workloads {', '.join(workloads)}; window {plan.window:.0f} s, "
        f"warm-up {plan.warmup:.0f} s, outage {plan.outage:.0f} s, {plan.kills} kills")
    results: dict[str, dict[str, dict[str, Any]]] = {}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="cmp-tb-") as tmp:
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            tmp = str(args.keep)
        source = None
        if args.edge_at:
            source = export_revision(args.edge_at, Path(tmp) / "edge-source")
            rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.edge_at], capture_output=True,
                                 text=True, check=True).stdout.strip()
            log(f"edge-agent and the simulator run from revision {rev} ({args.edge_at})")
        for workload in workloads:
            for gateway in gateways:
                if gateway == "tb-tags" and workload not in TAGS_WORKLOADS:
                    continue
                t = time.monotonic()
                with Run(Path(tmp), gateway, workload, tb_python, source, edge_overrides) as run:
                    if workload == "outage":
                        fig = outage(run, plan)
                    elif workload in ("kill", "kill-down"):
                        fig = kill(run, plan, rng, broker_down=workload == "kill-down")
                    else:
                        fig = steady(run, plan)
                results.setdefault(workload, {})[gateway] = fig
                brief = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in fig.items()}
                log(f"{workload} {gateway} ({time.monotonic() - t:.0f} s): {json.dumps(brief)}")
    log(f"\nall runs took {time.monotonic() - started:.0f} s\n")
    log(table(results, gateways, plan))
    if args.json:
        args.json.write_text(json.dumps({"plan": vars(plan), "argv": sys.argv[1:], "results": results},
                                        indent=2, default=str))
    w2 = results.get("W2", {})
    if "edge" in w2 and "tb" in w2:
        e, t = w2["edge"]["bytes_per_value"], w2["tb"]["bytes_per_value"]
        summary(f"W2 bytes on the wire per value: edge-agent {e:.1f}", f"ThingsBoard gateway (range reads) {t:.1f}",
                f"{e / t:.2f}", "<= 1 (at most ThingsBoard's, same run)", e <= t)
    return 0


if __name__ == "__main__":
    sys.exit(main())
