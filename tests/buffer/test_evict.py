"""Eviction episodes on real SQLite files: a sustained overflow of a small buffer logs one WARNING
when it starts and one line, with what it evicted, when the backlog is back under the cap
(issue 11 item 4: one 60 s outage at ``max_bytes: 1MiB`` logged 17 WARNINGs)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from edge_agent.buffer import evict
from edge_agent.buffer.outbox import PRUNE_STEP_S, Buffer
from edge_agent.model import Reading
from edge_agent.buffer.writer import BufferWriter

T0 = 1_732_380_000_000
MIB = 1024**2
END = re.compile(r"back under its .* cap .*; the episode evicted ([\d,]+) unsent rows "
                 r"\(critical ([\d,]+), high ([\d,]+), normal ([\d,]+)\) and ([\d,]+) retained sent rows")


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def readings(start: int, n: int) -> list[Reading]:
    return [Reading("river-1", "level_m", round((start + i) * 0.001, 3), T0 + start + i) for i in range(n)]


def overflow(buf: Buffer, start: int, n: int, *, sent: bool = False) -> int:
    """``n`` readings through a real writer (an outage: nothing drained); the next start."""
    writer = BufferWriter(buf, commit_interval_s=0.005, commit_max=500,
                          on_commit=(lambda ids: buf.mark_sent(ids)) if sent else None)
    writer.start()
    for k in range(start, start + n, 250):
        writer.put(readings(k, 250))
    assert writer.flush(timeout=60) and writer.stop()
    return start + n


def drain(buf: Buffer, clock: Clock) -> None:
    """The link is back: everything is acknowledged; housekeeping runs past the sent grace."""
    while rows := buf.pending(5000):
        buf.mark_sent(r.id for r in rows)
    clock.t += PRUNE_STEP_S + 10  # past the grace, and a prune step's span
    buf.prune()


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == "edge_agent.buffer"]


def ends(caplog: pytest.LogCaptureFixture) -> list[tuple[int, ...]]:
    found = [END.search(r.getMessage()) for r in caplog.records if r.levelno == logging.INFO]
    return [tuple(int(g.replace(",", "")) for g in m.groups()) for m in found if m]


def test_a_sustained_overflow_logs_one_warning_and_its_count_when_back_under_the_cap(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="edge_agent")
    clock = Clock()
    with Buffer(tmp_path / "buffer.db", max_bytes=1 * MIB, clock=clock) as buf:
        nxt = overflow(buf, 0, 60_000)  # an outage: ~6 caps' worth, so many eviction passes
        first = buf.stats().evicted
        assert first["normal"] > 40_000  # sustained: the cap was hit over and over
        assert len(warnings(caplog)) == 1, warnings(caplog)
        assert "over its 1.0 MiB cap" in warnings(caplog)[0]
        assert ends(caplog) == []  # still going: nothing drained

        drain(buf, clock)
        assert ends(caplog) == [(first["normal"], 0, 0, first["normal"], 0)]
        assert f"{first['normal']:,}" in caplog.text  # thousands separated, as the issue asks

        overflow(buf, nxt, 30_000)  # a second outage: a second episode, counted on its own
        assert len(warnings(caplog)) == 2
        drain(buf, clock)
        second = buf.stats().evicted["normal"] - first["normal"]
        assert second > 10_000 and ends(caplog)[1] == (second, 0, 0, second, 0)
    assert len(warnings(caplog)) == 2


def test_with_retention_the_episode_ends_once_the_backlog_is_small_though_sent_rows_fill_the_cap(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Retained sent rows keep the file at its cap after the drain; evicting them (retention cut
    short by the cap) neither keeps the episode open nor starts new ones."""
    caplog.set_level(logging.DEBUG, logger="edge_agent")
    clock = Clock()
    with Buffer(tmp_path / "buffer.db", max_bytes=1 * MIB, retain_sent_s=86400, clock=clock) as buf:
        nxt = overflow(buf, 0, 40_000)
        assert len(warnings(caplog)) == 1 and ends(caplog) == []
        drain(buf, clock)
        evicted = buf.stats().evicted["normal"]
        overflow(buf, nxt, 40_000, sent=True)  # the link is up: each commit is acknowledged at once
        assert buf.stats().evicted["normal"] == evicted  # no unsent row went after the drain
        assert buf.stats().retained_sent > 5_000  # the file is still full, of retained sent rows
        assert len(ends(caplog)) == 1  # the episode ended, once, on the backlog's share
        unsent, _, _, normal, sent_rows = ends(caplog)[0]
        assert unsent == normal == evicted and sent_rows > 0
        assert "(unsent rows ~" in next(r.getMessage() for r in caplog.records if "back under its" in r.getMessage())
    assert len(warnings(caplog)) == 1, warnings(caplog)


def test_one_eviction_going_far_below_the_cap_does_not_end_the_episode(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """A chunk can be a large part of a small cap; a level an eviction reached is not a drain."""
    caplog.set_level(logging.DEBUG, logger="edge_agent")
    monkeypatch.setattr(evict, "CHUNK", 3000)  # ~70% of a 256 KiB cap in one delete
    with Buffer(tmp_path / "buffer.db", max_bytes=256 * 1024) as buf:
        overflow(buf, 0, 30_000)
        assert buf.stats().evicted["normal"] > 20_000
    assert len(warnings(caplog)) == 1, warnings(caplog)
    assert ends(caplog) == []
    assert any("closed during an eviction episode" in r.getMessage() for r in caplog.records)
