"""Eviction: which rows leave a full buffer, in what order, and when. A part of the buffer.

Order, fixed (issue "store-and-forward that loses nothing"): (a) sent rows kept for
retention, oldest sent first; (b) unsent ``normal``, lowest id first; (c) unsent ``high``;
(d) unsent ``critical`` last. A lane is touched only when every lane before it is empty. Only
rows below a given id are candidates: the batch being committed is never evicted to make room
for itself, so new data always goes in and a cap smaller than one commit cannot loop.

``delete_chunk`` deletes up to ``CHUNK`` rows inside the caller's transaction and adds the
unsent ones to the ``meta`` counters ``evicted_<prio>``: a rolled-back attempt counts nothing,
and the counters survive restarts. Which rows are sent is the buffer's ``SentIds`` (``sent.py``):
sent rows are deleted a range at a time, oldest ack first, and the ids taken out of the ranges
once the transaction commits (``SentIds.stage``); unsent rows are read from the gaps between
the ranges only. The size measure is SQLite's own page accounting, ``(page_count
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

Logging (``Episode``): a sustained overflow evicts once per ~10% of the cap of new data, so a
WARNING per pass was a stream of them (17 in a 60 s outage at 1 MiB). An *episode* runs from
the first pass that evicts unsent rows until the backlog is back under the cap: one WARNING at
its start, later passes at DEBUG, one INFO line at its end with what it evicted per priority.
"Back under" has room to spare, so an overflow that goes on cannot end it: the live bytes (or,
when retained sent rows keep the file full, the unsent rows' share of them) at most
``RECOVERED_AT`` (half) of the cap and a tenth of the cap below where the last pass left them,
which only a drain achieves (a pass stops at 90%; a large chunk of a small cap may go lower,
and the tenth keeps that from counting). Passes that take only retained sent rows outside an
episode are retention cut short by the cap, not data loss: DEBUG.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from ..model import Priority
from ..units import format_duration, format_size
from .sent import SentIds

__all__ = ["CHUNK", "LANES", "RECOVERED_AT", "Episode", "Tally", "backlog_bytes", "count_in", "delete_chunk",
           "evicted_counts",
           "file_pages_bytes", "free_bytes", "make_room", "over_cap", "used_bytes"]

log = logging.getLogger("edge_agent.buffer")  # one logger for the whole buffer

CHUNK = 500  # rows per delete; the caller re-measures between chunks
RECOVERED_AT = 0.5  # an episode ends once the backlog fills at most this fraction of the cap (docstring)
MARGIN = 0.1  # ... and this fraction of the cap less than the last pass left
LANES: tuple[Priority | None, ...] = (None, Priority.NORMAL, Priority.HIGH, Priority.CRITICAL)
"""Eviction order; None is the retained sent rows."""

_IDS = "SELECT id FROM outbox WHERE id >= ? AND id <= ? ORDER BY id LIMIT ?"
_IDS_NORMAL = "SELECT id FROM outbox WHERE id >= ? AND id <= ? AND prio = 0 ORDER BY id LIMIT ?"
_IDS_PRIO = "SELECT id FROM outbox WHERE prio > 0 AND prio = ? AND id >= ? AND id <= ? ORDER BY id LIMIT ?"
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


def count_in(conn: sqlite3.Connection, spans: Iterable[tuple[int, int]]) -> int:
    """Rows with ids in the inclusive ``spans`` (rowid ranges: no scan beyond them)."""
    return sum(conn.execute("SELECT count(*) FROM outbox WHERE id >= ? AND id <= ?", span).fetchone()[0]
               for span in spans)


def backlog_bytes(conn: sqlite3.Connection, sent: SentIds) -> int:
    """The unsent rows' share of the live bytes, by row count (counts over the gaps and the ranges)."""
    unsent = count_in(conn, sent.gaps())
    done = count_in(conn, ((lo, hi) for lo, hi, _ in sent.ranges()))
    return used_bytes(conn) * unsent // max(1, unsent + done)


def delete_chunk(conn: sqlite3.Connection, lane: Priority | None, below_id: int, sent: SentIds) -> int:
    """Delete up to ``CHUNK`` of the oldest rows of one lane with id < ``below_id``; how many."""
    if lane is None:
        return _delete_sent(conn, below_id, sent)
    sql = _IDS_NORMAL if lane is Priority.NORMAL else _IDS_PRIO
    ids: list[int] = []
    for lo, hi in sent.gaps(0, below_id - 1):
        args = (lo, hi, CHUNK - len(ids)) if lane is Priority.NORMAL else (int(lane), lo, hi, CHUNK - len(ids))
        ids.extend(i for (i,) in conn.execute(sql, args))
        if len(ids) >= CHUNK:
            break
    if ids:
        conn.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])
        conn.execute(_COUNT, (f"evicted_{lane.label}", len(ids)))
    return len(ids)


def _delete_sent(conn: sqlite3.Connection, below_id: int, sent: SentIds) -> int:
    """Up to ``CHUNK`` retained sent rows below ``below_id``, the range acked first first."""
    total = 0
    for r in sent.by_age():
        if total >= CHUNK:
            break
        if r.lo >= below_id:
            continue
        hi = min(r.hi, below_id - 1)
        want = CHUNK - total
        ids = [i for (i,) in conn.execute(_IDS, (r.lo, hi, want))]
        last = ids[-1] if len(ids) == want else hi  # the range is done below below_id when fewer came
        if ids:
            conn.execute("DELETE FROM outbox WHERE id >= ? AND id <= ?", (r.lo, ids[-1]))
        sent.stage(r.lo, last)
        total += len(ids)
    return total


def evicted_counts(meta: dict[str, int]) -> dict[str, int]:
    """The persisted counters of evicted unsent rows, every priority present."""
    return {p.label: int(meta.get(f"evicted_{p.label}", 0)) for p in sorted(Priority, reverse=True)}


@dataclass
class Tally:
    """Rows evicted by one pass (or, merged, one episode), per lane; ``used``: live bytes after it."""

    sent: int = 0
    unsent: dict[str, int] = field(default_factory=lambda: {p.label: 0 for p in sorted(Priority, reverse=True)})
    used: int = 0

    @property
    def total(self) -> int:
        return self.sent + self.unsent_total

    @property
    def unsent_total(self) -> int:
        return sum(self.unsent.values())

    def add(self, lane: Priority | None, count: int) -> None:
        if lane is None:
            self.sent += count
        else:
            self.unsent[lane.label] += count

    def merge(self, other: "Tally") -> None:
        self.sent += other.sent
        for label, count in other.unsent.items():
            self.unsent[label] += count
        self.used = other.used

    def __bool__(self) -> bool:
        return self.total > 0

    def describe(self) -> str:
        lanes = ", ".join(f"{k} {v}" for k, v in self.unsent.items())
        return f"{self.sent} retained sent rows and {sum(self.unsent.values())} unsent ({lanes})"

    def counts(self) -> str:
        """``1,234 unsent rows (critical 0, high 0, normal 1,234) and 0 retained sent rows``."""
        lanes = ", ".join(f"{k} {v:,}" for k, v in self.unsent.items())
        return f"{self.unsent_total:,} unsent rows ({lanes}) and {self.sent:,} retained sent rows"


class Episode:
    """One WARNING per eviction episode, its count when it ends (module docstring, "Logging").

    ``after`` takes each over-cap check's tally and the cap; ``backlog`` measures the unsent rows'
    bytes, called only on a pass that took retained sent rows alone. Call with the buffer's lock held.
    """

    def __init__(self, path: Path) -> None:
        self.path, self.cap = path, 0
        self.tally: Tally | None = None  # None: no episode
        self.low = 0  # live bytes the last pass that evicted unsent rows left
        self.started = 0.0

    def after(self, tally: Tally, cap: int, backlog: Callable[[], int]) -> None:
        self.cap = cap
        if tally.unsent_total:
            self._evicted(tally)
        elif self.tally is None:
            if tally:
                log.debug("buffer %s over its %s cap: evicted %s retained sent rows (retention cut short by "
                          "the cap)", self.path, format_size(self.cap), f"{tally.sent:,}")
        else:
            self.tally.merge(tally)
            limit = min(self.cap * RECOVERED_AT, self.low - self.cap * MARGIN)
            if tally.used <= limit:
                self._end(f"{format_size(tally.used)} in use")
            elif tally.sent and (unsent := backlog()) <= limit:
                self._end(f"unsent rows ~{format_size(unsent)} of {format_size(tally.used)} in use")

    def _evicted(self, tally: Tally) -> None:
        self.low = tally.used
        alone = " (the newest commit alone is over the cap)" if tally.used > self.cap else ""
        if self.tally is not None:
            self.tally.merge(tally)
            log.debug("buffer %s over its cap: evicted %s%s", self.path, tally.counts(), alone)
            return
        self.tally, self.started = Tally(), time.monotonic()
        self.tally.merge(tally)
        log.warning("buffer %s is over its %s cap (buffer.max_bytes): evicting the oldest unsent rows (normal "
                    "first, critical last) until the backlog is back under it, when one line gives the count; "
                    "this pass: %s, %s left in use%s", self.path, format_size(self.cap), tally.counts(),
                    format_size(tally.used), alone)

    def _end(self, measure: str) -> None:
        assert self.tally is not None
        log.info("buffer %s: back under its %s cap (%s); the episode evicted %s in %s", self.path,
                 format_size(self.cap), measure, self.tally.counts(), format_duration(time.monotonic() - self.started))
        self.tally = None

    def close(self) -> None:
        """At the buffer's close: an episode still going is reported, so its count is not lost."""
        if self.tally is not None:
            log.info("buffer %s closed during an eviction episode; it evicted %s in %s", self.path,
                     self.tally.counts(), format_duration(time.monotonic() - self.started))
            self.tally = None


Work = Callable[[sqlite3.Connection], Any]
Run = Callable[..., Any]  # Buffer._transaction(what, work, write=True): one transaction, lock held
Delete = Callable[[sqlite3.Connection, "Priority | None", int], int]  # delete_chunk, bound to the buffer


def over_cap(lock: threading.RLock, run: Run, cap: int, target: int, below_id: int, delete: Delete) -> Tally:
    """When more than ``cap`` bytes are live, evict down to ``target``; what went, per lane."""
    tally = Tally()
    with lock:
        tally.used = run("measuring the buffer", used_bytes, write=False)
    if tally.used <= cap:
        return tally
    lane = 0
    while tally.used > target and lane < len(LANES):
        with lock:
            count = run("evict", lambda conn: delete(conn, LANES[lane], below_id))
            tally.used = run("measuring the buffer", used_bytes, write=False)
        tally.add(LANES[lane], count)
        if count < CHUNK:  # nothing of this lane is left below below_id
            lane += 1
    return tally


def make_room(run: Run, insert: Work, rows: Sequence[tuple[int, str, int, str]], below_id: int,
              full: type[Exception], delete: Delete) -> Tally:
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
                count = delete(conn, LANES[lane], below_id)
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
