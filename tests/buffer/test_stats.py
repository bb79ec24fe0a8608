"""``read_stats`` beside a daemon that is still creating its buffer, against another program's
database: a file with no buffer *yet* (0 bytes, an empty database, a schema being committed a
table at a time) is "none yet" (``read_stats_if_made`` returns None; ``status`` shows "no buffer
yet" and exits 0), while a database with tables of its own stays refused as not ours. Real SQLite
files; the flood-alarm system test once caught ``status`` exiting 1 in that window."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from edge_agent.buffer.file import BufferCorrupt, BufferDenied, BufferError
from edge_agent.buffer.outbox import Buffer
from edge_agent.buffer.sent import SENT_DDL
from edge_agent.buffer.file import OUTBOX_DDL
from edge_agent.buffer.stats import read_stats, read_stats_if_made
from edge_agent.model import Reading


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "buffer.db"


def none_yet(path: Path) -> None:
    assert read_stats_if_made(path) is None
    with pytest.raises(BufferError, match="holds no edge-agent buffer yet") as raised:
        read_stats(path)
    assert type(raised.value) is BufferError and str(raised.value).startswith(f"{path}: ")


def test_a_0_byte_file_holds_no_buffer_yet(path: Path) -> None:
    path.write_bytes(b"")  # sqlite3.connect creates the file before anything is written to it
    none_yet(path)
    assert path.read_bytes() == b""  # a reader writes nothing


def test_an_empty_database_with_no_tables_holds_no_buffer_yet(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA page_size = 2048")
    assert conn.execute("PRAGMA journal_mode = WAL").fetchone()[0] == "wal"  # writes the header
    conn.close()
    assert path.stat().st_size > 0
    none_yet(path)


def test_a_schema_being_committed_a_table_at_a_time_holds_no_buffer_yet(path: Path) -> None:
    """``file._prepare``: each CREATE commits on its own, ``user_version`` comes last; the rest may
    be in an open transaction in the WAL, invisible to a reader."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(OUTBOX_DDL)
    none_yet(path)
    conn.execute("BEGIN")
    conn.execute(SENT_DDL)
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
    none_yet(path)  # uncommitted: only outbox shows
    conn.execute("COMMIT")
    none_yet(path)  # every table, user_version still 0
    conn.close()


def test_a_foreign_database_with_other_tables_is_still_refused(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    conn.commit()
    conn.close()
    for read in (read_stats, read_stats_if_made):
        with pytest.raises(BufferError) as raised:
            read(path)
        exc = raised.value
        assert type(exc) is BufferError and not isinstance(exc, (BufferCorrupt, BufferDenied))
        assert str(exc) == (f"{path}: holds no edge-agent buffer: another program's database? (schema version 0, "
                            "tables: customers); check buffer.path")


def test_our_table_names_holding_rows_without_a_schema_version_are_refused(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
    conn.execute("INSERT INTO meta VALUES ('x', 1)")
    conn.commit()
    conn.close()
    with pytest.raises(BufferError, match="another program's database"):
        read_stats_if_made(path)


def test_a_sound_buffer_reads(path: Path) -> None:
    with Buffer(path) as buf:
        buf.append([Reading("river-1", "level_m", k / 100, 1_732_380_000_000 + k) for k in range(5)])
    stats = read_stats_if_made(path)
    assert stats is not None and stats == read_stats(path)
    assert (stats.pending, stats.next_id) == (5, 6)


def test_no_file_is_none_yet_and_never_created(path: Path) -> None:
    assert read_stats_if_made(path) is None
    with pytest.raises(BufferError, match="no buffer database here"):
        read_stats(path)
    assert not path.exists()


def test_a_reader_beside_buffers_being_created_never_fails(tmp_path: Path) -> None:
    """The race itself: ``Buffer.open`` on fresh files while a reader polls each one."""
    for i in range(30):
        path = tmp_path / f"b{i}.db"
        done = threading.Event()

        def create(path: Path = path) -> None:
            with Buffer(path):
                done.set()

        worker = threading.Thread(target=create)
        worker.start()
        while not done.is_set():
            read_stats_if_made(path)  # raises on any failure: the test fails
        worker.join()
        assert read_stats_if_made(path) is not None
