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

``--sweep`` chooses the SQLite settings (``buffer/file.py``: PAGE_SIZE, WAL_AUTOCHECKPOINT,
WAL_LIMIT) by measurement, in this process: the real ``Buffer`` and ``BufferWriter`` (intake log
on) take eastron-like records from a producer thread, an uplink stand-in acks what it reads from
the live lane every 20 ms, housekeeping prunes every 5 s, as in the agent; the same bytes per
value, for each page size and checkpoint setting, at 100 and 4,000 values/s (``--seconds``, 40
by default, after a warm-up). Then, per page size, an outage: 60 s at 400 values/s with nothing
acked, and the disk it takes per buffered value (db + wal + shm), live and after a checkpoint.
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


# -- the sweep (in this process) ---------------------------------------------------------------
POINTS = ("voltage_V", "current_A", "power_W", "apparent_power_VA", "reactive_power_var", "power_factor",
          "frequency_Hz", "energy_import_kWh", "energy_export_kWh", "energy_total_kWh")


def meter_poll(n: int, ts: int) -> list:
    """One eastron-like poll: 10 float32 values of a meter (7 significant digits, as the driver
    decodes them: ~316 B of record body, as the real agent stores), one record."""
    from edge_agent.model import Reading

    return [Reading(f"eastron-{n % 40:02d}", pt, float(f"{50 + ((n * 7919 + k * 104729) % 1_000_000) / 997:.7g}"), ts,
                    clk_synced=n % 2 == 0) for k, pt in enumerate(POINTS)]  # half marked as on this unsynced machine


def sweep_run(directory: Path, page: int, checkpoint: int, wal_limit: int, rate: int, seconds: float,
              *, outage: bool = False, interval: float = 0.2) -> dict:
    """Bytes written per value (or, ``outage``, disk per buffered value) under one setting."""
    import os
    import resource

    from edge_agent.buffer import file as buffer_file
    from edge_agent.buffer.outbox import Buffer
    from edge_agent.buffer.writer import BufferWriter
    from edge_agent.model import Priority

    buffer_file.PAGE_SIZE, buffer_file.WAL_AUTOCHECKPOINT, buffer_file.WAL_LIMIT = page, checkpoint, wal_limit
    path = directory / f"p{page}-c{checkpoint}-{rate}-{'outage' if outage else 'up'}" / "buffer.db"
    stop = threading.Event()
    polls_per_s = rate / len(POINTS)
    counted = {"values": 0}
    with Buffer(path, max_bytes=2 * 1024**3) as buf:
        writer = BufferWriter(buf, commit_interval_s=interval, intake_log=True)
        writer.start()

        def produce() -> None:
            t0, n = time.monotonic(), 0
            while not stop.is_set():
                due = t0 + n / polls_per_s
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                writer.put(meter_poll(n, 1_764_000_000_000 + int((due - t0) * 1000)))
                counted["values"] += len(POINTS)
                n += 1

        def uplink() -> None:
            cursor = 0
            while not stop.wait(0.02):
                rows = buf.pending(500, prio=Priority.NORMAL, after_id=cursor)
                if rows:
                    buf.mark_sent([r.id for r in rows])
                    cursor = rows[-1].id

        def housekeeping() -> None:
            while not stop.wait(5.0):
                buf.prune()

        threads = [threading.Thread(target=f, daemon=True) for f in ((produce,) if outage else
                                                                     (produce, uplink, housekeeping))]
        for t in threads:
            t.start()
        time.sleep(3.0 if not outage else 0.0)  # warm-up
        io0, v0 = io_counters(os.getpid()), counted["values"]
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        time.sleep(seconds)
        io1, v1 = io_counters(os.getpid()), counted["values"]
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        sizes = sum(Path(f"{path}{s}").stat().st_size for s in ("", "-wal", "-shm") if Path(f"{path}{s}").exists())
        stop.set()
        for t in threads:
            t.join(10)
        assert writer.stop(30)
        stats = buf.stats()
        buffered = stats.pending
        share = stats.pending_bytes  # body bytes of what is pending (outage: everything)
        if outage:
            with buf._lock:  # noqa: SLF001 - a checkpoint, as the figure "after a checkpoint" asks
                buf._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # noqa: SLF001
            after = sum(Path(f"{path}{s}").stat().st_size for s in ("", "-wal", "-shm")
                        if Path(f"{path}{s}").exists())
            rows_per_page = buffered / max(1, after // page)
    values = v1 - v0
    net = (io1["write_bytes"] - io0["write_bytes"]) - (io1["cancelled_write_bytes"] - io0["cancelled_write_bytes"])
    out = {"page": page, "checkpoint": checkpoint, "rate": rate, "values": values, "net": net / max(1, values),
           "cpu_per_1k": (cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime) / max(1, values) * 1000}
    if outage:
        total_values = counted["values"]
        out.update(disk=sizes / max(1, total_values), after=after / max(1, total_values),
                   body=share / max(1, buffered * len(POINTS)), rows_per_page=rows_per_page)
    return out


def sweep(seconds: float, rates: list[int], parts: str = "writes,outage", only: str = "") -> int:
    """``--sweep``: the SQLite settings side by side (module docstring); ``only``: PAGE:PAGES,... instead."""
    settings = [(1024, 256, 256 * 1024), (2048, 128, 256 * 1024), (2048, 512, 1024**2), (4096, 64, 256 * 1024),
                (4096, 256, 1024**2)]
    if only:
        settings = [(int(pg), int(ck), int(pg) * int(ck)) for pg, ck in (x.split(":") for x in only.split(","))]
    print(f"in-process sweep: eastron-like records (10 values), intake log on, commit_interval 200 ms, acks every "
          f"20 ms, prune every 5 s; {seconds:.0f} s per run after 3 s of warm-up")
    print(f"{'page':>5} {'autocheckpoint':>14} {'WAL limit':>9} " + " ".join(f"{f'B/val @{r}':>10}" for r in rates)
          + f" {'CPU-s/1k @' + str(rates[-1]):>15}", flush=True)
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-sweep-", dir=Path(__file__).resolve().parent) as tmp:
        for page, checkpoint, limit in settings if "writes" in parts else ():
            row = [sweep_run(Path(tmp), page, checkpoint, limit, rate, seconds) for rate in rates]
            results[(page, checkpoint)] = row
            print(f"{page:>5} {checkpoint:>14} {limit // 1024:>7}Ki " + " ".join(f"{r['net']:>10.1f}" for r in row)
                  + f" {row[-1]['cpu_per_1k']:>15.4f}", flush=True)
        if "outage" not in parts:
            return 0
        print("outage, 60 s at 400 values/s, nothing acked: disk per buffered value (db + wal + shm)")
        print(f"{'page':>5} {'autocheckpoint':>14} {'live B/val':>10} {'checkpointed':>12} {'body B/val':>10} "
              f"{'rows/page':>9}")
        for page, checkpoint, limit in settings:
            r = sweep_run(Path(tmp), page, checkpoint, limit, 400, 60.0, outage=True)
            print(f"{page:>5} {checkpoint:>14} {r['disk']:>10.1f} {r['after']:>12.1f} {r['body']:>10.1f} "
                  f"{r['rows_per_page']:>9.2f}", flush=True)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="30 s per run")
    ap.add_argument("--sweep", action="store_true", help="choose the SQLite settings, in this process (docstring)")
    ap.add_argument("--parts", default="writes,outage", help="with --sweep: writes, outage or both (default)")
    ap.add_argument("--settings", default="", help="with --sweep: PAGE_SIZE:AUTOCHECKPOINT_PAGES,... to try instead")
    ap.add_argument("--seconds", type=float, default=None, help="measured seconds per run (default 60)")
    ap.add_argument("--rates", default="100,4000", help="values/s, of 100 and 4000 (default both)")
    ap.add_argument("--intervals", default="200ms",
                    help="commit_interval values; the first is the one held to the goal (default 200ms)")
    args = ap.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    if args.sweep:
        return sweep(args.seconds or (20.0 if args.quick else 40.0), rates, args.parts, args.settings)
    seconds = args.seconds or (30.0 if args.quick else 60.0)
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
