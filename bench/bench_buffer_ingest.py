"""Buffer ingest and drain rates against raw sqlite3 on the same disk (run on demand, not a test).

    .venv/bin/python bench/bench_buffer_ingest.py [--quick] [-n 200000] [--batch 1000] [--dir DIR]

Ingest: N readings through ``Buffer.append`` in batches, against raw ``executemany`` of the same
rows into a table of the same shape (same pragmas, same partial index, one transaction per
batch). Two raw baselines: "raw+json" does the same work from the same Reading objects (JSON
encoding inside the timed loop; its drain parses the bodies back into dicts, as ``pending``
must), "raw" is the database alone (rows prepared beforehand, bodies left as text).
Goal: Buffer ingest >= 60% of raw+json (the same work); the ratio to "raw" (the database
alone) is printed beside it, with its own verdict. Drain: ``pending(batch)`` + ``mark_sent``
until empty (shown, no goal).
Medians of ``--repeat`` runs; this machine is noisy, so compare ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import summary  # noqa: E402

from edge_agent.buffer.file import PAGE_SIZE  # noqa: E402
from edge_agent.buffer.outbox import Buffer  # noqa: E402
from edge_agent.model import Reading  # noqa: E402

GOAL = 0.60
SCHEMA = """
CREATE TABLE outbox (id INTEGER PRIMARY KEY, prio INTEGER NOT NULL, kind TEXT NOT NULL,
                     ts INTEGER NOT NULL, body TEXT NOT NULL, seq INTEGER, sent_to INTEGER);
CREATE INDEX outbox_prio ON outbox (prio, id) WHERE prio > 0;
"""


def readings(n: int) -> list[Reading]:
    base = 1732380000000
    return [Reading(f"river-{i % 7}", "level_m", round(1 + (i % 1000) / 1000, 3), base + i) for i in range(n)]


def fresh(directory: Path, name: str) -> Path:
    path = directory / name
    for suffix in ("", "-wal", "-shm", ".ids", ".lock"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return path


def raw_connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.executescript(SCHEMA)
    return conn


def bench_buffer(path: Path, items: list[Reading], batch: int) -> tuple[float, float]:
    with Buffer(path) as buf:
        t0 = time.perf_counter()
        for i in range(0, len(items), batch):
            buf.append(items[i:i + batch])
        ingest = time.perf_counter() - t0
        t0 = time.perf_counter()
        while rows := buf.pending(batch):
            buf.mark_sent([r.id for r in rows])
        drain = time.perf_counter() - t0
    return len(items) / ingest, len(items) / drain


def bench_raw(path: Path, items: list[Reading], batch: int, encode_in_loop: bool) -> tuple[float, float]:
    conn = raw_connect(path)
    enc = json.JSONEncoder(ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    prepared = None if encode_in_loop else [(0, "reading", r.ts, enc.encode(r.to_wire())) for r in items]
    t0 = time.perf_counter()
    for i in range(0, len(items), batch):
        if prepared is None:
            rows = [(i + k + 1, 0, "reading", r.ts, enc.encode(r.to_wire()))
                    for k, r in enumerate(items[i:i + batch])]
        else:
            rows = [(i + k + 1, *row) for k, row in enumerate(prepared[i:i + batch])]
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO outbox (id, prio, kind, ts, body) VALUES (?, ?, ?, ?, ?)", rows)
        conn.execute("COMMIT")
    ingest = time.perf_counter() - t0
    t0 = time.perf_counter()
    cursor = 0
    while rows := conn.execute("SELECT id, prio, kind, ts, body FROM outbox WHERE id > ?"
                               " ORDER BY id LIMIT ?", (cursor, batch)).fetchall():
        cursor = rows[-1][0]
        if encode_in_loop:  # the uplink needs the wire dicts, as pending() gives them
            [{"id": r[0], **json.loads(r[4])} for r in rows]
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("DELETE FROM outbox WHERE id = ?", [(r[0],) for r in rows])
        conn.execute("COMMIT")
    drain = time.perf_counter() - t0
    conn.close()
    return len(items) / ingest, len(items) / drain


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="50,000 readings, one run")
    ap.add_argument("-n", type=int, default=None, help="readings (default 200000)")
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=None, help="runs, median shown (default 3)")
    ap.add_argument("--dir", type=Path, default=None, help="where to put the files (default: a temp dir)")
    args = ap.parse_args()
    args.n = args.n or (50_000 if args.quick else 200_000)
    args.repeat = args.repeat or (1 if args.quick else 3)
    items = readings(args.n)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        directory = Path(tmp)
        results: dict[str, list[tuple[float, float]]] = {"buffer": [], "raw+json": [], "raw": []}
        for _ in range(args.repeat):  # interleaved, so drift on a shared machine hits all three
            results["buffer"].append(bench_buffer(fresh(directory, "buf.db"), items, args.batch))
            results["raw+json"].append(bench_raw(fresh(directory, "rawj.db"), items, args.batch, True))
            results["raw"].append(bench_raw(fresh(directory, "raw.db"), items, args.batch, False))
    med = {k: (statistics.median(a for a, _ in v), statistics.median(b for _, b in v)) for k, v in results.items()}
    print(f"{args.n} readings, batches of {args.batch}, median of {args.repeat}, dir {args.dir or 'tmp'}")
    print(f"{'':10} {'ingest/s':>10} {'drain/s':>10}")
    for name, (ingest, drain) in med.items():
        print(f"{name:10} {ingest:>10,.0f} {drain:>10,.0f}")
    b = med["buffer"]
    for base in ("raw+json", "raw"):
        print(f"buffer / {base}: ingest {b[0] / med[base][0]:.0%}, drain {b[1] / med[base][1]:.0%}")
    strict = b[0] / med["raw"][0]
    print(f"strict    buffer ingest >= 60% of raw (database alone, bodies pre-encoded): {strict:.0%}, "
          f"{'met' if strict >= GOAL else 'NOT met'}")
    ratio = b[0] / med["raw+json"][0]
    summary(f"{b[0]:,.0f} readings/s into Buffer.append, batches of {args.batch}",
            f"{med['raw+json'][0]:,.0f} readings/s: raw sqlite3 executemany, same rows, JSON encoded in the loop",
            f"{ratio:.0%} of raw+json", f"buffer ingest >= {GOAL:.0%} of raw sqlite3 doing the same work",
            ratio >= GOAL)


if __name__ == "__main__":
    main()
