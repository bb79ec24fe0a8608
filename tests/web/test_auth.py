"""Who may see the page (``web/auth.py``, issue 15): the scrypt line and its file, the password as
the server checks it (re-read on change, unusable file = nobody), sessions and the throttle with
a stepped clock, Basic headers, and the login form's escaping."""

from __future__ import annotations

import base64
import logging
import os
import stat
from pathlib import Path

import pytest

from edge_agent.web.auth import (PasswordFile, Sessions, Throttle, WebError, hash_password, login_page, parse_basic,
                                 verify_password, write_password_file)

PASSWORD = "correct horse battery"


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_the_hash_line_is_salted_scrypt_and_verifies() -> None:
    line = hash_password(PASSWORD)
    kind, n, r, p, salt, key = line.split("$")
    assert (kind, n, r, p) == ("scrypt", "16384", "8", "1")
    assert len(base64.b64decode(salt)) == 16 and len(base64.b64decode(key)) == 32
    assert PASSWORD not in line and hash_password(PASSWORD) != line  # a new salt each time
    assert verify_password(line, PASSWORD)
    assert not verify_password(line, PASSWORD + " ")
    assert not verify_password(line, "")


@pytest.mark.parametrize("line", ["", "bcrypt$1$2$3$4$5", "scrypt$16384$8$1$!!$AAAA", "scrypt$1000$8$1$AAAAAAAAAAA=$A",
                                  "scrypt$4194304$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAA=="])
def test_a_malformed_or_costly_line_is_refused_before_scrypt(line: str) -> None:
    with pytest.raises(ValueError):
        verify_password(line, PASSWORD)


def test_the_file_is_written_0600_atomically_whatever_the_umask(tmp_path: Path) -> None:
    path = tmp_path / "new" / "web.passwd"
    old = os.umask(0)
    try:
        write_password_file(path, hash_password(PASSWORD))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path.read_text().count("\n") == 1 and path.read_text().startswith("scrypt$")
    assert [p.name for p in path.parent.iterdir()] == ["web.passwd"]  # no temporary file left


def test_the_file_is_given_to_the_owner_named(tmp_path: Path) -> None:
    path = tmp_path / "web.passwd"
    write_password_file(path, hash_password(PASSWORD), owner=(os.getuid(), os.getgid()))
    assert (path.stat().st_uid, path.stat().st_gid) == (os.getuid(), os.getgid())


def test_an_unusable_file_stops_the_start_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "web.passwd"
    with pytest.raises(WebError, match="does not exist; 'edge-agent web passwd -c CONFIG' sets the password"):
        PasswordFile(path).load()
    write_password_file(path, hash_password(PASSWORD))
    path.chmod(0o640)
    with pytest.raises(WebError, match=f"accessible by group or others \\(mode 0640\\); run: chmod 600 {path}"):
        PasswordFile(path).load()
    path.write_text(f"{PASSWORD}\n")
    path.chmod(0o600)
    with pytest.raises(WebError) as raised:
        PasswordFile(path).load()
    assert "expected one line 'scrypt$N$R$P$SALT$KEY'" in str(raised.value)
    assert PASSWORD not in str(raised.value)  # a password written there by mistake is not repeated


def test_a_changed_file_is_read_again_and_an_unusable_one_lets_nobody_in(tmp_path: Path,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "web.passwd"
    write_password_file(path, hash_password(PASSWORD))
    changes = []
    password = PasswordFile(path, on_change=lambda: changes.append(1))
    password.load()
    assert password.check(PASSWORD) and password.check(PASSWORD)  # the second from memory, no scrypt
    assert not password.check("wrong password")
    write_password_file(path, hash_password("a new password"))
    assert not password.check(PASSWORD) and password.check("a new password")
    assert changes == [1]
    path.unlink()
    with caplog.at_level(logging.ERROR, logger="edge_agent.web.auth"):
        assert not password.check("a new password")
        assert not password.check("a new password")
    assert [r.getMessage() for r in caplog.records] == [
        f"web password file {path} does not exist; 'edge-agent web passwd -c CONFIG' sets the password; "
        "every login is refused until it is fixed"]
    write_password_file(path, hash_password(PASSWORD))
    password.refresh()
    assert password.check(PASSWORD) and changes == [1, 1, 1]


def test_sessions_expire_and_are_bounded() -> None:
    clock = Clock()
    sessions = Sessions(max_age_s=100, limit=3, clock=clock)
    first = sessions.new()
    assert sessions.valid(first) and len(first) >= 43  # token_urlsafe(32)
    assert not sessions.valid(first + "x") and not sessions.valid("")
    others = [sessions.new() for _ in range(3)]
    assert not sessions.valid(first)  # the oldest made room
    assert all(sessions.valid(t) for t in others) and len(sessions) == 3
    sessions.drop(others[0])
    assert not sessions.valid(others[0])
    clock.t += 100
    assert not sessions.valid(others[1]) and len(sessions) == 0


def test_the_throttle_blocks_an_address_after_five_failures_within_a_minute() -> None:
    clock = Clock()
    throttle = Throttle(clock=clock)
    for n in range(1, 5):
        assert throttle.failed("192.0.2.1") == (n, 0.0)
        clock.t += 10
    assert throttle.blocked("192.0.2.1") == 0
    assert throttle.failed("192.0.2.1") == (5, 60.0)
    assert throttle.blocked("192.0.2.1") == 60.0 and throttle.blocked("192.0.2.2") == 0
    clock.t += 59
    assert throttle.blocked("192.0.2.1") == pytest.approx(1.0)
    clock.t += 1
    assert throttle.blocked("192.0.2.1") == 0
    assert throttle.failed("192.0.2.1") == (1, 0.0)  # a fresh count after the block


def test_failures_older_than_the_window_do_not_count_and_a_success_clears() -> None:
    clock = Clock()
    throttle = Throttle(clock=clock)
    for _ in range(4):
        throttle.failed("a")
    clock.t += 61
    assert throttle.failed("a") == (1, 0.0)
    throttle.succeeded("a")
    assert throttle.failed("a") == (1, 0.0)


def test_the_throttle_remembers_a_bounded_number_of_addresses() -> None:
    throttle = Throttle(failures=1, limit=2)
    for client in ("a", "b", "c"):
        throttle.failed(client)
    assert throttle.blocked("a") == 0 and throttle.blocked("b") > 0 and throttle.blocked("c") > 0


@pytest.mark.parametrize("header, expected", [
    ("Basic " + base64.b64encode(b"technician:p:w").decode(), ("technician", "p:w")),
    ("basic " + base64.b64encode("technician:pässwort".encode()).decode(), ("technician", "pässwort")),
    ("Bearer abc", None), ("Basic !!!", None), ("Basic " + base64.b64encode(b"nocolon").decode(), None),
])
def test_basic_headers(header: str, expected: tuple[str, str] | None) -> None:
    assert parse_basic(header) == expected


def test_the_login_form_escapes_its_message_and_needs_no_script() -> None:
    body = login_page("<script>alert(1)</script>").decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert "<script" not in body
    assert '<form method="post" action="/login">' in body and 'name="password"' in body
