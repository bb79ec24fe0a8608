"""``edge-agent web passwd -c FILE`` (issue 15): one line of standard input for install scripts, asked
twice on a terminal; short or empty passwords and two that differ refused with nothing written;
the file a 0600 scrypt hash where ``web.password_file`` points, owned by the service user when
root writes it; an audit row."""

from __future__ import annotations

import io
import os
import pwd
import stat
from pathlib import Path

import pytest
import yaml

from edge_agent.cli import main
from edge_agent.web.auth import verify_password

PASSWORD = "correct horse battery"


def config(tmp_path: Path, web: dict | None = None) -> Path:
    cfg = {"gateway": {"id": "gw-1", "site": "s1", "state_dir": str(tmp_path / "state")}, "mqtt": {"host": "h"},
           "buses": [], "devices": []}
    if web is not None:
        cfg["web"] = web
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


class Stdin(io.StringIO):
    def __init__(self, text: str, tty: bool = False) -> None:
        super().__init__(text)
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def passwd(path: Path, monkeypatch: pytest.MonkeyPatch, stdin: Stdin) -> int:
    monkeypatch.setattr("sys.stdin", stdin)
    return main(["web", "passwd", "-c", str(path)])


def test_one_line_of_stdin_becomes_a_private_scrypt_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture) -> None:
    path = config(tmp_path, {"password_file": "secret/web.passwd"})
    assert passwd(path, monkeypatch, Stdin(PASSWORD + "\n")) == 0
    written = tmp_path / "secret" / "web.passwd"
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    line = written.read_text()
    assert line.startswith("scrypt$16384$8$1$") and PASSWORD not in line
    assert verify_password(line, PASSWORD)
    out = capsys.readouterr().out
    assert out.startswith(f"wrote {written} (scrypt hash, mode 0600, owner ")
    assert "no 'web' section" not in out


def test_without_a_web_section_the_default_file_is_written_with_a_note(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                       capsys: pytest.CaptureFixture) -> None:
    path = config(tmp_path)
    assert passwd(path, monkeypatch, Stdin(PASSWORD + "\r\n")) == 0
    assert verify_password((tmp_path / "state" / "web.passwd").read_text(), PASSWORD)
    assert f"note: {path} has no 'web' section, so the page is off" in capsys.readouterr().out


@pytest.mark.parametrize("text, message", [
    ("", "an empty password is refused: give at least 8 characters; nothing was written"),
    ("\n", "an empty password is refused: give at least 8 characters; nothing was written"),
    ("1234567\n", "a password this short is refused: give at least 8 characters; nothing was written"),
])
def test_short_or_empty_passwords_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture, text: str, message: str) -> None:
    path = config(tmp_path, {})
    assert passwd(path, monkeypatch, Stdin(text)) == 1
    assert capsys.readouterr().err == f"edge-agent: {message}\n"
    assert not (tmp_path / "state" / "web.passwd").exists()


def test_a_terminal_is_asked_twice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture) -> None:
    path = config(tmp_path, {})
    answers = iter([PASSWORD, PASSWORD + "!"])
    prompts: list[str] = []
    monkeypatch.setattr("getpass.getpass", lambda prompt: prompts.append(prompt) or next(answers))
    assert passwd(path, monkeypatch, Stdin("", tty=True)) == 1
    assert capsys.readouterr().err == "edge-agent: the two passwords differ; nothing was written\n"
    assert prompts == ["technician's password for the page: ", "the same again: "]
    answers = iter([PASSWORD, PASSWORD])
    assert passwd(path, monkeypatch, Stdin("", tty=True)) == 0
    assert verify_password((tmp_path / "state" / "web.passwd").read_text(), PASSWORD)


def test_root_gives_the_file_to_the_service_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root may give a file away")
    nobody = pwd.getpwnam("nobody")
    monkeypatch.setattr("pwd.getpwnam", lambda name: nobody if name == "edge-agent" else pwd.getpwnam(name))
    path = config(tmp_path, {})
    assert passwd(path, monkeypatch, Stdin(PASSWORD + "\n")) == 0
    written = tmp_path / "state" / "web.passwd"
    assert (written.stat().st_uid, written.stat().st_gid) == (nobody.pw_uid, nobody.pw_gid)
    assert "owner edge-agent)" in capsys.readouterr().out


def test_the_change_is_audited(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edge_agent.commands.ledger import Ledger, ledger_path

    path = config(tmp_path, {})
    (tmp_path / "state").mkdir()
    assert passwd(path, monkeypatch, Stdin(PASSWORD + "\n")) == 0
    with Ledger(ledger_path(tmp_path / "state"), readonly=True) as ledger:
        rows = ledger.rows()
    assert [(r["kind"], r["detail"], r["outcome"]) for r in rows] == [("cli", "web passwd", "done")]
    assert PASSWORD not in str(rows)
