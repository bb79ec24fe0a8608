"""The buffer's database file: its schema, how it is opened, and what is done when it is damaged.

A part of the buffer (``buffer.py`` has the rows). Split off because none of this depends on
what the rows mean: it runs when ``Buffer`` opens the file, and again when a statement finds
the file corrupt. ``Buffer`` holds the connection, the lock and the id floor; the functions
here take a path or a connection and keep no state.

Errors (``BufferError`` and ``BufferFull`` are imported from ``buffer.outbox`` by the rest of the
code; ``BufferError`` is the buffer's branch of ``errors.EdgeAgentError``, defined there)::

    BufferError          the buffer cannot be opened, read or written; the message names the file
     +-- BufferFull      SQLite reported the database or disk full (SQLITE_FULL); nothing written
     +-- BufferCorrupt   not a database, truncated or damaged: Buffer quarantines the file
     +-- BufferDenied    this user may not open the file or its -wal/-shm (SQLITE_CANTOPEN, ...)

``unreadable`` is the one place a SQLite error met while reading is sorted into these, so that
``edge-agent status`` tells damage (what ``run`` will do about it) from permissions (whom to ask).

Durability: WAL with ``synchronous=NORMAL``, chosen deliberately. A committed transaction
survives a kill -9 of the process (it is in the WAL, in the OS page cache); a power cut may
lose the last transactions not yet written back (the WAL is fsynced at checkpoints, not at
each commit; the kernel writes back within ~30 s) but never corrupts the file. FULL would
fsync every group commit (~5/s): 12% slower here (FACTS.md), and a steady fsync stream wears
the SD/eMMC flash gateways run on. Ids stay safe either way: they come from the id floor, a
fsynced sidecar ``<path>.ids`` that outlives the database (``idfloor.py``).

Schema: ``PRAGMA user_version`` says which; a file of an older schema is upgraded in place as it
opens, its rows kept under their ids (``migrate.py``: v1, a row per reading, and v2, a ``sent_at``
per row, to v3: a row per record, sent ids as ranges in ``sent``); a newer one is refused (an older
edge-agent does not read a newer file).

Bytes written (the flash card's wear): ``PAGE_SIZE``, ``WAL_AUTOCHECKPOINT`` and ``WAL_LIMIT`` were
chosen by measurement (their comments). The rows are written once by their commit and once by a
checkpoint; what else a commit writes is pages it touches besides: no index but one on the few
rows above normal priority, no ``meta`` row per commit (the id floor and the intake seq travel
in the rows; ``meta`` is written when rows are deleted, ``Buffer.prune``), the sent state as
ranges every few seconds (``sent.py``), not a row at a time.

Corruption: ``Buffer.open`` quarantines a file that is not a database, is truncated (SQLite
checks the header's page count against the file) or fails ``PRAGMA quick_check``: it and its
-wal and -shm move to ``<path>.corrupt-<UTC yyyymmddTHHMMSSZ>`` (``.N`` added when taken, never
overwritten), one ERROR names it, a fresh database starts, ids continue above all ever issued
(the sidecar) and the evicted counters restart at 0. quick_check cost, measured here on a
1,000,000-row buffer (114 MiB): 0.2 s from the page cache, 2.2-2.7 s cold (as after a boot);
a full 512 MiB cap would take ~11 s cold, every start. So it runs when the last run did not
close cleanly (``record_clean_close`` sets ``clean_close`` in ``meta``, ``open_checked``
clears it), whatever the size, and after a clean close only while the database is at most
``quick_check_max_bytes`` (``buffer.QUICK_CHECK_MAX_BYTES``, 64 MiB: <= ~1.4 s cold; a
normal, drained buffer takes milliseconds). Damage in a larger file after a clean close is found when
a statement reaches it: at run time, a statement that finds the file corrupt ("database disk
image is malformed", "file is not a database") quarantines it likewise, reopens fresh and runs
once more (``Buffer._transaction``), so an append's items go into the fresh file under the
same ids. Rows in a quarantined file stay there for manual recovery; the agent never reads or
deletes them.
"""

from __future__ import annotations

import logging
import sqlite3
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from . import evict, migrate
from .sent import SENT_DDL
from ..errors import BufferError
from .idfloor import move_aside

__all__ = ["BufferCorrupt", "BufferDenied", "BufferError", "BufferFull", "OUTBOX_DDL", "Remembered", "SCHEMA_VERSION",
           "NEWEST", "SET_META", "WAL_LIMIT", "is_corrupt", "is_denied", "is_full", "leave_in_rollback_mode",
           "open_checked", "open_or_error", "quarantine", "read_meta", "record_clean_close", "unreadable"]

log = logging.getLogger("edge_agent.buffer")  # one logger for the whole buffer

SCHEMA_VERSION = 3  # 1: a row per reading (wire v1); 2: a row per record, sent_at per row (issue 13's
#                     development only); 3: sent ids as ranges (sent.py), seq (migrate.py upgrades 1 and 2)
BUSY_TIMEOUT_MS = 5000
# Chosen by measurement (bench/bench_disk_writes.py --sweep, docs/benchmarks.md), with eastron-like
# records of ~300-320 B. Every commit writes whole pages to the WAL (the last, partly filled leaf
# again each time), so a small page writes less per commit; but a page holds only whole rows: at
# 1 KiB two such rows fit and a third of it stays empty. 2 KiB held 5.65 rows a page: 83 B written
# per value at 4,000 values/s (1 KiB: 104; 4 KiB: 84-89). A checkpoint copies the pages every
# commit rewrites once more: 512 pages (1 MiB) between checkpoints wrote 150 B per value at 100
# values/s where 128 pages wrote 199-219; it takes more disk in an outage, the WAL at its longest
# (60 s at 400 values/s: 78 B a buffered value, db + wal + shm, against 45; 36 B checkpointed).
# The card's wear goes on every day; an outage's WAL is 1 MiB once.
PAGE_SIZE = 2048  # bytes; a new file only (an existing one keeps its own)
WAL_AUTOCHECKPOINT = 512  # pages: a checkpoint when the WAL holds this many (1 MiB)
WAL_LIMIT = 1024**2  # journal_size_limit: the WAL is trimmed to this after a checkpoint
# Debian builds SQLite with SECURE_DELETE on: every page a delete frees was zeroed and written, to the
# WAL and again by the checkpoint, so pruning wrote the rows twice more. FAST still zeroes deleted
# rows inside the pages a delete writes anyway; a freed page keeps its old rows until it is reused
# (the next commits reuse it). Those rows are what the wire carries: after privacy, never a raw value.
SECURE_DELETE = "FAST"

OUTBOX_DDL = """CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,           -- the contract id
    prio INTEGER NOT NULL,            -- Priority value
    kind TEXT NOT NULL CHECK (kind IN ('record', 'event')),
    ts INTEGER NOT NULL,              -- ms since the epoch
    body TEXT NOT NULL,               -- compact JSON of to_wire(), without the id
    seq INTEGER,                      -- the intake log seq, on the last row of a commit only
    sent_to INTEGER                   -- every id up to this one was sent, ditto (sent.py)
)"""
_SCHEMA = OUTBOX_DDL + """;
CREATE INDEX IF NOT EXISTS outbox_prio ON outbox (prio, id) WHERE prio > 0;
""" + SENT_DDL + """;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
SET_META = "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)"


class BufferFull(BufferError):
    """SQLite reported the database or disk full (SQLITE_FULL); nothing was written."""


class BufferCorrupt(BufferError):
    """The file is not a database, truncated or damaged: a case for quarantine."""


class BufferDenied(BufferError):
    """This user may not open the file or its journals: a case for root, the service group, or
    asking the daemon."""


def _code(exc: BaseException) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else code & 0xFF


def is_corrupt(exc: BaseException | None) -> bool:
    """Whether a SQLite error says the file is damaged (quarantine), not just unusable now."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    text = str(exc)
    return (_code(exc) in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
            or "malformed" in text or "file is not a database" in text)


_DENIED = (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM, sqlite3.SQLITE_READONLY)


def is_denied(exc: BaseException | None) -> bool:
    """Whether an error says this user may not open the file (or create its -shm), not damage.

    SQLite says "unable to open database file" (SQLITE_CANTOPEN) for a file it may not read, and
    a read-only connection that must create a -shm fails with SQLITE_READONLY or CANTOPEN."""
    if isinstance(exc, PermissionError):
        return True
    return isinstance(exc, sqlite3.Error) and (_code(exc) in _DENIED or "unable to open database file" in str(exc))


def unreadable(path: Path, exc: BaseException) -> BufferError:
    """The BufferError a SQLite (or OS) error on ``path`` means: BufferCorrupt, BufferDenied, or
    plain. The one place they are told apart: a damaged file must never read as a permission
    problem (``status`` tells root to run as root), nor the other way round."""
    if is_corrupt(exc):
        return BufferCorrupt(f"{path}: not a usable SQLite database ({exc})")
    if is_denied(exc):
        detail = exc.strerror if isinstance(exc, OSError) else str(exc)
        return BufferDenied(f"{path}: cannot open buffer database: {detail} (permissions of the file, its "
                            "-wal and -shm, or its directory)")
    if "no such table" in str(exc):
        return BufferError(f"{path}: holds no edge-agent buffer ({exc}); check buffer.path, else 'edge-agent "
                           "run' creates the buffer in this file")
    return BufferError(f"{path}: not an edge-agent buffer or unreadable: {exc}")


def is_full(exc: BaseException) -> bool:
    """Whether a SQLite error is SQLITE_FULL: the disk, or a page limit."""
    return _code(exc) == sqlite3.SQLITE_FULL or "database or disk is full" in str(exc)


READONLY_CACHE_KIB = 256  # page cache of a read-only connection (stats, tail, replay)


def open_or_error(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """Connect and prove the file is a SQLite database, or raise BufferError naming it."""
    try:
        if readonly:
            uri = "file:" + urllib.parse.quote(str(path.resolve())) + "?mode=ro"
            conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        else:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise unreadable(path, exc) from exc
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # reads the header
        if readonly:
            # stats and tail scan once and close: a small cache. Each thread that scans leaves its
            # malloc arena as large as the cache it filled (RSS), so the default 2 MB cost ~2 MB a
            # thread that reads stats (bench_rss: +6.8 MiB with a backlog, none without)
            conn.execute(f"PRAGMA cache_size = -{READONLY_CACHE_KIB}")
        else:
            _refuse_foreign(conn, path)  # before WAL mode, which would change the file
            conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")  # takes effect in a new, empty file only
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                raise BufferError(f"{path}: cannot switch the buffer to WAL mode (got {mode})")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute(f"PRAGMA journal_size_limit = {WAL_LIMIT}")  # trim the WAL after checkpoints
            conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT}")
            conn.execute(f"PRAGMA secure_delete = {SECURE_DELETE}")
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise unreadable(path, exc) from exc
    except BaseException:
        conn.close()
        raise
    return conn


OUR_TABLES = frozenset({"outbox", "sent", "meta", "outbox_new"})  # _SCHEMA's, and migrate.NEW_TABLE


def foreign_tables(conn: sqlite3.Connection) -> list[str]:
    """The tables of this database that no edge-agent schema has: another program's."""
    names = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
    return sorted(name for (name,) in names if name not in OUR_TABLES)


def _refuse_foreign(conn: sqlite3.Connection, path: Path) -> None:
    """``buffer.path`` naming another program's SQLite database: refuse it untouched. Writing our
    schema into it (and WAL mode, which stays with the file) would change someone else's data."""
    foreign = foreign_tables(conn)
    if foreign:
        raise BufferError(f"{path}: is another program's database (tables: {', '.join(foreign[:8])}"
                          f"{', ...' if len(foreign) > 8 else ''}); edge-agent leaves it as it is: check buffer.path")


def read_meta(conn: sqlite3.Connection) -> dict[str, int]:
    """The ``meta`` table: counters, the id copies, ``last_sent_at``, ``clean_close``."""
    return dict(conn.execute("SELECT key, value FROM meta").fetchall())


@dataclass(frozen=True)
class Remembered:
    """What a database just opened knows, for the id floor (``IdFloor.load``)."""

    existing: bool  # the file held a buffer before this open (not created just now)
    max_id: int  # the highest id in ``outbox``; 0 when empty
    meta: dict[str, int]
    intake_seq: int = 0  # the intake log seq of the last row committed (the newest row's, or meta's)
    sent_to: int = 0  # every id up to this one was sent, as the newest commit knew
    sent: list[tuple[int, int, int]] = field(default_factory=list)  # the ``sent`` ranges (lo, hi, at)


# The newest row that carries a seq (the last row of each writer commit) or a sent_to (of every
# commit): a few rows back at most; bounded, so a file written otherwise never costs a full scan.
NEWEST = "SELECT {0} FROM (SELECT {0} FROM outbox ORDER BY id DESC LIMIT 10000) WHERE {0} IS NOT NULL LIMIT 1"


def open_checked(path: Path, *, quick_check_max_bytes: int) -> tuple[sqlite3.Connection, Remembered]:
    """A writable connection to a sound database with the current schema, and what it holds.

    Checks the schema version and, when due (module docstring), runs quick_check; clears
    ``clean_close``. BufferCorrupt when the file is damaged, BufferError otherwise.
    """
    conn = open_or_error(path)
    try:
        return conn, _prepare(conn, path, quick_check_max_bytes)
    except BaseException:
        conn.close()
        raise


def _prepare(conn: sqlite3.Connection, path: Path, quick_check_max_bytes: int) -> Remembered:
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise BufferError(f"{path}: buffer schema v{version} is newer than this edge-agent "
                              f"(v{SCHEMA_VERSION})")
        existing = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone() is not None
        if existing:
            clean = read_meta(conn).get("clean_close") == 1
            if not clean or evict.file_pages_bytes(conn) <= quick_check_max_bytes:
                _quick_check(conn, path, clean)
            migrate.upgrade(conn, path, version, OUTBOX_DDL, SCHEMA_VERSION, SENT_DDL)
        # one transaction: a reader beside us (status, tail) sees no schema or all of it
        conn.executescript("BEGIN IMMEDIATE;" + _SCHEMA + f"PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;")
        meta = read_meta(conn)
        max_id = conn.execute("SELECT max(id) FROM outbox").fetchone()[0] or 0
        (seq,) = conn.execute(NEWEST.format("seq")).fetchone() or (None,)
        (sent_to,) = conn.execute(NEWEST.format("sent_to")).fetchone() or (None,)
        sent = conn.execute("SELECT lo, hi, at FROM sent").fetchall()
        conn.execute("DELETE FROM meta WHERE key = 'clean_close'")
    except sqlite3.Error as exc:
        kind = BufferCorrupt if is_corrupt(exc) else BufferError
        raise kind(f"{path}: cannot read buffer: {exc}") from exc
    return Remembered(existing=existing, max_id=max_id, meta=meta,
                      intake_seq=max(seq or 0, meta.get("intake_seq", 0)), sent_to=sent_to or 0, sent=sent)


def _quick_check(conn: sqlite3.Connection, path: Path, clean: bool) -> None:
    started = time.monotonic()
    found = conn.execute("PRAGMA quick_check(1)").fetchone()[0]
    log.log(logging.DEBUG if clean else logging.INFO, "buffer %s %s: quick_check took %.2f s", path,
            "closed cleanly" if clean else "did not close cleanly", time.monotonic() - started)
    if found != "ok":
        raise BufferCorrupt(" ".join(str(found).split()))


def record_clean_close(conn: sqlite3.Connection, path: Path, next_id: int) -> None:
    """At ``Buffer.close``: store the exact next id (the ceiling's copy lowered to it) and mark
    the close clean, so the next open may skip quick_check. A failure is only logged: the next
    open runs quick_check, still safe."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(SET_META, ("id_ceiling", next_id))
        conn.execute(SET_META, ("next_id", next_id))  # exact, for the next open
        conn.execute(SET_META, ("clean_close", 1))
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        log.warning("%s: could not record a clean close: %s", path, exc)


def leave_in_rollback_mode(conn: sqlite3.Connection, path: Path) -> None:
    """At a clean close: switch the file out of WAL (checkpointing it), so that once the writer is
    gone a reader that may not create files in the state directory (a technician in the service
    group running ``status``, ``tail`` or ``audit``) can still open it read-only: a WAL file
    needs its -shm, which such a reader cannot create. The next writer switches back to WAL.
    Refused while another connection is open (a ``tail``): then WAL stays, as before."""
    try:
        conn.execute("PRAGMA journal_mode = DELETE").fetchone()
    except sqlite3.Error as exc:
        log.debug("%s: left in WAL mode at close: %s", path, exc)


def quarantine(path: Path, reason: str, now: float) -> None:
    """Move the corrupt database and its journals aside (``idfloor.move_aside``), named by
    ``now`` (epoch seconds, UTC); one ERROR. The connection must be closed first."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    try:
        aside = move_aside(path, stamp)
    except OSError as exc:
        raise BufferError(f"{path}: corrupt ({reason}) and cannot be moved aside: "
                          f"{exc.strerror or exc}") from exc
    log.error("buffer %s is corrupt (%s): quarantined as %s, where its rows stay for manual "
              "recovery; continuing with a fresh buffer", path, reason, aside)
