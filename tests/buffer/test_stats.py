"""Buffer.read_stats beside a daemon that is still creating its file."""

from __future__ import annotations


def test_a_file_the_daemon_has_not_given_its_schema_yet_is_an_empty_buffer(tmp_path) -> None:
    """``status`` beside a starting daemon: the file exists, its tables do not yet. That is an empty
    buffer, not an unreadable one (status exited 1 in that window: a flaky system test)."""
    import sqlite3 as _sqlite3

    from edge_agent.buffer.stats import read_stats

    path = tmp_path / "buffer.db"
    _sqlite3.connect(path).close()  # created, empty
    stats = read_stats(path)
    assert (stats.pending, stats.next_id, stats.pending_by_prio) == (0, 1, {"critical": 0, "high": 0, "normal": 0})
