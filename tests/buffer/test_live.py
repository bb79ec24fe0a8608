"""Ids at intake (issue 13): the writer numbers rows when it takes them, the uplink's outbox
(``LiveOutbox``) hands them out before their group commit, and a kill -9 replays them under the
same ids. Real SQLite files and real intake log files; no uplink here (the system tests publish)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.buffer.live import LiveOutbox
from edge_agent.buffer.outbox import Buffer
from edge_agent.buffer.stats import read_rows
from edge_agent.buffer.writer import BufferWriter
from edge_agent.model import Event, Priority, Record

T0 = 1_732_380_000_000


def rec(i: int) -> Record:
    return Record("river-1", T0 + i, {"level_m": round(i * 0.01, 2)})


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "buffer.db"


def opened(path: Path, **kw) -> tuple[Buffer, BufferWriter, LiveOutbox]:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = Buffer(path, retain_sent_s=0.0).open()
    writer = BufferWriter(buf, commit_interval_s=30.0, intake_log=True, **kw)
    writer.start()
    return buf, writer, LiveOutbox(buf, writer)


def stored_ids(path: Path) -> list[int]:
    return [rid for rid, _, _ in read_rows(path, limit=100_000)]


def test_rows_are_numbered_when_put_and_handed_out_before_their_commit(path: Path) -> None:
    woken: list[int] = []
    buf, writer, live = opened(path, on_queued=lambda: woken.append(1))
    try:
        writer.put([rec(0), rec(1)])
        writer.put([rec(2)])
        assert woken == [1, 1]
        assert buf.max_id() == 3 and stored_ids(path) == []  # numbered, nothing committed
        rows = live.pending(10)
        assert [r.id for r in rows] == [1, 2, 3] and rows[0].body == {"id": 1, **rec(0).to_wire()}
        assert [r.id for r in live.pending(2, after_id=1)] == [2, 3]
        assert [r.id for r in live.pending(10, until_id=2)] == [1, 2]
        assert live.pending(10, prio=Priority.CRITICAL) == []
        live.mark_sent([1, 2])  # acked before the commit
        assert [r.id for r in live.pending(10)] == [3]
        assert writer.flush()
        assert stored_ids(path) == [1, 2, 3]  # committed under the ids they were handed out with
        assert [r.id for r in live.pending(10)] == [3]
        assert buf.stats().pending == 1
    finally:
        writer.stop()
        buf.close()


def test_a_kill_before_the_commit_replays_rows_under_their_ids(path: Path) -> None:
    buf, writer, live = opened(path)
    writer.put([rec(0)])
    assert writer.flush()
    writer.put([rec(1), rec(2)])
    published = {r.id: r.body for r in live.pending(10)}
    assert sorted(published) == [1, 2, 3]
    # kill -9: no stop, no close; the files stay as they are (the lock goes with the process)
    buf._ids.release()  # noqa: SLF001 - what the kernel does for a killed process
    buf2, writer2, live2 = opened(path)
    try:
        assert stored_ids(path) == [1, 2, 3]
        assert {rid: body for rid, _, body in read_rows(path)} == published  # same ids, same bodies
        writer2.put([rec(3)])
        assert [r.id for r in live2.pending(10, after_id=3)] == [4]  # new ids above the replayed ones
    finally:
        writer2.stop()
        buf2.close()


def test_a_row_the_log_did_not_take_is_not_handed_out_nor_anything_after_it(path: Path) -> None:
    buf, writer, live = opened(path)
    try:
        writer.put([rec(0)])
        append = writer._log.append  # noqa: SLF001 - a failing write, as a full disk makes it
        writer._log.append = lambda *a, **k: False  # noqa: SLF001
        writer.put([rec(1)])
        writer._log.append = append  # noqa: SLF001
        writer.put([rec(2)])
        assert [r.id for r in live.pending(10)] == [1]  # 2 is not durable: 3 waits behind it
        assert writer.flush()
        assert [r.id for r in live.pending(10)] == [1, 2, 3]  # committed: all of them
    finally:
        writer.stop()
        buf.close()


def test_an_ack_before_the_commit_survives_prune(path: Path) -> None:
    now = [T0 / 1000]
    path.parent.mkdir(parents=True)
    buf = Buffer(path, clock=lambda: now[0]).open()
    writer = BufferWriter(buf, commit_interval_s=30.0, intake_log=True)
    writer.start()
    live = LiveOutbox(buf, writer)
    try:
        writer.put([rec(0), rec(1)])
        live.mark_sent([1, 2])
        now[0] += 120  # past retention, the grace and a prune step: prune would take ids with no row
        buf.prune()  # ids 1 and 2 have no row yet: their sent marks must stay
        assert writer.flush()
        assert live.pending(10) == [] and buf.stats().pending == 0
        now[0] += 120
        buf.prune()  # committed now: pruned as any sent row
        assert stored_ids(path) == []
    finally:
        writer.stop()
        buf.close()


def test_events_and_priorities_are_handed_out_from_the_queue_too(path: Path) -> None:
    buf, writer, live = opened(path)
    try:
        writer.put([rec(0)])
        writer.put([Event("hub-1", "sos", Priority.CRITICAL, T0, {"wearer": "p1:X"})])
        critical = live.pending(10, prio=Priority.CRITICAL)
        assert [(r.id, r.kind) for r in critical] in ([(2, "event")], [])  # committed at once, or not yet
        assert writer.flush()
        assert [(r.id, r.kind) for r in live.pending(10, prio=Priority.CRITICAL)] == [(2, "event")]
    finally:
        writer.stop()
        buf.close()


def test_without_the_intake_log_ids_come_at_the_commit_and_nothing_is_handed_out_early(path: Path) -> None:
    path.parent.mkdir(parents=True)
    buf = Buffer(path).open()
    writer = BufferWriter(buf, commit_interval_s=30.0, intake_log=False)
    writer.start()
    try:
        writer.put([rec(0)])
        assert buf.max_id() == 0 and LiveOutbox(buf, writer).pending(10) == []
        assert writer.flush()
        assert [r.id for r in LiveOutbox(buf, writer).pending(10)] == [1]
    finally:
        writer.stop()
        buf.close()
