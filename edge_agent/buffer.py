"""The SQLite outbox: every reading and event waits here, under its contract id, until sent.

The buffer is this module, ``evict.py`` (what leaves a full buffer) and ``idfloor.py`` (ids,
lock, quarantine files); only they touch SQLite or its files. The rest of the code sees
``Buffer``, ``OutRow``, ``BufferStats`` and ``BufferError``/``BufferFull``. The group-commit
thread is ``writer.py``.

Durability: WAL with ``synchronous=NORMAL``, chosen deliberately. A committed transaction
survives a kill -9 of the process (it is in the WAL, in the OS page cache); a power cut may
lose the last transactions not yet written back (the WAL is fsynced at checkpoints, not at
each commit; the kernel writes back within ~30 s) but never corrupts the file. FULL would
fsync every group commit (~5/s): 12% slower here (FACTS.md), and a steady fsync stream wears
the SD/eMMC flash gateways run on. Ids stay safe either way: they come from the id floor, a
fsynced sidecar ``<path>.ids`` that outlives the database (``idfloor.py``).

Bounded disk: ``max_bytes`` bounds the database's live pages, ``(page_count - freelist_count)
* page_size``, checked after every append. Over it, old rows are evicted down to 90% of it:
retained sent rows, then unsent normal, high, critical, oldest first (``evict.py``); the
commit that crossed the cap always stays, so a cap below one commit cannot loop. Unsent rows
evicted are counted per priority (``BufferStats.evicted``, persisted in ``meta``). The file on
disk may exceed ``max_bytes`` by the WAL (``WAL_LIMIT`` after a checkpoint; ~1000 pages plus
one commit between checkpoints), plus one commit, plus the free pages evictions leave: the
file does not shrink, later commits reuse them. On SQLITE_FULL (a full disk or a page limit)
``append_encoded(make_room=True)`` evicts inside the insert's own transaction.

Corruption: ``open`` quarantines a file that is not a database, is truncated (SQLite checks
the header's page count against the file) or fails ``PRAGMA quick_check``: it and its -wal and
-shm move to ``<path>.corrupt-<UTC yyyymmddTHHMMSSZ>`` (``.N`` added when taken, never
overwritten), one ERROR names it, a fresh database starts, ids continue above all ever issued
(the sidecar) and the evicted counters restart at 0. quick_check cost, measured here on a
1,000,000-row buffer (114 MiB): 0.2 s from the page cache, 2.2-2.7 s cold (as after a boot);
a full 512 MiB cap would take ~11 s cold, every start. So it runs when the last run did not
close cleanly (``close`` sets ``clean_close`` in ``meta``, ``open`` clears it), whatever the
size, and after a clean close only while the database is at most ``QUICK_CHECK_MAX_BYTES``
(64 MiB: <= ~1.4 s cold; a normal, drained buffer takes milliseconds). Damage in a larger file
after a clean close is found when a statement reaches it: at run time, a statement that finds
the file corrupt ("database disk image is malformed", "file is not a database") quarantines it
likewise, reopens fresh and runs once more, so an append's items go into the fresh file under
the same ids. Rows in a quarantined file stay there for manual recovery; the agent never reads
or deletes them.

Threads: one connection, shared by the writer and uplink threads, serialised by a lock. Each
call is one short transaction (a 2000-row commit takes ~10 ms; eviction takes the lock per
500-row chunk), and a Python lock hands over at once where SQLite's busy handler sleeps and
polls. ``stats`` and ``read_stats`` use their own read-only connection: under WAL a reader
never blocks the writer, so a slow count (or ``edge-agent status`` in another process) never
holds up a commit.

Rows store the body once, as compact ASCII JSON of ``item.to_wire()`` without the id: a row is
never republished with different content, and ASCII-only text can never fail to encode.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from . import evict
from .idfloor import IdFloor, drop_kept, keep_journals, move_aside
from .model import Event, Priority, Reading

__all__ = ["Buffer", "BufferError", "BufferFull", "BufferStats", "OutRow", "EncodedRow", "encode_items",
           "open_or_error", "WAL_LIMIT"]

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 5000
PRUNE_CHUNK = 10_000  # rows per delete transaction, so the writer never waits long
WAL_LIMIT = 4 * 1024**2  # journal_size_limit: the WAL is trimmed to this after a checkpoint
EVICT_TO = 0.9  # an eviction stops at this fraction of max_bytes
QUICK_CHECK_MAX_BYTES = 64 * 1024**2  # after a clean close, quick_check only files this small
MAX_ID = (1 << 63) - 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,           -- the contract id
    prio INTEGER NOT NULL,            -- Priority value
    kind TEXT NOT NULL CHECK (kind IN ('reading', 'event')),
    ts INTEGER NOT NULL,              -- ms since the epoch
    body TEXT NOT NULL,               -- compact JSON of to_wire(), without the id
    sent_at INTEGER                   -- ms; NULL while unsent
);
CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox (prio, id) WHERE sent_at IS NULL;
CREATE INDEX IF NOT EXISTS outbox_sent ON outbox (sent_at) WHERE sent_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
_INSERT = "INSERT INTO outbox (id, prio, kind, ts, body) VALUES (?, ?, ?, ?, ?)"
_SET_META = "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)"
_LANE = ("SELECT id, prio, kind, ts, body FROM outbox WHERE sent_at IS NULL AND prio = ? AND id > ?"
         " AND id <= ? ORDER BY id LIMIT ?")
# One index range per lane, merged by id: stays fast however many sent rows are retained.
_ALL_LANES = " UNION ALL ".join(f"SELECT * FROM ({_LANE})" for _ in Priority) + " ORDER BY id LIMIT ?"

_PRIO = {int(p): p for p in Priority}
_JSON = json.JSONEncoder(ensure_ascii=True, allow_nan=False, separators=(",", ":"))

EncodedRow = tuple[int, str, int, str]
"""(prio, kind, ts, body): an item checked and serialised, waiting for its id."""


class BufferError(Exception):
    """The buffer cannot be opened, read or written; the message names the file."""


class BufferFull(BufferError):
    """SQLite reported the database or disk full (SQLITE_FULL); nothing was written."""


class _Corrupt(BufferError):
    """The file is not a database, truncated or damaged: a case for quarantine."""


def _code(exc: BaseException) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else code & 0xFF


def _is_corrupt(exc: BaseException | None) -> bool:
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    text = str(exc)
    return (_code(exc) in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
            or "malformed" in text or "file is not a database" in text)


def _is_full(exc: BaseException) -> bool:
    return _code(exc) == sqlite3.SQLITE_FULL or "database or disk is full" in str(exc)


@dataclass(frozen=True)
class OutRow:
    """One buffered item as the uplink publishes it; ``body`` is the wire dict, ``id`` first."""

    id: int
    kind: str
    prio: Priority
    ts: int
    body: dict[str, Any]


@dataclass(frozen=True)
class BufferStats:
    """The backlog at a glance; ``pending_bytes`` counts body JSON (what goes on the wire)."""

    pending: int
    pending_bytes: int
    oldest_pending_ts: int | None
    pending_by_prio: dict[str, int]  # "critical", "high", "normal"
    retained_sent: int
    last_sent_at: int | None
    file_bytes: int  # database plus its WAL
    next_id: int
    # unsent rows evicted from a full buffer, per priority, since this database was created
    evicted: dict[str, int] = field(default_factory=lambda: evict.evicted_counts({}))


def encode_items(items: Sequence[Reading | Event]) -> list[EncodedRow]:
    """Check and serialise items; raises TypeError naming the item (never its value).

    Done before anything is written or queued, so one bad value can never stall a commit.
    """
    rows: list[EncodedRow] = []
    for item in items:
        if isinstance(item, Reading):
            what, kind, prio = f"reading {item.dev}/{item.pt}", "reading", Priority.NORMAL
        elif isinstance(item, Event):
            what, kind, prio = f"event {item.dev}/{item.type}", "event", Priority(item.prio)
        else:
            raise TypeError(f"the buffer takes Reading or Event, not {type(item).__name__}")
        ts = item.ts
        if type(ts) is not int or not 0 <= ts < 1 << 63:
            raise TypeError(f"{what}: ts must be integer milliseconds, not {type(ts).__name__}")
        try:
            body = _JSON.encode(item.to_wire())
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{what}: not JSON-serialisable ({exc})") from None
        rows.append((int(prio), kind, ts, body))
    return rows


def open_or_error(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """Connect and prove the file is a SQLite database, or raise BufferError naming it."""
    try:
        if readonly:
            uri = "file:" + urllib.parse.quote(str(path.resolve())) + "?mode=ro"
            conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        else:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise BufferError(f"{path}: cannot open buffer database: {exc}") from exc
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # reads the header
        if not readonly:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                raise BufferError(f"{path}: cannot switch the buffer to WAL mode (got {mode})")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute(f"PRAGMA journal_size_limit = {WAL_LIMIT}")  # trim the WAL after checkpoints
    except sqlite3.DatabaseError as exc:
        conn.close()
        kind = _Corrupt if _is_corrupt(exc) else BufferError
        raise kind(f"{path}: not a usable SQLite database ({exc})") from exc
    except BaseException:
        conn.close()
        raise
    return conn


def _meta(conn: sqlite3.Connection) -> dict[str, int]:
    return dict(conn.execute("SELECT key, value FROM meta").fetchall())


def _file_bytes(path: Path) -> int:
    total = 0
    for p in (path, Path(f"{path}-wal")):
        try:
            total += p.stat().st_size
        except FileNotFoundError:
            pass
    return total


def _compute_stats(conn: sqlite3.Connection, path: Path) -> BufferStats:
    by_prio = {p.label: 0 for p in sorted(Priority, reverse=True)}
    pending = pending_bytes = 0
    oldest: int | None = None
    for prio, count, size, low_ts in conn.execute(
            "SELECT prio, count(*), sum(length(body)), min(ts) FROM outbox"
            " WHERE sent_at IS NULL GROUP BY prio"):
        by_prio[Priority(prio).label] = count
        pending += count
        pending_bytes += size or 0
        oldest = low_ts if oldest is None else min(oldest, low_ts)
    retained = conn.execute("SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL").fetchone()[0]
    max_id = conn.execute("SELECT max(id) FROM outbox").fetchone()[0] or 0
    meta = _meta(conn)
    return BufferStats(pending=pending, pending_bytes=pending_bytes, oldest_pending_ts=oldest,
                       pending_by_prio=by_prio, retained_sent=retained,
                       last_sent_at=meta.get("last_sent_at"), file_bytes=_file_bytes(path),
                       next_id=max(max_id + 1, meta.get("next_id", 1)),
                       evicted=evict.evicted_counts(meta))


class Buffer:
    """The outbox. ``open()`` (or ``with``) before use; every method is one transaction.

    ``retain_sent_s`` > 0 keeps sent rows (for replay) until ``prune`` or eviction;
    ``max_bytes`` caps the live pages (module docstring). ``id_block`` is how many ids one
    sidecar write reserves. Stop the ``BufferWriter`` before ``close``; calls on a closed
    buffer raise BufferError.
    """

    def __init__(self, path: Path | str, *, max_bytes: int = 512 * 1024**2, retain_sent_s: float = 0.0,
                 clock: Callable[[], float] = time.time, id_block: int = 10_000) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.retain_sent_s = retain_sent_s
        self._clock = clock
        self._ids = IdFloor(self.path, id_block)
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._reopen = False  # a quarantine left no connection: the next call tries again

    # -- lifecycle ---------------------------------------------------------------------------
    def open(self) -> "Buffer":
        """Create parent directories and schema, take the writer lock, load the id floor.

        A corrupt file is quarantined and replaced by a fresh one (module docstring).
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
                except _Corrupt as exc:
                    self._quarantine(str(exc.__cause__ or exc))
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
        conn = open_or_error(self.path)
        try:
            self._load(conn, load_ids)
        except BaseException:
            conn.close()
            raise
        return conn

    def _load(self, conn: sqlite3.Connection, load_ids: bool) -> None:
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise BufferError(f"{self.path}: buffer schema v{version} is newer than this edge-agent "
                                  f"(v{SCHEMA_VERSION})")
            existing = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone() is not None
            if existing:
                clean = _meta(conn).get("clean_close") == 1
                if not clean or evict.file_pages_bytes(conn) <= QUICK_CHECK_MAX_BYTES:
                    self._quick_check(conn, clean)
            conn.executescript(_SCHEMA + f"PRAGMA user_version = {SCHEMA_VERSION};")
            meta = _meta(conn)
            max_id = conn.execute("SELECT max(id) FROM outbox").fetchone()[0] or 0
            conn.execute("DELETE FROM meta WHERE key = 'clean_close'")
        except sqlite3.Error as exc:
            kind = _Corrupt if _is_corrupt(exc) else BufferError
            raise kind(f"{self.path}: cannot read buffer: {exc}") from exc
        if load_ids:
            # an existing, sound database knows its next id exactly unless the machine rebooted
            # after an unclean end (a power cut may have lost commits): see idfloor.py
            self._ids.load(max_id + 1, meta.get("next_id", 1), ceiling_copy=meta.get("id_ceiling", 1),
                           trust_floors=existing)

    def _quick_check(self, conn: sqlite3.Connection, clean: bool) -> None:
        started = time.monotonic()
        found = conn.execute("PRAGMA quick_check(1)").fetchone()[0]
        log.log(logging.DEBUG if clean else logging.INFO, "buffer %s %s: quick_check took %.2f s", self.path,
                "closed cleanly" if clean else "did not close cleanly", time.monotonic() - started)
        if found != "ok":
            raise _Corrupt(" ".join(str(found).split()))

    def _quarantine(self, reason: str) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self._clock()))
        try:
            aside = move_aside(self.path, stamp)
        except OSError as exc:
            raise BufferError(f"{self.path}: corrupt ({reason}) and cannot be moved aside: "
                              f"{exc.strerror or exc}") from exc
        log.error("buffer %s is corrupt (%s): quarantined as %s, where its rows stay for manual "
                  "recovery; continuing with a fresh buffer", self.path, reason, aside)

    def _renew(self, what: str, exc: sqlite3.Error) -> None:
        """Corruption found at run time: quarantine, then a fresh file with the same id floor."""
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except sqlite3.Error:
                pass
        self._reopen = True
        self._quarantine(f"{what}: {exc}")
        self._conn = self._connect(load_ids=False)
        self._reopen = False

    def close(self) -> None:
        """Lower the id ceiling to the next id (no gap after a clean restart), mark the close
        clean, and close."""
        with self._lock:
            conn, self._conn, self._reopen = self._conn, None, False
            if conn is None:
                self._ids.release()
                return
            try:
                self._ids.lower()
            except OSError as exc:  # the higher ceiling stays: still safe
                log.warning("%s: could not lower the id ceiling at close: %s", self.path, exc)
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(_SET_META, ("id_ceiling", self._ids.next_id))
                conn.execute(_SET_META, ("next_id", self._ids.next_id))  # exact, for the next open
                conn.execute(_SET_META, ("clean_close", 1))
                conn.execute("COMMIT")
            except sqlite3.Error as exc:  # the next open runs a quick_check: still safe
                log.warning("%s: could not record a clean close: %s", self.path, exc)
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
                if attempt == 1 and _is_corrupt(exc):
                    self._renew(what, exc)
                    continue
                kind = BufferFull if _is_full(exc) else BufferError
                raise kind(f"{self.path}: {what} failed: {exc}") from exc
        raise AssertionError("unreachable")

    # -- writing -----------------------------------------------------------------------------
    def append(self, items: Sequence[Reading | Event]) -> list[int]:
        """Buffer items in one transaction; returns their ids in order. TypeError on bad items."""
        return self.append_encoded(encode_items(items))

    def append_encoded(self, rows: Sequence[EncodedRow], *, make_room: bool = False) -> list[int]:
        """Buffer rows already made by ``encode_items`` (the writer encodes at ``put`` time).

        Then evicts old rows while the database is over ``max_bytes``. ``make_room`` (after a
        BufferFull) also evicts inside the insert's transaction until the rows fit.
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
                conn.execute(_SET_META, ("next_id", end))
                conn.execute(_SET_META, ("id_ceiling", self._ids.ceiling))

            if make_room:
                tally = evict.make_room(self._transaction, insert, rows, first, BufferFull)
                if tally:
                    log.warning("buffer %s: disk full: made room for %d rows by evicting %s", self.path,
                                len(rows), tally.describe())
            else:
                self._transaction("append", insert)
            self._ids.next_id = end  # nothing that can fail comes after the commit
        self._evict_over_cap(below_id=first)
        return list(range(first, end))

    def mark_sent(self, ids: Iterable[int]) -> None:
        """Record delivery in one transaction: keep the rows (retain_sent_s > 0) or delete them."""
        id_list = list(ids)
        if not id_list:
            return
        now = self._now_ms()

        def work(conn: sqlite3.Connection) -> None:
            if self.retain_sent_s > 0:
                conn.executemany("UPDATE outbox SET sent_at = ? WHERE id = ? AND sent_at IS NULL",
                                 [(now, i) for i in id_list])
            else:
                conn.executemany("DELETE FROM outbox WHERE id = ? AND sent_at IS NULL",
                                 [(i,) for i in id_list])
            conn.execute(_SET_META, ("last_sent_at", now))

        with self._lock:
            self._transaction("mark_sent", work)

    def prune(self) -> int:
        """Delete sent rows older than retain_sent_s, then evict while over max_bytes; how many."""
        cutoff = self._now_ms() - int(self.retain_sent_s * 1000)
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
        """One eviction episode when over max_bytes; never raises (the data is committed)."""
        try:
            tally = evict.over_cap(self._lock, self._transaction, self.max_bytes,
                                   int(self.max_bytes * EVICT_TO), below_id)
        except BufferError as exc:
            log.warning("buffer %s: eviction failed (%s); tried again after the next commit", self.path, exc)
            return evict.Tally()
        if tally:
            log.warning("buffer %s over its %d-byte cap: evicted %s; %d bytes in use%s", self.path,
                        self.max_bytes, tally.describe(), tally.used,
                        " (the newest commit alone is over the cap)" if tally.used > self.max_bytes else "")
        return tally

    # -- reading -----------------------------------------------------------------------------
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
        """Stats through a read-only connection: never creates the file, works beside a daemon.

        ``next_id`` is one past the last committed id; a restart after a crash skips ahead to
        the reserved ceiling.
        """
        path = Path(path)
        if not path.is_file():
            raise BufferError(f"{path}: no buffer database here (has the daemon run yet?)")
        conn = open_or_error(path, readonly=True)
        try:
            return _compute_stats(conn, path)
        except sqlite3.Error as exc:
            raise BufferError(f"{path}: not an edge-agent buffer or unreadable: {exc}") from exc
        finally:
            conn.close()
