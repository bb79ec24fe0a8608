"""Critical-event latency while a 1,000,000-reading backlog drains (run on demand, not a test).

    .venv/bin/python bench/bench_critical_latency.py [--quick] [-n 1000000] [--events 100]
        [--commit-interval 0.2]

In one process, Buffer + BufferWriter + Uplink wired as daemon.py wires them (the writer's
commits wake the uplink), over a buffer pre-filled with N readings (Buffer.append, batches of
5,000), draining to a local mosquitto at the default MQTT settings. Every 100 ms a critical
Event (Priority.CRITICAL, ts = now) goes through ``writer.put``; a subscriber in a separate
process stamps its arrival. Latency = arrival - put, over the events put while the backlog
drains; the baseline is the same with an empty buffer. The backlog drains in ~10 s here, so
the 1,000,000-row file is built once and each drain starts from a fresh copy of it, until at
least ``--events`` events are pooled (at most 5 drains). Goal: p99 < 200 ms.

"Poll to broker" here starts at the writer's put: the poll itself (the bus time) is not in
these figures, since no driver produces events yet. Put -> commit is the writer's group
commit (commit_interval); commit -> arrival is the uplink's critical lane and the broker.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import PY, ROOT, Mosquitto, Proc, percentiles, prefill, summary

from edge_agent.buffer.outbox import Buffer
from edge_agent.model import Event, Priority
from edge_agent.settings import BufferSettings, GatewaySettings, MqttSettings
from edge_agent.uplink.drain import Uplink
from edge_agent.buffer.writer import BufferWriter

PERIOD_S = 0.1
DRAIN_LIMIT_S = 600.0  # bounded, whatever happens
MAX_DRAINS = 5  # drains of the same pre-filled file, until enough events are pooled
DEFAULT_CI = BufferSettings(path=Path("x")).commit_interval_s


class Arrivals:
    """Reads "ID SEQ ARRIVAL_NS" lines from the subscriber process."""

    def __init__(self, proc: Proc) -> None:
        self.proc = proc
        self.by_seq: dict[int, tuple[int, int]] = {}  # seq -> (id, arrival ns)
        self.ready = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self.proc.popen.stdout:  # type: ignore[union-attr]
            if line.startswith("ready"):
                self.ready.set()
                continue
            parts = line.split()
            if len(parts) == 3:
                self.by_seq.setdefault(int(parts[1]), (int(parts[0]), int(parts[2])))


def one_run(directory: Path, template: Path | None, n: int, events: int, commit_interval: float) -> dict:
    """One drain of a copy of ``template`` (n readings), or the empty-buffer baseline."""
    path = directory / "buffer.db"
    for suffix in ("", "-wal", "-shm", ".ids", ".lock"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
        if template is not None and Path(f"{template}{suffix}").exists():
            shutil.copyfile(f"{template}{suffix}", f"{path}{suffix}")
    buf = Buffer(path).open()
    commits: dict[int, int] = {}  # id -> commit ns
    put_ns: dict[int, int] = {}  # seq -> put ns
    during: list[int] = []  # seqs put while the backlog was draining
    with Mosquitto(directory) as broker:
        gw = GatewaySettings(id="gw-bench", site="bench", state_dir=directory)
        uplink = Uplink(MqttSettings(host=broker.host, port=broker.port), gw, buf)
        sub = Arrivals(Proc([PY, str(ROOT / "bench" / "_common.py"), "subscribe", broker.host,
                             str(broker.port), uplink.topics.events], stdout_pipe=True))

        def on_commit(ids: list[int]) -> None:
            now = time.time_ns()
            for i in ids:
                commits[i] = now
            uplink.wake()

        writer = BufferWriter(buf, commit_interval_s=commit_interval, on_commit=on_commit)
        try:
            if not sub.ready.wait(10):
                raise RuntimeError("the subscriber got no SUBACK")
            writer.start()
            uplink.start()
            while not uplink.connected:
                time.sleep(0.001)
            t_start, seq = time.monotonic(), 0
            next_at = t_start
            while time.monotonic() - t_start < DRAIN_LIMIT_S:
                readings_acked = uplink.stats().acked_items - len(sub.by_seq)
                draining = n > 0 and readings_acked < n
                if not draining and (n > 0 or seq >= events):
                    break
                now_ns = time.time_ns()
                writer.put([Event("bench", "sos", Priority.CRITICAL, now_ns // 1_000_000, {"seq": seq})])
                put_ns[seq] = now_ns
                if draining or n == 0:
                    during.append(seq)
                seq += 1
                next_at += PERIOD_S
                time.sleep(max(0.0, next_at - time.monotonic()))
            drain_s = time.monotonic() - t_start
            deadline = time.monotonic() + 10
            while len(sub.by_seq) < seq and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            writer.stop()
            uplink.stop()
            sub.proc.stop()
    pending = buf.stats().pending
    buf.close()
    lat, to_commit, to_arrive = [], [], []
    for s in during:
        if s in sub.by_seq:
            ident, arrived = sub.by_seq[s]
            lat.append((arrived - put_ns[s]) / 1e6)
            if ident in commits:
                to_commit.append((commits[ident] - put_ns[s]) / 1e6)
                to_arrive.append((arrived - commits[ident]) / 1e6)
    return {"n": n, "put": len(during), "lat": lat, "commit": to_commit, "arrive": to_arrive,
            "missing": len(during) - len(lat), "drain_s": drain_s, "pending": pending}


def show(name: str, r: dict) -> None:
    def row(label: str, values: list[float]) -> str:
        p = percentiles(values, (50, 95, 99, 100))
        return f"  {label:<18} " + " ".join(f"{p[q]:>8.1f}" for q in (50, 95, 99, 100))

    print(f"{name}: {len(r['lat'])} events of {r['put']} arrived ({r['missing']} missing)", end="")
    if r["n"]:
        print(f"; {r['n']:,} readings drained in {r['drain_s']:.1f} s ({r['n'] / r['drain_s']:,.0f}/s),"
              f" {r['pending']} left", end="")
    print(f"\n  {'ms':<18} {'p50':>8} {'p95':>8} {'p99':>8} {'max':>8}")
    print(row("put -> arrival", r["lat"]))
    print(row("  put -> commit", r["commit"]))
    print(row("  commit -> arrival", r["arrive"]), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="500,000 readings, 50 events")
    ap.add_argument("-n", type=int, default=None, help="readings in the backlog (default 1,000,000)")
    ap.add_argument("--events", type=int, default=None, help="at least this many events (default 100)")
    ap.add_argument("--commit-interval", type=float, default=DEFAULT_CI,
                    help=f"the writer's commit_interval in seconds (default {DEFAULT_CI}, the config default)")
    args = ap.parse_args()
    n = args.n if args.n is not None else (500_000 if args.quick else 1_000_000)
    events = args.events if args.events is not None else (50 if args.quick else 100)
    print(f"critical events every {PERIOD_S * 1000:.0f} ms through BufferWriter.put -> Uplink -> mosquitto; "
          f"commit_interval {args.commit_interval * 1000:.0f} ms; MQTT defaults (batch_max 500, inflight 20)")
    print('"poll to broker" starts at the writer\'s put: the poll\'s bus time is not included '
          "(no driver produces events yet)", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-critical-") as tmp:
        directory = Path(tmp)
        base = one_run(directory, None, 0, events, args.commit_interval)
        show("baseline, empty buffer", base)
        template = directory / "template" / "buffer.db"
        t0 = time.perf_counter()
        prefill(template, n)
        print(f"pre-filled {n:,} readings once in {time.perf_counter() - t0:.1f} s; each drain starts "
              f"from a copy", flush=True)
        drains: list[dict] = []
        while len(drains) < MAX_DRAINS and sum(len(d["lat"]) for d in drains) < events:
            drains.append(one_run(directory, template, n, events, args.commit_interval))
            show(f"drain {len(drains)} of {n:,} readings", drains[-1])
    pooled = {k: [v for d in drains for v in d[k]] for k in ("lat", "commit", "arrive")}
    pooled.update(n=0, put=sum(d["put"] for d in drains), missing=sum(d["missing"] for d in drains))
    if len(drains) > 1:
        show(f"pooled over {len(drains)} drains", pooled)
    p_drain = percentiles(pooled["lat"], (99,))[99]
    p_base = percentiles(base["lat"], (99,))[99]
    enough = len(pooled["lat"]) >= events and pooled["missing"] == 0
    if not enough:
        print(f"note: {len(pooled['lat'])} events arrived during {len(drains)} drains (wanted {events}, "
              f"{pooled['missing']} missing)")
    summary(f"p99 {p_drain:.1f} ms put -> arrival over {len(pooled['lat'])} critical events while "
            f"{n:,} readings drain ({len(drains)} drain(s))", f"p99 {p_base:.1f} ms with an empty buffer",
            f"{p_drain / p_base:.2f}x the empty-buffer p99", "p99 < 200 ms while the backlog drains",
            p_drain < 200 and enough)
    return 0


if __name__ == "__main__":
    sys.exit(main())
