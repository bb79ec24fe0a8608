"""The page's server (``web/server.py``, ``web/gate.py``; issue 15), a real one on a free loopback
port with a fake route: the login and its cookie, Basic, 303/401 without credentials (never
data), wrong passwords refused, rate-limited and logged without the password, methods, the
head, body and time limits, TLS, the bound on concurrent requests, escaping, the security
headers, and what it adds to the agent's RSS (the issue's 5 MiB budget)."""

from __future__ import annotations

import base64
import http.client
import logging
import os
import socket
import ssl
import subprocess
import sys
import time
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator

import pytest

from edge_agent.settings import WebSettings
from edge_agent.web.auth import WebError, hash_password, write_password_file
from edge_agent.web.server import MAX_BODY, MAX_HEAD, SECURITY_HEADERS, WebServer, start_web
from edge_agent.web.view import Response
from support.certs import make_pki
from support.paths import ROOT

PASSWORD = "correct horse battery"
OVERVIEW = b"<h1>overview: backlog 12</h1>"
METRICS = b"edge_backlog_rows 12\n"


class FakeRoute:
    """What ``pages.route`` would answer, and every path it was asked for."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []

    def __call__(self, path: str, query: dict, view: object) -> Response | None:
        self.calls.append((path, query))
        if path == "/":
            return Response(200, "text/html; charset=utf-8", OVERVIEW, {"Refresh": "10"})
        if path == "/metrics":
            return Response(200, "text/plain; version=0.0.4; charset=utf-8", METRICS)
        if path == "/strict":
            return Response(200, "text/html", b"<p>strict</p>", {"Content-Security-Policy": "default-src 'none'"})
        if path == "/boom":
            raise RuntimeError("a page's bug")
        if path == "/injected":
            return Response(200, "text/html", b"x", {"X-Note": "a\r\nSet-Cookie: evil=1"})
        return None


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "web.passwd"
    write_password_file(path, hash_password(PASSWORD))
    return path


@pytest.fixture
def route() -> FakeRoute:
    return FakeRoute()


@pytest.fixture
def serve(password_file: Path, route: FakeRoute) -> Iterator:
    started: list[WebServer] = []

    def start(**kwargs) -> WebServer:
        settings = WebSettings(listen_host=kwargs.pop("host", "127.0.0.1"), listen_port=0, password_file=password_file,
                               tls_cert_file=kwargs.pop("cert", None), tls_key_file=kwargs.pop("key", None))
        server = WebServer(settings, SimpleNamespace(), route, **kwargs)
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def server(serve) -> WebServer:
    return serve()


def ask(server: WebServer, method: str, path: str, body: bytes | str | None = None,
        headers: dict[str, str] | None = None, context: ssl.SSLContext | None = None) -> http.client.HTTPResponse:
    """One request; the response read (``.data``)."""
    host, port = server.address
    conn = (http.client.HTTPSConnection(host, port, timeout=5, context=context) if context else
            http.client.HTTPConnection(host, port, timeout=5))
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        response.data = response.read()  # type: ignore[attr-defined]
        return response
    finally:
        conn.close()


def raw(server: WebServer, data: bytes, *, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """Send ``data`` as it is; (status, headers, body) of what comes back before the close."""
    with socket.create_connection(server.address, timeout=timeout) as sock:
        sock.sendall(data)
        return read_answer(sock)


def read_answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def basic(user: str = "technician", password: str = PASSWORD) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def login(server: WebServer, password: str = PASSWORD, headers: dict[str, str] | None = None,
          **kwargs) -> http.client.HTTPResponse:
    from urllib.parse import urlencode

    return ask(server, "POST", "/login", urlencode({"username": "technician", "password": password}),
               {**FORM, **(headers or {})}, **kwargs)


def cookie_of(response: http.client.HTTPResponse) -> dict[str, str]:
    return {"Cookie": response.getheader("Set-Cookie").split(";")[0]}


# -- the login and what it opens ----------------------------------------------------------------------

def test_the_login_form_is_open_and_plain(server: WebServer) -> None:
    r = ask(server, "GET", "/login")
    assert r.status == 200 and r.getheader("Content-Type") == "text/html; charset=utf-8"
    assert b'<form method="post" action="/login">' in r.data and b"<script" not in r.data
    assert ask(server, "HEAD", "/login").data == b""


def test_without_credentials_a_page_redirects_to_the_login_and_metrics_asks_for_basic(
        server: WebServer, route: FakeRoute) -> None:
    for method in ("GET", "HEAD"):
        r = ask(server, method, "/?device=x")
        assert (r.status, r.getheader("Location")) == (303, "/login")
        assert OVERVIEW not in r.data
        r = ask(server, method, "/metrics")
        assert r.status == 401 and r.getheader("WWW-Authenticate").startswith('Basic realm="edge-agent"')
        assert METRICS not in r.data
    assert ask(server, "GET", "/no-such-page").status == 303  # not even whether a page exists
    assert route.calls == []  # nothing was rendered for them


def test_the_login_sets_a_session_cookie_that_opens_the_pages_until_logout(server: WebServer) -> None:
    r = login(server)
    assert (r.status, r.getheader("Location")) == (303, "/")
    cookie = r.getheader("Set-Cookie")
    name, _, rest = cookie.partition("=")
    token, *flags = rest.split("; ")
    assert name == "edge_session" and len(token) >= 43
    assert sorted(flags) == ["HttpOnly", "Max-Age=28800", "Path=/", "SameSite=Strict"]  # no Secure over HTTP
    r = ask(server, "GET", "/", headers=cookie_of(login(server)))
    assert (r.status, r.data, r.getheader("Refresh")) == (200, OVERVIEW, "10")
    session = cookie_of(login(server))
    assert ask(server, "GET", "/metrics", headers=session).data == METRICS
    r = ask(server, "POST", "/logout", b"", {**session, "Content-Type": "application/x-www-form-urlencoded"})
    assert (r.status, r.getheader("Location")) == (303, "/login")
    assert r.getheader("Set-Cookie").startswith("edge_session=; Path=/; Max-Age=0")
    assert ask(server, "GET", "/", headers=session).status == 303
    assert ask(server, "GET", "/", headers={"Cookie": "edge_session=made-up"}).status == 303


def test_http_basic_opens_metrics_and_pages(server: WebServer, route: FakeRoute) -> None:
    r = ask(server, "GET", "/metrics", headers=basic())
    assert (r.status, r.data) == (200, METRICS)
    assert r.getheader("Content-Type") == "text/plain; version=0.0.4; charset=utf-8"
    assert ask(server, "GET", "/", headers=basic()).data == OVERVIEW
    assert ask(server, "GET", "/metrics", headers=basic(user="admin")).status == 401
    assert route.calls == [("/metrics", {}), ("/", {})]


def test_the_route_gets_the_path_as_sent_and_the_parsed_query(server: WebServer, route: FakeRoute) -> None:
    ask(server, "GET", "/devices/hub%2F1?span=24h&n=5&n=6&flag", headers=basic())
    assert route.calls == [("/devices/hub%2F1", {"span": ["24h"], "n": ["5", "6"], "flag": [""]})]


def test_a_new_password_ends_every_session(server: WebServer, password_file: Path) -> None:
    session = cookie_of(login(server))
    assert ask(server, "GET", "/", headers=session).status == 200
    write_password_file(password_file, hash_password("another password"))
    assert ask(server, "GET", "/", headers=session).status == 303
    assert login(server).status == 403
    assert login(server, "another password").status == 303


# -- wrong passwords ----------------------------------------------------------------------------------

def test_wrong_passwords_are_refused_then_rate_limited_and_logged_without_the_password(
        server: WebServer, caplog: pytest.LogCaptureFixture) -> None:
    session = cookie_of(login(server))  # logged in before: a session still works during the block
    tries = [f"guess-number-{i}" for i in range(5)]
    with caplog.at_level(logging.DEBUG, logger="edge_agent.web"):
        answers = [login(server, t) for t in tries[:3]]
        answers.append(ask(server, "GET", "/metrics", headers=basic(password=tries[3])))
        answers.append(login(server, tries[4]))
        assert [a.status for a in answers] == [403, 403, 403, 401, 429]
        assert b"Wrong password." in answers[0].data and b'action="/login"' in answers[0].data
        assert answers[4].getheader("Retry-After") == "60"
        assert b"Too many wrong passwords from your address: try again in 60 s." in answers[4].data
        # blocked: the right password is not even checked, by the form or by Basic
        assert login(server).status == 429
        r = ask(server, "GET", "/metrics", headers=basic())
        assert r.status == 429 and METRICS not in r.data and 1 <= int(r.getheader("Retry-After")) <= 60
        assert ask(server, "GET", "/", headers=session).status == 200
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "web: wrong password from 127.0.0.1 (login form, 1 within 60 s)",
        "web: wrong password from 127.0.0.1 (login form, 2 within 60 s)",
        "web: wrong password from 127.0.0.1 (login form, 3 within 60 s)",
        "web: wrong password from 127.0.0.1 (HTTP Basic, 4 within 60 s)",
        "web: wrong password from 127.0.0.1 (login form, 5 within 60 s); refused for 60 s"]
    logged = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert not any(t in logged for t in tries) and PASSWORD not in logged


def test_an_empty_password_or_a_form_of_another_kind_is_refused(server: WebServer) -> None:
    assert login(server, "").status == 403
    r = ask(server, "POST", "/login", '{"password": "x"}', {"Content-Type": "application/json"})
    assert r.status == 415


def test_a_form_posted_from_another_site_is_refused(server: WebServer) -> None:
    r = login(server, headers={"Origin": "http://evil.example"})
    assert (r.status, r.getheader("Set-Cookie")) == (403, None) and b"from another site" in r.data
    assert login(server, headers={"Origin": "null"}).status == 403
    host, port = server.address
    assert login(server, headers={"Origin": f"http://{host}:{port}"}).status == 303


# -- methods and limits -------------------------------------------------------------------------------

@pytest.mark.parametrize("method, path, allow", [
    ("PUT", "/", "GET, HEAD"), ("DELETE", "/metrics", "GET, HEAD"), ("POST", "/", "GET, HEAD"),
    ("POST", "/metrics", "GET, HEAD"), ("OPTIONS", "/login", "GET, HEAD, POST"), ("GET", "/logout", "POST"),
    ("PATCH", "/devices", "GET, HEAD"),
])
def test_other_methods_are_405_with_allow(server: WebServer, route: FakeRoute, method: str, path: str,
                                          allow: str) -> None:
    r = ask(server, method, path, b"x" if method in ("POST", "PUT", "PATCH") else None, basic())
    assert (r.status, r.getheader("Allow")) == (405, allow)
    assert route.calls == []


def test_head_has_the_headers_and_no_body(server: WebServer) -> None:
    status, headers, body = raw(server, b"HEAD / HTTP/1.1\r\nHost: x\r\nAuthorization: " +
                                basic()["Authorization"].encode() + b"\r\n\r\n")
    assert (status, headers["content-length"], body) == (200, str(len(OVERVIEW)), b"")


def test_a_head_over_8_kib_is_431(server: WebServer) -> None:
    status, _, body = raw(server, b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * MAX_HEAD + b"\r\n\r\n")
    assert status == 431 and b"exceed 8 KiB" in body
    status, _, _ = raw(server, b"GET /" + b"a" * (MAX_HEAD + 10) + b" HTTP/1.1\r\n\r\n")
    assert status == 431
    headers = b"".join(b"X-H%d: v\r\n" % i for i in range(1500))  # many small lines add up too
    assert raw(server, b"GET / HTTP/1.1\r\n" + headers + b"\r\n")[0] == 431


def test_a_body_over_4_kib_is_413_without_being_read(server: WebServer) -> None:
    status, _, body = raw(server, b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded"
                                  b"\r\nContent-Length: %d\r\n\r\npassword=" % (MAX_BODY + 1))
    assert status == 413 and b"exceeds 4 KiB" in body
    assert raw(server, b"POST /login HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 411
    assert raw(server, b"POST /login HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")[0] == 411


@pytest.mark.parametrize("request_bytes", [
    b"GARBAGE\r\n\r\n", b"GET / HTTP/2.0\r\n\r\n", b"GET http://evil/ HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nno colon here\r\n\r\n", b"GET / HTTP/1.1\r\nX-A: 1\r\n folded\r\n\r\n",
    b"GET / HTTP/1.1\r\nAuthorization: a\r\nAuthorization: b\r\n\r\n",
])
def test_a_malformed_request_is_400(server: WebServer, request_bytes: bytes) -> None:
    assert raw(server, request_bytes)[0] == 400


def test_a_slow_client_gets_408_at_its_deadline_however_it_trickles(serve) -> None:
    server = serve(timeout_s=1.0)
    with socket.create_connection(server.address, timeout=5) as sock:
        start = time.monotonic()
        sock.sendall(b"GET / HTTP/1.1\r\n")
        for _ in range(10):  # one byte each 0.2 s: each would reset a per-read timeout
            try:
                sock.sendall(b"X")
            except OSError:
                break
            time.sleep(0.2)
            if time.monotonic() - start > 1.5:
                break
        status, _, _ = read_answer(sock)
        assert status == 408 and time.monotonic() - start < 2.5


def test_at_most_eight_requests_at_once_the_next_get_503_fast_and_the_rest_are_closed(serve) -> None:
    server = serve(timeout_s=30.0)
    held = [socket.create_connection(server.address, timeout=5) for _ in range(8)]  # silent: each holds a worker
    try:
        start = time.monotonic()
        status, headers, body = raw(server, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (status, headers["retry-after"]) == (503, "2") and time.monotonic() - start < 1.0
        assert SECURITY_HEADERS["X-Frame-Options"] == headers["x-frame-options"]
        held += [socket.create_connection(server.address, timeout=5) for _ in range(4)]  # every refuser busy
        with socket.create_connection(server.address, timeout=5) as sock:
            start = time.monotonic()
            try:
                sock.sendall(b"GET / HTTP/1.1\r\n\r\n")
                assert sock.recv(100) == b""
            except ConnectionResetError:
                pass
            assert time.monotonic() - start < 1.0
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 3
    while (status := raw(server, b"GET /login HTTP/1.1\r\n\r\n")[0]) == 503 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert status == 200


# -- TLS ----------------------------------------------------------------------------------------------

def test_tls_with_the_configured_certificate_and_a_secure_cookie(serve, tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    server = serve(cert=pki.server_cert, key=pki.server_key)
    assert server.url.startswith("https://127.0.0.1:")
    client = ssl.create_default_context(cafile=str(pki.ca_file))
    r = login(server, context=client)
    assert r.status == 303 and r.getheader("Set-Cookie").endswith("; Secure")
    assert ask(server, "GET", "/metrics", headers=basic(), context=client).data == METRICS
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.load_verify_locations(str(pki.ca_file))
    with warnings.catch_warnings():  # TLS 1.0 and 1.1 are deprecated: that is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        ask(server, "GET", "/login", context=old)
    with pytest.raises((http.client.HTTPException, ConnectionResetError)):  # plain HTTP to the TLS port
        ask(server, "GET", "/login")


def test_tls_files_that_do_not_load_stop_the_start(password_file: Path, tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    settings = WebSettings(listen_port=0, password_file=password_file, tls_cert_file=pki.server_cert,
                           tls_key_file=pki.client_key)
    with pytest.raises(WebError, match="web.tls: cannot load .*server.crt with .*client.key"):
        WebServer(settings, SimpleNamespace(), FakeRoute())


# -- what the server renders, and its headers ---------------------------------------------------------

def test_a_path_is_shown_escaped_on_the_404_page(server: WebServer) -> None:
    for target in (b"/%3Cscript%3Ealert(1)%3C/script%3E", b"/<script>alert(1)</script>"):
        status, _, body = raw(server, b"GET " + target + b" HTTP/1.1\r\nAuthorization: " +
                              basic()["Authorization"].encode() + b"\r\n\r\n")
        assert status == 404
        assert b"&lt;script&gt;alert(1)&lt;/script&gt;" in body and b"<script" not in body


def test_security_headers_are_on_every_answer_and_a_page_may_be_stricter(server: WebServer) -> None:
    answers = [ask(server, "GET", "/login"), ask(server, "GET", "/"), ask(server, "GET", "/metrics"),
               ask(server, "PUT", "/"), ask(server, "GET", "/", headers=basic()), ask(server, "GET", "/nope",
                                                                                      headers=basic()),
               login(server, "wrong password")]
    for r in answers:
        for name, value in SECURITY_HEADERS.items():
            assert r.getheader(name) == value, (r.status, name)
        assert r.getheader("Connection") == "close"
    assert SECURITY_HEADERS["Content-Security-Policy"] == \
        "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'"
    strict = ask(server, "GET", "/strict", headers=basic())
    assert strict.getheader("Content-Security-Policy") == "default-src 'none'"
    assert strict.getheader("X-Frame-Options") == "DENY"


def test_a_failing_page_is_500_logged_once_at_error_and_an_injected_header_is_never_sent(
        server: WebServer, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="edge_agent.web"):
        assert [ask(server, "GET", "/boom", headers=basic()).status for _ in range(2)] == [500, 500]
        r = ask(server, "GET", "/injected", headers=basic())
    assert r.status == 500 and r.getheader("Set-Cookie") is None
    failed = [(r.levelno, r.getMessage()) for r in caplog.records if "failed" in r.getMessage()]
    assert failed[0][0] == logging.ERROR and failed[1][0] == logging.DEBUG
    assert failed[0][1].startswith("web: the page /boom failed: RuntimeError at test_server.py:")
    assert server.gate.route is not None and ask(server, "GET", "/", headers=basic()).status == 200


def test_the_access_log_is_debug_and_never_has_the_query(server: WebServer, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="edge_agent.web"):
        ask(server, "GET", "/?token=s3cr3t-value", headers=basic())
    lines = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert (logging.DEBUG, "web: 127.0.0.1 GET / 200 %d" % len(OVERVIEW)) in lines
    assert "s3cr3t" not in caplog.text


# -- life ---------------------------------------------------------------------------------------------

def test_start_logs_the_address_and_stop_closes_the_socket(password_file: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    settings = WebSettings(listen_port=0, password_file=password_file)
    server = WebServer(settings, SimpleNamespace(), FakeRoute())
    with caplog.at_level(logging.INFO, logger="edge_agent.web"):
        server.start()
    assert caplog.messages == [f"web: the technician's page at http://127.0.0.1:{server.address[1]}/"]
    address = server.address
    start = time.monotonic()
    server.stop()
    assert time.monotonic() - start < 0.5
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=1)


def test_ipv6_loopback(serve) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    try:
        server = serve(host="::1")
    except WebError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    assert server.url.startswith("http://[::1]:")
    assert ask(server, "GET", "/login").status == 200


def test_start_web_is_none_without_web_and_refuses_what_cannot_be_served(password_file: Path, tmp_path: Path) -> None:
    settings = SimpleNamespace(web=None)
    assert start_web(settings, SimpleNamespace()) is None
    missing = SimpleNamespace(web=WebSettings(listen_port=0, password_file=tmp_path / "none"))
    with pytest.raises(WebError, match="does not exist; 'edge-agent web passwd -c CONFIG' sets the password"):
        start_web(missing, SimpleNamespace(), route=FakeRoute())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        busy = SimpleNamespace(web=WebSettings(listen_port=taken.getsockname()[1], password_file=password_file))
        with pytest.raises(WebError, match="cannot listen: Address already in use; another program listens there"):
            start_web(busy, SimpleNamespace(), route=FakeRoute())
    server = start_web(SimpleNamespace(web=WebSettings(listen_port=0, password_file=password_file)),
                       SimpleNamespace(), route=FakeRoute())
    try:
        assert ask(server, "GET", "/login").status == 200
    finally:
        server.stop()


# -- what it costs -------------------------------------------------------------------------------------

RSS_SCRIPT = r"""
import sys, time
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
import edge_agent.agent.daemon, edge_agent.agent.supervisor  # what the agent has loaded anyway
from pathlib import Path
time.sleep(0.1)
base = rss()
from edge_agent.settings import WebSettings
from edge_agent.web.server import WebServer
from edge_agent.web.view import Response
imported = rss()
page = Response(200, "text/html; charset=utf-8", b"<p>" + b"x" * 20000 + b"</p>")
server = WebServer(WebSettings(listen_port=0, password_file=Path(sys.argv[1])), None, lambda p, q, v: page)
server.start()
print(server.address[1], flush=True)
sys.stdin.readline()
time.sleep(0.3)
print(f"{imported - base:.2f} {rss() - base:.2f}", flush=True)
"""


def test_the_server_adds_well_under_5_mib_and_nothing_much_at_import(password_file: Path, tmp_path: Path) -> None:
    """In a process of its own, after the daemon's imports; the bytecode compiled first (into the
    usual ``__pycache__``), as an installed agent's is: compiling would count ~1 MiB that a gateway
    never pays. Logins run scrypt (16 MiB each) in several threads:
    that memory must go back (``auth._map_large_blocks``). Measured here: +0.23 MiB at import,
    +1.5 MiB after these requests (docs/web.md)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("PYTHONPYCACHEPREFIX", None)
    subprocess.run([sys.executable, "-c", "import edge_agent.agent.daemon, edge_agent.agent.supervisor, "
                    "edge_agent.web.server, html"], env=env, check=True, timeout=60)  # html: the login form's
    proc = subprocess.Popen([sys.executable, "-c", RSS_SCRIPT, str(password_file)], env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        port = int(proc.stdout.readline())
        server = SimpleNamespace(address=("127.0.0.1", port))
        for i in range(3):  # scrypt in several worker threads, so several malloc arenas
            assert login(server, f"wrong {i}").status == 403
        assert login(server).status == 303
        for i in range(30):
            assert ask(server, "GET", "/" if i % 2 else "/metrics", headers=basic()).status == 200
        assert ask(server, "GET", "/").status == 303
        proc.stdin.write("\n")
        proc.stdin.flush()
        imported, serving = map(float, proc.stdout.readline().split())
    finally:
        proc.kill()
        proc.communicate()
    print(f"import +{imported} MiB, serving +{serving} MiB")
    assert imported < 0.5
    assert serving < 5.0
