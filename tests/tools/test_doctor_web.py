"""``doctor``'s checks of the technician's page (``tools/doctor/web.py``, issue 15): the password
file (present, 0600, owned, a scrypt line), the TLS files and the certificate's expiry, and
whether the page answers at ``web.listen``; and that ``doctor`` runs them when ``web`` is set."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator

import pytest
import yaml

from edge_agent import clock
from edge_agent.cli import main
from edge_agent.settings import WebSettings
from edge_agent.tools.doctor.finding import FAIL, OK, WARN, Who
from edge_agent.tools.doctor.web import check_web
from edge_agent.web.auth import hash_password, write_password_file
from edge_agent.web.server import WebServer
from support.certs import make_pki
from support.keys import init_keys

ME = Who("tech", os.geteuid())


def settings(**web) -> SimpleNamespace:
    return SimpleNamespace(web=WebSettings(**web))


def by_check(found) -> dict[str, tuple[str, str, str | None]]:
    return {f.check: (f.status, f.finding, f.fix) for f in found}


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "web.passwd"
    write_password_file(path, hash_password("correct horse battery"))
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def page(password_file: Path, tmp_path: Path) -> Iterator[WebServer]:
    pki = make_pki(tmp_path / "pki")
    server = WebServer(WebSettings(listen_port=0, password_file=password_file, tls_cert_file=pki.server_cert,
                                   tls_key_file=pki.server_key), SimpleNamespace(), lambda p, q, v: None)
    server.start()
    yield server
    server.stop()


def test_a_running_page_with_tls_is_ok_and_a_certificate_expiring_soon_warns(page: WebServer) -> None:
    web = page.settings
    found = by_check(check_web(settings(listen_host="0.0.0.0", listen_port=page.address[1],
                                        password_file=web.password_file, tls_cert_file=web.tls_cert_file,
                                        tls_key_file=web.tls_key_file), ME, "gw.yaml"))
    assert found["web password"] == (OK, f"{web.password_file} private to tech, a scrypt hash", None)
    assert found["web tls"][0] == OK
    status, text, fix = found["web cert"]  # the test certificate is valid for a day
    assert status == WARN and text.startswith(f"the page's certificate {web.tls_cert_file} (localhost) expires on")
    assert fix == ("renew it (web.tls.cert_file) before then and restart the agent: browsers refuse the page once "
                   "it has expired")
    assert found["web listen"] == (OK, f"the page answers at https://127.0.0.1:{page.address[1]}/", None)


def test_a_missing_password_file_fails_and_nothing_listening_warns(tmp_path: Path) -> None:
    port = free_port()
    found = by_check(check_web(settings(listen_port=port, password_file=tmp_path / "none"), ME, "gw.yaml"))
    assert found["web password"] == (FAIL, f"{tmp_path}/none does not exist",
                                     "edge-agent web passwd -c gw.yaml (the agent refuses to start without it)")
    status, text, fix = found["web listen"]
    assert (status, text) == (WARN, f"nothing listens on 127.0.0.1:{port}: the agent is not running, or started "
                                     "without its page")
    assert fix.startswith("systemctl start edge-agent")
    assert "web tls" not in found and "web cert" not in found


def test_a_loose_or_malformed_password_file_fails(password_file: Path) -> None:
    password_file.chmod(0o644)
    status, text, fix = by_check(check_web(settings(listen_port=free_port(), password_file=password_file), ME,
                                           "gw.yaml"))["web password"]
    assert (status, fix) == (FAIL, f"chmod 600 {password_file}") and "readable by group or others" in text
    password_file.chmod(0o600)
    password_file.write_text("hunter2\n")
    status, text, fix = by_check(check_web(settings(listen_port=free_port(), password_file=password_file), ME,
                                           "gw.yaml"))["web password"]
    assert status == FAIL and "expected one line 'scrypt$N$R$P$SALT$KEY'" in text and "hunter2" not in text
    assert "-c gw.yaml" in text and fix == "edge-agent web passwd -c gw.yaml writes a new one"


def test_tls_files_that_are_missing_or_not_a_certificate(password_file: Path, tmp_path: Path) -> None:
    key = tmp_path / "web.key"
    key.write_text("x")
    key.chmod(0o600)
    found = by_check(check_web(settings(listen_port=free_port(), password_file=password_file,
                                        tls_cert_file=tmp_path / "web.crt", tls_key_file=key), ME, "gw.yaml"))
    assert found["web tls"][:2] == (FAIL, f"{tmp_path}/web.crt does not exist") and "web cert" not in found
    (tmp_path / "web.crt").write_text("not a certificate\n")
    found = by_check(check_web(settings(listen_port=free_port(), password_file=password_file,
                                        tls_cert_file=tmp_path / "web.crt", tls_key_file=key), ME, "gw.yaml"))
    assert found["web cert"][0] == FAIL and "cannot be read as a PEM certificate" in found["web cert"][1]


def test_another_program_on_the_port_warns(password_file: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)

        def answer() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(1024)
                conn.sendall(b"HTTP/1.0 200 OK\r\nServer: nginx\r\n\r\nhello")

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        found = by_check(check_web(settings(listen_port=listener.getsockname()[1], password_file=password_file),
                                   ME, "gw.yaml"))
        thread.join(5)
    status, text, fix = found["web listen"]
    assert status == WARN and text.endswith("does not answer as the agent's page (Server: nginx)")
    assert "ss -ltnp" in fix


def test_doctor_runs_the_web_checks_when_the_config_has_web(tmp_path: Path, password_file: Path,
                                                            capsys: pytest.CaptureFixture,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clock, "clock_state", lambda slow=False: clock.ClockState(True, "adjtimex", "TIME_OK"))
    cfg = {"gateway": {"id": "gw-doc", "site": "s1", "state_dir": str(tmp_path / "state")},
           "mqtt": {"host": "127.0.0.1", "port": free_port()}, "buses": [], "devices": [],
           "web": {"listen": f"127.0.0.1:{free_port()}", "password_file": str(password_file)}}
    config = tmp_path / "gw.yaml"
    config.write_text(yaml.safe_dump(cfg))
    init_keys(config)
    capsys.readouterr()
    main(["doctor", "-c", str(config)])
    out = capsys.readouterr().out
    assert f"OK    web password: {password_file} private to " in out
    assert "WARN  web listen: nothing listens on 127.0.0.1:" in out
    cfg.pop("web")
    config.write_text(yaml.safe_dump(cfg))
    main(["doctor", "-c", str(config)])
    assert "web " not in capsys.readouterr().out
