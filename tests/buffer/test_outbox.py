"""The SQLite outbox and its group-commit writer, on real files in tmp_path.

Crash and second-process cases run real child processes (a real SIGKILL, a real concurrent
reader), because that is where WAL, locks and the id sidecar earn their keep.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edge_agent.buffer.outbox import PRUNE_STEP_S, Buffer, BufferError, OutRow
from edge_agent.model import Event, Priority, Quality, Reading, Record, records_of
from edge_agent.buffer.writer import BufferWriter

T0 = 1_732_380_000_000


def reading(i: int, dev: str = "river-1", pt: str = "level_m") -> Reading:
    return Reading(dev, pt, round(i * 0.01, 3), T0 + i)


def event(i: int, prio: Priority = Priority.CRITICAL) -> Event:
    return Event("hub-1", "sos", prio, T0 + i, {"wearer": "p1:6Q2W", "hr_bpm": 131})


def db_files(path: Path) -> list[Path]:
    return [Path(f"{path}{s}") for s in ("", "-wal", "-shm")]


def child(code: str, *args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "buffer.db"


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


# -- ids --------------------------------------------------------------------------------------
def test_ids_strictly_increase_across_appends_and_reopen(path: Path) -> None:
    with Buffer(path) as buf:
        first = buf.append([reading(i) for i in range(3)])
        second = buf.append([reading(3), event(4)])
    assert first == [1, 2, 3] and second == [4, 5]
    with Buffer(path) as buf:  # a clean close lowers the ceiling: no gap
        assert buf.append([reading(5)]) == [6]
    assert path.parent.is_dir() and Path(f"{path}.ids").read_text().split()[0] == "7"


def test_ids_continue_after_the_database_is_deleted(path: Path) -> None:
    with Buffer(path) as buf:
        old = buf.append([reading(i) for i in range(10)])
    for f in db_files(path):
        f.unlink(missing_ok=True)
    with Buffer(path) as buf:
        new = buf.append([reading(0)])
        assert buf.stats().pending == 1
    assert new[0] > max(old)


def test_ids_continue_after_rm_buffer_db_star_or_a_new_buffer_path(path: Path) -> None:
    """The agent's copy of the floor in state_dir outlives ``rm buffer.db*`` (which takes the
    sidecar too) and covers a buffer.path moved to a new file."""
    copy = path.parent / "id-floor"
    with Buffer(path, id_floor_copy=copy) as buf:
        old = buf.append([reading(i) for i in range(10)])
    for f in path.parent.glob("buffer.db*"):
        f.unlink()
    with Buffer(path, id_floor_copy=copy) as buf:
        again = buf.append([reading(0)])
    assert again[0] > max(old)
    with Buffer(path.parent / "elsewhere" / "buf2.db", id_floor_copy=copy) as buf:
        assert buf.append([reading(0)])[0] > again[0]
    copy.write_text("garbage\n")  # an unreadable copy: the sidecar alone still counts
    with Buffer(path, id_floor_copy=copy) as buf:
        assert buf.append([reading(0)])[0] > again[0]


def test_a_clean_close_leaves_a_file_readers_without_write_access_can_open(path: Path) -> None:
    """WAL needs a -shm a technician in the service group cannot create; a cleanly closed
    buffer is left in rollback mode (no -wal/-shm), and the next writer goes back to WAL."""
    import sqlite3

    def mode() -> str:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return conn.execute("PRAGMA journal_mode").fetchone()[0]
        finally:
            conn.close()

    with Buffer(path) as buf:
        buf.append([reading(0)])
        assert mode() == "wal"
    assert mode() == "delete"
    assert not Path(f"{path}-wal").exists() and not Path(f"{path}-shm").exists()
    with Buffer(path) as buf:
        assert mode() == "wal" and buf.append([reading(1)]) == [2]
        reader = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        reader.execute("SELECT count(*) FROM sqlite_master").fetchone()
    try:  # a reader open at the close (a tail): WAL stays, and the close is still clean
        assert reader.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        reader.close()
    with Buffer(path) as buf:
        assert buf.append([reading(2)]) == [3]


def test_ids_continue_when_the_sidecar_is_lost(path: Path) -> None:
    with Buffer(path, retain_sent_s=0) as buf:
        old = buf.append([reading(i) for i in range(10)])
        buf.mark_sent(old)
        buf.prune()  # the rows are gone: only meta remembers the ids
    Path(f"{path}.ids").unlink()
    with Buffer(path) as buf:
        assert buf.append([reading(0)])[0] > max(old)


def test_ids_are_not_reused_after_a_crash_mid_append(path: Path) -> None:
    """A child appends in a loop and is killed with SIGKILL; twice, to cross a restart too."""
    code = """
import sys
from edge_agent.buffer.outbox import Buffer
from edge_agent.model import Reading
buf = Buffer(sys.argv[1], id_block=300).open()
n = 0
while True:
    ids = buf.append([Reading("river-1", "level_m", n + k, 1000 + n + k) for k in range(50)])
    n += 50
    print(ids[0], ids[-1], flush=True)
"""
    reported: list[tuple[int, int]] = []
    for _ in range(2):
        proc = child(code, str(path))
        start = len(reported)
        for line in proc.stdout:
            reported.append(tuple(map(int, line.split())))
            if len(reported) - start >= 30:
                break
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        rest = proc.stdout.read()
        # the kill may cut the last report short: that batch counts as committed but unreported,
        # like one killed between its commit and its print
        reported += [tuple(map(int, line.split())) for line in rest.splitlines(keepends=True) if line.endswith("\n")]
        proc.stdout.close()
        proc.stderr.close()
        assert proc.returncode == -signal.SIGKILL
    with Buffer(path) as buf:
        rows = buf.pending(1_000_000)
        new = buf.append([reading(0)])[0]
    stored = {r.id: r for r in rows}
    committed = [i for lo, hi in reported for i in range(lo, hi + 1)]
    assert len(committed) == len(set(committed)) and committed == sorted(committed)
    assert all(i in stored for i in committed)  # every committed row survived the kill
    assert [r.id for r in rows] == sorted(stored)
    # each row carries its own content: val was the loop counter of its own run
    assert all(stored[i].body["id"] == i and stored[i].body["ts"] == 1000 + stored[i].body["vals"]["level_m"]
               for i in committed)
    assert new > max(stored)
    # same boot: nothing committed was lost, so the restart continues without a gap
    assert sorted(stored) == list(range(1, max(stored) + 1))
    assert new == max(stored) + 1


def _kill_mid_append(path: Path, rows: int = 200) -> None:
    code = """
import sys
from edge_agent.buffer.outbox import Buffer
from edge_agent.model import Reading
buf = Buffer(sys.argv[1], id_block=300).open()
buf.append([Reading("river-1", "level_m", k, 1000 + k) for k in range(int(sys.argv[2]))])
print("ok", flush=True)
import time; time.sleep(60)
"""
    proc = child(code, str(path), str(rows))
    assert proc.stdout.readline().strip() == "ok"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    proc.stdout.close()
    proc.stderr.close()


def test_after_a_reboot_following_a_crash_the_rest_of_the_block_is_skipped(path: Path) -> None:
    """A power cut may have lost published commits: after a reboot (another boot id in the
    sidecar) the ids skip to the fsynced ceiling, never back into what may have been sent."""
    _kill_mid_append(path)
    sidecar = Path(f"{path}.ids")
    ceiling = int(sidecar.read_text().split()[0])
    assert ceiling > 200
    sidecar.write_text(f"{ceiling} 00000000-0000-0000-0000-000000000000\n")  # as if rebooted since
    with Buffer(path) as buf:
        assert buf.append([reading(0)])[0] == ceiling
    # and a crash in this same boot afterwards continues without a gap
    _kill_mid_append(path, rows=10)
    with Buffer(path) as buf:
        last = max(r.id for r in buf.pending(1000))
        assert buf.append([reading(0)])[0] == last + 1


def test_a_second_writer_on_the_same_file_is_refused(path: Path) -> None:
    with Buffer(path):
        with pytest.raises(BufferError, match="in use"):
            Buffer(path).open()


# -- rows -------------------------------------------------------------------------------------
def test_body_round_trip_is_to_wire_plus_id_first(path: Path) -> None:
    items = [
        Record("river-1", T0, {"level_m": None, "temp_C": 21.4}, q={"level_m": "bad"}),
        Record("gate-1", T0 + 1, {"plate": "桂A***45"}, clk_synced=False),
        Record("meter-1", T0 + 2, {"flags": [1, None, True, {"a": "b"}]}),
        Record("hub-1", T0 + 3, {"battery_pct": 64}, sub="B-00023", sealed={"kid": "97d5", "ct": "AAAA"}),
        Event("hub-1", "fall", Priority.CRITICAL, T0 + 4, {"wearer": "p1:X", "lat": 22.8}),
        Event("gate-1", "online", Priority.NORMAL, T0 + 5, clk_synced=False),
    ]
    with Buffer(path) as buf:
        ids = buf.append(items)
        rows = buf.pending(10)
    assert [r.id for r in rows] == ids
    for row, item in zip(rows, items):
        assert row.body == {"id": row.id, **item.to_wire()}
        assert next(iter(row.body)) == "id"
        assert row.ts == item.ts
    assert [r.kind for r in rows] == ["record"] * 4 + ["event"] * 2
    assert [r.prio for r in rows] == [Priority.NORMAL] * 4 + [Priority.CRITICAL, Priority.NORMAL]
    # the contract's keys, in its order; optional ones only when there is something to say
    assert [list(r.body) for r in rows[:4]] == [["id", "dev", "ts", "vals", "q"], ["id", "dev", "ts", "vals", "clk"],
                                                ["id", "dev", "ts", "vals"], ["id", "dev", "sub", "ts", "vals", "sealed"]]
    assert rows[1].body["clk"] == "unsynced"


def test_readings_are_stored_as_records_one_per_device_unit_and_time(path: Path) -> None:
    """Readings handed to the buffer as they are (tests, tools) become records, no privacy:
    those sharing device, unit, time and clock mark are one row, in arrival order; a point
    seen twice under one key opens a new record rather than overwrite the first value."""
    readings = [
        Reading("meter-1", "voltage_V", 230.5, T0), Reading("river-1", "level_m", 1.2, T0),
        Reading("meter-1", "power_kW", None, T0, q=Quality.BAD),
        Reading("hub-1", "hr_bpm", 71, T0, sub="B-1"), Reading("hub-1", "hr_bpm", 90, T0, sub="B-2"),
        Reading("hub-1", "hr_bpm", 72, T0, sub="B-1"),
        Reading("meter-1", "voltage_V", 231.0, T0 + 100),
        Reading("meter-1", "current_A", 5.0, T0 + 100, clk_synced=False),
    ]
    with Buffer(path) as buf:
        assert buf.append(readings) == [1, 2, 3, 4, 5, 6, 7]
        bodies = [r.body for r in buf.pending(10)]
    assert bodies == [
        {"id": 1, "dev": "meter-1", "ts": T0, "vals": {"voltage_V": 230.5, "power_kW": None}, "q": {"power_kW": "bad"}},
        {"id": 2, "dev": "river-1", "ts": T0, "vals": {"level_m": 1.2}},
        {"id": 3, "dev": "hub-1", "sub": "B-1", "ts": T0, "vals": {"hr_bpm": 71}},
        {"id": 4, "dev": "hub-1", "sub": "B-2", "ts": T0, "vals": {"hr_bpm": 90}},
        {"id": 5, "dev": "hub-1", "sub": "B-1", "ts": T0, "vals": {"hr_bpm": 72}},
        {"id": 6, "dev": "meter-1", "ts": T0 + 100, "vals": {"voltage_V": 231.0}},
        {"id": 7, "dev": "meter-1", "ts": T0 + 100, "vals": {"current_A": 5.0}, "clk": "unsynced"},
    ]


@pytest.mark.parametrize("bad", [object(), b"raw", math.nan, {1, 2}])
def test_a_value_that_is_not_json_is_rejected_before_anything_is_written(path: Path, bad: object) -> None:
    with Buffer(path) as buf:
        with pytest.raises(TypeError, match=f"record meter-7@{T0} point energy_kWh: not JSON"):
            buf.append([reading(0), Reading("meter-7", "energy_kWh", bad, T0)])
        with pytest.raises(TypeError, match="event hub-1/sos"):
            buf.append([Event("hub-1", "sos", Priority.CRITICAL, T0, {"x": bad})])
        assert buf.pending(10) == [] and buf.stats().next_id == 1
        writer = BufferWriter(buf)
        with pytest.raises(TypeError, match="meter-7@.* point energy_kWh"):
            writer.put([reading(1), Reading("meter-7", "energy_kWh", bad, T0)])
        assert writer.stats.queued == 0


def test_pending_orders_by_id_filters_by_prio_and_pages_with_after_id(path: Path) -> None:
    items = [reading(0), event(1, Priority.HIGH), reading(2), event(3), reading(4), event(5, Priority.HIGH)]
    with Buffer(path) as buf:
        ids = buf.append(items)
        assert [r.id for r in buf.pending(10)] == ids
        assert [r.id for r in buf.pending(2)] == ids[:2]
        assert [r.id for r in buf.pending(10, after_id=ids[2])] == ids[3:]
        assert [r.id for r in buf.pending(10, prio=Priority.CRITICAL)] == [ids[3]]
        assert [r.id for r in buf.pending(10, prio=Priority.HIGH, after_id=ids[1])] == [ids[5]]
        assert [r.id for r in buf.pending(1, prio=Priority.NORMAL, after_id=ids[0])] == [ids[2]]
        assert buf.pending(0) == []
        buf.mark_sent([ids[0], ids[3]])
        assert [r.id for r in buf.pending(10)] == [ids[1], ids[2], ids[4], ids[5]]
        assert all(isinstance(r, OutRow) for r in buf.pending(10))


def test_without_retention_sent_rows_go_at_the_next_prune_step(path: Path) -> None:
    clock = Clock()
    with Buffer(path, retain_sent_s=0, clock=clock) as buf:
        ids = buf.append([reading(i) for i in range(5)])
        buf.mark_sent(ids[:3])
        buf.mark_sent(ids[:1])  # again: harmless
        stats = buf.stats()
        assert (stats.pending, stats.retained_sent) == (2, 3)  # kept until pruned: tail sees them
        assert stats.last_sent_at is not None
        assert buf.prune() == 0  # a few seconds' grace: `edge-agent tail` follows the file
        clock.t += 6
        assert buf.prune() == 0  # due, but a step deletes a minute's worth at once (whole pages)
        assert Buffer.read_stats(path).retained_sent == 3  # the acks are in the file now
        clock.t += PRUNE_STEP_S
        assert buf.prune() == 3
        assert (buf.stats().pending, buf.stats().retained_sent) == (2, 0)
        assert buf.prune() == 0


def test_mark_sent_keeps_rows_with_retention_and_prune_drops_them_later(path: Path) -> None:
    clock = Clock()
    with Buffer(path, retain_sent_s=3600, clock=clock) as buf:
        ids = buf.append([reading(i) for i in range(6)])
        buf.mark_sent(ids[:2])
        clock.t += 1800
        buf.mark_sent(ids[2:4])
        assert [r.id for r in buf.pending(10)] == ids[4:]
        assert (buf.stats().retained_sent, buf.stats().last_sent_at) == (4, int(clock.t * 1000))
        assert buf.prune() == 0
        clock.t += 1801  # the first two are now older than an hour
        assert buf.prune() == 2
        assert buf.stats().retained_sent == 2
        clock.t += 3600
        assert buf.prune() == 2
        assert buf.stats().retained_sent == 0 and buf.stats().pending == 2


def test_the_oldest_sent_rows_go_first_when_over_the_cap(path: Path) -> None:
    """Eviction now runs after each append (tests/test_buffer_limits.py has the full order);
    prune finds the cap already kept and only applies retention."""
    clock = Clock()
    with Buffer(path, retain_sent_s=86400, max_bytes=64 * 1024, clock=clock) as buf:
        sent: list[int] = []
        for n in range(10):
            ids = buf.append([Reading("d", "text", "x" * 200, T0 + n * 100 + k) for k in range(100)])
            buf.mark_sent(ids)
            sent += ids
            clock.t += 1
        unsent = buf.append([reading(0)])
        assert buf.prune() == 0
        stats = buf.stats()
        kept = stats.retained_sent
        assert 0 < kept < 1000
        assert [r.id for r in buf.pending(10)] == unsent  # unsent rows are kept while sent ones go
        assert stats.evicted == {"critical": 0, "high": 0, "normal": 0}
        with buf._lock:
            left = [i for (i,) in buf._conn.execute("SELECT id FROM outbox ORDER BY id") if i not in unsent]
        assert left == sent[-kept:]  # the newest survive


def test_stats_counts_bytes_and_oldest(path: Path) -> None:
    with Buffer(path) as buf:
        empty = buf.stats()
        assert (empty.pending, empty.pending_bytes, empty.oldest_pending_ts) == (0, 0, None)
        assert empty.pending_by_prio == {"critical": 0, "high": 0, "normal": 0}
        ids = buf.append([reading(5), reading(3), event(9), event(7, Priority.HIGH), event(8)])
        buf.mark_sent([ids[1]])
        stats = buf.stats()
    assert stats.pending == 4
    assert stats.pending_by_prio == {"critical": 2, "high": 1, "normal": 1}
    assert stats.oldest_pending_ts == T0 + 5
    assert stats.pending_bytes == sum(len(json.dumps(r.to_wire(), separators=(",", ":")))
                                      for r in (*records_of([reading(5)]), event(9), event(7, Priority.HIGH), event(8)))
    assert stats.file_bytes > 0 and stats.next_id == 6
    outside = Buffer.read_stats(path)  # closed: the same figures (the WAL was checkpointed)
    assert {**outside.__dict__, "file_bytes": 0} == {**stats.__dict__, "file_bytes": 0}


def test_read_stats_never_creates_a_file(path: Path) -> None:
    with pytest.raises(BufferError, match=str(path)):
        Buffer.read_stats(path)
    assert not path.exists() and not path.parent.exists()


def test_a_file_that_is_not_sqlite_is_a_clear_error_for_read_stats(path: Path) -> None:
    """read_stats (status, another process) reports it; open() quarantines it instead
    (tests/test_buffer_limits.py)."""
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not a database, just some bytes\n" * 200)
    with pytest.raises(BufferError, match=f"{path}.*not a usable SQLite database"):
        Buffer.read_stats(path)
    assert path.read_bytes().startswith(b"this is not")  # a reader never moves it


def test_a_newer_schema_is_refused_not_quarantined_and_the_lock_is_released(path: Path) -> None:
    path.parent.mkdir(parents=True)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    for _ in range(2):  # the second open is refused for the schema again, not "in use"
        with pytest.raises(BufferError, match=f"{path}: buffer schema v99 is newer"):
            Buffer(path).open()
    assert list(path.parent.glob("*.corrupt-*")) == []
    with Buffer(path.with_name("x.db")):
        pass


def test_read_stats_from_another_process_while_the_writer_runs(path: Path) -> None:
    code = """
import json, sys
from edge_agent.buffer.outbox import Buffer
for _ in range(5):
    s = Buffer.read_stats(sys.argv[1])
print(json.dumps(s.__dict__))
"""
    with Buffer(path) as buf:
        writer = BufferWriter(buf, commit_interval_s=0.01, commit_max=200)
        writer.start()
        writer.put([reading(0)])
        assert writer.flush()
        stop = threading.Event()

        def produce() -> None:
            i = 0
            while not stop.is_set():
                writer.put([reading(i + k) for k in range(50)])
                i += 50
                time.sleep(0.001)

        producer = threading.Thread(target=produce)
        producer.start()
        try:
            results = [child(code, str(path)) for _ in range(3)]
            outs = [p.communicate(timeout=30) for p in results]
        finally:
            stop.set()
            producer.join()
            assert writer.stop()
        failures_seen = writer.stats.failures
    for proc, (out, err) in zip(results, outs):
        assert proc.returncode == 0, err
        seen = json.loads(out)
        assert seen["pending"] >= 1 and seen["next_id"] > 1
    assert failures_seen == 0  # a reader in another process never made a commit fail


# -- the writer -------------------------------------------------------------------------------
def test_group_commit_gathers_many_puts_into_few_transactions(path: Path) -> None:
    seen: list[list[int]] = []
    with Buffer(path) as buf:
        writer = BufferWriter(buf, commit_interval_s=0.2, commit_max=2000, on_commit=seen.append)
        writer.start()
        for i in range(5000):
            writer.put([reading(i)])
        assert writer.flush(timeout=5)
        stats = writer.stats
        assert stats.committed == 5000 and stats.queued == 0
        assert 3 <= stats.transactions <= 10
        assert max(len(ids) for ids in seen) <= 2000
        assert [i for ids in seen for i in ids] == list(range(1, 5001))
        assert buf.stats().pending == 5000
        assert writer.stop()


def test_stop_commits_everything_queued(path: Path) -> None:
    with Buffer(path) as buf:
        writer = BufferWriter(buf, commit_interval_s=30, commit_max=100)  # would wait 30 s alone
        writer.start()
        writer.put([reading(i) for i in range(1000)])
        t = time.monotonic()
        assert writer.stop(timeout=5)
        assert time.monotonic() - t < 5
        assert buf.stats().pending == 1000 and writer.stats.transactions == 10
        with pytest.raises(RuntimeError, match="stopping"):
            writer.put([reading(0)])


def test_a_full_queue_blocks_put_and_never_drops(path: Path) -> None:
    with Buffer(path) as buf:
        writer = BufferWriter(buf, commit_interval_s=0.01, commit_max=3, queue_max=5)
        writer.put([reading(i) for i in range(5)])  # not started: the queue is now full
        done = threading.Event()
        blocked = threading.Thread(target=lambda: (writer.put([reading(5), reading(6)]), done.set()))
        blocked.start()
        assert not done.wait(0.3)  # held back, not dropped
        assert writer.stats.queued == 5
        writer.start()
        assert done.wait(5)
        blocked.join()
        writer.put([reading(i) for i in range(7, 20)])  # larger than the queue: sliced, all kept
        assert writer.flush(timeout=5)
        assert [r.body["vals"]["level_m"] for r in buf.pending(100)] == [reading(i).val for i in range(20)]
        assert writer.stop()


def test_a_failing_commit_keeps_items_and_retries_until_the_fault_clears(
        path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="edge_agent")
    committed: list[int] = []
    with Buffer(path) as buf:
        buf.append([reading(0)])
        with buf._lock:  # a real SQLITE_FULL: cap the file at the pages it has
            pages = buf._conn.execute("PRAGMA page_count").fetchone()[0]
            buf._conn.execute(f"PRAGMA max_page_count = {pages}")
        writer = BufferWriter(buf, commit_interval_s=0.01, on_commit=committed.extend)
        writer.start()
        writer.put([Reading("meter-1", "secret_pt", "SECRET-VALUE-" + "x" * 100, T0 + i) for i in range(300)])
        assert not writer.flush(timeout=1.0)
        assert writer.stats.failures >= 2 and writer.stats.queued == 300
        with buf._lock:
            buf._conn.execute("PRAGMA max_page_count = 1000000000")
        assert writer.flush(timeout=10)
        assert writer.stop()
        assert len(committed) == 300 and buf.stats().pending == 301
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "database or disk is full" in errors[0].getMessage()
    assert str(path) in errors[0].getMessage()
    assert sum("recovered" in r.getMessage() for r in caplog.records) == 1
    assert "SECRET" not in caplog.text  # counts and ids only, never values


def test_stop_gives_up_on_a_lasting_fault_and_says_so(path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with Buffer(path) as buf:
        writer = BufferWriter(buf, commit_interval_s=0.01)
        buf.close()  # every commit now fails
        writer.start()
        writer.put([reading(i) for i in range(4)])
        assert writer.stop(timeout=0.5) is False
    assert "4 items not committed" in caplog.text


def test_the_writer_survives_a_failing_on_commit_callback(path: Path) -> None:
    calls: list[list[int]] = []

    def on_commit(ids: list[int]) -> None:
        calls.append(ids)
        raise RuntimeError("uplink bug")

    with Buffer(path) as buf:
        writer = BufferWriter(buf, commit_interval_s=0.01, on_commit=on_commit)
        writer.start()
        writer.put([reading(0)])
        assert writer.flush()
        writer.put([reading(1)])
        assert writer.flush()
        assert writer.stop()
        assert calls == [[1], [2]] and buf.stats().pending == 2  # committed once each


def test_a_critical_event_is_committed_at_once_not_at_the_interval(path: Path) -> None:
    committed: list[list[int]] = []
    with Buffer(path) as buf:
        writer = BufferWriter(buf, commit_interval_s=30.0, on_commit=committed.append)
        writer.start()
        try:
            writer.put([reading(1), Event("hub-1", "sos", Priority.HIGH, 1732380000000)])
            time.sleep(0.3)
            assert committed == []  # normal and high wait for the group
            writer.put([Event("hub-1", "sos", Priority.CRITICAL, 1732380000001)])
            deadline = time.monotonic() + 5
            while not committed and time.monotonic() < deadline:
                time.sleep(0.01)
            assert committed == [[1, 2, 3]]  # the SOS and whatever was queued, in one commit
        finally:
            writer.stop()
