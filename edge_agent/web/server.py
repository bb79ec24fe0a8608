"""The technician's page's HTTP(S) server: the standard library's sockets, bounded (issue 15).

Why not ``http.server``: its handler reads up to 64 KiB per header line and 100 headers, and its
timeout restarts with every byte, so a slow client holds a thread as long as it likes. This
reads the request itself, under caps a browser never reaches. Chosen by measurement over
waitress (docs/web.md): serving the same requests adds 1.0 MiB of RSS to the agent against
waitress' 2.0 MiB (0.2 MiB at import against 0.6), and needs no dependency. Its limits:

- at most ``workers`` (8) requests at once, each in its own thread; the next ``refusers`` (4)
  connections get a fast 503, any beyond are closed at once: nothing queues without bound;
- ``timeout_s`` (10 s) for the whole request, TLS handshake included, and again for the answer;
- request line and headers within ``MAX_HEAD`` (8 KiB, else 431), a body only for POST
  ``/login`` and ``/logout`` and within ``MAX_BODY`` (4 KiB, else 413); one request per
  connection (``Connection: close``);
- GET and HEAD for pages, POST for ``/login`` and ``/logout``; anything else is 405 with ``Allow``;
- the security headers (``SECURITY_HEADERS``) on every answer; a page may replace one with a
  stricter one of its own (``pages.py`` sends a CSP that allows its stylesheet by hash only).

What is answered once a request has arrived whole (the login, the pages, 303/401/429) is
``gate.py``'s; who may log in is ``auth.py``'s.

The pipeline never waits for this: the server has its own threads, and the ``WebView`` it hands
``route`` answers from snapshots. The access log is DEBUG (method, path, status; never a query
string); one INFO line at start names the address.
"""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
from http import HTTPStatus
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

from ..errors import bug_location
from ..settings import Settings, WebSettings
from .auth import PasswordFile, WebError
from .gate import Gate, Request, Route, allowed, page
from .view import Response, WebView

__all__ = ["WebServer", "start_web", "WebError", "SECURITY_HEADERS", "MAX_HEAD", "MAX_BODY"]

log = logging.getLogger(__name__)

WORKERS, REFUSERS, TIMEOUT_S, REFUSE_S, LINGER_S = 8, 4, 10.0, 2.0, 1.0
MAX_HEAD, MAX_BODY = 8 * 1024, 4 * 1024
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",  # no-referrer makes Chromium send "Origin: null" with the login form
    "Cache-Control": "no-store",
}
_END_OF_HEAD = re.compile(rb"\r?\n\r?\n")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class _Refused(Exception):
    """A request answered with an error before it reaches a page."""

    def __init__(self, status: int, text: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(text)
        self.status, self.text, self.headers = status, text, dict(headers or {})


class _Gone(Exception):
    """The client closed, or was too slow: nothing more is sent."""


def _status_title(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


def _date() -> str:
    t = time.gmtime()
    return f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year} {time.strftime('%H:%M:%S', t)} GMT"


class WebServer:
    """Serves ``route``'s pages behind the login; ``start()`` binds and returns, ``stop()`` ends it.

    Raises ``WebError`` (one line, with the fix) from the constructor when the password or TLS
    files cannot be used, and from ``start()`` when the address cannot be bound."""

    def __init__(self, settings: WebSettings, view: WebView, route: Route, *, workers: int = WORKERS,
                 refusers: int = REFUSERS, timeout_s: float = TIMEOUT_S) -> None:
        self.settings, self.timeout_s = settings, timeout_s
        password = PasswordFile(settings.password_file)
        password.load()
        self._tls = _tls_context(settings) if settings.tls else None
        self.gate = Gate(password, view, route, secure=self._tls is not None)
        password.on_change = self.gate.sessions.clear  # a new password ends every session
        self._workers = threading.BoundedSemaphore(workers)
        self._refusers = threading.BoundedSemaphore(refusers)
        self._stopping = threading.Event()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    # -- life ------------------------------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) bound: the port is the real one when the settings asked for 0."""
        assert self._sock is not None, "start() first"
        host, port = self._sock.getsockname()[:2]
        return host, port

    @property
    def url(self) -> str:
        host, port = self.address
        shown = f"[{host}]" if ":" in host else host
        return f"{'https' if self._tls else 'http'}://{shown}:{port}/"

    def start(self) -> None:
        self._sock = _listen(self.settings)
        self._sock.settimeout(0.5)  # how often the accept loop looks at _stopping, where shutdown does not wake it
        self._thread = threading.Thread(target=self._accept, name="web accept", daemon=True)
        self._thread.start()
        log.info("web: the technician's page at %s", self.url)

    def stop(self, timeout: float = 3.0) -> None:
        """Close the listening socket and join the accept thread; a request being answered ends
        by its own deadline (its thread is a daemon)."""
        self._stopping.set()
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)  # wakes a blocked accept() at once (Linux)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout)
        if self._sock is not None:
            self._sock.close()

    def _accept(self) -> None:
        assert self._sock is not None
        while not self._stopping.is_set():
            try:
                conn, addr = self._sock.accept()
            except TimeoutError:
                continue
            except OSError as exc:
                if self._stopping.is_set():
                    break
                log.debug("web: accept failed: %s", exc)
                time.sleep(0.1)  # out of file descriptors: give the workers a moment
                continue
            client = str(addr[0])
            for slots, work, name in ((self._workers, self._serve, "web"), (self._refusers, self._refuse, "web busy")):
                if slots.acquire(blocking=False):
                    try:
                        threading.Thread(target=work, args=(conn, client), name=name, daemon=True).start()
                    except RuntimeError:  # no thread to be had: the connection is closed, not queued
                        slots.release()
                        conn.close()
                    break
            else:
                conn.close()

    # -- one connection ----------------------------------------------------------------------------

    def _serve(self, conn: socket.socket, client: str) -> None:
        try:
            self._exchange(conn, client, self.timeout_s, self.gate.answer)
        finally:
            self._workers.release()

    def _refuse(self, conn: socket.socket, client: str) -> None:
        def busy(request: Request) -> Response:
            return page(503, "Busy", "The gateway is answering other requests; try again in a moment.",
                        {"Retry-After": "2"})
        try:
            self._exchange(conn, client, REFUSE_S, busy)
        finally:
            self._refusers.release()

    def _exchange(self, conn: socket.socket, client: str, timeout_s: float,
                  answer: Callable[[Request], Response]) -> None:
        deadline = time.monotonic() + timeout_s
        method, path = "-", "-"
        try:
            if self._tls is not None:
                conn = self._tls.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
                _timed(conn, deadline)
                conn.do_handshake()
            try:
                request = self._read(conn, client, deadline)
                method, path = request.method, request.path
                response = answer(request)
            except _Refused as r:
                response = page(r.status, _status_title(r.status), r.text, r.headers)
            self._send(conn, response, method == "HEAD", time.monotonic() + timeout_s)
            log.debug("web: %s %s %s %d %d", client, method, path, response.status, len(response.body))
            _linger(conn)
        except (_Gone, OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            log.debug("web: %s %s %s: connection ended: %s", client, method, path, exc or type(exc).__name__)
        except Exception as exc:  # a bug of ours: this connection ends, the server goes on
            log.error("web: %s %s %s failed: %s", client, method, path, bug_location(exc))
        finally:
            conn.close()

    def _read(self, conn: socket.socket, client: str, deadline: float) -> Request:
        buf = bytearray()
        while (end := _END_OF_HEAD.search(buf)) is None:
            if len(buf) > MAX_HEAD:
                raise _Refused(431, f"The request line and headers exceed {MAX_HEAD // 1024} KiB.")
            buf += _recv(conn, deadline, head=True)
        if end.start() > MAX_HEAD:
            raise _Refused(431, f"The request line and headers exceed {MAX_HEAD // 1024} KiB.")
        method, target, headers = _parse_head(bytes(buf[:end.start()]))
        rest = bytes(buf[end.end():])
        split = urlsplit(target)
        path = split.path  # as sent, percent-encoded: a page unquotes each segment (a name may hold '/')
        allow = allowed(path)
        if method not in allow:
            raise _Refused(405, f"{method} is not allowed here.", {"Allow": ", ".join(allow)})
        body = b""
        if method == "POST":
            body = self._body(conn, headers, rest, deadline)
        return Request(method, path, split.query, headers, body, client)

    def _body(self, conn: socket.socket, headers: dict[str, str], rest: bytes, deadline: float) -> bytes:
        if "transfer-encoding" in headers or "content-length" not in headers:
            raise _Refused(411, "A POST here needs a Content-Length.")
        length = headers["content-length"]
        if not length.isdigit():
            raise _Refused(400, "Content-Length is not a number.")
        if int(length) > MAX_BODY:
            raise _Refused(413, f"The body exceeds {MAX_BODY // 1024} KiB.")
        body = bytearray(rest)
        if headers.get("expect", "").lower() == "100-continue" and len(body) < int(length):
            _timed(conn, deadline)
            conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        while len(body) < int(length):
            body += _recv(conn, deadline)
        return bytes(body[:int(length)])

    def _send(self, conn: socket.socket, response: Response, head_only: bool, deadline: float) -> None:
        headers = {"Date": _date(), "Server": "edge-agent", **SECURITY_HEADERS, **response.headers,
                   "Content-Type": response.content_type, "Content-Length": str(len(response.body)),
                   "Connection": "close"}
        bad = [name for name, value in headers.items()
               if not _TOKEN.fullmatch(name) or any(c in str(value) for c in "\r\n\0")]
        if bad:  # header injection, or a route's bug: never sent as it is
            log.error("web: a page's header %r cannot be sent; answered 500", bad[0])
            return self._send(conn, page(500, "Page failed", "This page failed; the agent's log says where."),
                              head_only, deadline)
        lines = [f"HTTP/1.1 {_status_title(response.status)}", *(f"{k}: {v}" for k, v in headers.items())]
        try:
            data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        except UnicodeEncodeError:
            log.error("web: a page's header is not Latin-1; answered 500")
            return self._send(conn, page(500, "Page failed", "This page failed; the agent's log says where."),
                              head_only, deadline)
        _timed(conn, deadline)
        conn.sendall(data if head_only else data + response.body)


# -- helpers -----------------------------------------------------------------------------------------

def _parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    """(method, target, headers with lower-case names) of a request head; _Refused 400."""
    lines = head.decode("latin-1").split("\n")
    parts = lines[0].rstrip("\r").split(" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not re.fullmatch(r"HTTP/1\.[01]", parts[2]):
        raise _Refused(400, "The request line does not read as HTTP/1.x.")
    method, target = parts[0], parts[1]
    if not target.startswith("/") or target.startswith("//") or any(ord(c) < 0x21 for c in target):
        raise _Refused(400, "The request names no path on this server.")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        line = line.rstrip("\r")
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN.fullmatch(name):  # also a folded line (leading space): obsolete, refused
            raise _Refused(400, "A header line does not read.")
        name, value = name.lower(), value.strip(" \t")
        if name in headers and name in ("content-length", "host", "authorization"):
            raise _Refused(400, f"The {name} header is given twice.")
        headers[name] = f"{headers[name]}; {value}" if name == "cookie" and name in headers else value
    return method, target, headers


def _timed(conn: socket.socket, deadline: float) -> None:
    left = deadline - time.monotonic()
    if left <= 0:
        raise _Gone("too slow")
    conn.settimeout(left)


def _recv(conn: socket.socket, deadline: float, *, head: bool = False) -> bytes:
    try:
        _timed(conn, deadline)
        chunk = conn.recv(4096)
    except (TimeoutError, _Gone):
        if head:
            raise _Refused(408, "The request did not arrive in time.") from None
        raise _Gone("too slow") from None
    if not chunk:
        raise _Gone("closed by the client")
    return chunk


def _linger(conn: socket.socket) -> None:
    """Read what the client still sends (a refused body) before closing, up to ``LINGER_S`` and
    64 KiB, so the close does not reset the connection and lose the answer on the way."""
    deadline, budget = time.monotonic() + LINGER_S, 64 * 1024
    try:
        if not hasattr(conn, "do_handshake"):  # plain TCP: the FIN tells the client we are done
            conn.shutdown(socket.SHUT_WR)
        while budget > 0:
            _timed(conn, deadline)
            chunk = conn.recv(4096)
            if not chunk:
                return
            budget -= len(chunk)
    except (OSError, _Gone):
        return


def _listen(settings: WebSettings) -> socket.socket:
    host, port = settings.listen_host, settings.listen_port
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise WebError(f"web.listen {shown}: cannot resolve {host!r} ({exc.strerror}); "
                       "name an address of this gateway") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(16)
    except OSError as exc:
        sock.close()
        hint = {98: "another program listens there ('ss -ltnp' names it): stop it or choose another web.listen",
                13: "ports below 1024 need a privilege the agent does not have: use 8080 or 8443",
                99: "this gateway has no such address: 'ip addr' lists its addresses"}.get(exc.errno or 0, "")
        raise WebError(f"web.listen {shown}: cannot listen: {exc.strerror or exc}" + (f"; {hint}" if hint else "")) \
            from None
    return sock


def _tls_context(settings: WebSettings) -> Any:
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(settings.tls_cert_file), str(settings.tls_key_file))
    except OSError as exc:  # ssl.SSLError included: not PEM, the key does not match
        raise WebError(f"web.tls: cannot load {settings.tls_cert_file} with {settings.tls_key_file}: "
                       f"{getattr(exc, 'strerror', None) or getattr(exc, 'reason', None) or exc}; "
                       "give the page's PEM certificate and its private key") from None
    return ctx


def start_web(settings: Settings, view: WebView, *, route: Route | None = None) -> WebServer | None:
    """The page of ``settings.web`` started (its INFO line logged), or None without ``web``.

    ``route`` defaults to ``pages.route`` (imported only here). Raises ``WebError`` (one line:
    password file, TLS files, the address) so that ``run`` refuses to start, as for a key file."""
    if settings.web is None:
        return None
    if route is None:
        from .pages import route
    server = WebServer(settings.web, view, route)
    server.start()
    return server
