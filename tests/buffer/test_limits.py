"""The buffer at its limits, on real SQLite files in tmp_path: a byte cap, a full disk, a
corrupt or truncated file, and the id window the uplink drains by (pending until_id, max_id).
"""

from __future__ import annotations

import logging
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edge_agent.buffer import outbox as buffer_module
from edge_agent.buffer import evict
from edge_agent.buffer.outbox import WAL_LIMIT, Buffer, BufferError
from edge_agent.model import Event, Priority, Reading, Record
from edge_agent.buffer.writer import BufferWriter

T0 = 1_732_380_000_000
KIB = 1024
CORRUPT_NAME = re.compile(r"buffer\.db\.corrupt-\d{8}T\d{6}Z(\.\d+)?$")


def reading(i: int, val: object = None) -> Reading:
    return Reading("river-1", "level_m", round(i * 0.01, 3) if val is None else val, T0 + i)


def record(i: int) -> Record:
    """One poll of a three-point sensor: a row of the normal lane."""
    return Record("river-1", T0 + i, {"level_m": round(i * 0.01, 3), "temp_C": 21.5, "flow_m3s": 3.25})


def event(i: int, prio: Priority) -> Event:
    return Event("hub-1", "sos" if prio is Priority.CRITICAL else "door", prio, T0 + i,
                 {"wearer": "p1:6Q2W", "n": i})


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "buffer.db"


def stored_ids(path: Path) -> set[int]:
    """What the file holds, through a connection of our own (WAL: committed data only)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {i for (i,) in conn.execute("SELECT id FROM outbox")}
    finally:
        conn.close()


def used_bytes(path: Path) -> int:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        pages, free, size = (conn.execute(f"PRAGMA {p}").fetchone()[0]
                             for p in ("page_count", "freelist_count", "page_size"))
        return (pages - free) * size
    finally:
        conn.close()


def file_size(p: Path | str) -> int:
    try:
        return os.path.getsize(p)
    except FileNotFoundError:
        return 0


def quarantined(path: Path) -> list[Path]:
    return sorted(p for p in path.parent.iterdir() if CORRUPT_NAME.search(p.name))


def child(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60)


# -- eviction ---------------------------------------------------------------------------------
def test_eviction_order_is_sent_then_normal_then_high_then_critical_oldest_first(
        path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.INFO, logger="edge_agent")
    monkeypatch.setattr(evict, "CHUNK", 40)  # finer steps than 500, to see the order inside a lane
    clock = Clock()
    with Buffer(path, max_bytes=256 * KIB, retain_sent_s=86400, clock=clock) as buf:
        sent = buf.append([reading(i, "SECRET-" + "s" * 20) for i in range(300)])
        buf.mark_sent(sent[150:])  # sent first, so the oldest *sent* although higher ids
        clock.t += 10
        buf.mark_sent(sent[:150])
        lanes: dict[str, list[int]] = {"sent": sent[150:] + sent[:150], "normal": [], "high": [], "critical": []}
        mixed = [Priority.NORMAL, Priority.NORMAL, Priority.HIGH, Priority.CRITICAL]
        for b in range(12):
            prios = [mixed[k % 4] for k in range(b, b + 100)]
            ids = buf.append([record(k) if p is Priority.NORMAL else event(k, p) for k, p in enumerate(prios)])
            for i, p in zip(ids, prios):
                lanes[p.label].append(i)
        assert buf.stats().evicted == {"critical": 0, "high": 0, "normal": 0}
        assert stored_ids(path) == set(sent) | {i for k in ("normal", "high", "critical") for i in lanes[k]}
        original_critical = list(lanes["critical"])
        episodes, before = 0, set()
        while set(original_critical) <= stored_ids(path):  # until the last lane is reached
            batch = buf.append([event(k, Priority.CRITICAL) for k in range(50)])
            assert len(lanes["critical"]) < 10_000
            gone = set(sent) | {i for k in ("normal", "high", "critical") for i in lanes[k]}
            gone -= stored_ids(path)
            assert not gone & set(batch)  # the new data always goes in
            assert gone >= before
            episodes += gone != before
            reached = False
            for name in ("sent", "normal", "high", "critical"):
                lane = lanes[name]
                k = sum(1 for i in lane if i in gone)
                assert set(lane[:k]) == gone & set(lane), f"{name}: not the oldest first"
                if reached:
                    assert k == 0, f"{name} evicted before an earlier lane was empty"
                reached = k < len(lane)  # rows of this lane remain: later lanes must be untouched
            if not before and gone:
                assert gone <= set(sent)  # the first episode took sent rows only (oldest first: above)
            before = gone
            assert buf.stats().evicted == {n: len(gone & set(lanes[n])) for n in ("critical", "high", "normal")}
            lanes["critical"] += batch
        evicted = buf.stats().evicted
        assert evicted["critical"] > 0 and evicted["normal"] == len(lanes["normal"])
        assert evicted["high"] == len(lanes["high"])
    with Buffer(path) as buf:  # persisted, and visible from outside
        assert buf.stats().evicted == evicted
    assert Buffer.read_stats(path).evicted == evicted
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert episodes > 3  # eviction passes; the first took retained sent rows only (no data lost: no WARNING)
    assert len(warnings) == 1 and "evicting the oldest unsent rows" in warnings[0]  # one episode: never drained
    assert "closed during an eviction episode; it evicted" in caplog.text  # its count, at close
    assert "SECRET" not in caplog.text


def test_used_bytes_stay_under_the_cap_and_the_file_is_bounded(path: Path) -> None:
    cap = 256 * KIB
    peaks: list[int] = []
    with Buffer(path, max_bytes=cap) as buf:
        writer = BufferWriter(buf, commit_interval_s=0.005, commit_max=500,
                              on_commit=lambda ids: peaks.append(used_bytes(path)))
        writer.start()
        for n in range(0, 30_000, 250):
            writer.put([reading(n + k) for k in range(250)])
        assert writer.flush(timeout=20)
        assert writer.stop()
        assert writer.stats.committed == 30_000 and writer.stats.failures == 0  # never refused
        stats = buf.stats()
        on_disk = file_size(path) + file_size(f"{path}-wal")
    assert max(peaks) <= cap  # measured after each commit and its eviction
    assert on_disk <= cap + WAL_LIMIT + 256 * KIB
    assert stats.evicted["normal"] == 30_000 - stats.pending > 25_000
    assert stored_ids(path) == set(range(30_001 - stats.pending, 30_001))  # the newest stay


def test_eviction_while_the_uplink_drains_keeps_every_row_accounted_for(path: Path) -> None:
    """The writer evicts (its thread) while an uplink-like thread reads and acknowledges."""
    published: list[int] = []
    errors: list[BaseException] = []
    stop = threading.Event()
    with Buffer(path, max_bytes=256 * KIB) as buf:
        writer = BufferWriter(buf, commit_interval_s=0.005, commit_max=500)
        writer.start()

        def drain() -> None:
            try:
                while not stop.is_set():
                    rows = buf.pending(50, until_id=buf.max_id())
                    buf.mark_sent(r.id for r in rows)
                    published.extend(r.id for r in rows)
                    time.sleep(0.002)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        uplink = threading.Thread(target=drain)
        uplink.start()
        try:
            for n in range(0, 20_000, 200):
                writer.put([reading(n + k) for k in range(200)])
            assert writer.flush(timeout=20)
        finally:
            stop.set()
            uplink.join()
            assert writer.stop()
        stats = buf.stats()
        left = {r.id for r in buf.pending(100_000)}
    assert not errors and writer.stats.failures == 0 and writer.stats.committed == 20_000
    assert len(published) == len(set(published))  # nothing was handed out twice
    assert not left & set(published)
    lost = set(range(1, 20_001)) - set(published) - left  # neither published nor waiting: evicted
    assert stats.evicted["normal"] >= len(lost) > 0
    assert stats.evicted["normal"] <= len(lost) + len(published)  # evicted after it was read


def test_a_cap_smaller_than_one_commit_keeps_the_newest_commit_and_terminates(path: Path) -> None:
    with Buffer(path, max_bytes=16 * KIB) as buf:  # less than the empty schema
        total = 0
        for b in range(5):
            ids = buf.append([reading(total + k) for k in range(300)])
            total += 300
            assert stored_ids(path) == set(ids)  # all of the new commit, nothing older
            assert buf.stats().evicted == {"critical": 0, "high": 0, "normal": total - 300}


# -- disk full --------------------------------------------------------------------------------
def cap_pages(buf: Buffer, pages: int | None = None) -> None:
    """A real SQLITE_FULL: the connection may not grow the file past ``pages``."""
    with buf._lock:
        if pages is None:
            pages = buf._conn.execute("PRAGMA page_count").fetchone()[0]
        buf._conn.execute(f"PRAGMA max_page_count = {pages}")


def test_disk_full_with_nothing_to_evict_keeps_items_and_commits_once_space_returns(
        path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with Buffer(path, retain_sent_s=3600) as buf:
        sent, crit = buf.append([reading(0), event(1, Priority.CRITICAL)])
        buf.mark_sent([sent])
        cap_pages(buf)
        writer = BufferWriter(buf, commit_interval_s=0.01)
        writer.start()
        writer.put([reading(i, "SECRET-" + "x" * 100) for i in range(300)])
        assert not writer.flush(timeout=1.0)
        assert writer.stats.failures >= 2 and writer.stats.queued == 300
        assert stored_ids(path) == {sent, crit}  # the failed make-room attempts were rolled back
        assert buf.stats().evicted == {"critical": 0, "high": 0, "normal": 0}
        cap_pages(buf, 1_000_000_000)
        assert writer.flush(timeout=10)
        assert writer.stop()
        assert writer.stats.committed == 300 and buf.stats().pending == 301
    assert "database or disk is full" in caplog.text and "SECRET" not in caplog.text


def test_disk_full_evicts_old_rows_inside_the_file_to_take_new_ones(
        path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with Buffer(path) as buf:
        old = buf.append([reading(i) for i in range(3000)])
        crit = buf.append([event(i, Priority.CRITICAL) for i in range(20)])
        cap_pages(buf)
        writer = BufferWriter(buf, commit_interval_s=0.01)
        writer.start()
        writer.put([reading(i) for i in range(300)])
        assert writer.flush(timeout=5)  # no one raised the limit
        assert writer.stop()
        stats = buf.stats()
        assert writer.stats.failures == 1 and writer.stats.committed == 300
        with buf._lock:
            assert buf._conn.execute("PRAGMA max_page_count").fetchone()[0] == \
                buf._conn.execute("PRAGMA page_count").fetchone()[0]  # the file did not grow
    left = stored_ids(path)
    n = stats.evicted["normal"]
    assert 0 < n < 3000 and stats.evicted["critical"] == 0
    assert left == set(old[n:]) | set(crit) | set(range(old[-1] + 21, old[-1] + 321))
    assert "disk full: made room for 300 rows" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# -- corruption -------------------------------------------------------------------------------
def filled(path: Path, n: int = 2000, **kw) -> list[int]:
    with Buffer(path, **kw) as buf:
        return [i for b in range(0, n, 200)
                for i in buf.append([reading(b + k, "SECRET-" + "v" * 40) for k in range(min(200, n - b))])]


def assert_quarantined_and_fresh(path: Path, old_ids: list[int], caplog: pytest.LogCaptureFixture,
                                 original: bytes | None = None) -> Path:
    (aside,) = quarantined(path)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and str(aside) in errors[0]
    if original is not None:
        assert aside.read_bytes() == original  # moved, not rewritten
    with Buffer(path) as buf:
        assert buf.stats().pending == 0 and buf.stats().evicted == {"critical": 0, "high": 0, "normal": 0}
        new = buf.append([reading(0)])
        assert buf.pending(10)[0].id == new[0] > max(old_ids)
    assert "SECRET" not in caplog.text
    return aside


def test_a_file_of_random_bytes_is_quarantined_and_ids_continue(path: Path, caplog: pytest.LogCaptureFixture) -> None:
    old = filled(path, max_bytes=64 * KIB)  # evictions happened: the counters restart
    assert Buffer.read_stats(path).evicted["normal"] > 0
    junk = random.Random(1).randbytes(file_size(path))
    path.write_bytes(junk)
    with Buffer(path) as buf:
        assert buf.max_id() >= max(old)
    assert_quarantined_and_fresh(path, old, caplog, junk)


def test_a_wal_beside_a_corrupt_file_goes_aside_with_it(path: Path, caplog: pytest.LogCaptureFixture) -> None:
    old = filled(path, 10)
    junk, wal, shm = (random.Random(n).randbytes(8192) for n in range(3))
    path.write_bytes(junk)
    Path(f"{path}-wal").write_bytes(wal)  # left by a crash; SQLite cannot fold it into junk
    Path(f"{path}-shm").write_bytes(shm)
    Buffer(path).open().close()
    aside = assert_quarantined_and_fresh(path, old, caplog, junk)
    assert Path(f"{aside}-wal").read_bytes() == wal  # untouched
    assert Path(f"{aside}-shm").exists()  # SQLite's scratch index of the WAL: it writes there
    assert not list(path.parent.glob("*.keep-*"))


def test_a_truncated_file_is_quarantined(path: Path, caplog: pytest.LogCaptureFixture) -> None:
    old = filled(path)
    with open(path, "r+b") as f:
        f.truncate(file_size(path) // 2)
    half = path.read_bytes()
    Buffer(path).open().close()
    assert_quarantined_and_fresh(path, old, caplog, half)


def test_scribbled_pages_after_a_crash_fail_quick_check_and_are_quarantined(
        path: Path, caplog: pytest.LogCaptureFixture) -> None:
    code = """
import os, signal, sys
from edge_agent.buffer.outbox import Buffer
from edge_agent.model import Reading
buf = Buffer(sys.argv[1]).open()
for n in range(0, 40000, 1000):
    ids = buf.append([Reading("river-1", "level_m", "SECRET-v", 1000 + n + k) for k in range(1000)])
print(ids[-1], flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""
    proc = child(code, str(path))
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    last = int(proc.stdout.split()[0])
    size = file_size(path)
    with open(path, "r+b") as f:  # the header stays intact; the middle is garbage
        f.seek(size * 2 // 5)
        f.write(random.Random(2).randbytes(size // 5))
    caplog.set_level(logging.INFO, logger="edge_agent")
    with Buffer(path):
        pass
    assert "did not close cleanly: quick_check took" in caplog.text
    assert_quarantined_and_fresh(path, [last], caplog)


def test_scribbled_pages_after_a_clean_close_are_found_at_open_in_a_small_file(
        path: Path, caplog: pytest.LogCaptureFixture) -> None:
    old = filled(path, 3000)
    size = file_size(path)
    with open(path, "r+b") as f:
        f.seek(size // 3)
        f.write(random.Random(3).randbytes(size // 3))
    Buffer(path).open().close()
    assert_quarantined_and_fresh(path, old, caplog)


def test_quick_check_after_a_clean_close_only_up_to_the_size_limit(
        path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.DEBUG, logger="edge_agent")
    filled(path, 10)
    with Buffer(path):
        pass
    assert "closed cleanly: quick_check took" in caplog.text
    caplog.clear()
    monkeypatch.setattr(buffer_module, "QUICK_CHECK_MAX_BYTES", 0)  # as if the file were large
    with Buffer(path):
        pass
    assert "quick_check took" not in caplog.text


def corrupt_page_of(path: Path, name: str) -> None:
    conn = sqlite3.connect(path)
    root, page = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (name,)).fetchone()[0], \
        conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    with open(path, "r+b") as f:
        f.seek((root - 1) * page)
        f.write(b"\xff" * page)


def test_corruption_found_by_an_append_quarantines_and_the_append_succeeds(
        path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(buffer_module, "QUICK_CHECK_MAX_BYTES", 0)  # a large file: open() skips the check
    old = filled(path, 50)
    corrupt_page_of(path, "outbox_prio")  # open() does not read it; an event's insert does
    with Buffer(path) as buf:
        assert not quarantined(path)
        ids = buf.append([reading(i) for i in range(5)] + [event(5, Priority.HIGH)])
        assert ids == list(range(max(old) + 1, max(old) + 7))  # the same ids, no gap
        assert [r.id for r in buf.pending(10)] == ids
        assert buf.stats().pending == 6
    (aside,) = quarantined(path)
    assert str(aside) in caplog.text and "append" in caplog.text
    conn = sqlite3.connect(f"file:{aside}?mode=ro", uri=True)  # the old rows wait there
    assert [i for (i,) in conn.execute("SELECT id FROM outbox NOT INDEXED ORDER BY id")] == old
    conn.close()


def test_corruption_found_by_a_read_quarantines_too(
        path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(buffer_module, "QUICK_CHECK_MAX_BYTES", 0)  # a large file: open() skips the check
    old = filled(path, 5000)
    size = file_size(path)
    with open(path, "r+b") as f:
        f.seek(size // 3)
        f.write(b"\xff" * (size // 3))
    with Buffer(path) as buf:  # no quick_check: the damage is found when a read reaches it
        assert buf.pending(10_000) == []  # quarantined, read again from the fresh file
        assert buf.append([reading(0)])[0] > max(old)
    assert len(quarantined(path)) == 1


def test_a_quarantined_file_is_never_overwritten(path: Path, caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()  # both in the same second
    contents = []
    for n in range(3):
        path.parent.mkdir(parents=True, exist_ok=True)
        contents.append(f"not a database {n}".encode() * 100)
        path.write_bytes(contents[-1])
        Buffer(path, clock=clock).open().close()
    names = quarantined(path)
    assert len(names) == 3 and sorted(p.read_bytes() for p in names) == sorted(contents)
    assert [p.name.rsplit("Z", 1)[1] for p in names] == ["", ".1", ".2"]


# -- the drain window -------------------------------------------------------------------------
def test_pending_until_id_and_max_id(path: Path) -> None:
    with Buffer(path) as buf:
        assert buf.max_id() == 0 and buf.pending(10, until_id=0) == []
        ids = buf.append([reading(0), event(1, Priority.HIGH), reading(2), event(3, Priority.CRITICAL),
                          reading(4)])
        assert buf.max_id() == ids[-1] == 5
        assert [r.id for r in buf.pending(10, until_id=3)] == [1, 2, 3]
        assert [r.id for r in buf.pending(10, after_id=1, until_id=3)] == [2, 3]
        assert [r.id for r in buf.pending(1, after_id=1, until_id=3)] == [2]
        assert [r.id for r in buf.pending(10, prio=Priority.NORMAL, until_id=3)] == [1, 3]
        assert [r.id for r in buf.pending(10, prio=Priority.CRITICAL, until_id=3)] == []
        assert [r.id for r in buf.pending(10, prio=Priority.CRITICAL, until_id=4)] == [4]
        assert [r.id for r in buf.pending(10, until_id=None)] == ids
        buf.mark_sent(ids)
        assert buf.max_id() == 5  # the highest ever assigned, sent or not
    with Buffer(path) as buf:
        assert buf.max_id() == 5
        assert buf.append([reading(9)]) == [6] and buf.max_id() == 6
    with pytest.raises(BufferError, match="not open"):
        buf.max_id()


def test_max_id_after_a_crash_covers_every_id_and_the_next_is_above_it(path: Path) -> None:
    code = """
import sys
from edge_agent.buffer.outbox import Buffer
from edge_agent.model import Reading
buf = Buffer(sys.argv[1], id_block=100).open()
print(buf.append([Reading("d", "p", 1, 1000)] * 30)[-1], flush=True)
import os, signal; os.kill(os.getpid(), signal.SIGKILL)
"""
    proc = child(code, str(path))
    last = int(proc.stdout.split()[0])
    with Buffer(path) as buf:
        top = buf.max_id()
        assert top >= last
        assert buf.append([reading(0)])[0] == top + 1
