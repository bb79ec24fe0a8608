"""``edge-agent status`` against a buffer file with no buffer in it yet (a daemon starting: the
file exists, its tables do not) and against another program's database; and exit 1 always says
why in one line on stderr, ``--json`` too (the flood-alarm system test once saw status exit 1
with an empty stderr while the agent was starting)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import yaml

from support.agent import cli
from support.keys import init_keys


def config(tmp_path: Path) -> tuple[Path, Path]:
    cfg = {"gateway": {"id": "gw-st", "site": "s1", "state_dir": str(tmp_path / "state")},
           "mqtt": {"host": "127.0.0.1", "port": 1}, "buses": [], "devices": []}
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    init_keys(path)
    return path, tmp_path / "state" / "buffer.db"


def test_a_buffer_file_without_its_tables_yet_is_no_buffer_yet_and_exit_0(tmp_path: Path) -> None:
    cfg, db = config(tmp_path)
    for empty_database in (False, True):  # 0 bytes (SQLite creates the file at connect); a header, no tables
        db.unlink(missing_ok=True)
        db.write_bytes(b"")
        if empty_database:
            conn = sqlite3.connect(db)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.close()
        out = cli("status", "-c", str(cfg))
        assert out.returncode == 0 and out.stderr == "", out.stderr
        assert f"no buffer yet at {db} (the file is there, its tables not yet" in out.stdout
        out = cli("status", "-c", str(cfg), "--json")
        assert out.returncode == 0 and out.stderr == "", out.stderr
        assert json.loads(out.stdout)["buffer"] is None


def test_another_programs_database_fails_with_one_line_on_stderr(tmp_path: Path) -> None:
    cfg, db = config(tmp_path)
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY)")
    conn.commit()
    conn.close()
    for extra in ((), ("--json",)):
        out = cli("status", "-c", str(cfg), *extra)
        assert out.returncode == 1 and "Traceback" not in out.stdout + out.stderr
        assert out.stderr.splitlines() == [f"edge-agent: status: {db}: holds no edge-agent buffer: another "
                                           "program's database? (schema version 0, tables: customers); check "
                                           "buffer.path"]
    assert "another program's database" in json.loads(out.stdout)["buffer_error"]


def test_a_corrupt_buffer_with_json_says_why_on_stderr(tmp_path: Path) -> None:
    cfg, db = config(tmp_path)
    db.write_bytes(bytes(range(256)) * 20)
    out = cli("status", "-c", str(cfg), "--json")
    assert out.returncode == 1 and json.loads(out.stdout)["buffer_corrupt"] is True
    (line,) = out.stderr.splitlines()
    assert line.startswith(f"edge-agent: status: {db}: not a usable SQLite database")
