"""The SQLite outbox: every reading and event waits here, under its contract id, until sent.

This is the only module that imports ``sqlite3``; the rest of the code sees ``Buffer``,
``OutRow``, ``BufferStats`` and ``BufferError``. The group-commit thread is in ``writer.py``.

Durability: WAL with ``synchronous=NORMAL``, chosen deliberately. A committed transaction
survives a kill -9 of the process (it is in the WAL, in the OS page cache); a power cut may
lose the last transactions not yet written back (the WAL is fsynced at checkpoints, not at
each commit; the kernel writes back within ~30 s) but never corrupts the file. FULL would
fsync every group commit (~5/s): 12% slower here (FACTS.md), and a steady fsync stream wears
the SD/eMMC flash gateways run on. Ids stay safe across a power cut either way (below).

Ids (contract section 4: unique, strictly increasing, never reused, even after a rebuilt
buffer) come from a floor kept outside the database: the sidecar ``<path>.ids`` holds a reserved
ceiling, every id handed out is below it, and it is raised a block (``id_block``, default
10,000) at a time, written atomically (tmp, fsync, rename, fsync dir) *before* any id above the
old ceiling is used. On open, next id = max(max id + 1, ``meta`` next_id and ceiling, sidecar
ceiling): after a crash the unused rest of a block is skipped, never reused; a clean close
lowers the ceiling to the next id, so a clean restart continues without a gap. A power cut
that loses committed rows cannot bring their ids back, since the sidecar was fsynced first.
Only one process may write a buffer: ``open`` takes an exclusive ``flock`` on ``<path>.lock``.

Threads: one connection, shared by the writer and uplink threads, serialised by a lock. Each
call is one short transaction (a 2000-row commit takes ~10 ms), id assignment must be atomic
with the insert anyway, and a Python lock hands over at once where SQLite's busy handler
sleeps and polls. ``stats`` and ``read_stats`` use their own read-only connection: under WAL
a reader never blocks the writer, so a slow count over millions of rows (or ``edge-agent
status`` in another process) never holds up a commit. ``busy_timeout`` covers the rest.

Rows store the body once, as compact ASCII JSON of ``item.to_wire()`` without the id: a row is
never republished with different content, and ASCII-only text can never fail to encode.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sqlite3
import threading
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from .model import Event, Priority, Reading

__all__ = ["Buffer", "BufferError", "BufferStats", "OutRow", "EncodedRow", "encode_items", "open_or_error"]

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 5000
PRUNE_CHUNK = 10_000  # rows per delete transaction, so the writer never waits long

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
         " ORDER BY id LIMIT ?")
# One index range per lane, merged by id: stays fast however many sent rows are retained.
_ALL_LANES = " UNION ALL ".join(f"SELECT * FROM ({_LANE})" for _ in Priority) + " ORDER BY id LIMIT ?"

_PRIO = {int(p): p for p in Priority}
_JSON = json.JSONEncoder(ensure_ascii=True, allow_nan=False, separators=(",", ":"))

EncodedRow = tuple[int, str, int, str]
"""(prio, kind, ts, body): an item checked and serialised, waiting for its id."""


class BufferError(Exception):
    """The buffer cannot be opened, read or written; the message names the file."""


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
    """Connect and prove the file is a SQLite database, or raise BufferError naming it.

    The seam for quarantine (a later issue): a caller may catch BufferError, move the file
    aside and open a fresh one; ids stay safe because the sidecar outlives the database.
    """
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
            conn.execute("PRAGMA journal_size_limit = 16777216")  # trim the WAL after checkpoints
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise BufferError(f"{path}: not a usable SQLite database ({exc})") from exc
    except BaseException:
        conn.close()
        raise
    return conn


def _read_ceiling(path: Path) -> int:
    """The sidecar's reserved ceiling; 0 when absent. An unreadable sidecar is logged, not fatal."""
    try:
        return int(path.read_text(encoding="ascii").strip())
    except FileNotFoundError:
        return 0
    except (OSError, ValueError) as exc:
        log.error("%s: unreadable id sidecar (%s); ids continue from the database alone", path, exc)
        return 0


def _write_ceiling(path: Path, value: int) -> None:
    """Replace the sidecar atomically and durably: tmp, fsync, rename, fsync the directory."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, f"{value}\n".encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


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
                       next_id=max(max_id + 1, meta.get("next_id", 1)))


class Buffer:
    """The outbox. ``open()`` (or ``with``) before use; every method is one transaction.

    ``retain_sent_s`` > 0 keeps sent rows (for replay) until ``prune``; ``max_bytes`` caps the
    database: ``prune`` drops the oldest *sent* rows while the used size is over it. Unsent rows
    are never dropped here. ``id_block`` is how many ids one sidecar write reserves. Stop the
    ``BufferWriter`` before ``close``; calls on a closed buffer raise BufferError.
    """

    def __init__(self, path: Path | str, *, max_bytes: int = 512 * 1024**2, retain_sent_s: float = 0.0,
                 clock: Callable[[], float] = time.time, id_block: int = 10_000) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.retain_sent_s = retain_sent_s
        self._clock = clock
        self._id_block = max(1, id_block)
        self._ids_path = Path(f"{self.path}.ids")
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        self._next_id = 1
        self._ceiling = 1  # ids below this are covered by the sidecar

    # -- lifecycle ---------------------------------------------------------------------------
    def open(self) -> "Buffer":
        """Create parent directories and schema, take the writer lock, load the id floor."""
        with self._lock:
            if self._conn is not None:
                return self
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._lock_fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._release_lock()
                raise BufferError(f"{self.path}: buffer is in use (another edge-agent holds {self.path}.lock)") from None
            except OSError as exc:
                self._release_lock()
                raise BufferError(f"{self.path}: cannot open buffer: {exc.strerror or exc}") from exc
            try:
                conn = open_or_error(self.path)
                try:
                    self._load(conn)
                except BaseException:
                    conn.close()
                    raise
            except BaseException:
                self._release_lock()
                raise
            self._conn = conn
            log.info("buffer %s open: next id %d", self.path, self._next_id)
            return self

    def _load(self, conn: sqlite3.Connection) -> None:
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise BufferError(f"{self.path}: buffer schema v{version} is newer than this edge-agent "
                                  f"(v{SCHEMA_VERSION})")
            conn.executescript(_SCHEMA + f"PRAGMA user_version = {SCHEMA_VERSION};")
            meta = _meta(conn)
            max_id = conn.execute("SELECT max(id) FROM outbox").fetchone()[0] or 0
        except sqlite3.Error as exc:
            raise BufferError(f"{self.path}: cannot read buffer: {exc}") from exc
        self._next_id = max(1, max_id + 1, meta.get("next_id", 1), meta.get("id_ceiling", 1),
                            _read_ceiling(self._ids_path))
        self._ceiling = self._next_id  # what is left of an old block is skipped, not reused

    def close(self) -> None:
        """Lower the id ceiling to the next id (no gap after a clean restart) and close."""
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is None:
                return
            try:
                _write_ceiling(self._ids_path, self._next_id)
                conn.execute(_SET_META, ("id_ceiling", self._next_id))
            except (OSError, sqlite3.Error) as exc:  # the higher ceilings stay: still safe
                log.warning("%s: could not record the id ceiling at close: %s", self.path, exc)
            finally:
                conn.close()
                self._release_lock()

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing drops the flock
            self._lock_fd = None

    def __enter__(self) -> "Buffer":
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise BufferError(f"{self.path}: buffer is not open")
        return self._conn

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _transaction(self, what: str, work: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run ``work`` in one IMMEDIATE transaction; SQLite errors become BufferError."""
        conn = self._db()
        try:
            conn.execute("BEGIN IMMEDIATE")
            result = work(conn)
            conn.execute("COMMIT")
            return result
        except BaseException as exc:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            if isinstance(exc, sqlite3.Error):
                raise BufferError(f"{self.path}: {what} failed: {exc}") from exc
            raise

    # -- writing -----------------------------------------------------------------------------
    def append(self, items: Sequence[Reading | Event]) -> list[int]:
        """Buffer items in one transaction; returns their ids in order. TypeError on bad items."""
        return self.append_encoded(encode_items(items))

    def append_encoded(self, rows: Sequence[EncodedRow]) -> list[int]:
        """Buffer rows already made by ``encode_items`` (the writer encodes at ``put`` time)."""
        if not rows:
            return []
        with self._lock:
            self._db()
            first = self._next_id
            end = first + len(rows)
            reserved = None
            if end > self._ceiling:
                reserved = end + self._id_block
                try:
                    _write_ceiling(self._ids_path, reserved)
                except OSError as exc:
                    raise BufferError(f"{self.path}: cannot reserve ids in {self._ids_path}: "
                                      f"{exc.strerror or exc}") from exc
                self._ceiling = reserved

            def work(conn: sqlite3.Connection) -> None:
                conn.executemany(_INSERT, [(i, *row) for i, row in zip(range(first, end), rows)])
                conn.execute(_SET_META, ("next_id", end))
                if reserved is not None:
                    conn.execute(_SET_META, ("id_ceiling", reserved))

            self._transaction("append", work)
            self._next_id = end  # nothing that can fail comes after the commit
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
        """Delete sent rows older than retain_sent_s, then the oldest sent rows while over max_bytes."""
        cutoff = self._now_ms() - int(self.retain_sent_s * 1000)
        expired = self._delete_sent("sent_at < ?", (cutoff,))
        over_cap = 0
        while self._used_bytes() > self.max_bytes:
            deleted = self._delete_sent("1", ())
            if not deleted:
                break
            over_cap += deleted
        if over_cap:
            log.warning("%s: over its %d-byte cap: dropped %d retained sent rows", self.path,
                        self.max_bytes, over_cap)
        return expired + over_cap

    def _delete_sent(self, condition: str, args: tuple[Any, ...]) -> int:
        """Delete matching sent rows, oldest first, in chunks; returns how many."""
        sql = (f"DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE sent_at IS NOT NULL"
               f" AND {condition} ORDER BY sent_at LIMIT {PRUNE_CHUNK})")
        total = 0
        while True:
            with self._lock:
                count = self._transaction("prune", lambda conn: conn.execute(sql, args).rowcount)
            total += count
            if count < PRUNE_CHUNK or condition == "1":
                return total

    def _used_bytes(self) -> int:
        with self._lock:
            conn = self._db()
            pages, free, size = (conn.execute(f"PRAGMA {p}").fetchone()[0]
                                 for p in ("page_count", "freelist_count", "page_size"))
        return (pages - free) * size

    # -- reading -----------------------------------------------------------------------------
    def pending(self, limit: int, *, prio: Priority | None = None, after_id: int = 0) -> list[OutRow]:
        """Unsent rows with id > after_id, in id order, optionally of one priority only."""
        if limit <= 0:
            return []
        if prio is None:
            sql, args = _ALL_LANES, [a for p in Priority for a in (int(p), after_id, limit)] + [limit]
        else:
            sql, args = _LANE, [int(prio), after_id, limit]
        with self._lock:
            try:
                rows = self._db().execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise BufferError(f"{self.path}: reading pending rows failed: {exc}") from exc
        return [OutRow(id=i, kind=kind, prio=_PRIO[p], ts=ts, body={"id": i, **json.loads(body)})
                for i, p, kind, ts, body in rows]

    def stats(self) -> BufferStats:
        """Backlog figures, read on a separate connection so the writer never waits for them.

        O(pending rows): ~0.4 s per million here. Fine for status; not for a hot loop.
        """
        with self._lock:
            self._db()
            next_id = self._next_id
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
