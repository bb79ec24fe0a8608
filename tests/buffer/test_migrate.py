"""Buffer files of schema v1 (a row per reading, wire v1) opened by this edge-agent: every row
kept under its id, priority and sent state, readings as one-point records, events as they were.

The v1 files are made as the landed version made them: its schema, written here with sqlite3
(``V1_SCHEMA`` is that version's ``buffer/file.py``), its row bodies (``Reading.to_wire()`` of
the time: ``{"dev", "pt", "val", "ts", "q", ["sub"], ["clk"]}``), its ``meta`` rows.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

import pytest

from edge_agent.buffer import migrate
from edge_agent.buffer.file import SCHEMA_VERSION
from edge_agent.buffer.outbox import Buffer, BufferError
from edge_agent.buffer.stats import read_range, read_rows, replay_span
from edge_agent.model import Priority, Reading
from edge_agent.platform import generate_platform_keypair, load_private_key, unseal_all
from edge_agent.privacy.seal import PlatformKey, seal

T0 = 1_732_380_000_000

V1_SCHEMA = """
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
PRAGMA user_version = 1;
"""


def compact(obj: dict) -> str:
    return json.dumps(obj, ensure_ascii=True, separators=(",", ":"))


def v1_reading(i: int, **extra) -> dict:
    return {"dev": "river-1", "pt": "level_m", "val": round(i * 0.01, 2), "ts": T0 + i, "q": "good", **extra}


def write_v1(path: Path, rows: list[tuple[int, int, str, int, dict, int | None]], *, clean: bool = True) -> None:
    """A v1 buffer file: (id, prio, kind, ts, body, sent_at) rows and the meta a v1 close left."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(V1_SCHEMA)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executemany("INSERT INTO outbox (id, prio, kind, ts, body, sent_at) VALUES (?, ?, ?, ?, ?, ?)",
                     [(i, p, k, ts, compact(b), s) for i, p, k, ts, b, s in rows])
    top = max((r[0] for r in rows), default=0) + 1
    conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)",
                     [("next_id", top), ("id_ceiling", top), ("last_sent_at", T0 + 5000)]
                     + ([("clean_close", 1)] if clean else []))
    conn.execute("PRAGMA journal_mode = DELETE")
    conn.close()


def table(path: Path) -> list[tuple]:
    """(id, prio, kind, ts, body, sent at) rows; once upgraded, the sent time is the ``sent`` range's."""
    conn = sqlite3.connect(path)
    try:
        if conn.execute("PRAGMA user_version").fetchone()[0] < 3:
            return conn.execute("SELECT id, prio, kind, ts, body, sent_at FROM outbox ORDER BY id").fetchall()
        ranges = conn.execute("SELECT lo, hi, at FROM sent").fetchall()
        return [(*row, next((at for lo, hi, at in ranges if lo <= row[0] <= hi), None))
                for row in conn.execute("SELECT id, prio, kind, ts, body FROM outbox ORDER BY id")]
    finally:
        conn.close()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "buffer.db"


def test_a_v1_file_is_upgraded_at_open_every_row_under_its_id_prio_and_sent_state(path: Path, caplog) -> None:
    sos = {"dev": "hub-1", "type": "sos", "prio": "critical", "ts": T0 + 3, "data": {"wearer": "p1:6Q2W"}}
    door = {"dev": "gate-1", "type": "door", "prio": "high", "ts": T0 + 4, "data": {}}
    rows = [
        (1, 0, "reading", T0 + 1, v1_reading(1), T0 + 100),  # sent, retained
        (2, 0, "reading", T0 + 2, v1_reading(2, val=None, q="bad"), None),
        (3, 2, "event", T0 + 3, sos, None),
        (4, 1, "event", T0 + 4, door, T0 + 200),
        (5, 0, "reading", T0 + 5, {"dev": "hub-1", "pt": "battery_pct", "val": 64, "ts": T0 + 5, "q": "stale",
                                   "sub": "B-00023", "clk": "unsynced"}, None),
        (9, 0, "reading", T0 + 9, v1_reading(9), None),  # a gap: ids 6-8 were evicted
    ]
    write_v1(path, rows)
    caplog.set_level(logging.INFO, logger="edge_agent.buffer")
    with Buffer(path) as buf:
        stats = buf.stats()
        assert buf.append([Reading("river-1", "level_m", 1.5, T0 + 10)]) == [10]  # ids go on above
    assert (stats.pending, stats.retained_sent, stats.next_id) == (4, 2, 10)
    assert stats.pending_by_prio == {"critical": 1, "high": 0, "normal": 3}
    after = table(path)
    assert [(i, p, k, ts, s) for i, p, k, ts, _, s in after] == [
        (1, 0, "record", T0 + 1, T0 + 100), (2, 0, "record", T0 + 2, None), (3, 2, "event", T0 + 3, None),
        (4, 1, "event", T0 + 4, T0 + 200), (5, 0, "record", T0 + 5, None), (9, 0, "record", T0 + 9, None),
        (10, 0, "record", T0 + 10, None)]
    bodies = {i: json.loads(b) for i, _, _, _, b, _ in after}
    assert bodies[1] == {"dev": "river-1", "ts": T0 + 1, "vals": {"level_m": 0.01}}  # good: no q
    assert bodies[2] == {"dev": "river-1", "ts": T0 + 2, "vals": {"level_m": None}, "q": {"level_m": "bad"}}
    assert bodies[3] == sos and bodies[4] == door  # events as they were, byte for byte
    assert [b for i, _, _, _, b, _ in after if i in (3, 4)] == [compact(sos), compact(door)]
    assert bodies[5] == {"dev": "hub-1", "sub": "B-00023", "ts": T0 + 5, "vals": {"battery_pct": 64},
                         "q": {"battery_pct": "stale"}, "clk": "unsynced"}
    notes = [r.getMessage() for r in caplog.records if "schema v1 -> v3" in r.getMessage()]
    assert len(notes) == 1 and "4 reading row(s) became one-point records" in notes[0]
    assert "2 event row(s)" in notes[0]
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
    assert "CHECK (kind IN ('record', 'event'))" in conn.execute(
        "SELECT sql FROM sqlite_master WHERE name = 'outbox'").fetchone()[0]
    indexes = {n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "outbox_prio" in indexes and not {"outbox_unsent", "outbox_sent"} & indexes
    assert conn.execute("SELECT lo, hi, at FROM sent ORDER BY lo").fetchall() == [(1, 1, T0 + 100), (4, 4, T0 + 200)]
    conn.close()
    caplog.clear()
    with Buffer(path):  # once only
        pass
    assert not any("schema" in r.getMessage() for r in caplog.records)


def test_migrated_rows_drain_tail_and_replay_as_records(path: Path) -> None:
    write_v1(path, [(i, 0, "reading", T0 + i, v1_reading(i), None) for i in range(1, 6)], clean=False)
    with Buffer(path) as buf:
        pending = buf.pending(10)
        assert [r.kind for r in pending] == ["record"] * 5
        assert pending[0].body == {"id": 1, "dev": "river-1", "ts": T0 + 1, "vals": {"level_m": 0.01}}
        buf.mark_sent([1, 2])
        assert [r.id for r in buf.pending(10)] == [3, 4, 5]
    assert [(i, k) for i, k, _ in read_rows(path)] == [(i, "record") for i in range(1, 6)]
    assert replay_span(path, from_ts=T0 + 2, to_ts=T0 + 4).rows == 3
    assert [b["vals"] for _, _, b in read_range(path, after_id=0, to_id=2)] == [{"level_m": 0.01}, {"level_m": 0.02}]


def test_a_value_a_v1_gateway_sealed_stays_sealed_and_opens_on_the_platform(path: Path, tmp_path: Path) -> None:
    private_path, public_path = generate_platform_keypair(tmp_path / "platform")
    sealed = seal("13812341234", PlatformKey.load(public_path))
    write_v1(path, [(1, 0, "reading", T0, {"dev": "gate-1", "pt": "phone", "val": sealed, "ts": T0, "q": "good"},
                     None)])
    with Buffer(path) as buf:
        (row,) = buf.pending(10)
    assert row.body["vals"] == {"phone": sealed}  # never opened on the gateway
    assert unseal_all(row.body, load_private_key(private_path))["vals"] == {"phone": "13812341234"}


def test_an_upgrade_cut_short_carries_on_at_the_next_open(path: Path, monkeypatch) -> None:
    """Chunks are transactions: a failure (a kill, a power cut, a full disk) mid-way leaves
    every row in the old table or the new one, once; the next open finishes the job."""
    write_v1(path, [(i, i % 3, "reading" if i % 3 == 0 else "event", T0 + i,
                     v1_reading(i) if i % 3 == 0 else {"dev": "d", "type": "t", "prio": "x", "ts": T0 + i, "data": {}},
                     T0 + i if i % 5 == 0 else None) for i in range(1, 51)])
    before = table(path)
    monkeypatch.setattr(migrate, "CHUNK", 7)
    real, calls = migrate.record_body_of_v1, []

    def failing(body: str) -> str:
        calls.append(body)
        if len(calls) == 8:  # the 8th reading, id 24: in the fourth chunk (ids 22-28)
            raise sqlite3.OperationalError("disk I/O error")
        return real(body)

    monkeypatch.setattr(migrate, "record_body_of_v1", failing)
    with pytest.raises(BufferError, match="disk I/O error"):
        Buffer(path).open()
    conn = sqlite3.connect(path)
    old = [i for (i,) in conn.execute("SELECT id FROM outbox")]
    new = [i for (i,) in conn.execute(f"SELECT id FROM {migrate.NEW_TABLE}")]
    conn.close()
    assert new == list(range(1, 22)) and old == list(range(22, 51))  # three chunks moved, none twice
    monkeypatch.setattr(migrate, "record_body_of_v1", real)
    with Buffer(path) as buf:
        assert buf.stats().pending == sum(1 for r in before if r[5] is None)
    after = table(path)
    assert [(i, p, ts, s) for i, p, _, ts, _, s in after] == [(i, p, ts, s) for i, p, _, ts, _, s in before]
    assert all(json.loads(b)["vals"] == {"level_m": json.loads(ob)["val"]}
               for (_, _, k, _, b, _), (_, _, _, _, ob, _) in zip(after, before) if k == "record")
    assert [k for _, _, k, _, _, _ in after] == ["record" if i % 3 == 0 else "event" for i in range(1, 51)]


V2_SCHEMA = V1_SCHEMA.replace("'reading', 'event'", "'record', 'event'").replace("user_version = 1", "user_version = 2")


def test_a_v2_file_keeps_its_records_and_its_runs_of_sent_rows_become_ranges(path: Path) -> None:
    """v2 (a sent_at per row, this issue's development) to v3: consecutive sent rows are one range."""
    path.parent.mkdir(parents=True)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(V2_SCHEMA)
    rec = {"dev": "m-1", "ts": T0, "vals": {"p": 1}}
    sent = {1: T0 + 10, 2: T0 + 12, 3: T0 + 11, 5: T0 + 20, 7: T0 + 30, 8: T0 + 31}  # 4 and 6 unsent
    conn.executemany("INSERT INTO outbox (id, prio, kind, ts, body, sent_at) VALUES (?, 0, 'record', ?, ?, ?)",
                     [(i, T0 + i, compact(rec), sent.get(i)) for i in range(1, 9)])
    conn.close()
    with Buffer(path) as buf:
        assert [r.id for r in buf.pending(10)] == [4, 6]
        assert buf.stats().retained_sent == 6
        assert [r.body for r in buf.pending(10)][0] == {"id": 4, **rec}  # as it was
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT lo, hi, at FROM sent ORDER BY lo").fetchall() == [
        (1, 3, T0 + 12), (5, 5, T0 + 20), (7, 8, T0 + 31)]
    conn.close()


def test_a_body_that_is_not_a_v1_reading_is_kept_as_it_is() -> None:
    assert migrate.record_body_of_v1('{"weird":1}') == '{"weird":1}'
    assert migrate.record_body_of_v1("not json") == "not json"


def test_a_fresh_file_and_a_current_one_are_left_alone(path: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="edge_agent.buffer")
    with Buffer(path) as buf:
        buf.append([Reading("river-1", "level_m", 1.0, T0)])
    with Buffer(path) as buf:
        assert buf.pending(5)[0].kind == "record"
    assert not any("schema v" in r.getMessage() for r in caplog.records)
    assert Priority.NORMAL == 0
