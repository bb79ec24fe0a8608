"""Crash safety levers weighed: group commit alone, a commit per poll, or the intake log (run on demand).

    .venv/bin/python bench/bench_intake_log.py [--quick] [--seconds 20]

In one process, the real ``Buffer`` and ``BufferWriter`` take polls at a steady rate from one
producer thread (a bus worker's stand-in): each poll is one record of 20 values (a 20-register
device), at 100 and at 4,000 values/s. For each lever: what the producer waits per poll (p50,
p99), the process's CPU per 1,000 values, the bytes it made the kernel write per value
(/proc/self/io ``write_bytes`` minus ``cancelled_write_bytes``: pages dropped before writeback,
which never reach the card) and what a kill -9 can lose:

- ``group 200ms``: today's group commit, no log: a kill -9 loses up to 200 ms of polls;
- ``per poll``: ``Buffer.append`` in the producer, one transaction per poll: loses nothing
  committed, and the poll waits for its commit;
- ``log + group 200ms`` / ``log + group 5s``: the intake log (one ``os.write`` per poll) and the
  group commit at 200 ms or 5 s: loses nothing written, whatever the interval.

Each run gets a fresh buffer in a fresh directory on the same file system as the project (not
tmpfs: it must be a real disk's accounting). No broker: what is measured is intake and commit.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, io_counters, percentiles, summary

from edge_agent.buffer.outbox import Buffer
from edge_agent.buffer.writer import BufferWriter
from edge_agent.model import Reading

VALUES_PER_POLL = 20
RATES = (100, 4000)  # values/s
LEVERS = ("group 200ms", "per poll", "log + group 200ms", "log + group 5s")


def poll(i: int, ts: int) -> list[Reading]:
    """One poll of a 20-register device: 20 values, one record."""
    return [Reading(f"dev-{i % 20:02d}", f"r{k}", (i * 7 + k * 13) % 65536, ts) for k in range(VALUES_PER_POLL)]


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run(directory: Path, lever: str, rate: int, seconds: float) -> dict:
    path = directory / f"{lever.replace(' ', '_').replace('+', '')}-{rate}" / "buffer.db"
    polls_per_s = rate / VALUES_PER_POLL
    gap = 1.0 / polls_per_s
    waits: list[float] = []
    with Buffer(path, max_bytes=2 * 1024**3) as buf:
        writer = None
        if lever != "per poll":
            interval = 5.0 if lever.endswith("5s") else 0.2
            writer = BufferWriter(buf, commit_interval_s=interval, intake_log=lever.startswith("log"))
            writer.start()
            sink = writer.put
        else:
            sink = buf.append
        io0, cpu0, t0 = io_counters(os.getpid()), cpu_s(), time.monotonic()
        n = 0
        while True:
            due = t0 + n * gap
            now = time.monotonic()
            if due - t0 >= seconds:
                break
            if due > now:
                time.sleep(due - now)
            items = poll(n, 1_764_000_000_000 + n)
            started = time.perf_counter()
            sink(items)
            waits.append(time.perf_counter() - started)
            n += 1
        if writer is not None:
            assert writer.stop(30)
        io1, cpu1 = io_counters(os.getpid()), cpu_s()
        pending = buf.stats().pending
    assert pending == n, f"{lever}: {pending} rows for {n} polls"
    values = n * VALUES_PER_POLL
    written = io1["write_bytes"] - io0["write_bytes"]
    cancelled = io1["cancelled_write_bytes"] - io0["cancelled_write_bytes"]
    p = percentiles([w * 1e6 for w in waits], (50, 99))
    return {"lever": lever, "rate": rate, "values": values, "wait50": p[50], "wait99": p[99],
            "cpu_per_1k": (cpu1 - cpu0) / values * 1000, "written": written, "cancelled": cancelled,
            "net_per_value": (written - cancelled) / values, "gross_per_value": written / values}


WINDOW = {"group 200ms": "<= 200 ms of polls", "per poll": "none committed", "log + group 200ms": "none written",
          "log + group 5s": "none written"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10 s per run")
    ap.add_argument("--seconds", type=float, default=None, help="seconds per run (default 20)")
    args = ap.parse_args()
    seconds = args.seconds or (10.0 if args.quick else 20.0)
    print(f"{VALUES_PER_POLL} values a poll (one record), one producer, {seconds:.0f} s per run, in {ROOT}")
    print(f"{'values/s':>8} {'lever':>18} {'put p50 us':>10} {'p99 us':>8} {'CPU-s/1k':>9} {'written B/val':>13} "
          f"{'dropped B/val':>13} {'net B/val':>9}  kill -9 loses")
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-intake-", dir=ROOT / "bench") as tmp:
        for rate in RATES:
            for lever in LEVERS:
                r = run(Path(tmp), lever, rate, seconds)
                results.append(r)
                print(f"{rate:>8} {lever:>18} {r['wait50']:>10.0f} {r['wait99']:>8.0f} {r['cpu_per_1k']:>9.4f} "
                      f"{r['gross_per_value']:>13.1f} {r['cancelled'] / r['values']:>13.1f} "
                      f"{r['net_per_value']:>9.1f}  {WINDOW[lever]}", flush=True)
    by = {(r["rate"], r["lever"]): r for r in results}
    for rate in RATES:
        log, per_poll, base = by[(rate, "log + group 200ms")], by[(rate, "per poll")], by[(rate, "group 200ms")]
        print(f"at {rate} values/s: the intake log costs +{log['net_per_value'] - base['net_per_value']:.1f} B/value "
              f"and +{(log['cpu_per_1k'] - base['cpu_per_1k']) * 1000:.1f} ms CPU per 1k values over the group "
              f"commit alone; a commit per poll costs "
              f"{per_poll['net_per_value'] / max(0.1, log['net_per_value']):.1f}x "
              f"its bytes and {per_poll['cpu_per_1k'] / max(1e-9, log['cpu_per_1k']):.1f}x its CPU")
    hi_log, hi_poll = by[(RATES[-1], "log + group 200ms")], by[(RATES[-1], "per poll")]
    summary(f"intake log + 200 ms group commit at {RATES[-1]} values/s: {hi_log['net_per_value']:.1f} B and "
            f"{hi_log['cpu_per_1k']:.4f} CPU-s per 1k values, kill -9 loses none",
            f"a commit per poll: {hi_poll['net_per_value']:.1f} B and {hi_poll['cpu_per_1k']:.4f} CPU-s per 1k values",
            f"{hi_poll['net_per_value'] / max(0.1, hi_log['net_per_value']):.1f}x the bytes, "
            f"{hi_poll['cpu_per_1k'] / max(1e-9, hi_log['cpu_per_1k']):.1f}x the CPU for the commit per poll",
            "crash safety without more bytes written than the group commit alone (+<= 10%)",
            hi_log["net_per_value"] <= 1.1 * by[(RATES[-1], "group 200ms")]["net_per_value"] + 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
