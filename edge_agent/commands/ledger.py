"""The command ledger, ``{state_dir}/commands.db``: the replay cache and the hash-chained audit log.

Replay cache (table ``seen``): the id of every command whose signature verified, with its
``exp``. ``remember`` records an id and says whether it was new, in one transaction, so two
deliveries of one command (QoS 1 re-delivery, or an attacker's replay) act at most once, also
across restarts. An id is forgotten only ``keep_after_exp_s`` (default one day) after its
``exp``: by then the verifier refuses the command as ``expired`` anyway, and the margin covers a
clock that steps back (a gateway without a real-time clock restores the time it saved at
shutdown). The cache is bounded by the command rate times (``max_lifetime`` + the margin), and
only signed commands enter it: unsigned junk cannot fill it.

Audit log (table ``audit``): one row per command (accepted or rejected: who signed it, the op,
the target, the outcome and its code) and per local privileged CLI action. Rows are chained::

    hash = SHA-256( prev_hash_hex + canonical_row_json ).hexdigest()

where ``prev_hash_hex`` is the previous row's ``hash`` (64 zeros for the first row) and
``canonical_row_json`` is ``json.dumps(row, sort_keys=True, separators=(",", ":"),
ensure_ascii=False)`` of the fields ``seq ts kind actor cmd_id op target outcome code detail``.
``seq`` counts from 1 without gaps; ``meta`` holds the head (last seq and hash). So editing a
row breaks its hash, deleting one leaves a gap in ``seq`` or a broken ``prev`` link (or a head
that points past the last row), moving one breaks both. ``verify_chain`` reports each. What
the chain does not do: stop someone with write access who recomputes every hash after his
edit; it has no secret. Comparing ``head()`` with a copy kept elsewhere (e.g. what the
platform was told) catches that too.

Audit rows carry no raw personal data: callers build ``detail`` as a short text (an error
code's message, "keys init"), never a command's arguments or a device value.

Concurrency: one connection and one lock per ``Ledger``; every write is ``BEGIN IMMEDIATE``, so
a CLI process appending a row beside the running daemon extends the same chain.

Exceptions: ``LedgerError(Exception)``: the file cannot be opened, read or written; the
message names it. A damaged ledger is not replaced silently: that would empty the replay
cache, so the caller refuses to start and says which file to move aside.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

from ..buffer.file import leave_in_rollback_mode
from ..errors import CommandError

__all__ = ["Ledger", "LedgerError", "GENESIS", "KINDS", "OUTCOMES", "row_hash", "KEEP_AFTER_EXP_S", "LEDGER_NAME",
           "ledger_path", "ledger_files"]

LEDGER_NAME = "commands.db"  # in gateway.state_dir; every part of the agent finds it through ledger_path

GENESIS = "0" * 64
KINDS = ("command", "cli")
OUTCOMES = ("accepted", "rejected", "done", "failed")
KEEP_AFTER_EXP_S = 86400.0
BUSY_TIMEOUT_MS = 5000
SCHEMA_VERSION = 1
FIELDS = ("seq", "ts", "kind", "actor", "cmd_id", "op", "target", "outcome", "code", "detail")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS seen (
    id TEXT PRIMARY KEY,              -- command id
    exp INTEGER NOT NULL,             -- its exp, ms
    at INTEGER NOT NULL               -- when it was first seen, ms
);
CREATE INDEX IF NOT EXISTS seen_exp ON seen (exp);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY,          -- 1, 2, 3, ... no gaps
    ts INTEGER NOT NULL,              -- ms since the epoch
    kind TEXT NOT NULL,               -- command | cli
    actor TEXT NOT NULL,              -- signer key id, "local:<user>", or "unverified"
    cmd_id TEXT, op TEXT, target TEXT,
    outcome TEXT NOT NULL,            -- accepted | rejected | done | failed
    code TEXT,                        -- an ERROR_CODES entry, or NULL
    detail TEXT NOT NULL,
    prev TEXT NOT NULL,               -- the previous row's hash
    hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class LedgerError(CommandError):
    """The ledger file cannot be opened, read or written; the message names the file."""


def ledger_path(state_dir: str | Path) -> Path:
    """A gateway's ledger: ``{state_dir}/commands.db``, for the service, the supervisor's apply
    outcome, ``edge-agent audit`` and the CLI's own audit rows alike."""
    return Path(state_dir) / LEDGER_NAME


def ledger_files(state_dir: str | Path) -> list[Path]:
    """The ledger and the WAL and shared-memory files SQLite keeps beside it (doctor checks who owns them)."""
    path = ledger_path(state_dir)
    return [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]


def row_hash(prev: str, row: dict[str, Any]) -> str:
    """SHA-256 hex of ``prev`` + the canonical JSON of ``row``'s chained fields."""
    body = json.dumps({k: row[k] for k in FIELDS}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256((prev + body).encode("utf-8")).hexdigest()


class Ledger:
    """``Ledger(path).open()`` ... ``close()``, or ``with Ledger(path) as ledger:``."""

    def __init__(self, path: str | Path, *, readonly: bool = False,
                 keep_after_exp_s: float = KEEP_AFTER_EXP_S, clock=time.time) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self.keep_after_exp_ms = int(keep_after_exp_s * 1000)
        self._clock = clock
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------------------

    def open(self) -> "Ledger":
        if self._conn is not None:
            return self
        try:
            if self.readonly:
                if not self.path.exists():
                    raise LedgerError(f"{self.path}: no command ledger here")
                uri = "file:" + urllib.parse.quote(str(self.path.resolve())) + "?mode=ro"
                conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except (sqlite3.Error, OSError) as exc:
            raise LedgerError(f"{self.path}: cannot open the command ledger: {exc}") from None
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise LedgerError(f"{self.path}: ledger schema v{version} is newer than this edge-agent "
                                  f"(v{SCHEMA_VERSION})")
            if not self.readonly:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if mode != "wal":
                    raise LedgerError(f"{self.path}: cannot switch the ledger to WAL mode (got {mode})")
                conn.execute("PRAGMA synchronous = NORMAL")
                conn.executescript(_SCHEMA + f"PRAGMA user_version = {SCHEMA_VERSION};")
            elif conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'audit'").fetchone() is None:
                raise LedgerError(f"{self.path}: not a command ledger (no audit table)")
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise LedgerError(f"{self.path}: not a usable command ledger ({exc}); move it aside to start "
                              "a fresh one (the replay cache and audit log restart empty)") from None
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return self

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                if not self.readonly:
                    leave_in_rollback_mode(self._conn, self.path)
                self._conn.close()
                self._conn = None

    def __enter__(self) -> "Ledger":
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise LedgerError(f"{self.path}: the ledger is not open")
        return self._conn

    def _write(self, work):
        """Run ``work(conn)`` in one BEGIN IMMEDIATE transaction, under the lock."""
        with self._lock:
            conn = self._db()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    out = work(conn)
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
                return out
            except sqlite3.Error as exc:
                raise LedgerError(f"{self.path}: cannot write the command ledger: {exc}") from None

    # -- replay cache ------------------------------------------------------------------------------

    def remember(self, cmd_id: str, exp_ms: int, now_ms: int) -> bool:
        """Record ``cmd_id``; True the first time, False when it was seen before (a replay).

        Ids whose ``exp`` is more than ``keep_after_exp_s`` before ``now_ms`` are forgotten."""
        def work(conn: sqlite3.Connection) -> bool:
            conn.execute("DELETE FROM seen WHERE exp < ?", (now_ms - self.keep_after_exp_ms,))
            cur = conn.execute("INSERT OR IGNORE INTO seen (id, exp, at) VALUES (?, ?, ?)", (cmd_id, exp_ms, now_ms))
            return cur.rowcount == 1
        return self._write(work)

    def seen_count(self) -> int:
        with self._lock:
            return self._read(lambda c: c.execute("SELECT count(*) FROM seen").fetchone()[0])

    # -- audit log ---------------------------------------------------------------------------------

    def audit(self, kind: str, *, actor: str, cmd_id: str | None = None, op: str | None = None,
              target: str | None = None, outcome: str, code: str | None = None, detail: str = "") -> int:
        """Append one chained row; returns its ``seq``."""
        if kind not in KINDS:
            raise ValueError(f"audit kind {kind!r} is not one of {KINDS}")
        if outcome not in OUTCOMES:
            raise ValueError(f"audit outcome {outcome!r} is not one of {OUTCOMES}")
        ts = int(self._clock() * 1000)

        def work(conn: sqlite3.Connection) -> int:
            last = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
            seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
            row = {"seq": seq, "ts": ts, "kind": kind, "actor": actor, "cmd_id": cmd_id, "op": op,
                   "target": target, "outcome": outcome, "code": code, "detail": detail}
            digest = row_hash(prev, row)
            conn.execute("INSERT INTO audit (seq, ts, kind, actor, cmd_id, op, target, outcome, code, detail, "
                         "prev, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         (*(row[k] for k in FIELDS), prev, digest))
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('head', ?)", (f"{seq} {digest}",))
            return seq
        return self._write(work)

    def _read(self, query):
        try:
            return query(self._db())
        except sqlite3.Error as exc:
            raise LedgerError(f"{self.path}: cannot read the command ledger: {exc}") from None

    def rows(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Audit rows, oldest first; with ``limit``, only the last ``limit``."""
        cols = FIELDS + ("prev", "hash")
        sql = f"SELECT {', '.join(cols)} FROM audit ORDER BY seq"
        if limit is not None:
            sql = f"SELECT * FROM ({sql} DESC LIMIT {max(0, int(limit))}) ORDER BY seq"
        with self._lock:
            found = self._read(lambda c: c.execute(sql).fetchall())
        return [dict(zip(cols, r)) for r in found]

    def count(self) -> int:
        with self._lock:
            return self._read(lambda c: c.execute("SELECT count(*) FROM audit").fetchone()[0])

    def head(self) -> tuple[int, str]:
        """``(seq, hash)`` of the last row as recorded in ``meta``; ``(0, GENESIS)`` when empty."""
        with self._lock:
            found = self._read(lambda c: c.execute("SELECT value FROM meta WHERE key = 'head'").fetchone())
        if not found:
            return 0, GENESIS
        seq, _, digest = str(found[0]).partition(" ")
        return int(seq), digest

    def verify_chain(self) -> list[str]:
        """Every break in the chain, oldest first, each one line naming the row; empty when intact."""
        problems: list[str] = []
        prev_seq, prev_hash = 0, GENESIS
        cols = FIELDS + ("prev", "hash")
        with self._lock:
            found = self._read(lambda c: c.execute(f"SELECT {', '.join(cols)} FROM audit ORDER BY seq").fetchall())
            head = self._read(lambda c: c.execute("SELECT value FROM meta WHERE key = 'head'").fetchone())
        by_hash = {r[-1]: r[0] for r in found}
        for values in found:
            row = dict(zip(cols, values))
            seq = row["seq"]
            if seq != prev_seq + 1:
                gap = f"row {prev_seq + 1}" if seq == prev_seq + 2 else f"rows {prev_seq + 1}-{seq - 1}"
                problems.append(f"row {seq}: {gap} missing before it (deleted)")
            elif row["prev"] != prev_hash:
                moved = by_hash.get(row["prev"])
                why = f"it follows row {moved} (reordered)" if moved is not None else "a row was deleted or replaced"
                problems.append(f"row {seq}: does not follow row {prev_seq}: {why}")
            try:
                intact = row_hash(row["prev"], row) == row["hash"]
            except (TypeError, ValueError):
                intact = False
            if not intact:
                problems.append(f"row {seq}: its content does not match its hash (edited)")
            prev_seq, prev_hash = seq, row["hash"]
        head_seq = int(str(head[0]).partition(" ")[0]) if head and str(head[0]).partition(" ")[0].isdigit() else None
        if head is not None and (head_seq is None or head_seq > prev_seq):
            shown = "unreadable" if head_seq is None else f"at row {head_seq}"
            problems.append(f"row {prev_seq + 1}: the log's head is {shown} but the last row is {prev_seq} "
                            "(rows deleted at the end)")
        elif head is not None and head[0] != f"{prev_seq} {prev_hash}":
            problems.append(f"row {prev_seq}: the last row does not match the log's head (edited or replaced)")
        elif head is None and found:
            problems.append("row 1: the log's head record is missing (meta edited)")
        return problems
