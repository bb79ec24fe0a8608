"""Which rows were sent: a few id ranges in memory, written to the ``sent`` table now and then.

A part of the buffer. Why not a column: marking each row sent with an UPDATE wrote every row's
page a second time (and moved it between two partial indexes), a transaction per ack; that and
its prune were most of the bytes the buffer wrote (bench_disk_writes). The uplink publishes
rows in id order per lane (critical, high, live, backlog), so the ids acked form a few ranges,
and a range costs the same whether it holds ten rows or a million.

- ``add`` (the uplink's acks, ``Buffer.mark_sent``) only changes memory: no transaction.
- A range grows at its high end only, with acks no older than its own, while its first ack is
  less than ``granule_ms`` old; then a new one starts. So inside a range a lower id was acked
  no later than a higher one, and ``at`` (its latest ack) is within a granule of every row's
  own ack. Retention goes by ``at`` (``due``: never early); eviction takes the range acked first
  first, from its low end (``by_age``): oldest sent first.
- Ids acked out of order (an event's id between readings', a backlog window below the live
  rows) start ranges of their own; the range below them grows up to them and they stay
  neighbours. Ids that never come (evicted rows, a skipped id block) leave a gap between ranges.
- Persistence: what changed since the last write (``write``) goes to the ``sent`` table in a
  transaction of the caller's: ``Buffer.prune`` (every housekeeping pass, 5 s) and ``close``.
  Each commit also carries, on its last row, ``sent_to``: every id up to it was sent (the lowest
  unsent row still there, minus one), a few bytes in a page the commit writes anyway; at open
  the ranges are read and ``[1, sent_to]`` covered (``cover_to``). So a process killed between
  housekeeping passes forgets only the acks above the lowest unsent row since then (live rows
  acked while a backlog drains): those rows are published again after the restart,
  byte-identical (at least once; the platform de-duplicates on ``(gw, id)``).
- Rows deleted (prune, eviction) take their ids out of the ranges (``remove``); a range left
  without ids is deleted from the table at the next write. Eviction may roll back, so its
  removals are staged and applied only once its transaction committed (``stage``, ``settle``).

``gaps`` yields the unsent id intervals (between and around the ranges): pending rows, stats
and eviction read only those, however many sent rows are retained. Not thread-safe: the
buffer calls it under its lock.
"""

from __future__ import annotations

import bisect
import sqlite3
from dataclasses import dataclass
from typing import Iterable, Iterator

__all__ = ["SentIds", "Range", "SENT_DDL", "MAX_ID", "load"]

MAX_ID = (1 << 63) - 1
SENT_DDL = """CREATE TABLE IF NOT EXISTS sent (
    lo INTEGER PRIMARY KEY,           -- first id of a range of sent ids
    hi INTEGER NOT NULL,              -- last id, inclusive
    at INTEGER NOT NULL               -- ms: the latest ack in the range
)"""


@dataclass
class Range:
    lo: int
    hi: int
    at: int  # ms: the latest ack in it
    first: int  # ms: the first ack in it (memory only: when it stops growing)


class SentIds:
    """Disjoint, sorted ranges of sent ids (module docstring)."""

    def __init__(self, granule_ms: int = 1000) -> None:
        self.granule_ms = max(1, granule_ms)
        self._los: list[int] = []
        self._ranges: list[Range] = []
        self._dirty: set[int] = set()  # los to write (new or changed)
        self._gone: set[int] = set()  # los to delete from the table
        self._staged: list[tuple[int, int]] = []  # removals waiting for their transaction

    # -- reading -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._ranges)

    def ranges(self) -> list[tuple[int, int, int]]:
        """(lo, hi, at) of every range, in id order."""
        return [(r.lo, r.hi, r.at) for r in self._ranges]

    def _index(self, i: int) -> int:
        """The index of the range that may hold ``i`` (the last with lo <= i), or -1."""
        return bisect.bisect_right(self._los, i) - 1

    def covers(self, i: int) -> bool:
        k = self._index(i)
        return k >= 0 and self._ranges[k].hi >= i

    def gaps(self, after: int = 0, until: int = MAX_ID) -> Iterator[tuple[int, int]]:
        """The unsent id intervals ``(first, last)``, inclusive, within ``after < id <= until``,
        in id order."""
        start = after + 1
        k = self._index(start)
        if k >= 0 and self._ranges[k].hi >= start:
            start = self._ranges[k].hi + 1
        k += 1
        while start <= until:
            while k < len(self._ranges) and self._ranges[k].hi < start:
                k += 1
            if k < len(self._ranges) and self._ranges[k].lo <= start:
                start = self._ranges[k].hi + 1
                k += 1
                continue
            end = min(until, self._ranges[k].lo - 1) if k < len(self._ranges) else until
            yield start, end
            if k >= len(self._ranges):
                return
            start = self._ranges[k].hi + 1
            k += 1

    def due(self, cutoff_ms: int) -> list[Range]:
        """Ranges whose latest ack is before ``cutoff_ms``, in id order."""
        return [r for r in self._ranges if r.at < cutoff_ms]

    def by_age(self) -> list[Range]:
        """Every range, the one acked first first (then lowest id): eviction's order for sent rows."""
        return sorted(self._ranges, key=lambda r: (r.first, r.lo))

    @property
    def last_at(self) -> int | None:
        return max((r.at for r in self._ranges), default=None)

    # -- changing ------------------------------------------------------------------------------
    def load(self, rows: Iterable[tuple[int, int, int]]) -> None:
        """Ranges as the ``sent`` table holds them (overlaps merged; nothing to write)."""
        self._los, self._ranges = [], []
        for lo, hi, at in sorted(rows):
            if self._ranges and lo <= self._ranges[-1].hi:  # overlapping rows: merged
                last = self._ranges[-1]
                last.hi, last.at = max(last.hi, hi), max(last.at, at)
                self._dirty.add(last.lo)
                self._gone.add(lo)
                continue
            self._ranges.append(Range(lo, hi, at, at))
            self._los.append(lo)
        self._gone -= set(self._los)

    def add(self, ids: Iterable[int], now_ms: int) -> None:
        """Ids acked at ``now_ms``; ids already covered are ignored (a re-send's ack)."""
        for lo, hi in _runs(sorted(set(ids))):
            for a, b in list(self.gaps(lo - 1, hi)):
                self._insert(a, b, now_ms)

    def _fresh(self, r: Range, now_ms: int) -> bool:
        return now_ms - r.first < self.granule_ms

    def _insert(self, a: int, b: int, now_ms: int) -> None:
        """Cover the uncovered interval ``[a, b]``: grow the range just below it (fresh, and acked
        no later than now), or start one."""
        k = self._index(a)  # the range before (hi < a), if any
        left = self._ranges[k] if k >= 0 else None
        if left is not None and left.hi == a - 1 and self._fresh(left, now_ms) and left.at <= now_ms:
            left.hi, left.at = b, now_ms
            self._dirty.add(left.lo)
        else:
            self._add_range(Range(a, b, now_ms, now_ms))

    def _add_range(self, r: Range) -> None:
        k = bisect.bisect_left(self._los, r.lo)
        self._los.insert(k, r.lo)
        self._ranges.insert(k, r)
        self._dirty.add(r.lo)
        self._gone.discard(r.lo)

    def _delete_at(self, k: int) -> None:
        lo = self._los.pop(k)
        self._ranges.pop(k)
        self._dirty.discard(lo)
        self._gone.add(lo)

    def cover_to(self, hi: int, now_ms: int) -> None:
        """Every id up to ``hi`` was sent (a commit's ``sent_to``, read at open)."""
        for a, b in list(self.gaps(0, hi)):
            self._insert(a, b, now_ms)

    def remove(self, lo: int, hi: int) -> None:
        """The rows with ``lo <= id <= hi`` are deleted: take those ids out of the ranges."""
        k = max(0, self._index(lo))
        while k < len(self._ranges) and self._ranges[k].lo <= hi:
            r = self._ranges[k]
            if r.hi < lo:
                k += 1
                continue
            keep_left = (r.lo, lo - 1) if r.lo < lo else None
            keep_right = (hi + 1, r.hi) if r.hi > hi else None
            self._delete_at(k)
            for part in (keep_left, keep_right):
                if part is not None:
                    self._add_range(Range(part[0], part[1], r.at, r.first))
                    k += 1

    def stage(self, lo: int, hi: int) -> None:
        """``remove`` once the current transaction commits (``settle``)."""
        self._staged.append((lo, hi))

    def settle(self, committed: bool) -> None:
        """The transaction that staged removals ended: apply them, or forget them on a rollback."""
        staged, self._staged = self._staged, []
        if committed:
            for lo, hi in staged:
                self.remove(lo, hi)

    # -- the table -----------------------------------------------------------------------------
    @property
    def changed(self) -> bool:
        return bool(self._dirty or self._gone)

    def write(self, conn: sqlite3.Connection) -> tuple[set[int], set[int]]:
        """Write what changed since the last write inside the caller's transaction; returns the
        token ``written`` takes once that transaction committed."""
        by_lo = {r.lo: r for r in self._ranges}
        gone = set(self._gone) - set(by_lo)
        dirty = {lo for lo in self._dirty if lo in by_lo}
        if gone:
            conn.executemany("DELETE FROM sent WHERE lo = ?", [(lo,) for lo in sorted(gone)])
        if dirty:
            conn.executemany("INSERT OR REPLACE INTO sent (lo, hi, at) VALUES (?, ?, ?)",
                             [(lo, by_lo[lo].hi, by_lo[lo].at) for lo in sorted(dirty)])
        return dirty, gone

    def written(self, token: tuple[set[int], set[int]]) -> None:
        """The transaction that ``write`` wrote into committed: those changes are on disk."""
        dirty, gone = token
        self._dirty -= dirty
        self._gone -= gone


def load(conn: sqlite3.Connection, granule_ms: int = 1000) -> SentIds:
    """The sent ranges a database holds (an empty set when it has no ``sent`` table yet)."""
    sent = SentIds(granule_ms)
    try:
        sent.load(conn.execute("SELECT lo, hi, at FROM sent").fetchall())
    except sqlite3.OperationalError as exc:
        if "no such table" not in str(exc):
            raise
    return sent


def _runs(ids: list[int]) -> Iterator[tuple[int, int]]:
    """Sorted distinct ids as maximal runs of consecutive ids."""
    if not ids:
        return
    lo = prev = ids[0]
    for i in ids[1:]:
        if i != prev + 1:
            yield lo, prev
            lo = i
        prev = i
    yield lo, prev
