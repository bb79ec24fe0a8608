"""The SQLite outbox: every record and event waits here, under its contract id, until sent.

This module is the rows: ``append`` (ids, priorities), ``pending``, ``mark_sent``, ``prune`` and
``max_id``, each one short transaction. The buffer is this module and four siblings, the only
code that touches SQLite or its files:

- ``buffer_file.py``: the database file: schema, opening (WAL, durability), the errors,
  quick_check and quarantine of a corrupt file;
- ``buffer_stats.py``: ``BufferStats``, read through a read-only connection of its own;
- ``evict.py``: what leaves a full buffer;
- ``idfloor.py``: ids that never repeat (the sidecar), the writer lock, quarantine's renames.

The rest of the code imports ``Buffer``, ``OutRow``, ``BufferStats`` and
``BufferError``/``BufferFull`` from here. The group-commit thread is ``writer.py``.

Bounded disk: ``max_bytes`` bounds the database's live pages, ``(page_count - freelist_count)
* page_size``, checked after every append. Over it, old rows are evicted down to 90% of it:
retained sent rows, then unsent normal, high, critical, oldest first (``evict.py``); the
commit that crossed the cap always stays, so a cap below one commit cannot loop. Unsent rows
evicted are counted per priority (``BufferStats.evicted``, persisted in ``meta``) and logged
once per episode (``evict.Episode``: a WARNING, and the count when it ends). The file on
disk may exceed ``max_bytes`` by the WAL (``WAL_LIMIT`` after a checkpoint; ~1000 pages plus
one commit between checkpoints), plus one commit, plus the free pages evictions leave: the
file does not shrink, later commits reuse them. On SQLITE_FULL (a full disk or a page limit)
``append_encoded(make_room=True)`` evicts inside the insert's own transaction.

Corruption (``buffer_file.py``): ``open`` quarantines a damaged file and starts a fresh one; a
statement that finds the file corrupt at run time does likewise and runs once more on the
fresh file (``_transaction``), so an append's items go in under the same ids.

Threads: one connection, shared by the writer and uplink threads, serialised by a lock. Each
call is one short transaction (a 2000-row commit takes ~10 ms; eviction takes the lock per
500-row chunk), and a Python lock hands over at once where SQLite's busy handler sleeps and
polls. ``stats`` and ``read_stats`` use their own read-only connection (``buffer_stats.py``):
under WAL a reader never blocks the writer, so a slow count (or ``edge-agent status`` in
another process) never holds up a commit.

Rows store the body once, as compact ASCII JSON of ``item.to_wire()`` without the id: a row is
never republished with different content, and ASCII-only text can never fail to encode. A row
is a record (kind 'record': one poll of one device or unit at one time, its point names once,
CONTRACT section 4) or an event (kind 'event'). A file of the older schema, a row per reading,
is upgraded when it opens (``migrate.py``).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from . import evict
from .file import (SET_META, WAL_LIMIT, BufferCorrupt, BufferError, BufferFull, is_corrupt, is_full,
                          leave_in_rollback_mode, open_checked, open_or_error, quarantine, record_clean_close)
from .stats import BufferStats, read_stats
from .idfloor import IdFloor, drop_kept, keep_journals
from ..model import Event, Priority, Reading, Record, records_of

__all__ = ["Buffer", "BufferError", "BufferFull", "BufferStats", "OutRow", "EncodedRow", "encode_items",
           "open_or_error", "WAL_LIMIT"]

log = logging.getLogger(__name__)

PRUNE_CHUNK = 10_000  # rows per delete transaction, so the writer never waits long
SENT_GRACE_S = 5.0  # sent rows stay at least this long: followers of the file see each one
EVICT_TO = 0.9  # an eviction stops at this fraction of max_bytes
QUICK_CHECK_MAX_BYTES = 64 * 1024**2  # after a clean close, open() quick_checks only files this small
MAX_ID = (1 << 63) - 1

_INSERT = "INSERT INTO outbox (id, prio, kind, ts, body) VALUES (?, ?, ?, ?, ?)"
_LANE = ("SELECT id, prio, kind, ts, body FROM outbox WHERE sent_at IS NULL AND prio = ? AND id > ?"
         " AND id <= ? ORDER BY id LIMIT ?")
# One index range per lane, merged by id: stays fast however many sent rows are retained.
_ALL_LANES = " UNION ALL ".join(f"SELECT * FROM ({_LANE})" for _ in Priority) + " ORDER BY id LIMIT ?"

_PRIO = {int(p): p for p in Priority}
_JSON = json.JSONEncoder(ensure_ascii=True, allow_nan=False, separators=(",", ":"))

EncodedRow = tuple[int, str, int, str]
"""(prio, kind, ts, body): an item checked and serialised, waiting for its id."""


@dataclass(frozen=True)
class OutRow:
    """One buffered item as the uplink publishes it; ``body`` is the wire dict, ``id`` first."""

    id: int
    kind: str
    prio: Priority
    ts: int
    body: dict[str, Any]


def _as_records(items: Sequence[Record | Event | Reading]) -> list[Record | Event]:
    """Items with every run of consecutive Readings grouped into records as they stand
    (``model.records_of``: no privacy). The daemon hands records; tests and tools may hand
    readings."""
    if not any(isinstance(item, Reading) for item in items):
        return list(items)  # type: ignore[arg-type]
    out: list[Record | Event] = []
    run: list[Reading] = []
    for item in items:
        if isinstance(item, Reading):
            run.append(item)
            continue
        if run:
            out.extend(records_of(run))
            run = []
        out.append(item)
    out.extend(records_of(run))
    return out


def encode_items(items: Sequence[Record | Event | Reading]) -> list[EncodedRow]:
    """Check and serialise items, one row per record or event; raises TypeError naming the item
    (never its value). Readings are grouped into records first (``_as_records``).

    Done before anything is written or queued, so one bad value can never stall a commit.
    """
    rows: list[EncodedRow] = []
    for item in _as_records(items):
        if isinstance(item, Record):
            what, kind, prio = f"record {item.dev}@{item.ts}", "record", Priority.NORMAL
        elif isinstance(item, Event):
            what, kind, prio = f"event {item.dev}/{item.type}", "event", Priority(item.prio)
        else:
            raise TypeError(f"the buffer takes Record, Event or Reading, not {type(item).__name__}")
        ts = item.ts
        if type(ts) is not int or not 0 <= ts < 1 << 63:
            raise TypeError(f"{what}: ts must be integer milliseconds, not {type(ts).__name__}")
        try:
            body = _JSON.encode(item.to_wire())
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{what}{_culprit(item)}: not JSON-serialisable ({exc})") from None
        rows.append((int(prio), kind, ts, body))
    return rows


def _culprit(item: Record | Event) -> str:
    """`` point P`` naming a record's first value that JSON refuses (a name, never the value)."""
    if isinstance(item, Record):
        for point, value in item.vals.items():
            try:
                _JSON.encode(value)
            except (TypeError, ValueError):
                return f" point {point}"
    return ""


class Buffer:
    """The outbox. ``open()`` (or ``with``) before use; every method is one transaction.

    ``retain_sent_s`` > 0 keeps sent rows (for replay) until ``prune`` or eviction;
    ``max_bytes`` caps the live pages (module docstring). ``id_block`` is how many ids one
    sidecar write reserves; ``id_floor_copy`` is where a second copy of it lives (the agent's
    ``{state_dir}/id-floor``, ``idfloor.py``). Stop the ``BufferWriter`` before ``close``; calls on a closed
    buffer raise BufferError.
    """

    def __init__(self, path: Path | str, *, max_bytes: int = 512 * 1024**2, retain_sent_s: float = 0.0,
                 clock: Callable[[], float] = time.time, id_block: int = 10_000,
                 id_floor_copy: Path | str | None = None) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.retain_sent_s = retain_sent_s
        self._clock = clock
        self._ids = IdFloor(self.path, id_block, Path(id_floor_copy) if id_floor_copy is not None else None)
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._reopen = False  # a quarantine left no connection: the next call tries again
        self._episode = evict.Episode(self.path)  # the log lines of eviction episodes
        self._intake_seq = 0  # the intake log seq of the last row committed (writer.py, intakelog.py)

    # -- lifecycle ---------------------------------------------------------------------------
    def open(self) -> "Buffer":
        """Create parent directories and schema, take the writer lock, load the id floor.

        A corrupt file is quarantined and replaced by a fresh one (``buffer_file.py``).
        """
        with self._lock:
            if self._conn is not None:
                return self
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._ids.acquire()
            except BlockingIOError:
                raise BufferError(f"{self.path}: buffer is in use (another edge-agent holds "
                                  f"{self._ids.lock_path})") from None
            except OSError as exc:
                raise BufferError(f"{self.path}: cannot open buffer: {exc.strerror or exc}") from exc
            try:
                try:
                    keep_journals(self.path)  # SQLite may delete them before a quarantine
                    self._conn = self._connect(load_ids=True)
                except BufferCorrupt as exc:
                    quarantine(self.path, str(exc.__cause__ or exc), self._clock())
                    self._conn = self._connect(load_ids=True)
                finally:
                    drop_kept(self.path)
            except OSError as exc:
                self._ids.release()
                raise BufferError(f"{self.path}: cannot open buffer: {exc.strerror or exc}") from exc
            except BaseException:
                self._ids.release()
                raise
            log.info("buffer %s open: next id %d", self.path, self._ids.next_id)
            return self

    def _connect(self, *, load_ids: bool) -> sqlite3.Connection:
        conn, found = open_checked(self.path, quick_check_max_bytes=QUICK_CHECK_MAX_BYTES)
        if load_ids:
            try:
                # an existing, sound database knows its next id exactly unless the machine
                # rebooted after an unclean end (a power cut may have lost commits): idfloor.py
                self._ids.load(found.max_id + 1, found.meta.get("next_id", 1),
                               ceiling_copy=found.meta.get("id_ceiling", 1), trust_floors=found.existing)
                self._intake_seq = found.meta.get("intake_seq", 0)
            except BaseException:
                conn.close()
                raise
        return conn

    def _renew(self, what: str, exc: sqlite3.Error) -> None:
        """Corruption found at run time: quarantine, then a fresh file with the same id floor."""
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except sqlite3.Error:
                pass
        self._reopen = True
        quarantine(self.path, f"{what}: {exc}", self._clock())
        self._conn = self._connect(load_ids=False)
        self._reopen = False

    def close(self) -> None:
        """Lower the id ceiling to the next id (no gap after a clean restart), mark the close
        clean, and close."""
        with self._lock:
            conn, self._conn, self._reopen = self._conn, None, False
            self._episode.close()
            if conn is None:
                self._ids.release()
                return
            try:
                self._ids.lower()
            except OSError as exc:  # the higher ceiling stays: still safe
                log.warning("%s: could not lower the id ceiling at close: %s", self.path, exc)
            try:
                record_clean_close(conn, self.path, self._ids.next_id)
                leave_in_rollback_mode(conn, self.path)
            finally:
                conn.close()
                self._ids.release()

    def __enter__(self) -> "Buffer":
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            if not self._reopen:
                raise BufferError(f"{self.path}: buffer is not open")
            self._conn = self._connect(load_ids=False)
            self._reopen = False
        return self._conn

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _transaction(self, what: str, work: Callable[[sqlite3.Connection], Any], *, write: bool = True) -> Any:
        """Run ``work`` in one IMMEDIATE transaction (``write``) and return its result.

        SQLite errors become BufferError (BufferFull for SQLITE_FULL); corruption quarantines
        the file and runs ``work`` once more on the fresh one. Call with the lock held.
        """
        for attempt in (1, 2):
            conn = self._db()
            try:
                if write:
                    conn.execute("BEGIN IMMEDIATE")
                result = work(conn)
                if write:
                    conn.execute("COMMIT")
                return result
            except BaseException as exc:
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                if not isinstance(exc, sqlite3.Error):
                    raise
                if attempt == 1 and is_corrupt(exc):
                    self._renew(what, exc)
                    continue
                kind = BufferFull if is_full(exc) else BufferError
                raise kind(f"{self.path}: {what} failed: {exc}") from exc
        raise AssertionError("unreachable")

    # -- writing -----------------------------------------------------------------------------
    def append(self, items: Sequence[Record | Event | Reading]) -> list[int]:
        """Buffer items in one transaction, a row per record or event (readings are grouped into
        records, ``encode_items``); returns the rows' ids in order. TypeError on bad items."""
        return self.append_encoded(encode_items(items))

    def append_encoded(self, rows: Sequence[EncodedRow], *, make_room: bool = False,
                       intake_seq: int | None = None) -> list[int]:
        """Buffer rows already made by ``encode_items`` (the writer encodes at ``put`` time).

        Then evicts old rows while the database is over ``max_bytes``. ``make_room`` (after a
        BufferFull) also evicts inside the insert's transaction until the rows fit. ``intake_seq``:
        the intake log seq of the last row, stored in the same transaction (``intake_seq``).
        """
        if not rows:
            return []
        with self._lock:
            self._db()
            first = self._ids.next_id
            end = first + len(rows)
            try:
                self._ids.reserve(end)
            except OSError as exc:
                raise BufferError(f"{self.path}: cannot reserve ids in {self._ids.ids_path}: "
                                  f"{exc.strerror or exc}") from exc
            params = [(i, *row) for i, row in zip(range(first, end), rows)]

            def insert(conn: sqlite3.Connection) -> None:
                conn.executemany(_INSERT, params)
                conn.execute(SET_META, ("next_id", end))
                conn.execute(SET_META, ("id_ceiling", self._ids.ceiling))
                if intake_seq is not None:
                    conn.execute(SET_META, ("intake_seq", intake_seq))

            if make_room:
                tally = evict.make_room(self._transaction, insert, rows, first, BufferFull)
                if tally:
                    log.warning("buffer %s: disk full: made room for %d rows by evicting %s", self.path,
                                len(rows), tally.describe())
            else:
                self._transaction("append", insert)
            self._ids.next_id = end  # nothing that can fail comes after the commit
            if intake_seq is not None:
                self._intake_seq = intake_seq
        self._evict_over_cap(below_id=first)
        return list(range(first, end))

    def mark_sent(self, ids: Iterable[int]) -> None:
        """Record delivery in one transaction. Rows stay, marked sent, until ``prune`` finds them
        older than ``retain_sent_s`` (the daemon prunes every few seconds): so ``edge-agent tail``,
        which follows the file from another process, sees every row even with no retention."""
        id_list = list(ids)
        if not id_list:
            return
        now = self._now_ms()

        def work(conn: sqlite3.Connection) -> None:
            conn.executemany("UPDATE outbox SET sent_at = ? WHERE id = ? AND sent_at IS NULL",
                             [(now, i) for i in id_list])
            conn.execute(SET_META, ("last_sent_at", now))

        with self._lock:
            self._transaction("mark_sent", work)

    def prune(self) -> int:
        """Delete sent rows older than retain_sent_s (and ``SENT_GRACE_S``, so a follower such as
        ``edge-agent tail`` polling the file never misses one), then evict while over max_bytes;
        how many."""
        cutoff = self._now_ms() - int(max(self.retain_sent_s, SENT_GRACE_S) * 1000)
        sql = ("DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE sent_at IS NOT NULL"
               f" AND sent_at < ? ORDER BY sent_at LIMIT {PRUNE_CHUNK})")
        expired = 0
        while True:
            with self._lock:
                count = self._transaction("prune", lambda conn: conn.execute(sql, (cutoff,)).rowcount)
                below = self._ids.next_id
            expired += count
            if count < PRUNE_CHUNK:
                return expired + self._evict_over_cap(below_id=below).total

    def _evict_over_cap(self, *, below_id: int) -> evict.Tally:
        """Evict when over max_bytes, logged per episode (``evict.Episode``); never raises (the data
        is committed)."""
        try:
            tally = evict.over_cap(self._lock, self._transaction, self.max_bytes,
                                   int(self.max_bytes * EVICT_TO), below_id)
            with self._lock:
                self._episode.after(tally, self.max_bytes, lambda: self._transaction(
                    "measuring the backlog", evict.backlog_bytes, write=False))
        except BufferError as exc:
            log.warning("buffer %s: eviction failed (%s); tried again after the next commit", self.path, exc)
            return evict.Tally()
        return tally

    # -- reading -----------------------------------------------------------------------------
    @property
    def intake_seq(self) -> int:
        """The intake log seq of the last row committed (0: none): a replay skips rows up to it."""
        with self._lock:
            return self._intake_seq

    def max_id(self) -> int:
        """Every id assigned so far is <= this and every later one is above it; 0 if none yet.

        After a crash it may exceed the last committed id (the skipped rest of an id block).
        """
        with self._lock:
            self._db()
            return self._ids.max_id

    def pending(self, limit: int, *, prio: Priority | None = None, after_id: int = 0,
                until_id: int | None = None) -> list[OutRow]:
        """Unsent rows with after_id < id <= until_id, in id order, optionally of one priority."""
        if limit <= 0:
            return []
        until = MAX_ID if until_id is None else until_id
        if prio is None:
            sql, args = _ALL_LANES, [a for p in Priority for a in (int(p), after_id, until, limit)] + [limit]
        else:
            sql, args = _LANE, [int(prio), after_id, until, limit]
        with self._lock:
            rows = self._transaction("reading pending rows",
                                     lambda conn: conn.execute(sql, args).fetchall(), write=False)
        return [OutRow(id=i, kind=kind, prio=_PRIO[p], ts=ts, body={"id": i, **json.loads(body)})
                for i, p, kind, ts, body in rows]

    def stats(self) -> BufferStats:
        """Backlog figures, read on a separate connection so the writer never waits for them.

        O(pending rows): ~0.4 s per million here. Fine for status; not for a hot loop.
        """
        with self._lock:
            self._db()
            next_id = self._ids.next_id
        found = self.read_stats(self.path)
        return BufferStats(**{**found.__dict__, "next_id": next_id})

    @staticmethod
    def read_stats(path: Path | str) -> BufferStats:
        """Stats of the buffer at ``path``, open elsewhere or not at all (``buffer_stats.py``)."""
        return read_stats(path)
