"""Eviction: which rows leave a full buffer, in what order, and when. A part of the buffer.

Order, fixed (issue "store-and-forward that loses nothing"): (a) sent rows kept for
retention, oldest sent first; (b) unsent ``normal``, lowest id first; (c) unsent ``high``;
(d) unsent ``critical`` last. A lane is touched only when every lane before it is empty. Only
rows below a given id are candidates: the batch being committed is never evicted to make room
for itself, so new data always goes in and a cap smaller than one commit cannot loop.

``delete_chunk`` deletes up to ``CHUNK`` rows inside the caller's transaction and adds the
unsent ones to the ``meta`` counters ``evicted_<prio>``: a rolled-back attempt counts nothing,
and the counters survive restarts. The size measure is SQLite's own page accounting, ``(page_count
- freelist_count) * page_size``: three header reads, never a count of rows. Two callers:

- ``over_cap``, after each append (in the writer thread) and at ``prune``: when the live pages
  exceed the cap, deletes chunk by chunk, one transaction and one measurement each, until at
  most the target (90% of the cap) is used. The lock is taken per chunk, so the uplink's calls
  slip in between. Measured here: 10% of a 128 MiB cap, 112k readings in 224 chunks, took
  0.2-0.27 s (a 2000-row append alone ~15 ms), so ~1 s at 512 MiB, once per ~450k readings.
- ``make_room``, when SQLite reported the disk full: deletes, in the same transaction as the
  insert, until the free pages hold the batch (estimated; x4 per attempt, three attempts), so
  the file need not grow. If the insert still fails, the rollback brings every row back:
  nothing is lost for nothing. This frees pages *inside* the file; a WAL that cannot grow on a
  full disk fails the commit all the same, and the writer retries later.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from .model import Priority

__all__ = ["CHUNK", "LANES", "Tally", "delete_chunk", "evicted_counts", "file_pages_bytes", "free_bytes",
           "make_room", "over_cap", "used_bytes"]

CHUNK = 500  # rows per delete; the caller re-measures between chunks
LANES: tuple[Priority | None, ...] = (None, Priority.NORMAL, Priority.HIGH, Priority.CRITICAL)
"""Eviction order; None is the retained sent rows."""

_SENT = ("DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE sent_at IS NOT NULL"
         " AND id < ? ORDER BY sent_at, id LIMIT ?)")
_UNSENT = ("DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE sent_at IS NULL"
           " AND prio = ? AND id < ? ORDER BY id LIMIT ?)")
_COUNT = ("INSERT INTO meta (key, value) VALUES (?, ?)"
          " ON CONFLICT (key) DO UPDATE SET value = value + excluded.value")


def _pragma(conn: sqlite3.Connection, name: str) -> int:
    return conn.execute(f"PRAGMA {name}").fetchone()[0]


def used_bytes(conn: sqlite3.Connection) -> int:
    """Bytes in live pages: the file minus its free pages (the WAL's view, so current)."""
    return (_pragma(conn, "page_count") - _pragma(conn, "freelist_count")) * _pragma(conn, "page_size")


def file_pages_bytes(conn: sqlite3.Connection) -> int:
    """Bytes in all pages, free ones included: the database file once checkpointed."""
    return _pragma(conn, "page_count") * _pragma(conn, "page_size")


def free_bytes(conn: sqlite3.Connection) -> int:
    """Bytes in free pages, reusable without growing the file."""
    return _pragma(conn, "freelist_count") * _pragma(conn, "page_size")


def delete_chunk(conn: sqlite3.Connection, lane: Priority | None, below_id: int) -> int:
    """Delete up to ``CHUNK`` of the oldest rows of one lane with id < ``below_id``; how many."""
    limit = CHUNK
    if lane is None:
        return conn.execute(_SENT, (below_id, limit)).rowcount
    count = conn.execute(_UNSENT, (int(lane), below_id, limit)).rowcount
    if count:
        conn.execute(_COUNT, (f"evicted_{lane.label}", count))
    return count


def evicted_counts(meta: dict[str, int]) -> dict[str, int]:
    """The persisted counters of evicted unsent rows, every priority present."""
    return {p.label: int(meta.get(f"evicted_{p.label}", 0)) for p in sorted(Priority, reverse=True)}


@dataclass
class Tally:
    """Rows evicted in one episode, per lane: for the one WARNING an episode logs."""

    sent: int = 0
    unsent: dict[str, int] = field(default_factory=lambda: {p.label: 0 for p in sorted(Priority, reverse=True)})
    used: int = 0  # live bytes when the episode ended

    @property
    def total(self) -> int:
        return self.sent + sum(self.unsent.values())

    def add(self, lane: Priority | None, count: int) -> None:
        if lane is None:
            self.sent += count
        else:
            self.unsent[lane.label] += count

    def __bool__(self) -> bool:
        return self.total > 0

    def describe(self) -> str:
        lanes = ", ".join(f"{k} {v}" for k, v in self.unsent.items())
        return f"{self.sent} retained sent rows and {sum(self.unsent.values())} unsent ({lanes})"


Work = Callable[[sqlite3.Connection], Any]
Run = Callable[..., Any]  # Buffer._transaction(what, work, write=True): one transaction, lock held


def over_cap(lock: threading.RLock, run: Run, cap: int, target: int, below_id: int) -> Tally:
    """When more than ``cap`` bytes are live, evict down to ``target``; what went, per lane."""
    tally = Tally()
    with lock:
        tally.used = run("measuring the buffer", used_bytes, write=False)
    if tally.used <= cap:
        return tally
    lane = 0
    while tally.used > target and lane < len(LANES):
        with lock:
            count = run("evict", lambda conn: delete_chunk(conn, LANES[lane], below_id))
            tally.used = run("measuring the buffer", used_bytes, write=False)
        tally.add(LANES[lane], count)
        if count < CHUNK:  # nothing of this lane is left below below_id
            lane += 1
    return tally


def make_room(run: Run, insert: Work, rows: Sequence[tuple[int, str, int, str]], below_id: int,
              full: type[Exception]) -> Tally:
    """Evict and ``insert`` in one transaction, so that eviction only sticks if the rows fit.

    Raises ``full`` (what ``run`` raises for SQLITE_FULL) when three ever larger attempts do
    not fit, or when nothing older is left to evict; any other error at once.
    """
    need = 2 * sum(len(body) + 64 for _, _, _, body in rows)
    for attempt in range(3):
        tally, exhausted = Tally(), False

        def work(conn: sqlite3.Connection) -> None:
            nonlocal tally, exhausted
            tally, lane = Tally(), 0
            while free_bytes(conn) < need and lane < len(LANES):
                count = delete_chunk(conn, LANES[lane], below_id)
                tally.add(LANES[lane], count)
                if count < CHUNK:
                    lane += 1
            exhausted = lane == len(LANES)
            insert(conn)

        try:
            run("append", work)
            return tally
        except full:
            if exhausted or attempt == 2:
                raise
            need *= 4
    raise AssertionError("unreachable")
