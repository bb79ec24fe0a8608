"""Why a buffer file cannot be read, told apart at one seam (``buffer_file.unreadable``): damaged
(``run`` quarantines it), not this user's to open (root, the service group, or the daemon), or
no buffer in it. Real SQLite errors on real files; issue 11 item 5: a damaged file read while
the daemon was down was reported as a permission problem, to root."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest

from edge_agent.buffer.outbox import Buffer
from edge_agent.buffer.file import BufferCorrupt, BufferDenied, BufferError, unreadable
from edge_agent.buffer.stats import read_rows, read_stats
from edge_agent.model import Reading


def filled(path: Path, n: int = 3000) -> None:
    with Buffer(path) as buf:
        buf.append([Reading("river-1", "level_m", k * 0.001, 1_732_380_000_000 + k) for k in range(n)])


def scribble(path: Path) -> None:
    """Garbage over the middle third: the header (page 1) stays sound, so the file opens."""
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.seek(size // 3)
        f.write(random.Random(3).randbytes(size // 3))


def raised(work) -> BaseException:
    try:
        work()
    except BaseException as exc:  # noqa: BLE001 - the error is what is wanted
        return exc
    raise AssertionError("no error")


def test_pages_damaged_behind_a_sound_header_read_as_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "buffer.db"
    filled(path)
    scribble(path)
    for read in (lambda: read_stats(path), lambda: read_rows(path)):
        exc = raised(read)
        assert type(exc) is BufferCorrupt, exc
        assert str(exc).startswith(f"{path}: ") and "malformed" in str(exc)


@pytest.mark.parametrize("damage", ["random bytes", "truncated"])
def test_a_file_that_is_no_database_or_cut_short_reads_as_corrupt(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "buffer.db"
    filled(path)
    if damage == "random bytes":
        path.write_bytes(random.Random(1).randbytes(path.stat().st_size))
    else:
        with open(path, "r+b") as f:
            f.truncate(path.stat().st_size // 2)
    assert type(raised(lambda: read_stats(path))) is BufferCorrupt


def test_a_file_sqlite_cannot_open_is_denied_not_corrupt(tmp_path: Path) -> None:
    """SQLITE_CANTOPEN, as SQLite raises it for a file this user may not open (as root it is
    provoked here by a read-only open where there is no file); an OSError EACCES likewise."""
    path = tmp_path / "buffer.db"
    cantopen = raised(lambda: sqlite3.connect(f"file:{tmp_path}/absent/x.db?mode=ro", uri=True)
                      .execute("SELECT 1 FROM sqlite_master").fetchone())
    assert isinstance(cantopen, sqlite3.OperationalError) and cantopen.sqlite_errorcode == sqlite3.SQLITE_CANTOPEN
    for exc in (cantopen, PermissionError(13, "Permission denied")):
        found = unreadable(path, exc)
        assert type(found) is BufferDenied and str(found).startswith(f"{path}: ")
    assert type(unreadable(path, sqlite3.DatabaseError("file is not a database"))) is BufferCorrupt


def test_a_sound_database_without_the_buffer_tables_is_neither(tmp_path: Path) -> None:
    path = tmp_path / "buffer.db"
    path.write_bytes(b"")  # what an interrupted copy or a stray touch leaves: SQLite reads it as empty
    exc = raised(lambda: read_stats(path))
    assert type(exc) is BufferError and "holds no edge-agent buffer" in str(exc)


def test_another_programs_database_is_refused_and_left_untouched(tmp_path: Path) -> None:
    """``buffer.path`` pointing at someone else's SQLite file: the buffer refuses it before it
    writes anything (no tables of ours, no WAL mode, the same bytes)."""
    path = tmp_path / "meters.db"
    other = sqlite3.connect(path)
    other.execute("CREATE TABLE readings (meter TEXT, kwh REAL)")
    other.execute("INSERT INTO readings VALUES ('m-1', 12.5)")
    other.commit()
    other.close()
    before = path.read_bytes()
    exc = raised(lambda: Buffer(path).open())
    assert type(exc) is BufferError
    assert str(exc) == (f"{path}: is another program's database (tables: readings); edge-agent leaves it as it "
                        "is: check buffer.path")
    assert path.read_bytes() == before and not Path(f"{path}-wal").exists()
    assert type(raised(lambda: read_stats(path))) is BufferError
