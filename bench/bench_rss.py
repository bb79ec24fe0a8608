"""Resident memory of the real agent as its backlog grows to 1,000,000 values and drains (on demand).

    .venv/bin/python bench/bench_rss.py [--quick] [--levels 0,100000,500000,1000000] [--hold 20] [--points 20]

The agent runs as a subprocess (``python -m edge_agent.cli run -c CFG``) polling 50 simulated
devices (one ``edge-agent simulate modbus`` process, units 1-50 alternating qdy_level and
eastron_meter, 1 s interval: ~275 readings/s) with the broker DOWN, so its backlog grows.
Polling alone would take an hour to reach 1M rows, so the backlog is taken to each level by
pre-filling the buffer (Buffer.append, batches of 5,000 values in records of ``--points`` values,
20 by default as the side-by-side bench's polls; 1 is a record per value, the rows of before
issue 13; levels count values) while the agent is stopped, then the
agent runs for ``--hold`` seconds at that level. At the last level the broker comes up and the
same process drains the backlog. VmRSS (/proc/PID/status) is sampled every second.
Baseline: a bare ``python -c "import edge_agent.agent.daemon"``.
Goal: <= 40 MB (MiB of VmRSS) at every point, and flat: slope <= 0.5 MiB per 100k values of backlog,
measured over the pre-filled levels (the near-empty start is shown, not fitted).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from _common import (Mosquitto, RssSampler, bare_import_rss_mb, buffer_path, free_port, log_tail, median, prefill,
                     slope, start_agent, start_simulator, status, summary, write_config)

UNITS = [(u, "qdy_level" if u % 2 else "eastron_meter") for u in range(1, 51)]
DRAINED = 300  # pending records below this count as drained (live polls keep arriving: ~50 records a second)
DRAIN_LIMIT_S = 900.0
GOAL_MB, GOAL_SLOPE = 40.0, 0.5


def run_level(cfg: Path, log: Path, hold: float, broker_port: int, drain: bool, level: int) -> list[dict]:
    """Start the agent, hold at this backlog with the broker down (then drain), stop it."""
    agent = start_agent(cfg, log)
    rows = []
    try:
        with RssSampler(agent.pid) as rss:
            deadline = time.monotonic() + hold
            while time.monotonic() < deadline:
                if agent.popen.poll() is not None:
                    raise RuntimeError(f"the agent exited ({agent.popen.returncode}):\n{log_tail(log)}")
                time.sleep(0.5)
            backlog = status(cfg)["pending"]
            start = next((v for t, v in rss.samples if t >= 3), rss.samples[-1][1])
            steady = median(rss.values(since=rss.samples[-1][0] - 5))
            rows.append({"phase": "broker down", "backlog": f"{backlog:,} records", "n": level, "start": start,
                         "steady": steady, "max": max(rss.values())})
            if drain:
                since = rss.samples[-1][0]
                with Mosquitto(log.parent, port=broker_port):
                    t0 = time.monotonic()
                    while (left := status(cfg)["pending"]) >= DRAINED:
                        if time.monotonic() - t0 > DRAIN_LIMIT_S:
                            print(f"  gave up draining after {DRAIN_LIMIT_S:.0f} s: {left:,} left")
                            break
                        time.sleep(1.0)
                    took = time.monotonic() - t0
                    time.sleep(3)  # a few samples after the drain
                values = rss.values(since=since)
                rows.append({"phase": f"draining ({took:.0f} s)", "backlog": f"{backlog:,} -> {left:,}",
                             "n": None, "start": values[0], "steady": median(values[-3:]), "max": max(values)})
    finally:
        agent.stop()
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="levels 0,50000,200000, 10 s each")
    ap.add_argument("--levels", default=None, help="backlog levels, comma-separated (default 0,100000,500000,1000000)")
    ap.add_argument("--hold", type=float, default=None, help="seconds at each level (default 20)")
    ap.add_argument("--points", type=int, default=20, help="values a pre-filled record (default 20)")
    args = ap.parse_args()
    levels = [int(x) for x in (args.levels or ("0,50000,200000" if args.quick else "0,100000,500000,1000000")).split(",")]
    hold = args.hold or (10.0 if args.quick else 20.0)
    base = bare_import_rss_mb()
    print(f"agent with {len(UNITS)} simulated devices at 1 s, broker down; backlog levels {levels}, "
          f"{hold:.0f} s each; then the broker comes up and the last level drains")
    print(f"{'phase':<18} {'backlog':>22} {'RSS start':>10} {'steady':>8} {'max':>8}   (MiB)", flush=True)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-rss-") as tmp:
        directory = Path(tmp)
        sim, _, sim_port = start_simulator(UNITS)
        try:
            broker_port = free_port()
            cfg = write_config(directory, broker_port=broker_port, sim_port=sim_port, devices=UNITS,
                               interval="1s", max_bytes="1GiB")
            filled = 0
            for i, level in enumerate(levels):
                have = filled  # values pre-filled (the agent's own polls add ~1,000 records a level)
                if level > have:
                    t0 = time.perf_counter()
                    prefill(buffer_path(directory), level - have, start=filled, points=args.points)
                    filled += level - have
                    print(f"  (pre-filled {level - have:,} values in {time.perf_counter() - t0:.1f} s)", flush=True)
                for row in run_level(cfg, directory / "agent.log", hold, broker_port, drain=i == len(levels) - 1,
                                     level=level):
                    rows.append({**row, "level": level})
                    print(f"{row['phase']:<18} {row['backlog']:>22} {row['start']:>10.1f} {row['steady']:>8.1f} "
                          f"{row['max']:>8.1f}", flush=True)
        finally:
            sim.stop()
    down = [r for r in rows if r["n"] is not None]
    grown = [r for r in down if r["level"] > 0] if sum(r["level"] > 0 for r in down) >= 2 else down
    per_100k = slope([r["n"] for r in grown], [r["steady"] for r in grown]) * 100_000
    every = slope([r["n"] for r in down], [r["steady"] for r in down]) * 100_000
    peak = max(r["max"] for r in rows)
    print(f"slope of steady RSS over backlog: {per_100k:+.2f} MiB per 100k values over the pre-filled levels "
          f"({every:+.2f} counting the near-empty start, where SQLite's page cache, 2 MB by default, is filling)")
    summary(f"max RSS {peak:.1f} MiB; {per_100k:+.2f} MiB per 100k values of backlog",
            f"{base:.1f} MiB: bare python -c 'import edge_agent.agent.daemon'",
            f"{peak / base:.2f}x the bare import", f"max <= {GOAL_MB:.0f} MiB and slope <= {GOAL_SLOPE} MiB per 100k values",
            peak <= GOAL_MB and per_100k <= GOAL_SLOPE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
