"""Sent ids as ranges (buffer/sent.py), and what the buffer does with them: no write per ack, the
acks saved at housekeeping, a kill before that publishes those rows again, never loses one.

``SentIds`` is checked against a plain set of ids under random acks (in order, out of order,
repeated) and deletions; the buffer on real files, with a real SIGKILL.
"""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.buffer.intakelog import entry_bytes, log_paths
from edge_agent.buffer.outbox import PRUNE_STEP_S, Buffer, encode_items
from edge_agent.buffer.sent import SentIds, load
from edge_agent.buffer.writer import BufferWriter
from edge_agent.model import Event, Priority, Reading

T0 = 1_732_380_000_000


def reading(i: int) -> Reading:
    return Reading("river-1", "level_m", round(i * 0.01, 3), T0 + i)


def event(i: int, prio: Priority) -> Event:
    return Event("hub-1", "sos", prio, T0 + i, {"n": i})


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "buffer.db"


def covered(sent: SentIds, top: int) -> set[int]:
    return {i for i in range(1, top + 1) if sent.covers(i)}


def from_gaps(sent: SentIds, top: int) -> set[int]:
    return set(range(1, top + 1)) - {i for a, b in sent.gaps(0, top) for i in range(a, b + 1)}


# -- the ranges ------------------------------------------------------------------------------
def test_in_order_acks_are_one_range_until_the_granule_is_over() -> None:
    sent = SentIds(granule_ms=1000)
    sent.add(range(1, 11), 0)
    sent.add(range(11, 21), 500)
    assert sent.ranges() == [(1, 20, 500)]
    sent.add(range(21, 31), 1000)  # the range's first ack is a granule old: a new one starts
    assert sent.ranges() == [(1, 20, 500), (21, 30, 1000)]
    assert list(sent.gaps(0, 40)) == [(31, 40)]


def test_out_of_order_acks_grow_the_range_below_them_and_stay_neighbours() -> None:
    """A range grows at its high end only: inside it a lower id was never acked later (eviction
    takes sent rows oldest first by taking a range from its low end)."""
    sent = SentIds(granule_ms=10_000)
    sent.add([5], 0)  # a critical event overtook the readings around it
    sent.add([1, 2, 3], 1)
    sent.add([7, 8], 2)
    assert sent.ranges() == [(1, 3, 1), (5, 5, 0), (7, 8, 2)]
    assert list(sent.gaps(0, 10)) == [(4, 4), (6, 6), (9, 10)]
    assert list(sent.gaps(4, 10)) == [(6, 6), (9, 10)]
    sent.add([4, 6], 3)
    assert sent.ranges() == [(1, 4, 3), (5, 6, 3), (7, 8, 2)]
    assert list(sent.gaps(0, 10)) == [(9, 10)]
    assert [r.lo for r in sent.by_age()] == [5, 1, 7]  # first acked first
    sent.add([2, 3, 4], 9)  # a re-send's acks: nothing changes
    assert sent.ranges() == [(1, 4, 3), (5, 6, 3), (7, 8, 2)]


def test_against_a_set_of_ids_under_random_acks_and_deletions() -> None:
    rng = random.Random(13)
    for _ in range(40):
        sent, model, now, top = SentIds(granule_ms=rng.choice([1, 5, 1000])), set(), 0, 300
        for _ in range(60):
            now += rng.randint(0, 3)
            if rng.random() < 0.75:
                lo = rng.randint(1, top)
                ids = [i for i in range(lo, min(top, lo + rng.randint(0, 20)) + 1) if rng.random() < 0.9]
                sent.add(ids, now)
                model |= set(ids)
            else:
                lo = rng.randint(1, top)
                hi = min(top, lo + rng.randint(0, 40))
                sent.remove(lo, hi)
                model -= set(range(lo, hi + 1))
            assert covered(sent, top) == model == from_gaps(sent, top)
            spans = sent.ranges()
            assert all(a[1] < b[0] for a, b in zip(spans, spans[1:]))  # sorted, disjoint


def test_written_ranges_load_back_and_only_changes_are_written() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("CREATE TABLE sent (lo INTEGER PRIMARY KEY, hi INTEGER NOT NULL, at INTEGER NOT NULL)")
    sent = SentIds(granule_ms=100)
    sent.add(range(1, 50), 10)
    sent.add(range(60, 70), 500)
    sent.written(sent.write(conn))
    assert not sent.changed
    assert load(conn).ranges() == sent.ranges()
    sent.remove(1, 20)  # pruned: the range's low end moves
    sent.add([70], 520)
    assert sent.changed
    sent.written(sent.write(conn))
    assert conn.execute("SELECT lo, hi, at FROM sent ORDER BY lo").fetchall() == [(21, 49, 10), (60, 70, 520)]
    assert load(conn).ranges() == sent.ranges()


def test_staged_removals_apply_only_when_their_transaction_commits() -> None:
    sent = SentIds()
    sent.add(range(1, 11), 0)
    sent.stage(1, 5)
    sent.settle(committed=False)
    assert sent.ranges() == [(1, 10, 0)]
    sent.stage(1, 5)
    sent.settle(committed=True)
    assert sent.ranges() == [(6, 10, 0)]


# -- the buffer ------------------------------------------------------------------------------
def wal_bytes(path: Path) -> int:
    wal = Path(f"{path}-wal")
    return wal.stat().st_size if wal.exists() else 0


def test_acks_write_nothing_until_housekeeping(path: Path) -> None:
    clock = Clock()
    with Buffer(path, clock=clock) as buf:
        ids = buf.append([reading(i) for i in range(100)])
        before = wal_bytes(path)
        for i in ids:
            buf.mark_sent([i])
        assert wal_bytes(path) == before  # a hundred acks, no transaction
        assert (buf.stats().pending, buf.stats().retained_sent) == (0, 100)  # the live view knows
        assert Buffer.read_stats(path).pending == 100  # the file does not yet
        buf.prune()
        assert Buffer.read_stats(path).pending == 0
        assert wal_bytes(path) > before


def test_a_commit_writes_no_meta_row(path: Path) -> None:
    """The next id is max(id) + 1 and the intake seq rides on the last row: meta is left alone."""
    with Buffer(path, id_block=1_000_000) as buf:
        buf.append([reading(0)])
        meta = dict(buf._conn.execute("SELECT key, value FROM meta").fetchall())  # noqa: SLF001
        for i in range(1, 20):
            buf.append_encoded(encode_items([reading(i)]), intake_seq=i)
        assert dict(buf._conn.execute("SELECT key, value FROM meta").fetchall()) == meta  # noqa: SLF001
        assert buf.intake_seq == 19
    with Buffer(path) as buf:
        assert buf.intake_seq == 19 and buf.max_id() == 20


def test_pending_and_stats_across_lanes_acked_out_of_order(path: Path) -> None:
    with Buffer(path) as buf:
        ids = buf.append([reading(0), event(1, Priority.CRITICAL), reading(2), event(3, Priority.HIGH), reading(4)])
        buf.mark_sent([ids[1]])  # the critical lane first
        buf.mark_sent([ids[3]])
        assert [r.id for r in buf.pending(10, prio=Priority.NORMAL)] == [ids[0], ids[2], ids[4]]
        assert buf.pending(10, prio=Priority.CRITICAL) == [] and buf.pending(10, prio=Priority.HIGH) == []
        buf.mark_sent([ids[4]])
        assert [r.id for r in buf.pending(10)] == [ids[0], ids[2]]
        assert [r.id for r in buf.pending(10, after_id=ids[0])] == [ids[2]]
        stats = buf.stats()
        assert (stats.pending, stats.retained_sent) == (2, 3)
        assert stats.pending_by_prio == {"critical": 0, "high": 0, "normal": 2}


def test_the_floor_survives_a_prune_of_every_row(path: Path) -> None:
    """The rows that carried the next id and the intake seq are deleted: meta takes them over."""
    clock = Clock()
    with Buffer(path, clock=clock) as buf:
        buf.append_encoded(encode_items([reading(i) for i in range(5)]), intake_seq=5)
        buf.mark_sent(range(1, 6))
        clock.t += PRUNE_STEP_S + 10
        assert buf.prune() == 5
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value = 0 WHERE key = 'clean_close'")  # as after a kill
    conn.commit()
    conn.close()
    a, _ = log_paths(path)
    a.write_bytes(entry_bytes(1, encode_items([reading(i) for i in range(5)])))  # committed, not yet truncated
    with Buffer(path, clock=clock) as buf:
        assert buf.intake_seq == 5 and buf.max_id() == 5
        writer = BufferWriter(buf, intake_log=True)
        writer.start()
        assert writer.stats.replayed == 0  # nothing committed twice
        assert buf.append([reading(9)]) == [6]  # ids go on
        assert writer.stop()


CHILD = r"""
import sys, time
from pathlib import Path
from edge_agent.buffer.outbox import Buffer
from edge_agent.model import Reading
buf = Buffer(Path(sys.argv[1])).open()
ids = buf.append([Reading("river-1", "level_m", 0.5, 1_732_380_000_000 + i) for i in range(10)])
buf.mark_sent(ids[:4])
if sys.argv[2] == "housekeeping":
    buf.prune()
if sys.argv[2] == "commit":  # the next commit's last row says: sent up to id 4
    buf.append([Reading("river-1", "level_m", 0.5, 1_732_380_000_100)])
buf.mark_sent(ids[4:7])
print("acked", flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("then", ["nothing", "housekeeping", "commit"])
def test_a_kill_forgets_only_the_acks_since_housekeeping_or_a_commit(path: Path, then: str) -> None:
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path), then],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "acked\n", proc.stderr.read()  # type: ignore[union-attr]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]
    offline = Buffer.read_stats(path).pending  # `edge-agent status` with the daemon down
    with Buffer(path) as buf:
        pending = [r.id for r in buf.pending(20)]
    # saved at housekeeping, or carried by a commit's last row: ids 1-4 stay sent; the acks after
    # that (5-7) are forgotten and sent again
    assert pending == {"nothing": list(range(1, 11)), "housekeeping": list(range(5, 11)),
                       "commit": list(range(5, 12))}[then]
    assert offline == len(pending)


def test_a_prune_step_passes_ids_with_no_row_at_once(path: Path) -> None:
    """After a restart [1, sent_to] is one range, mostly of ids long deleted: one probe, not a
    transaction per 20,000 ids."""
    clock = Clock()
    with Buffer(path, clock=clock, id_block=10_000_000) as buf:
        buf._ids.next_id = 9_000_000  # noqa: SLF001 - as after years of ids, every old row pruned
        ids = buf.append([reading(i) for i in range(3)])
        buf.mark_sent(range(1, ids[-1] + 1))
        clock.t += PRUNE_STEP_S + 10
        before = wal_bytes(path)
        assert buf.prune() == 3
        assert len(buf._sent) == 0  # noqa: SLF001
        assert wal_bytes(path) - before < 64 * 1024  # a few pages, not thousands of empty steps
