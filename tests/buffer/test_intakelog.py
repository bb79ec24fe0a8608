"""The intake log (buffer/intakelog.py) and the writer's use of it, on real files.

A put returns; a real SIGKILL of a child process follows at once, with a 30 s commit interval,
so nothing was committed; the next start commits exactly those rows, under new ids, and never a
row that was committed before the crash. Torn, damaged and unreadable logs never stop a start.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.buffer.intakelog import IntakeLog, decode_rows, encode_rows, entry_bytes, log_paths
from edge_agent.buffer.outbox import Buffer, encode_items
from edge_agent.buffer.stats import read_rows
from edge_agent.buffer.writer import BufferWriter
from edge_agent.model import Event, Priority, Reading

T0 = 1_732_380_000_000


def reading(i: int, dev: str = "river-1", pt: str = "level_m") -> Reading:
    return Reading(dev, pt, round(i * 0.01, 3), T0 + i)


def rows_of(*idx: int) -> list[tuple]:
    """One encoded row per index: a one-point record each (distinct ts)."""
    return encode_items([reading(i) for i in idx])


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "buffer.db"


def stored(path: Path) -> list[tuple[int, dict]]:
    """(id, wire body) of every row in the buffer, in id order."""
    return [(rid, body) for rid, _, body in read_rows(path, limit=100_000)]


def ts_stored(path: Path) -> list[int]:
    return [body["ts"] for _, body in stored(path)]


# -- the entry format ------------------------------------------------------------------------
def test_rows_round_trip_every_field_type() -> None:
    rows = [(0, "record", T0, '{"dev":"m-1"}'), (2, "event", -5, "ü€"), (None, 1.5, b"\x00\xff", True, False), ()]
    assert decode_rows(encode_rows(rows), len(rows)) == rows


@pytest.mark.parametrize("data, count", [(b"\x01q\x00", 1), (b"\x01x", 1), (b"\x01n\x00", 1), (b"", 1),
                                         (b"\x01s\xff\xff\xff\x00ab", 1)])
def test_rows_that_do_not_parse_are_a_value_error(data: bytes, count: int) -> None:
    with pytest.raises(ValueError):
        decode_rows(data, count)


def test_a_field_of_another_type_is_refused() -> None:
    with pytest.raises(TypeError, match="not dict"):
        encode_rows([({"a": 1},)])


# -- the files -------------------------------------------------------------------------------
def test_committed_truncates_covered_files_and_alternates(path: Path) -> None:
    path.parent.mkdir(parents=True)
    log = IntakeLog(path)
    assert log.open().rows == []
    a, b = log_paths(path)
    assert log.append(1, rows_of(1, 2, 3))
    log.committed(2)  # a commit took part of the entry: the file stays, appending moves on
    assert a.stat().st_size > 0 and b.stat().st_size == 0
    assert log.append(4, rows_of(4, 5))
    assert b.stat().st_size > 0
    log.committed(3)  # everything in A is committed: A is emptied, appending moves back to it
    assert a.stat().st_size == 0 and b.stat().st_size > 0
    assert log.append(6, rows_of(6))
    assert a.stat().st_size > 0
    log.committed(6)
    assert a.stat().st_size == 0 and b.stat().st_size == 0
    log.close(remove=True)
    assert not a.exists() and not b.exists()


def test_open_reads_both_files_in_seq_order(path: Path) -> None:
    path.parent.mkdir(parents=True)
    a, b = log_paths(path)
    a.write_bytes(entry_bytes(4, rows_of(4, 5)))
    b.write_bytes(entry_bytes(1, rows_of(1, 2, 3)) + entry_bytes(6, rows_of(6)))
    found = IntakeLog(path).open()
    assert [seq for seq, _ in found.rows] == [1, 2, 3, 4, 5, 6] and found.problems == []
    assert [row for _, row in found.rows] == rows_of(1, 2, 3, 4, 5, 6)


# -- replay after a real kill ----------------------------------------------------------------
CHILD = r"""
import sys, time
from pathlib import Path
from edge_agent.buffer.outbox import Buffer
from edge_agent.buffer.writer import BufferWriter
from edge_agent.model import Reading
path, first, n, commit_first = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
buf = Buffer(path).open()
w = BufferWriter(buf, commit_interval_s=30.0, intake_log=True)
w.start()
T0 = 1_732_380_000_000
if commit_first:
    w.put([Reading("river-1", "level_m", 0.5, T0 + i) for i in range(first, first + commit_first)])
    assert w.flush(10)
w.put([Reading("river-1", "level_m", 0.5, T0 + i) for i in range(first + commit_first, first + n)])
print("put", flush=True)
time.sleep(60)
"""


def put_then_kill(path: Path, first: int, n: int, commit_first: int = 0) -> None:
    """A child process puts readings ``first .. first+n-1`` (committing the first ``commit_first``
    of them), says so, and is SIGKILLed at once: 30 s before its next group commit."""
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(first), str(n), str(commit_first)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert line == "put\n", proc.stderr.read() if proc.stderr else line
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()


def test_rows_put_before_a_kill_are_committed_at_the_next_start(path: Path, caplog: pytest.LogCaptureFixture) -> None:
    put_then_kill(path, 0, 5)
    assert sum(p.stat().st_size for p in log_paths(path)) > 0
    caplog.set_level(logging.INFO)
    with Buffer(path) as buf:
        assert buf.stats().pending == 0  # the kill came before any commit
        writer = BufferWriter(buf, commit_interval_s=30.0, intake_log=True)
        writer.start()  # replays, and commits the replay before it returns
        assert ts_stored(path) == [T0 + i for i in range(5)]
        assert [rid for rid, _ in stored(path)] == [1, 2, 3, 4, 5]  # they get their ids now
        assert writer.stats.replayed == 5
        assert "intake log: committed 5 rows a stopped run had received but not committed (ids 1-5)" in caplog.text
        assert all(p.stat().st_size == 0 for p in log_paths(path))  # truncated after that commit
        writer.put([reading(100)])
        assert writer.stop()
    assert ts_stored(path) == [T0 + i for i in range(5)] + [T0 + 100]
    assert not any(p.exists() for p in log_paths(path))  # a clean stop leaves no log


def test_a_replay_never_repeats_a_row_that_was_committed(path: Path) -> None:
    put_then_kill(path, 0, 8, commit_first=3)  # 0-2 committed, 3-7 only in the log
    with Buffer(path) as buf:
        assert ts_stored(path) == [T0, T0 + 1, T0 + 2]
        BufferWriter(buf, intake_log=True).start()
        assert ts_stored(path) == [T0 + i for i in range(8)]
    # a second crash right after: the replayed rows are not replayed again
    put_then_kill(path, 8, 2)
    with Buffer(path) as buf:
        writer = BufferWriter(buf, intake_log=True)
        writer.start()
        assert writer.stop()
    assert ts_stored(path) == [T0 + i for i in range(10)]
    assert [rid for rid, _ in stored(path)] == list(range(1, 11))


def test_part_of_an_entry_committed_replays_the_rest(path: Path) -> None:
    """commit_max split an entry: the buffer's seq says how far, row by row."""
    path.parent.mkdir(parents=True)
    with Buffer(path) as buf:
        buf.append_encoded(rows_of(0, 1), intake_seq=2)  # seqs 1-2 of the entry below
        a, _ = log_paths(path)
        a.write_bytes(entry_bytes(1, rows_of(0, 1, 2, 3)))  # a crash before the truncation
        writer = BufferWriter(buf, intake_log=True)
        writer.start()
        assert writer.stats.replayed == 2 and writer.stop()
    assert ts_stored(path) == [T0, T0 + 1, T0 + 2, T0 + 3]


def test_seqs_go_on_above_the_committed_ones_after_a_restart(path: Path) -> None:
    with Buffer(path) as buf:
        writer = BufferWriter(buf, intake_log=True)
        writer.start()
        writer.put([reading(0), reading(1)])
        assert writer.stop()
        assert buf.intake_seq == 2
    with Buffer(path) as buf:
        assert buf.intake_seq == 2  # persisted with the commit
        writer = BufferWriter(buf, intake_log=True)
        writer.start()
        writer.put([reading(2)])
        assert writer.stop()
        assert buf.intake_seq == 3


# -- damage never stops a start --------------------------------------------------------------
def test_a_torn_tail_is_skipped_with_a_warning_and_the_rest_replayed(path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    path.parent.mkdir(parents=True)
    a, _ = log_paths(path)
    good = entry_bytes(1, rows_of(0, 1))
    torn = entry_bytes(3, rows_of(2))[:-7]
    a.write_bytes(good + torn)
    with Buffer(path) as buf:
        writer = BufferWriter(buf, intake_log=True)
        writer.start()
        assert ts_stored(path) == [T0, T0 + 1]
        warning = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert warning == [f"intake log {a}: a torn entry ({len(torn) - 10} of its {len(torn) - 3} bytes written) at "
                           f"byte {len(good)}; skipped it and the {len(torn)} bytes from there (a poll cut off by a "
                           "crash or power cut; the 2 rows before it are kept)"]
        # the file was cut back to its sound part, so what follows is readable again
        writer.put([reading(5)])
        assert writer.stop()
    assert ts_stored(path) == [T0, T0 + 1, T0 + 5]


@pytest.mark.parametrize("damage", ["crc", "garbage", "zeros"])
def test_damage_ends_the_reading_of_that_file_only(path: Path, damage: str, caplog: pytest.LogCaptureFixture) -> None:
    path.parent.mkdir(parents=True)
    a, b = log_paths(path)
    first, second = entry_bytes(1, rows_of(0)), bytearray(entry_bytes(2, rows_of(1)))
    if damage == "crc":
        second[-3] ^= 0x40
        bad = bytes(second)
    else:
        bad = os.urandom(200) if damage == "garbage" else bytes(4096)
    a.write_bytes(first + bad + entry_bytes(3, rows_of(2)))  # what follows damage is not trusted
    b.write_bytes(entry_bytes(4, rows_of(3)))
    with Buffer(path) as buf:
        writer = BufferWriter(buf, intake_log=True)
        writer.start()
        assert writer.stop()
    assert ts_stored(path) == [T0, T0 + 3]
    assert f"intake log {a}: " in caplog.text and f"at byte {len(first)}; skipped it" in caplog.text


def test_an_unreadable_log_is_an_error_and_start_goes_on(path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path.parent.mkdir(parents=True)
    a, _ = log_paths(path)
    a.mkdir()  # read_bytes fails: not a file
    with Buffer(path) as buf:
        writer = BufferWriter(buf, intake_log=True)
        writer.start()
        writer.put([reading(0)])
        assert writer.stop()
    assert ts_stored(path) == [T0]
    assert f"intake log {a}: cannot read it" in caplog.text and "the intake log is off for this run" in caplog.text
    assert a.is_dir()  # left alone


# -- turned off ------------------------------------------------------------------------------
def test_turned_off_the_leftovers_are_committed_then_removed(path: Path) -> None:
    put_then_kill(path, 0, 3)
    with Buffer(path) as buf:
        writer = BufferWriter(buf, intake_log=False)
        writer.start()
        assert ts_stored(path) == [T0, T0 + 1, T0 + 2]
        assert not any(p.exists() for p in log_paths(path))
        writer.put([reading(3)])
        assert not any(p.exists() for p in log_paths(path))  # nothing written while off
        assert writer.stop()
    assert ts_stored(path) == [T0 + i for i in range(4)]


# -- what is on disk -------------------------------------------------------------------------
def test_the_log_holds_the_rows_the_buffer_stores_and_events_too(path: Path) -> None:
    """The rows are encode_items' (after privacy in the daemon): the same bytes the buffer keeps,
    each with the id it was taken with in front (ids at intake)."""
    sos = Event("hub-1", "sos", Priority.CRITICAL, T0, {"wearer": "p1:6Q2W"})
    path.parent.mkdir(parents=True)
    with Buffer(path) as buf:
        writer = BufferWriter(buf, commit_interval_s=30.0, intake_log=True)
        writer.start()
        log = writer._log  # noqa: SLF001 - the files it writes, read back
        writer.put([reading(0)])
        found = IntakeLog(path, enabled=False)
        found.paths = log.paths
        rows = [row for _, row in found.open().rows]
        assert rows == [(1, *row) for row in encode_items([reading(0)])]
        writer.put([sos])  # critical: committed at once
        assert writer.flush()
        assert writer.stop()
    bodies = [body for _, body in stored(path)]
    assert bodies[1]["type"] == "sos" and json.loads(rows[0][4])["vals"] == {"level_m": 0.0}
