"""The buffer's backlog figures, read through a read-only connection of their own.

A part of the buffer (``buffer.py`` has the rows). Split off because the figures never go
through the buffer's shared connection or its lock: under WAL a reader never blocks the
writer, so a slow count (or ``edge-agent status`` in another process, beside a running
daemon) never holds up a commit. ``read_stats`` never creates the file. The figures are
O(pending rows): ~0.4 s per million here. Fine for status; not for a hot loop.

``Buffer.stats`` (the live next id) and ``Buffer.read_stats`` (a path, no open buffer) are
the ways in; the rest of the code imports ``BufferStats`` from ``buffer.py``.

A file with no buffer *yet* (``read_stats_if_made`` returns None for it; ``read_stats`` says so
in its BufferError) is told apart from another program's database, in one snapshot: 0 bytes
(SQLite creates the file at connect), or ``user_version`` 0 with no tables but (some of) ours,
empty: a starting daemon has the file and commits its schema a table at a time
(``file._prepare``'s ``executescript``; in WAL mode the uncommitted rest is invisible to us),
setting ``user_version`` last. Any other table, or ours holding rows, is not a buffer: refused.
``edge-agent status`` beside a starting daemon hit that window (it exited 1).

Rows, read the same way: ``read_rows`` (what ``edge-agent tail`` follows) and, for the
``buffer.replay`` command, ``replay_span`` (how many rows a range holds) and ``read_range``
(those rows, a page at a time by id, so no read transaction stays open during a slow replay
and the WAL can still be checkpointed).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from . import evict
from .file import NEWEST, OUR_TABLES, BufferError, open_or_error, read_meta, unreadable
from .sent import SentIds, load as load_sent
from ..model import Priority

__all__ = ["BufferStats", "read_stats", "read_stats_if_made", "read_rows", "replay_span", "read_range", "Span"]


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


def read_stats(path: Path | str, sent: SentIds | None = None) -> BufferStats:
    """Stats through a read-only connection: never creates the file, works beside a daemon.

    ``next_id`` is one past the last committed id; a restart after a crash skips ahead to
    the reserved ceiling. ``sent``: the running buffer's own sent ranges (``Buffer.stats``),
    fresher than the ``sent`` table, which is written every few seconds (``sent.py``).
    """
    found = read_stats_if_made(path, sent)
    if found is None and not Path(path).exists():
        raise BufferError(f"{path}: no buffer database here (has the daemon run yet?)")
    if found is None:
        raise BufferError(f"{path}: holds no edge-agent buffer yet (an empty database: a daemon starting now "
                          "creates it, else 'edge-agent run' does)")
    return found


def read_stats_if_made(path: Path | str, sent: SentIds | None = None) -> BufferStats | None:
    """``read_stats``, or None while there is no buffer yet: no file, or a file that holds none yet
    (module docstring); what ``status`` shows as "no buffer yet". BufferError as ``read_stats``
    otherwise, another program's database included. Never creates the file."""
    path = Path(path)
    if not path.exists():
        return None
    if not path.is_file():
        raise BufferError(f"{path}: no buffer database here: it is not a file (check buffer.path)")
    conn = open_or_error(path, readonly=True)
    try:
        if not _made(conn, path):
            return None
        return _compute_stats(conn, path, sent)
    except sqlite3.Error as exc:
        raise unreadable(path, exc) from exc
    finally:
        conn.close()


def _made(conn: sqlite3.Connection, path: Path) -> bool:
    """True: a buffer to read; False: none yet. BufferError for a database that is not ours."""
    conn.execute("BEGIN")  # one snapshot: the daemon may be committing its schema meanwhile
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = sorted(name for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"))
        if version and "outbox" in tables:
            return True
        if not version and set(tables) <= OUR_TABLES and not any(
                conn.execute(f"SELECT 1 FROM {name} LIMIT 1").fetchone() for name in tables):
            return False
    finally:
        conn.execute("COMMIT")
    shown = ", ".join(tables) or "none"
    raise BufferError(f"{path}: holds no edge-agent buffer: another program's database? (schema version {version}, "
                      f"tables: {shown}); check buffer.path")


def _file_bytes(path: Path) -> int:
    total = 0
    for p in (path, Path(f"{path}-wal")):
        try:
            total += p.stat().st_size
        except FileNotFoundError:
            pass
    return total


_BY_PRIO = "SELECT prio, count(*), sum(length(body)), min(ts) FROM outbox WHERE id >= ? AND id <= ? GROUP BY prio"
_LEGACY_BY_PRIO = ("SELECT prio, count(*), sum(length(body)), min(ts) FROM outbox WHERE sent_at IS NULL"
                   " GROUP BY prio")  # a file not yet upgraded (schema 1 or 2: sent_at per row)


def _compute_stats(conn: sqlite3.Connection, path: Path, sent: SentIds | None) -> BufferStats:
    by_prio = {p.label: 0 for p in sorted(Priority, reverse=True)}
    pending = pending_bytes = 0
    oldest: int | None = None
    legacy = conn.execute("PRAGMA user_version").fetchone()[0] < 3
    if sent is None and not legacy:
        sent = load_sent(conn)  # as the next open reads it: the ranges, and the newest commit's sent_to
        (sent_to,) = conn.execute(NEWEST.format("sent_to")).fetchone() or (None,)
        if sent_to:
            sent.cover_to(sent_to, 0)
    groups = (conn.execute(_LEGACY_BY_PRIO).fetchall() if legacy
              else [row for gap in sent.gaps() for row in conn.execute(_BY_PRIO, gap)])  # type: ignore[union-attr]
    for prio, count, size, low_ts in groups:
        by_prio[Priority(prio).label] += count
        pending += count
        pending_bytes += size or 0
        oldest = low_ts if oldest is None else min(oldest, low_ts)
    if legacy:
        retained = conn.execute("SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL").fetchone()[0]
    else:
        retained = evict.count_in(conn, ((lo, hi) for lo, hi, _ in sent.ranges()))  # type: ignore[union-attr]
    max_id = conn.execute("SELECT max(id) FROM outbox").fetchone()[0] or 0
    meta = read_meta(conn)
    acked = None if legacy else sent.last_at  # type: ignore[union-attr]
    last_sent = max(filter(None, (meta.get("last_sent_at"), acked)), default=None)
    return BufferStats(pending=pending, pending_bytes=pending_bytes, oldest_pending_ts=oldest,
                       pending_by_prio=by_prio, retained_sent=retained,
                       last_sent_at=last_sent, file_bytes=_file_bytes(path),
                       next_id=max(max_id + 1, meta.get("next_id", 1)),
                       evicted=evict.evicted_counts(meta))


def read_rows(path: Path | str, *, after_id: int = 0, limit: int = 1000,
              last: int | None = None) -> list[tuple[int, str, dict]]:
    """Rows (id, kind, wire body) with id > ``after_id``, oldest first, sent or not, through a
    read-only connection: what ``edge-agent tail`` follows. ``last``: only the newest N.

    Bodies are stored after the privacy stage, so they are exactly what the wire carries.
    """
    path = Path(path)
    if not path.is_file():
        raise BufferError(f"{path}: no buffer database here (has the daemon run yet?)")
    conn = open_or_error(path, readonly=True)
    try:
        if last is not None:
            rows = conn.execute("SELECT id, kind, body FROM outbox WHERE id > ? ORDER BY id DESC LIMIT ?",
                                (after_id, last)).fetchall()[::-1]
        else:
            rows = conn.execute("SELECT id, kind, body FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
                                (after_id, limit)).fetchall()
    except sqlite3.Error as exc:
        raise unreadable(path, exc) from exc
    finally:
        conn.close()
    return [(rid, kind, {"id": rid, **json.loads(body)}) for rid, kind, body in rows]


@dataclass(frozen=True)
class Span:
    """The rows of a replay range: how many, and the lowest and highest id among them."""

    rows: int
    first_id: int | None
    last_id: int | None


def _range_sql(from_ts: int | None, to_ts: int | None) -> tuple[str, list[int]]:
    if from_ts is None and to_ts is None:
        return "", []
    return " AND ts >= ? AND ts <= ?", [from_ts if from_ts is not None else 0,
                                        to_ts if to_ts is not None else (1 << 63) - 1]


def _read(path: Path | str, sql: str, args: list[int]) -> list[tuple]:
    path = Path(path)
    if not path.is_file():
        raise BufferError(f"{path}: no buffer database here (has the daemon run yet?)")
    conn = open_or_error(path, readonly=True)
    try:
        return conn.execute(sql, args).fetchall()
    except sqlite3.Error as exc:
        raise unreadable(path, exc) from exc
    finally:
        conn.close()


def replay_span(path: Path | str, *, from_id: int = 0, to_id: int = (1 << 63) - 1,
                from_ts: int | None = None, to_ts: int | None = None) -> Span:
    """The rows with ``from_id <= id <= to_id`` (and ``from_ts <= ts <= to_ts`` when given),
    sent or not, still in the buffer. One scan when a time range is given (ts has no index)."""
    extra, args = _range_sql(from_ts, to_ts)
    ((rows, first, last),) = _read(path, "SELECT count(*), min(id), max(id) FROM outbox WHERE id >= ? AND id <= ?"
                                   + extra, [from_id, to_id, *args])
    return Span(rows, first, last)


def read_range(path: Path | str, *, after_id: int, to_id: int, from_ts: int | None = None,
               to_ts: int | None = None, limit: int = 500) -> list[tuple[int, str, dict]]:
    """Rows (id, kind, wire body) with ``after_id < id <= to_id`` (and the ts range when given),
    oldest first, at most ``limit``: one page of a replay. The body is byte for byte what was
    published, ``id`` included (as ``Buffer.pending`` makes it)."""
    extra, args = _range_sql(from_ts, to_ts)
    rows = _read(path, "SELECT id, kind, body FROM outbox WHERE id > ? AND id <= ?" + extra
                 + " ORDER BY id LIMIT ?", [after_id, to_id, *args, max(1, limit)])
    return [(rid, kind, {"id": rid, **json.loads(body)}) for rid, kind, body in rows]
