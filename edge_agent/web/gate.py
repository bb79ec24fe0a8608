"""What the page answers a request that reached it whole: the login, then the pages (issue 15).

Kept apart from ``server.py`` (sockets, limits, TLS) so the rules below read in one place and
tests can drive them without a socket. ``/login`` is open; every other path needs a session
cookie or HTTP Basic ``technician:<password>``:

- without either, a page redirects (303) to ``/login`` (a browser lands on the form) and
  ``/metrics`` answers 401 with ``WWW-Authenticate: Basic`` (how Prometheus is asked);
- a wrong Basic password is 401, a wrong form password 403 with the form again; both count
  towards the client address's limit (``auth.Throttle``), past which the answer is 429 with
  ``Retry-After`` and no password is checked; a valid session cookie still works then;
- a POST whose ``Origin`` is another site is 403 (the cookie is SameSite=Strict as well);
- ``/logout`` (POST) drops the session and redirects to ``/login``.

Each wrong password is logged at WARNING with the client address, never the attempt.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Mapping
from urllib.parse import parse_qs, unquote, urlsplit

from ..errors import bug_location
from .auth import USER, PasswordFile, Sessions, Throttle, login_page, parse_basic
from .view import Response, WebView

__all__ = ["Gate", "Request", "Route", "page", "allowed", "COOKIE", "HTML"]

log = logging.getLogger(__name__)

Route = Callable[[str, "dict[str, list[str]]", WebView], "Response | None"]
COOKIE = "edge_session"
HTML = "text/html; charset=utf-8"
_FAILED = "This page failed; the agent's log says where."


@dataclass(frozen=True)
class Request:
    """A request as the server read it: ``path`` as sent (percent-encoded), header names lower-case."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: bytes
    client: str  # the peer's address: what wrong passwords are counted by


def page(status: int, title: str, text: str, headers: Mapping[str, str] | None = None) -> Response:
    """A small HTML page of the server's own (errors, redirects), every value escaped."""
    from html import escape  # here: html.entities is 0.2 MiB, and the agent loads it for nothing else

    body = (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f'</head><body><h1>{escape(title)}</h1><p>{escape(text)}</p></body></html>\n')
    return Response(status, HTML, body.encode("utf-8"), dict(headers or {}))


def allowed(path: str) -> tuple[str, ...]:
    """The methods ``path`` answers (``Allow`` of a 405)."""
    if path == "/login":
        return ("GET", "HEAD", "POST")
    if path == "/logout":
        return ("POST",)
    return ("GET", "HEAD")


class Gate:
    """The login and the pages behind it; ``answer`` is called from the server's threads."""

    def __init__(self, password: PasswordFile, view: WebView, route: Route, *, secure: bool,
                 sessions: Sessions | None = None, throttle: Throttle | None = None) -> None:
        self.password, self.view, self.route, self.secure = password, view, route, secure
        self.sessions = sessions or Sessions()
        self.throttle = throttle or Throttle()
        self._route_failed = False

    def answer(self, request: Request) -> Response:
        if request.method == "POST" and not _same_origin(request.headers):
            return page(403, "Forbidden", "This form was sent from another site.")
        if request.path == "/login":
            return self._login(request) if request.method == "POST" else Response(200, HTML, login_page())
        if request.path == "/logout":
            token = _cookie(request.headers)
            if token:
                self.sessions.drop(token)
            return page(303, "Logged out", "Logged out.", {"Location": "/login", "Set-Cookie": self._cookie("", 0)})
        refused = self._authenticate(request)
        return refused if refused is not None else self._page(request)

    def _page(self, request: Request) -> Response:
        try:
            query = parse_qs(request.query, keep_blank_values=True, max_num_fields=50)
        except ValueError:
            return page(400, "Bad request", "The query has too many fields.")
        try:
            response = self.route(request.path, query, self.view)
        except Exception as exc:  # a page's bug must not end the server: logged once at ERROR, then DEBUG
            level = logging.DEBUG if self._route_failed else logging.ERROR
            self._route_failed = True
            log.log(level, "web: the page %s failed: %s", request.path, bug_location(exc))
            return page(500, "Page failed", _FAILED)
        if response is None:
            return page(404, "Not found", f"No page at {unquote(request.path, errors='replace')}.")
        return response

    def _authenticate(self, request: Request) -> Response | None:
        """None when the request may see pages; else the answer (303, 401 or 429)."""
        self.password.refresh()  # a new password ends every session, also for a cookie-only client
        token = _cookie(request.headers)
        if token and self.sessions.valid(token):
            return None
        given = request.headers.get("authorization")
        if given is None:
            if request.path == "/metrics":
                return page(401, "Password required", f"Log in with HTTP Basic as {USER}.", _CHALLENGE)
            return page(303, "Log in", "Log in first.", {"Location": "/login"})
        wait = self.throttle.blocked(request.client)
        if wait:
            return self._too_many(wait)
        credentials = parse_basic(given)
        if credentials is not None and credentials[0] == USER and self.password.check(credentials[1]):
            self.throttle.succeeded(request.client)
            return None
        wait = self._failed(request.client, "HTTP Basic")
        return self._too_many(wait) if wait else page(401, "Wrong password", "Wrong user or password.", _CHALLENGE)

    def _login(self, request: Request) -> Response:
        wait = self.throttle.blocked(request.client)
        if wait:
            return self._too_many(wait, form=True)
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/x-www-form-urlencoded":
            return page(415, "Unsupported form", "Send the login form as application/x-www-form-urlencoded.")
        try:
            fields = parse_qs(request.body.decode("utf-8"), keep_blank_values=True, max_num_fields=10)
        except (UnicodeDecodeError, ValueError):
            return page(400, "Bad request", "The form does not read.")
        password = (fields.get("password") or [""])[0]
        if password and self.password.check(password):
            self.throttle.succeeded(request.client)
            token = self.sessions.new()
            log.info("web: technician logged in from %s", request.client)
            return page(303, "Logged in", "Logged in.",
                        {"Location": "/", "Set-Cookie": self._cookie(token, int(self.sessions.max_age_s))})
        wait = self._failed(request.client, "login form")
        return self._too_many(wait, form=True) if wait else Response(403, HTML, login_page("Wrong password."))

    def _failed(self, client: str, how: str) -> float:
        """Count and log a wrong password (never the attempt itself); seconds now blocked, or 0."""
        count, wait = self.throttle.failed(client)
        blocked = f"; refused for {wait:.0f} s" if wait else ""
        log.warning("web: wrong password from %s (%s, %d within %.0f s)%s", client, how, count,
                    self.throttle.window_s, blocked)
        return wait

    def _too_many(self, wait: float, *, form: bool = False) -> Response:
        seconds = max(1, int(wait + 0.999))
        text = f"Too many wrong passwords from your address: try again in {seconds} s."
        headers = {"Retry-After": str(seconds)}
        if form:
            return Response(429, HTML, login_page(text), headers)
        return page(429, "Too many wrong passwords", text, headers)

    def _cookie(self, token: str, max_age: int) -> str:
        secure = "; Secure" if self.secure else ""
        return f"{COOKIE}={token}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"


_CHALLENGE = {"WWW-Authenticate": 'Basic realm="edge-agent", charset="UTF-8"'}


def _cookie(headers: Mapping[str, str]) -> str | None:
    for part in headers.get("cookie", "").split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name == COOKIE and value:
            return value
    return None


def _same_origin(headers: Mapping[str, str]) -> bool:
    """A POST's ``Origin``, when the browser sends one, must name this host (not a cross-site form)."""
    origin = headers.get("origin")
    if origin is None:
        return True
    host = headers.get("host", "").lower()
    return bool(host) and urlsplit(origin).netloc.lower() == host
