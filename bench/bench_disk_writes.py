"""Bytes the agent writes to disk per value, against the value's share of its stored record (run on demand).

    .venv/bin/python bench/bench_disk_writes.py [--quick] [--seconds 60] [--rates 100,4000]
                                                [--intervals 200ms,1s,5s]

The real agent as a subprocess polls simulated eastron meters (10 points each, one record per
poll) over Modbus TCP and publishes to a local mosquitto (broker up: every record is inserted,
published, acked, marked sent and pruned). 100 values/s: 10 meters at 1 s; 4,000 values/s: 40
meters at 100 ms on two buses (two connections to the simulator). After a warm-up, the agent's
/proc/PID/io is read at the start and the end of ``--seconds``: ``write_bytes`` (a page counted
when it turns dirty) minus ``cancelled_write_bytes`` (dirty pages dropped before writeback, as
the truncated intake log's are: they never reach the card). Only the agent's own writes count.

Baseline: the value's share of its stored record: the average record body (compact ASCII JSON
without its id, measured on what the subscriber receives) + 17 bytes (id 8, prio 1, ts 8),
divided by the values in it. Goal: <= 3x that share, at 100 and at 4,000 values/s, at the
first commit_interval given.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

from _common import Mosquitto, io_counters, log_tail, start_agent, start_simulator, status, summary, write_config
from support.broker import Subscriber

WARMUP_S = 5.0
ROW_FIXED = 8 + 1 + 8  # id, prio, ts
GOAL = 3.0
WORKLOADS = {100: (10, "1s", 1), 4000: (40, "100ms", 2)}  # values/s -> (meters, interval, buses)


class BodySizes(Subscriber):
    """Counts telemetry messages, records, values, and the stored body length of each record."""

    def __init__(self, broker: Mosquitto, topic: str) -> None:
        super().__init__(broker, topic)
        self.lock = threading.Lock()
        self.n_messages = self.records = self.values = self.body_bytes = 0

    def _on_message(self, client, userdata, msg) -> None:  # type: ignore[no-untyped-def]
        recs = json.loads(msg.payload).get("recs", ())
        size = sum(len(json.dumps({k: v for k, v in r.items() if k != "id"}, separators=(",", ":"),
                                  ensure_ascii=True)) for r in recs)
        values = sum(len(r.get("vals", ())) for r in recs)
        with self.lock:
            self.n_messages += 1
            self.records += len(recs)
            self.values += values
            self.body_bytes += size

    def snapshot(self) -> tuple[int, int, int, int]:
        with self.lock:
            return self.n_messages, self.records, self.values, self.body_bytes


def config(run_dir: Path, broker: Mosquitto, sim_port: int, rate: int, interval: str) -> Path:
    meters, poll, buses = WORKLOADS[rate]
    cfg_path = write_config(run_dir, broker_port=broker.port, sim_port=sim_port,
                            devices=[(u, "eastron_meter") for u in range(1, meters + 1)], interval=poll,
                            commit_interval=interval)
    cfg = yaml.safe_load(cfg_path.read_text())
    bus = cfg["buses"][0]
    cfg["buses"] = [{**bus, "name": f"sim{b}"} for b in range(buses)]
    for i, device in enumerate(cfg["devices"]):
        device["bus"] = f"sim{i % buses}"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return cfg_path


def one_run(directory: Path, broker: Mosquitto, sub: BodySizes, sim_port: int, rate: int, interval: str,
            seconds: float) -> dict:
    run_dir = directory / f"{rate}-{interval}"
    run_dir.mkdir()
    cfg = config(run_dir, broker, sim_port, rate, interval)
    agent = start_agent(cfg, run_dir / "agent.log")
    try:
        deadline = time.monotonic() + 30
        while not (run_dir / "state" / "buffer.db").exists() or status(cfg)["next_id"] <= 1:
            if time.monotonic() > deadline or agent.popen.poll() is not None:
                raise RuntimeError(f"the agent committed nothing:\n{log_tail(run_dir / 'agent.log')}")
            time.sleep(0.5)
        time.sleep(WARMUP_S)
        io0, sub0 = io_counters(agent.pid), sub.snapshot()
        time.sleep(seconds)
        io1, sub1 = io_counters(agent.pid), sub.snapshot()
        pending = status(cfg)["pending"]
    finally:
        agent.stop()
    written = io1["write_bytes"] - io0["write_bytes"]
    dropped = io1["cancelled_write_bytes"] - io0["cancelled_write_bytes"]
    messages, records, values, body = (b - a for a, b in zip(sub0, sub1))
    share = (body + ROW_FIXED * records) / max(1, values)
    return {"rate": rate, "interval": interval, "values_s": values / seconds, "written": written, "dropped": dropped,
            "per_value": (written - dropped) / max(1, values), "gross": written / max(1, values), "share": share,
            "vals_per_rec": values / max(1, records), "messages": messages / seconds, "pending": pending}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="30 s per run")
    ap.add_argument("--seconds", type=float, default=None, help="measured seconds per run (default 60)")
    ap.add_argument("--rates", default="100,4000", help="values/s, of 100 and 4000 (default both)")
    ap.add_argument("--intervals", default="200ms",
                    help="commit_interval values; the first is the one held to the goal (default 200ms)")
    args = ap.parse_args()
    seconds = args.seconds or (30.0 if args.quick else 60.0)
    rates = [int(r) for r in args.rates.split(",")]
    intervals = args.intervals.split(",")
    print(f"agent polling simulated eastron meters (10 values a record), broker up; {seconds:.0f} s measured per "
          f"run after {WARMUP_S:.0f} s of warm-up")
    print(f"{'values/s':>8} {'commit_interval':>15} {'measured/s':>10} {'written B/val':>13} {'dropped':>8} "
          f"{'net B/val':>9} {'share B/val':>11} {'x share':>7} {'KiB/s net':>9} {'msgs/s':>7}", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-disk-") as tmp:
        directory = Path(tmp)
        sim, _, sim_port = start_simulator([(u, "eastron_meter") for u in range(1, max(
            WORKLOADS[r][0] for r in rates) + 1)])
        try:
            with Mosquitto(directory) as broker:
                sub = BodySizes(broker, "edge/v1/bench/gw-bench/telemetry").start()
                try:
                    for rate in rates:
                        for interval in intervals:
                            r = one_run(directory, broker, sub, sim_port, rate, interval, seconds)
                            results.append(r)
                            print(f"{rate:>8} {interval:>15} {r['values_s']:>10.0f} {r['gross']:>13.1f} "
                                  f"{r['dropped'] / max(1, r['values_s'] * seconds):>8.1f} {r['per_value']:>9.1f} "
                                  f"{r['share']:>11.1f} {r['per_value'] / r['share']:>7.1f} "
                                  f"{(r['written'] - r['dropped']) / seconds / 1024:>9.1f} {r['messages']:>7.1f}",
                                  flush=True)
                finally:
                    sub.stop()
        finally:
            sim.stop()
    held = [r for r in results if r["interval"] == intervals[0]]
    worst = max(held, key=lambda r: r["per_value"] / r["share"])
    summary(", ".join(f"{r['per_value']:.1f} B written per value at {r['rate']} values/s" for r in held)
            + f" (commit_interval {intervals[0]})",
            ", ".join(f"{r['share']:.1f} B share at {r['rate']}/s" for r in held)
            + f" (record body + {ROW_FIXED} B, per value; {held[0]['vals_per_rec']:.0f} values a record)",
            ", ".join(f"{r['per_value'] / r['share']:.1f}x at {r['rate']}/s" for r in held),
            f"<= {GOAL:.0f}x the value's share of its stored record, at every rate",
            worst["per_value"] / worst["share"] <= GOAL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
