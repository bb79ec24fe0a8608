"""The SQLite outbox: every record and event waits here, under its contract id, until sent.

This module is the rows: ``append`` (ids, priorities), ``pending``, ``mark_sent``, ``prune`` and
``max_id``, each one short transaction (``mark_sent`` none). The buffer is this module and its
siblings, the only code that touches SQLite or its files:

- ``buffer_file.py``: the database file: schema, opening (WAL, durability), the errors,
  quick_check and quarantine of a corrupt file;
- ``buffer_stats.py``: ``BufferStats``, read through a read-only connection of its own;
- ``evict.py``: what leaves a full buffer;
- ``idfloor.py``: ids that never repeat (the sidecar), the writer lock, quarantine's renames;
- ``sent.py``: which ids were sent, as ranges (in memory, written every few seconds);
- ``intakelog.py``, ``writer.py``: the intake log and the group-commit thread;
- ``migrate.py``: files of an older schema, upgraded as they open.

The rest of the code imports ``Buffer``, ``OutRow``, ``BufferStats`` and
``BufferError``/``BufferFull`` from here. The group-commit thread is ``writer.py``.

Bounded disk: ``max_bytes`` bounds the database's live pages, ``(page_count - freelist_count)
* page_size``, checked after every append. Over it, old rows are evicted down to 90% of it:
retained sent rows, then unsent normal, high, critical, oldest first (``evict.py``); the
commit that crossed the cap always stays, so a cap below one commit cannot loop. Unsent rows
evicted are counted per priority (``BufferStats.evicted``, persisted in ``meta``) and logged
once per episode (``evict.Episode``: a WARNING, and the count when it ends). The file on
disk may exceed ``max_bytes`` by the WAL (``WAL_LIMIT`` after a checkpoint; ``WAL_AUTOCHECKPOINT``
pages plus one commit between checkpoints), plus one commit, plus the free pages evictions leave: the
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

Sent, and bytes written: ``mark_sent`` (the uplink's acks) changes only the ranges in memory;
``prune`` (the daemon's housekeeping, every 5 s) writes what changed to the ``sent`` table, and
deletes the rows past retention in large steps: when they span ``PRUNE_STEP_S`` of acks or
``PRUNE_STEP_IDS`` ids, a rowid range per transaction, so whole pages are freed rather than
rewritten a few rows at a time. A commit writes its rows and nothing else: the next id is
``max(id) + 1`` and the intake seq rides on the commit's last row; ``meta`` gets both when rows
are deleted (prune, eviction) and at close (``_save_floor``), so they are never lost with the rows.
Each commit's last row also says up to which id everything was sent (``sent_to``), so a kill -9
forgets only the acks since the last housekeeping above the lowest unsent row (``sent.py``): those
rows are published again after the restart (byte-identical; at least once).

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
from .sent import SentIds
from ..model import Event, Priority, Reading, Record, records_of

__all__ = ["Buffer", "BufferError", "BufferFull", "BufferStats", "OutRow", "EncodedRow", "encode_items",
           "open_or_error", "WAL_LIMIT"]

log = logging.getLogger(__name__)

PRUNE_CHUNK = 20_000  # ids per delete transaction, so the writer never waits long
PRUNE_STEP_S = 60.0  # rows past retention are deleted once they span this long of acks ...
PRUNE_STEP_IDS = 50_000  # ... or this many ids, whichever comes first: whole pages freed at once
SENT_GRACE_S = 5.0  # sent rows stay at least this long: followers of the file see each one
EVICT_TO = 0.9  # an eviction stops at this fraction of max_bytes
QUICK_CHECK_MAX_BYTES = 64 * 1024**2  # after a clean close, open() quick_checks only files this small
MAX_ID = (1 << 63) - 1

_INSERT = "INSERT INTO outbox (id, prio, kind, ts, body, seq, sent_to) VALUES (?, ?, ?, ?, ?, ?, ?)"
_FIRST_ROW = "SELECT id FROM outbox WHERE id >= ? AND id <= ? ORDER BY id LIMIT 1"
# Rows of one unsent id interval (SentIds.gaps): a rowid range, or the index of the few rows above normal.
_GAP = "SELECT id, prio, kind, ts, body FROM outbox WHERE id >= ? AND id <= ? ORDER BY id LIMIT ?"
_GAP_NORMAL = "SELECT id, prio, kind, ts, body FROM outbox WHERE id >= ? AND id <= ? AND prio = 0 ORDER BY id LIMIT ?"
_GAP_PRIO = ("SELECT id, prio, kind, ts, body FROM outbox WHERE prio > 0 AND prio = ? AND id >= ? AND id <= ?"
             " ORDER BY id LIMIT ?")

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
        self._sent = SentIds(int(max(1.0, retain_sent_s / 100) * 1000))  # what was acked (sent.py)
        self._raised: int | None = None  # a ceiling take_ids reserved, for the next commit's meta row
        self._committed_to = 0  # the highest id committed by this process (prune stays below it)
        self._sent_floor = 0  # the highest id in the file when it was opened
        self._last_prune = self._now_ms()

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
                self._intake_seq = found.intake_seq
                self._sent_floor = found.max_id  # rows earlier runs committed: prune may reach them
                self._sent.load(found.sent)
                self._sent.cover_to(found.sent_to, self._now_ms())
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
                self._save_at_close(conn)
                record_clean_close(conn, self.path, self._ids.next_id)
                leave_in_rollback_mode(conn, self.path)
            finally:
                conn.close()
                self._ids.release()

    def _save_at_close(self, conn: sqlite3.Connection) -> None:
        """The sent ranges and the floor, so a clean restart publishes nothing twice; a failure is
        only logged (those rows are published again: at least once)."""
        try:
            conn.execute("BEGIN IMMEDIATE")
            token = self._sent.write(conn)
            self._save_floor(conn)
            conn.execute("COMMIT")
            self._sent.written(token)
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            log.warning("%s: could not save which rows were sent at close (%s); they are published again", self.path,
                        exc)

    def _save_floor(self, conn: sqlite3.Connection) -> None:
        """``meta``'s next id, intake seq and last ack, in a transaction that deletes rows: the
        rows that carried them may go (module docstring)."""
        conn.execute(SET_META, ("next_id", self._ids.next_id))
        conn.execute(SET_META, ("intake_seq", self._intake_seq))
        if self._sent.last_at is not None:
            conn.execute(SET_META, ("last_sent_at", self._sent.last_at))

    def _delete(self, conn: sqlite3.Connection, lane: Priority | None, below_id: int) -> int:
        """``evict.delete_chunk`` on this buffer's sent ranges, the floor saved when rows went."""
        count = evict.delete_chunk(conn, lane, below_id, self._sent)
        if count:
            self._save_floor(conn)
        return count

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
                    self._sent.settle(True)
                return result
            except BaseException as exc:
                self._sent.settle(False)
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

    def take_ids(self, count: int) -> int:
        """Hand out the next ``count`` ids now, before their rows are committed; the first.

        Why: with the intake log on, the writer numbers a poll's rows when it takes them
        (``writer.py``), so the uplink may publish them before the group commit; ids stay unique
        and increasing in buffering order, and the sidecar is raised (fsynced) before any id
        above the old ceiling is handed out, as at a commit. BufferError when it cannot be."""
        with self._lock:
            self._db()
            first = self._ids.next_id
            self._reserve(first + count)
            self._ids.next_id = first + count
            return first

    def claim_ids(self, last: int) -> None:
        """Ids up to ``last`` are taken (rows a killed run numbered, replayed from the intake log)."""
        with self._lock:
            self._db()
            if last >= self._ids.next_id:
                self._reserve(last + 1)
                self._ids.next_id = last + 1

    def _reserve(self, end: int) -> None:
        try:
            raised = self._ids.reserve(end)
        except OSError as exc:
            raise BufferError(f"{self.path}: cannot reserve ids in {self._ids.ids_path}: "
                              f"{exc.strerror or exc}") from exc
        if raised is not None:
            self._raised = raised

    def append_encoded(self, rows: Sequence[EncodedRow], *, make_room: bool = False,
                       intake_seq: int | None = None, ids: Sequence[int] | None = None) -> list[int]:
        """Buffer rows already made by ``encode_items`` (the writer encodes at ``put`` time).

        Then evicts old rows while the database is over ``max_bytes``. ``make_room`` (after a
        BufferFull) also evicts inside the insert's transaction until the rows fit. ``intake_seq``:
        the intake log seq of the last row, stored in the same transaction (``intake_seq``).
        ``ids``: the rows' ids from ``take_ids``/``claim_ids`` (increasing); None: the next ones.
        """
        if not rows:
            return []
        with self._lock:
            self._db()
            if ids is None:
                first = self._ids.next_id
                id_list: Sequence[int] = range(first, first + len(rows))
                self._reserve(first + len(rows))
            else:
                if len(ids) != len(rows):
                    raise ValueError(f"{len(rows)} rows, {len(ids)} ids")
                id_list, first = ids, ids[0]
            end = id_list[-1] + 1
            raised, self._raised = self._raised, None
            params = [(i, *row, None, None) for i, row in zip(id_list, rows)]

            def insert(conn: sqlite3.Connection) -> None:
                # the commit's intake seq and how far everything was sent ride on its last row
                params[-1] = (*params[-1][:-2], intake_seq, self._sent_to(conn, first))
                conn.executemany(_INSERT, params)
                if raised is not None:  # the database's copy of the ceiling, once per id block
                    conn.execute(SET_META, ("id_ceiling", raised))

            if make_room:
                try:
                    tally = evict.make_room(self._transaction, insert, rows, first, BufferFull, self._delete)
                except BaseException:
                    self._raised = self._raised or raised  # not in meta yet: the next commit writes it
                    raise
                if tally:
                    log.warning("buffer %s: disk full: made room for %d rows by evicting %s", self.path,
                                len(rows), tally.describe())
            else:
                try:
                    self._transaction("append", insert)
                except BaseException:
                    self._raised = self._raised or raised
                    raise
            self._ids.next_id = max(self._ids.next_id, end)  # nothing that can fail comes after the commit
            self._committed_to = max(self._committed_to, end - 1)
            if intake_seq is not None:
                self._intake_seq = intake_seq
        self._evict_over_cap(below_id=first)
        return list(id_list)

    def mark_sent(self, ids: Iterable[int]) -> None:
        """Record delivery, in memory (``sent.py``): no transaction. ``prune`` writes it to the file
        every few seconds and deletes the rows once older than ``retain_sent_s`` (and
        ``SENT_GRACE_S``): so ``edge-agent tail``, which follows the file from another process,
        sees every row even with no retention."""
        id_list = list(ids)
        if not id_list:
            return
        now = self._now_ms()
        with self._lock:
            self._sent.add(id_list, now)

    def unsent(self, ids: Sequence[int]) -> list[int]:
        """Of ``ids`` (increasing), those not marked sent: the writer's queued rows the uplink may
        still have to publish (an ack can come before the commit)."""
        if not ids:
            return []
        with self._lock:
            gaps = list(self._sent.gaps(ids[0] - 1, ids[-1]))
        out: list[int] = []
        j = 0
        for i in ids:
            while j < len(gaps) and gaps[j][1] < i:
                j += 1
            if j < len(gaps) and gaps[j][0] <= i:
                out.append(i)
        return out

    def prune(self) -> int:
        """Housekeeping: delete sent rows older than retain_sent_s (and ``SENT_GRACE_S``, so a
        follower such as ``edge-agent tail`` polling the file never misses one) in large steps
        (module docstring), write the sent ranges that changed, then evict while over max_bytes;
        how many rows went."""
        now = self._now_ms()
        cutoff = now - int(max(self.retain_sent_s, SENT_GRACE_S) * 1000)
        with self._lock:
            self._db()
            # ids acked before their commit (published from the writer's queue) have no row yet:
            # prune stays below what this process committed, so they keep their sent mark
            top = max(self._committed_to, self._sent_floor)
            due = [(r.lo, min(r.hi, top)) for r in self._sent.due(cutoff) if r.lo <= top]
            if due and (sum(hi - lo + 1 for lo, hi in due) < PRUNE_STEP_IDS
                        and now - self._last_prune < PRUNE_STEP_S * 1000):
                due = []  # not worth a step yet
        expired = 0
        for lo, hi in due:
            start = lo
            while start <= hi:
                with self._lock:
                    start, count = self._transaction("prune", lambda conn: self._delete_from(conn, start, hi))
                expired += count
        with self._lock:
            if due:
                self._last_prune = now
            if self._sent.changed:
                token = self._transaction("saving the sent ranges", self._sent.write)
                self._sent.written(token)
            below = self._ids.next_id
        return expired + self._evict_over_cap(below_id=below).total

    def _sent_to(self, conn: sqlite3.Connection, first_new: int) -> int:
        """Every id up to this one was sent: one below the lowest unsent row still in the table
        (a rowid probe per gap between sent ranges; gaps whose rows were evicted are passed)."""
        for lo, hi in self._sent.gaps(0, first_new - 1):
            row = conn.execute(_FIRST_ROW, (lo, hi)).fetchone()
            if row is not None:
                return row[0] - 1
        return first_new - 1

    def _delete_from(self, conn: sqlite3.Connection, start: int, hi: int) -> tuple[int, int]:
        """Delete up to ``PRUNE_CHUNK`` ids' rows from the first row at or after ``start`` (sent,
        past retention; ids with no row left are passed at once); the ids leave the ranges once
        this commits. Returns where the next chunk starts and how many rows went."""
        row = conn.execute(_FIRST_ROW, (start, hi)).fetchone()
        if row is None:
            self._sent.stage(start, hi)
            return hi + 1, 0
        end = min(hi, row[0] + PRUNE_CHUNK - 1)
        count = conn.execute("DELETE FROM outbox WHERE id >= ? AND id <= ?", (row[0], end)).rowcount
        self._sent.stage(start, end)
        self._save_floor(conn)
        return end + 1, count

    def _evict_over_cap(self, *, below_id: int) -> evict.Tally:
        """Evict when over max_bytes, logged per episode (``evict.Episode``); never raises (the data
        is committed)."""
        try:
            tally = evict.over_cap(self._lock, self._transaction, self.max_bytes,
                                   int(self.max_bytes * EVICT_TO), below_id, self._delete)
            with self._lock:
                self._episode.after(tally, self.max_bytes, lambda: self._transaction(
                    "measuring the backlog", lambda conn: evict.backlog_bytes(conn, self._sent), write=False))
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
        rows: list[tuple] = []
        with self._lock:
            for lo, hi in self._sent.gaps(after_id, until):  # only ids not sent
                want = limit - len(rows)
                if prio is None:
                    sql, args = _GAP, (lo, hi, want)
                elif prio is Priority.NORMAL:
                    sql, args = _GAP_NORMAL, (lo, hi, want)
                else:
                    sql, args = _GAP_PRIO, (int(prio), lo, hi, want)
                rows += self._transaction("reading pending rows",
                                          lambda conn: conn.execute(sql, args).fetchall(), write=False)
                if len(rows) >= limit:
                    break
        return [OutRow(id=i, kind=kind, prio=_PRIO[p], ts=ts, body={"id": i, **json.loads(body)})
                for i, p, kind, ts, body in rows]

    def stats(self) -> BufferStats:
        """Backlog figures, read on a separate connection so the writer never waits for them.

        O(pending rows): ~0.4 s per million here. Fine for status; not for a hot loop.
        """
        with self._lock:
            self._db()
            next_id = self._ids.next_id
            sent = SentIds()
            sent.load(self._sent.ranges())
        found = read_stats(self.path, sent)
        return BufferStats(**{**found.__dict__, "next_id": next_id})

    @staticmethod
    def read_stats(path: Path | str) -> BufferStats:
        """Stats of the buffer at ``path``, open elsewhere or not at all (``buffer_stats.py``)."""
        return read_stats(path)
