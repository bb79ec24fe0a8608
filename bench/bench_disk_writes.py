"""Bytes the agent writes to disk per reading, against the reading's logical size (run on demand).

    .venv/bin/python bench/bench_disk_writes.py [--quick] [--seconds 60] [--intervals 200ms,50ms,1s]

The real agent as a subprocess polls 10 simulated eastron_meter units (10 points each, 1 s
interval: ~100 readings/s) over Modbus TCP and publishes to a local mosquitto (broker up, so
every reading is inserted, published, acked, marked sent, and pruned a few seconds later). After a warm-up, ``write_bytes`` of
the agent's /proc/PID/io is read at the start and the end of ``--seconds``; the readings
committed in between are the difference of ``edge-agent status --json`` next_id. Only the
agent's own writes count (not the broker's, not the status command's).

Baseline: the logical row size, average stored JSON body (compact ASCII JSON of the reading
without its id, measured on what the subscriber receives) + 8 bytes id + 1 prio + 8 ts.
Goal: <= 3x the logical size at the default commit_interval (200ms); 50ms and 1s are shown
as the main lever (one WAL frame is a whole 4 KiB page, however few rows changed in it).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import Mosquitto, io_counters, log_tail, start_agent, start_simulator, status, summary, write_config
from support.broker import Subscriber

UNITS = [(u, "eastron_meter") for u in range(1, 11)]
WARMUP_S = 5.0
ROW_FIXED = 8 + 1 + 8  # id, prio, ts
GOAL = 3.0


class BodySizes(Subscriber):
    """Counts telemetry messages and readings, and the stored body length of each reading."""

    def __init__(self, broker: Mosquitto, topic: str) -> None:
        super().__init__(broker, topic)
        self.lock = threading.Lock()
        self.n_messages = self.readings = self.body_bytes = 0

    def _on_message(self, client, userdata, msg) -> None:  # type: ignore[no-untyped-def]
        rows = json.loads(msg.payload).get("readings", ())
        size = sum(len(json.dumps({k: v for k, v in r.items() if k != "id"}, separators=(",", ":"),
                                  ensure_ascii=True)) for r in rows)
        with self.lock:
            self.n_messages += 1
            self.readings += len(rows)
            self.body_bytes += size

    def snapshot(self) -> tuple[int, int, int]:
        with self.lock:
            return self.n_messages, self.readings, self.body_bytes


def one_run(directory: Path, broker: Mosquitto, sub: BodySizes, sim_port: int, interval: str,
            seconds: float) -> dict:
    run_dir = directory / interval
    run_dir.mkdir()
    cfg = write_config(run_dir, broker_port=broker.port, sim_port=sim_port, devices=UNITS, interval="1s",
                       commit_interval=interval)
    agent = start_agent(cfg, run_dir / "agent.log")
    try:
        deadline = time.monotonic() + 30
        while not (run_dir / "state" / "buffer.db").exists() or status(cfg)["next_id"] <= 1:
            if time.monotonic() > deadline or agent.popen.poll() is not None:
                raise RuntimeError(f"the agent committed nothing:\n{log_tail(run_dir / 'agent.log')}")
            time.sleep(0.5)
        time.sleep(WARMUP_S)
        id0, io0, sub0 = status(cfg)["next_id"], io_counters(agent.pid), sub.snapshot()
        time.sleep(seconds)
        id1, io1, sub1 = status(cfg)["next_id"], io_counters(agent.pid), sub.snapshot()
        pending = status(cfg)["pending"]
    finally:
        agent.stop()
    committed = id1 - id0
    written = io1["write_bytes"] - io0["write_bytes"]
    messages, readings, body = (b - a for a, b in zip(sub0, sub1))
    return {"interval": interval, "committed": committed, "rate": committed / seconds, "written": written,
            "per_reading": written / max(1, committed), "body": body / max(1, readings),
            "messages": messages / seconds, "pending": pending}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="30 s per commit interval")
    ap.add_argument("--seconds", type=float, default=None, help="measured seconds per run (default 60)")
    ap.add_argument("--intervals", default="200ms,50ms,1s",
                    help="commit_interval values; the first is the one held to the goal (default 200ms,50ms,1s)")
    args = ap.parse_args()
    seconds = args.seconds or (30.0 if args.quick else 60.0)
    intervals = args.intervals.split(",")
    print(f"agent polling {len(UNITS)} simulated eastron meters at 1 s (~100 readings/s), broker up; "
          f"{seconds:.0f} s measured per commit_interval after {WARMUP_S:.0f} s of warm-up")
    print(f"{'commit_interval':>15} {'readings/s':>10} {'write_bytes':>12} {'B/reading':>10} {'row B':>6} "
          f"{'x row':>6} {'KiB/s':>6} {'msgs/s':>7} {'B/msg':>7}", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-disk-") as tmp:
        directory = Path(tmp)
        sim, _, sim_port = start_simulator(UNITS)
        try:
            with Mosquitto(directory) as broker:
                sub = BodySizes(broker, "edge/v1/bench/gw-bench/telemetry").start()
                try:
                    for interval in intervals:
                        r = one_run(directory, broker, sub, sim_port, interval, seconds)
                        r["row"] = r["body"] + ROW_FIXED
                        results.append(r)
                        print(f"{interval:>15} {r['rate']:>10.1f} {r['written']:>12,} {r['per_reading']:>10,.0f} "
                              f"{r['row']:>6.0f} {r['per_reading'] / r['row']:>6.1f} {r['written'] / seconds / 1024:>6.1f} "
                              f"{r['messages']:>7.1f} {r['written'] / max(1.0, r['messages'] * seconds):>7,.0f}", flush=True)
                finally:
                    sub.stop()
        finally:
            sim.stop()
    print("B/msg: write_bytes per published message; each live message is about one group commit (insert)"
          " plus one mark_sent, each writing whole 4 KiB pages to the WAL")
    main_run = results[0]
    ratio = main_run["per_reading"] / main_run["row"]
    summary(f"{main_run['per_reading']:,.0f} bytes written per reading at commit_interval {main_run['interval']} "
            f"({main_run['rate']:.0f} readings/s)",
            f"{main_run['row']:.0f} bytes logical row (body {main_run['body']:.0f} + id, prio, ts {ROW_FIXED})",
            f"{ratio:.1f}x the logical row", f"<= {GOAL:.0f}x the logical row at commit_interval "
            f"{main_run['interval']}", ratio <= GOAL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
