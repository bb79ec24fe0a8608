"""The command ledger: a replay cache that survives restarts and forgets only after ``exp``, and a
hash-chained audit log in which an edited, deleted or moved row (changed with sqlite3 on the
file, as an intruder would) is found by ``verify_chain`` and by ``edge-agent audit --verify``."""

from __future__ import annotations

import ast
import json
import sqlite3
import threading
from pathlib import Path

import pytest
import yaml

from edge_agent.cli import main
from edge_agent.tools.audit import local_actor
from edge_agent.commands.ledger import GENESIS, Ledger, LedgerError, row_hash
from support.agent import cli
from support.paths import ROOT

NOW = 1_732_380_000_000
DAY = 86_400_000


def filled(path: Path, n: int = 5) -> Ledger:
    ledger = Ledger(path, clock=lambda: NOW / 1000).open()
    for i in range(1, n + 1):
        ledger.audit("command", actor="k-1", cmd_id=f"c-{i}", op="device.write", target="gate-1",
                     outcome="accepted" if i % 2 else "rejected", code=None if i % 2 else "not_allowed",
                     detail=f"row {i}")
    return ledger


def tamper(path: Path, *sql: str) -> None:
    with sqlite3.connect(path) as conn:
        for statement in sql:
            conn.execute(statement)


# -- replay cache --------------------------------------------------------------------------------

def test_remember_is_true_once_and_survives_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "commands.db"
    with Ledger(path) as ledger:
        assert ledger.remember("c-1", NOW + 60_000, NOW) is True
        assert ledger.remember("c-1", NOW + 60_000, NOW + 1) is False
        assert ledger.remember("c-2", NOW + 60_000, NOW) is True
    with Ledger(path) as ledger:  # the agent restarted
        assert ledger.remember("c-1", NOW + 60_000, NOW + 2) is False
        assert ledger.seen_count() == 2


def test_ids_are_forgotten_only_after_their_exp_and_the_margin(tmp_path: Path) -> None:
    with Ledger(tmp_path / "a.db") as ledger:  # default: kept one day past exp
        ledger.remember("c-1", NOW, NOW - 1000)
        assert ledger.remember("c-1", NOW, NOW + DAY) is False  # exp + 1 day: still remembered
        ledger.remember("c-2", NOW + 5, NOW + DAY + 1)  # any write prunes
        assert ledger.seen_count() == 1  # c-1 is gone (exp < now - 1 day), c-2 stays
        assert ledger.remember("c-1", NOW + DAY + 60_000, NOW + DAY + 2) is True
    with Ledger(tmp_path / "b.db", keep_after_exp_s=0) as ledger:  # the spec's bare rule: exp < now
        ledger.remember("c-1", NOW, NOW - 1000)
        assert ledger.remember("c-1", NOW, NOW) is False  # exp == now: not yet forgotten
        assert ledger.remember("c-1", NOW, NOW + 1) is True


# -- audit chain ---------------------------------------------------------------------------------

def test_rows_are_chained_from_genesis(tmp_path: Path) -> None:
    ledger = filled(tmp_path / "commands.db")
    rows = ledger.rows()
    assert [r["seq"] for r in rows] == [1, 2, 3, 4, 5]
    assert rows[0]["prev"] == GENESIS
    for before, row in zip(rows, rows[1:]):
        assert row["prev"] == before["hash"]
    for row in rows:
        assert row["hash"] == row_hash(row["prev"], row)
    assert rows[1]["outcome"] == "rejected" and rows[1]["code"] == "not_allowed" and rows[1]["ts"] == NOW
    assert [r["seq"] for r in ledger.rows(limit=2)] == [4, 5]
    assert ledger.head() == (5, rows[-1]["hash"]) and ledger.count() == 5
    assert ledger.verify_chain() == []
    with pytest.raises(ValueError):
        ledger.audit("shell", actor="x", outcome="done")
    with pytest.raises(ValueError):
        ledger.audit("cli", actor="x", outcome="maybe")
    ledger.close()


@pytest.mark.parametrize("sql, first", [
    (["UPDATE audit SET detail = 'nothing happened' WHERE seq = 3"],
     "row 3: its content does not match its hash (edited)"),
    (["UPDATE audit SET outcome = 'rejected' WHERE seq = 1"],
     "row 1: its content does not match its hash (edited)"),
    (["DELETE FROM audit WHERE seq = 3"], "row 4: row 3 missing before it (deleted)"),
    (["DELETE FROM audit WHERE seq IN (2, 3)"], "row 4: rows 2-3 missing before it (deleted)"),
    (["DELETE FROM audit WHERE seq = 5"],
     "row 5: the log's head is at row 5 but the last row is 4 (rows deleted at the end)"),
    (["DELETE FROM audit WHERE seq = 1"], "row 2: row 1 missing before it (deleted)"),
    (["UPDATE audit SET seq = 100 WHERE seq = 2", "UPDATE audit SET seq = 2 WHERE seq = 3",
      "UPDATE audit SET seq = 3 WHERE seq = 100"], "row 2: does not follow row 1: it follows row 3 (reordered)"),
    (["DELETE FROM meta WHERE key = 'head'"], "row 1: the log's head record is missing (meta edited)"),
])
def test_tampering_is_found_and_names_the_row(tmp_path: Path, sql: list[str], first: str) -> None:
    path = tmp_path / "commands.db"
    filled(path).close()
    tamper(path, *sql)
    with Ledger(path) as ledger:
        problems = ledger.verify_chain()
    assert problems and problems[0] == first, problems


def test_an_edit_with_its_hash_recomputed_is_found_at_the_next_row(tmp_path: Path) -> None:
    path = tmp_path / "commands.db"
    filled(path).close()
    with Ledger(path) as ledger:
        row = ledger.rows()[2]
    forged = {**row, "detail": "forged"}
    tamper(path, f"UPDATE audit SET detail = 'forged', hash = '{row_hash(row['prev'], forged)}' WHERE seq = 3")
    with Ledger(path) as ledger:
        assert ledger.verify_chain()[0] == "row 4: does not follow row 3: a row was deleted or replaced"


def test_two_writers_and_many_threads_extend_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "commands.db"
    daemon, cli_side = Ledger(path).open(), Ledger(path).open()  # as the daemon and a CLI process

    def work(ledger: Ledger, name: str) -> None:
        for i in range(40):
            ledger.audit("cli", actor=f"local:{name}", outcome="done", detail=f"{name} {i}")
            ledger.remember(f"{name}-{i}", NOW + 60_000, NOW)

    threads = [threading.Thread(target=work, args=(ledger, f"t{n}"))
               for n, ledger in enumerate([daemon, cli_side, daemon, cli_side])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r["seq"] for r in daemon.rows()] == list(range(1, 161))
    assert daemon.verify_chain() == [] and daemon.seen_count() == 160
    daemon.close()
    cli_side.close()


def test_a_damaged_ledger_is_refused_with_the_file_named(tmp_path: Path) -> None:
    path = tmp_path / "commands.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(LedgerError, match=rf"^{path}: not a usable command ledger .*move it aside"):
        Ledger(path).open()
    with pytest.raises(LedgerError, match="no command ledger here"):
        Ledger(tmp_path / "absent.db", readonly=True).open()


# -- the CLI: keys init's audit row, audit, audit --verify ---------------------------------------

def config(tmp_path: Path) -> Path:
    cfg = {"gateway": {"id": "gw-a", "site": "s1", "state_dir": str(tmp_path / "state")},
           "mqtt": {"host": "127.0.0.1", "port": 1}, "buses": [], "devices": []}
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def test_audit_before_anything_was_recorded(tmp_path: Path, capsys) -> None:
    cfg = config(tmp_path)
    assert main(["audit", "-c", str(cfg)]) == 0
    assert "no audit log yet" in capsys.readouterr().out
    assert main(["audit", "-c", str(cfg), "--verify", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"audit": None, "count": 0, "rows": [], "problems": []}


def test_keys_init_is_audited_and_audit_lists_and_verifies(tmp_path: Path, capsys) -> None:
    cfg = config(tmp_path)
    assert main(["keys", "init", "-c", str(cfg)]) == 0
    assert main(["keys", "init", "-c", str(cfg), "--rotate"]) == 0
    capsys.readouterr()
    db = tmp_path / "state" / "commands.db"
    with Ledger(db) as ledger:
        rows = ledger.rows()
    assert [(r["kind"], r["actor"], r["outcome"], r["detail"]) for r in rows] == [
        ("cli", local_actor(), "done", "keys init"), ("cli", local_actor(), "done", "keys rotate")]
    assert local_actor().startswith("local:")

    assert main(["audit", "-c", str(cfg)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].split()[0] == "1" and lines[1].endswith("keys rotate")
    assert f"{local_actor()}  done" in lines[0]
    assert main(["audit", "-c", str(cfg), "-n", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["count"] == 2 and [r["seq"] for r in out["rows"]] == [2]
    assert main(["audit", "-c", str(cfg), "--verify"]) == 0
    assert capsys.readouterr().out == f"{db}: audit chain intact (2 row(s))\n"


def test_audit_verify_fails_with_one_line_naming_the_first_bad_row(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    assert main(["keys", "init", "-c", str(cfg)]) == 0
    db = tmp_path / "state" / "commands.db"
    filled_rows = Ledger(db).open()
    for i in range(3):
        filled_rows.audit("command", actor="k-1", cmd_id=f"c-{i}", op="agent.ping", outcome="accepted")
    filled_rows.close()
    tamper(db, "UPDATE audit SET target = 'gate-2' WHERE seq = 2")
    out = cli("audit", "-c", str(cfg), "--verify")
    assert out.returncode == 1
    assert out.stdout.splitlines()[0] == "row 2: its content does not match its hash (edited)"
    assert out.stderr == f"edge-agent: {db}: audit chain broken: row 2: its content does not match its hash (edited)\n"
    tamper(db, "DELETE FROM audit WHERE seq = 3")
    out = cli("audit", "-c", str(cfg), "--verify", "--json")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert json.loads(out.stdout)["problems"][:2] == ["row 2: its content does not match its hash (edited)",
                                                      "row 4: row 3 missing before it (deleted)"]


def test_keys_init_without_a_state_dir_writes_no_ledger_and_a_broken_one_only_warns(tmp_path: Path, capsys) -> None:
    cfg = config(tmp_path)
    doc = yaml.safe_load(cfg.read_text())
    doc["privacy"] = {"key_file": str(tmp_path / "elsewhere" / "pseudonym.key")}
    cfg.write_text(yaml.safe_dump(doc))
    assert main(["keys", "init", "-c", str(cfg)]) == 0
    assert not (tmp_path / "state").exists()  # nothing to audit into: the gateway has no state yet
    (tmp_path / "state" / "commands.db").mkdir(parents=True)  # a ledger that cannot be opened
    capsys.readouterr()
    assert main(["keys", "init", "-c", str(cfg), "--rotate"]) == 0  # the key change itself stands
    err = capsys.readouterr().err
    assert err.startswith("warning: the audit row for 'keys rotate' was not written: ") and "commands.db" in err


def test_the_ledger_owns_its_file_name(tmp_path: Path) -> None:
    """``{state_dir}/commands.db`` (docs, installers and backups name it) is spelt in ledger.py only:
    the service, the supervisor, ``edge-agent audit``, the CLI's own rows and doctor ask it."""
    from edge_agent.commands.ledger import LEDGER_NAME, ledger_files, ledger_path

    assert ledger_path(tmp_path) == tmp_path / "commands.db" == tmp_path / LEDGER_NAME
    assert ledger_files(str(tmp_path)) == [tmp_path / n for n in ("commands.db", "commands.db-wal", "commands.db-shm")]
    spelt = []
    for path in sorted((ROOT / "edge_agent").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)}
        spelt += [f"{path.relative_to(ROOT)}:{node.lineno}" for node in ast.walk(tree)
                  if isinstance(node, ast.Constant) and isinstance(node.value, str) and "commands.db" in node.value
                  and id(node) not in docstrings]
    assert len(spelt) == 1 and spelt[0].startswith("edge_agent/commands/ledger.py:"), spelt
