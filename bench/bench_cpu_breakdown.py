"""Where the agent's CPU goes at W2 (on demand, not a test): a sampling profile of the real agent.

    .venv/bin/python bench/bench_cpu_breakdown.py [--workload W2] [--seconds 30] [--rate 250]
        [--py-spy PATH] [--edge-at REV] [--raw FILE]

The side-by-side bench's W2 (``compare_thingsboard.Run``: a fresh mosquitto, the 20 x 20 Modbus
TCP simulator, ``edge-agent run`` with every setting at its default) runs while ``py-spy`` (PyPI;
installed into ``/tmp/py-spy-venv`` on first use, never the project's venv) samples the agent
from outside for ``--seconds``: every thread, idle samples left out, so each sample is a moment a
thread was on a CPU (or holding the GIL). Samples are then summed two ways:
- by **stage** (inclusive): the thread's kind (bus worker, buffer writer, uplink drain, paho's
  network loop, ...), then the step inside it (privacy, the SQLite commit, mark sent, ...): the
  share of the agent's CPU each part of the pipeline takes;
- by **leaf** (exclusive): the function on top of the stack, grouped by package, and the top
  functions: what the time is actually spent doing (SQLite, JSON, pymodbus, paho, our code).
Also printed: the process's CPU-s per 1,000 values over the same window (py-spy slows the target
a little: ``--nonblocking`` sampling, so the agent is never stopped, and the figure is printed
beside one measured without the profiler in the same run).

Ends with the four lines every bench ends with; the goal is issue 13's W2 CPU, <= 0.015 CPU-s per
1,000 values.
"""

from __future__ import annotations

import argparse
import collections
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import summary
from _cmp_gateways import cpu_seconds, export_revision
from compare_thingsboard import Plan, Run

SPY_VENV = Path("/tmp/py-spy-venv")
GOAL = 0.015
# A sample's stage: its thread's kind (the outermost frame of ours or of paho's), then within it
# the innermost frame that names a step: (thread kind, file fragment of its outermost frame,
# ((step, function or file fragment), ...))
THREADS = (
    ("bus worker", "edge_agent/field/", (("privacy", "privacy/"), ("intake log, queue", "buffer/"),
                                         ("pymodbus", "pymodbus/"), ("decode, schedule", "edge_agent/"))),
    ("buffer writer", "buffer/writer.py", (("SQLite commit", "append_encoded"), ("other", "edge_agent/"))),
    ("uplink drain", "uplink/drain.py", (("mark sent", "mark_sent"), ("select rows", "lanes.py"),
                                         ("encode", "payload.py"), ("paho publish", "paho/"),
                                         ("other", "edge_agent/"))),
    ("paho network loop", "paho/", (("callbacks (ours)", "edge_agent/"), ("paho", "paho/"))),
    ("uplink state", "uplink/state.py", (("stats", "edge_agent/"),)),
    ("agent main, housekeeping", "edge_agent/", (("buffer", "buffer/"), ("other", "edge_agent/"))),
)
IDLE_LEAVES = ("Condition.wait", "Event.wait", "wait", "sleep", "select", "poll", "accept")
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]*)(?::\d+)?\)$")


def ensure_py_spy(path: str | None) -> str:
    if path:
        return path
    exe = SPY_VENV / "bin" / "py-spy"
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "venv", str(SPY_VENV)], check=True)
        subprocess.run([str(SPY_VENV / "bin" / "pip"), "install", "-q", "py-spy"], check=True)
    return str(exe)


def parse(raw: str) -> list[tuple[list[tuple[str, str]], int]]:
    """py-spy's raw (collapsed) output: ``frame;frame;... count``, outermost first."""
    stacks = []
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = []
        for part in stack.split(";"):
            m = _FRAME.match(part.strip())
            frames.append((m["func"], m["file"]) if m else (part.strip(), ""))
        stacks.append((frames, int(count)))
    return stacks


def _hit(key: str, func: str, file: str) -> bool:
    return func == key if "/" not in key and not key.endswith(".py") else key in file


def stage_of(frames: list[tuple[str, str]]) -> str:
    """The thread kind of the outermost frame that names one, then the innermost step within."""
    for start, (_, file) in enumerate(frames):
        found = next(((kind, steps) for kind, root, steps in THREADS if root in file), None)
        if found is not None:
            break
    else:
        return "other (interpreter, threading)"
    kind, steps = found
    inner = frames[start:][::-1]  # innermost first
    for step, key in steps:
        if any(_hit(key, func, file) for func, file in inner):
            return f"{kind}: {step}"
    return f"{kind}: other"


def package_of(file: str) -> str:
    f = file.replace("\\", "/")
    for name in ("edge_agent/", "pymodbus/", "paho/", "json/", "sqlite3/", "lzma", "logging/", "threading",
                 "selectors", "socket", "ssl"):
        if name in f:
            if name == "edge_agent/":
                rest = f.split("edge_agent/", 1)[1]
                return "edge_agent/" + rest.split("/")[0].removesuffix(".py")
            return name.rstrip("/")
    return f.rsplit("/", 1)[-1] or "?"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", default="W2", help="W1, W2, W3 or W10ms (default W2)")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--rate", type=int, default=250, help="samples a second (default 250)")
    ap.add_argument("--py-spy", default=None, help="a py-spy binary (default: installed into /tmp/py-spy-venv)")
    ap.add_argument("--edge-at", default=None, metavar="REV", help="run the agent from this git revision")
    ap.add_argument("--raw", type=Path, default=None, help="also keep py-spy's raw stacks here")
    args = ap.parse_args()
    spy = ensure_py_spy(args.py_spy)
    plan = Plan(quick=False, seconds=args.seconds)
    with tempfile.TemporaryDirectory(prefix="bench-cpu-") as tmp:
        source = export_revision(args.edge_at, Path(tmp) / "edge-source") if args.edge_at else None
        with Run(Path(tmp), "edge", args.workload, None, source) as run:
            run.start_and_warm(plan.warmup)
            pid = run.gw.pid
            # without the profiler first, then with it, same process
            t0, c0 = time.monotonic(), cpu_seconds(pid) or 0.0
            time.sleep(args.seconds)
            t1, c1 = time.monotonic(), cpu_seconds(pid) or 0.0
            bare = run.figures(t0, t1)
            raw_path = Path(tmp) / "stacks.txt"
            c2 = cpu_seconds(pid) or 0.0
            t2 = time.monotonic()
            subprocess.run([spy, "record", "--pid", str(pid), "--duration", str(int(args.seconds)),
                            "--rate", str(args.rate), "--format", "raw", "--nonblocking", "--output",
                            str(raw_path)], check=True, capture_output=True)
            t3, c3 = time.monotonic(), cpu_seconds(pid) or 0.0
            profiled = run.figures(t2, t3)
            raw = raw_path.read_text()
            if args.raw:
                args.raw.write_text(raw)
    stacks = parse(raw)
    # a thread blocked in a lock's acquire (Condition.wait, Event.wait) can be sampled as active
    # by --nonblocking sampling: such samples are waiting, not CPU, and are left out of the shares
    waiting = sum(n for frames, n in stacks if frames and frames[-1][0] in IDLE_LEAVES)
    stacks = [(frames, n) for frames, n in stacks if frames and frames[-1][0] not in IDLE_LEAVES]
    total = sum(n for _, n in stacks) or 1
    by_stage: collections.Counter[str] = collections.Counter()
    by_package: collections.Counter[str] = collections.Counter()
    by_leaf: collections.Counter[str] = collections.Counter()
    for frames, n in stacks:
        by_stage[stage_of(frames)] += n
        func, file = frames[-1]
        by_package[package_of(file)] += n
        by_leaf[f"{func} ({package_of(file)})"] += n
    per_1000 = (c1 - c0) * 1000 / max(1, bare["delivered"])
    per_1000_spy = (c3 - c2) * 1000 / max(1, profiled["delivered"])
    print(f"{args.workload}: {bare['delivered'] / (t1 - t0):,.0f} values/s delivered; CPU {100 * (c1 - c0) / (t1 - t0):.0f}% "
          f"of one core, {per_1000:.4f} CPU-s per 1,000 values (under py-spy: {per_1000_spy:.4f}); "
          f"{total:,} samples at {args.rate}/s over {args.seconds:.0f} s ({waiting:,} more in a lock's wait, "
          "left out)")
    for title, counter, top in (("by stage (inclusive)", by_stage, 20), ("by package (leaf)", by_package, 15),
                                ("top functions (leaf)", by_leaf, 25)):
        print(f"\n{title}:")
        for name, n in counter.most_common(top):
            print(f"  {100 * n / total:5.1f}%  {per_1000 * n / total:.4f} CPU-s/1k  {name}")
    summary(f"{per_1000:.4f} CPU-s per 1,000 values at {args.workload}",
            "- (the shares above say where it goes)", "-", f"<= {GOAL} CPU-s per 1,000 values", per_1000 <= GOAL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
