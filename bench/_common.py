"""Helpers shared by the benchmarks in bench/ (run on demand, never part of the test suite).

Brokers (``Mosquitto`` from tests/support/broker.py, ``free_port``), figures (``percentiles``,
``median``, ``slope``), /proc (``rss_mb``, ``io_counters``, ``RssSampler``), child processes
stopped by their own pid (``Proc``), the real agent (``start_simulator``, ``write_config``,
``start_agent``, ``status``), ``prefill`` (Buffer.append in batches of 5,000), and
``summary``, the closing block every bench prints: result, baseline, ratio, goal met or not.

As a script it is bench_critical_latency.py's out-of-process subscriber::

    python bench/_common.py subscribe HOST PORT TOPIC   # prints "ready", then "ID SEQ ARRIVAL_NS"
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

ROOT = Path(__file__).resolve().parents[1]
for _p in (str(ROOT), str(ROOT / "tests")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from support.broker import Mosquitto, free_port  # noqa: E402

__all__ = ["ROOT", "Mosquitto", "free_port", "percentiles", "median", "slope", "rss_mb", "io_counters",
           "RssSampler", "Proc", "start_simulator", "write_config", "buffer_path", "start_agent", "status",
           "prefill", "summary", "bare_import_rss_mb", "log_tail", "PY", "BASE_TS"]

PY = sys.executable
BASE_TS = 1_764_000_000_000  # 2025-11-24, ms


# -- figures -------------------------------------------------------------------------------
def percentiles(values: Sequence[float], ps: Iterable[float] = (50, 95, 99)) -> dict[float, float]:
    """Nearest-rank percentiles (no interpolation: every figure is a value that was measured)."""
    data = sorted(values)
    if not data:
        return {p: float("nan") for p in ps}
    return {p: data[min(len(data) - 1, max(0, -(-len(data) * p // 100) - 1))] for p in ps}


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ys over xs (0 when xs do not vary)."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return 0.0 if den == 0 else sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den


# -- /proc ---------------------------------------------------------------------------------
def rss_mb(pid: int) -> float | None:
    """VmRSS in MiB, or None when the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return None


def io_counters(pid: int) -> dict[str, int]:
    """/proc/PID/io as a dict (write_bytes: what the process sent toward the block layer)."""
    with open(f"/proc/{pid}/io") as f:
        return {k: int(v) for k, v in (line.split(":") for line in f)}


class RssSampler:
    """Samples a pid's VmRSS every ``every`` seconds on a thread; ``samples`` is [(t, MiB)]."""

    def __init__(self, pid: int, every: float = 1.0) -> None:
        self.pid, self.every = pid, every
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        t0 = time.monotonic()
        while not self._stop.is_set():
            value = rss_mb(self.pid)
            if value is None:
                return
            self.samples.append((time.monotonic() - t0, value))
            self._stop.wait(self.every)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def values(self, since: float = 0.0) -> list[float]:
        return [v for t, v in self.samples if t >= since]


def bare_import_rss_mb() -> float:
    """The baseline of bench_rss: a bare python that imports edge_agent.agent.daemon, nothing else."""
    code = ("import edge_agent.agent.daemon\n"
            "print([l for l in open('/proc/self/status') if l.startswith('VmRSS:')][0].split()[1])")
    out = subprocess.run([PY, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    return int(out.stdout.strip()) / 1024


# -- child processes -----------------------------------------------------------------------
class Proc:
    """A child process we started, stopped by its own pid (SIGTERM, then SIGKILL after ``grace``)."""

    def __init__(self, args: Sequence[str], *, log: Path | None = None, stdout_pipe: bool = False) -> None:
        out: Any = subprocess.PIPE if stdout_pipe else (open(log, "ab") if log else subprocess.DEVNULL)
        self.popen = subprocess.Popen(list(args), cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out,
                                      stderr=subprocess.STDOUT if log or stdout_pipe else subprocess.DEVNULL,
                                      text=stdout_pipe)
        if log and not stdout_pipe:
            out.close()  # the child has its own copy

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self, grace: float = 20.0) -> int | None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        if self.popen.stdout:
            self.popen.stdout.close()
        return self.popen.returncode


def start_simulator(units: Sequence[tuple[int, str]]) -> tuple[Proc, str, int]:
    """``edge-agent simulate modbus --tcp 127.0.0.1:0`` with these (unit, model); its host and port."""
    args = [PY, "-m", "edge_agent.cli", "simulate", "modbus", "--tcp", "127.0.0.1:0"]
    for unit, model in units:
        args += ["--device", f"{unit}:{model}"]
    proc = Proc(args, stdout_pipe=True)
    line = proc.popen.stdout.readline() if proc.popen.stdout else ""
    if not line.startswith("modbus TCP on "):
        proc.stop()
        raise RuntimeError(f"the simulator did not start: {line!r}")
    host, _, port = line.split()[-1].rpartition(":")
    return proc, host, int(port)


def write_config(directory: Path, *, broker_port: int, sim_port: int, devices: Sequence[tuple[int, str]],
                 interval: str = "1s", commit_interval: str = "200ms", max_bytes: str = "512MiB") -> Path:
    """A gateway config: one Modbus TCP bus to the simulator, one device per (unit, driver)."""
    import yaml

    cfg = {
        "gateway": {"id": "gw-bench", "site": "bench", "state_dir": str(directory / "state")},
        "mqtt": {"host": "127.0.0.1", "port": broker_port, "reconnect_min": "200ms", "reconnect_max": "1s"},
        "buffer": {"max_bytes": max_bytes, "commit_interval": commit_interval},
        "buses": [{"name": "sim", "protocol": "modbus-tcp", "host": "127.0.0.1", "port": sim_port,
                   "timeout": "1s"}],
        "devices": [{"name": f"{driver.split('_')[0]}-{unit:02d}", "bus": "sim", "driver": driver,
                     "address": unit, "interval": interval} for unit, driver in devices],
    }
    path = directory / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    # the site pseudonym key the privacy stage needs, as an installer would make it
    out = subprocess.run([PY, "-m", "edge_agent.cli", "keys", "init", "-c", str(path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise RuntimeError(f"edge-agent keys init failed: {out.stderr.strip() or out.stdout.strip()}")
    return path


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def buffer_path(directory: Path) -> Path:
    return directory / "state" / "buffer.db"


def start_agent(config: Path, log: Path) -> Proc:
    """The real agent, ``python -m edge_agent.cli run -c CFG`` (the pid is python itself)."""
    return Proc([PY, "-m", "edge_agent.cli", "run", "-c", str(config), "--log-level", "warning"], log=log)


def status(config: Path) -> dict[str, Any]:
    """``edge-agent status --json``: pending, next_id, ... (works beside the running daemon)."""
    out = subprocess.run([PY, "-m", "edge_agent.cli", "status", "-c", str(config), "--json"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise RuntimeError(f"edge-agent status failed: {out.stderr.strip()}")
    return json.loads(out.stdout)


# -- the buffer ----------------------------------------------------------------------------
def prefill(path: Path, n: int, *, batch: int = 5000, start: int = 0, points: int = 1) -> None:
    """Append values ``start .. start+n-1`` to the buffer at ``path``, ``points`` values a record
    (eastron-like: one device of 50 per record, points ``p0``..; 1: a record per value)."""
    from edge_agent.buffer.outbox import Buffer
    from edge_agent.model import Reading, Record

    points = max(1, points)
    with Buffer(path, max_bytes=2 * 1024**3) as buf:
        for s in range(start, start + n, batch):
            end = min(start + n, s + batch)
            if points == 1:
                buf.append([Reading(f"eastron-{i % 50:02d}", "power_W", round(1000 + (i % 997) / 7, 3), BASE_TS + i)
                            for i in range(s, end)])
                continue
            buf.append([Record(f"eastron-{(i // points) % 50:02d}", BASE_TS + i // points,
                               {f"p{k}": round(1000 + ((i + k) % 997) / 7, 3) for k in range(min(points, end - i))})
                        for i in range(s, end, points)])


# -- output --------------------------------------------------------------------------------
def summary(result: str, baseline: str, ratio: str, goal: str, met: bool) -> bool:
    print(f"result    {result}")
    print(f"baseline  {baseline}")
    print(f"ratio     {ratio}")
    print(f"goal      {goal}: {'met' if met else 'NOT met'}", flush=True)
    return met


# -- the subscriber, as a separate process -------------------------------------------------
def _subscribe(host: str, port: int, topic: str) -> int:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    out = sys.stdout

    def on_connect(c: Any, u: Any, flags: Any, rc: Any, props: Any) -> None:
        c.subscribe(topic, qos=1)

    def on_subscribe(c: Any, u: Any, mid: Any, rcs: Any, props: Any) -> None:
        out.write("ready\n")
        out.flush()

    def on_message(c: Any, u: Any, msg: Any) -> None:
        now = time.time_ns()
        for ev in json.loads(msg.payload).get("events", ()):
            out.write(f"{ev['id']} {ev.get('data', {}).get('seq', -1)} {now}\n")
        out.flush()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-sub-{os.getpid()}")
    client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, on_message
    client.connect(host, port, keepalive=30)
    signal.signal(signal.SIGTERM, lambda *_: client.disconnect())
    client.loop_forever()
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "subscribe":
        sys.exit(_subscribe(sys.argv[2], int(sys.argv[3]), sys.argv[4]))
    print(__doc__)
    sys.exit(2)
