"""The daemon's control socket: how ``edge-agent status`` asks the running agent.

``{state_dir}/control.sock``, an AF_UNIX stream socket, mode 0660, its group ``edge-agent``
when that group exists (else the process's): root and the service group may ask, nobody else
(the state directory's own permissions apply on top). One request per connection::

    client: {"cmd": "status"}\\n            (at most MAX_REQUEST bytes; end with \\n or shut down writing)
    server: {"ok": true, "status": {...}}\\n    or  {"ok": false, "error": "..."}\\n, then closes

It never holds up the daemon: one thread accepts, each request is answered on a short-lived
thread of its own (at most ``MAX_CLIENTS`` at once; more are told "busy"), every read and write
has a time limit, and a request longer than ``MAX_REQUEST`` is refused unread. The socket is
bound under a temporary name, given its mode and group, then renamed into place, so it is never
reachable with looser permissions. A socket file left by a crash is replaced; one that a live
agent answers on is left alone (``ControlError``). ``stop`` removes the file only if it is still
ours.

The accept loop also calls ``tick`` every ``tick_s`` seconds: the agent samples its drain rate
there (``procstat.RateMeter``).

The client side is ``query`` (one request, a reply or ``ControlUnavailable`` saying why) and
``query_status(settings)`` (the status dict, or None when no daemon answers).
"""

from __future__ import annotations

import errno
import grp
import json
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from ..errors import EdgeAgentError, StartupError

__all__ = ["ControlServer", "ControlError", "ControlUnavailable", "socket_path", "query", "query_status",
           "status_or_reason", "SERVICE_GROUP", "SOCKET_NAME"]

log = logging.getLogger("edge_agent.control")

SOCKET_NAME = "control.sock"
SERVICE_GROUP = "edge-agent"
MAX_REQUEST = 4096  # bytes; a request is one small JSON object
MAX_REPLY = 16 * 1024 * 1024  # what the client reads at most (a status with thousands of devices fits)
MAX_CLIENTS = 4
IO_TIMEOUT_S = 2.0  # per read or write on a client connection
ACCEPT_POLL_S = 0.5  # how soon the accept loop notices stop()
SUN_PATH_MAX = 107  # sockaddr_un.sun_path, less its terminating NUL

Handler = Callable[[Mapping[str, Any]], Any]


class ControlError(StartupError):
    """The control socket cannot be served (path too long, another agent answers, no permission)."""


class ControlUnavailable(EdgeAgentError):
    """No daemon answered; the message says why (no socket, refused, timed out, not permitted)."""


def socket_path(state_dir: Path | str) -> Path:
    return Path(state_dir) / SOCKET_NAME


def _gid(group: str) -> int | None:
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        return None


class ControlServer:
    """Serves ``handlers`` (command name -> callable(request) -> JSON-able result) on ``path``."""

    def __init__(self, path: Path | str, handlers: Mapping[str, Handler], *,
                 tick: Callable[[], None] | None = None, tick_s: float = 5.0,
                 group: str | None = SERVICE_GROUP, io_timeout_s: float = IO_TIMEOUT_S,
                 max_clients: int = MAX_CLIENTS) -> None:
        self.path = Path(path)
        self._handlers = dict(handlers)
        self._tick, self._tick_s = tick, tick_s
        self._group = group  # None, or a group that does not exist: the process's group
        self._gid = _gid(group) if group is not None else None
        self._io_timeout = io_timeout_s
        self._slots = threading.BoundedSemaphore(max(1, max_clients))
        self._sock: socket.socket | None = None
        self._ino: tuple[int, int] | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        """Bind and serve; ``ControlError`` when that is not possible (nothing is left behind)."""
        if len(os.fsencode(self.path)) > SUN_PATH_MAX:
            raise ControlError(f"control socket path {self.path} is longer than {SUN_PATH_MAX} bytes; "
                               "use a shorter gateway.state_dir")
        if self.path.exists() or self.path.is_symlink():
            try:
                query(self.path, {"cmd": "ping"}, timeout=0.5)
            except ControlUnavailable:
                pass  # left by a crash: replaced below
            else:
                raise ControlError(f"another edge-agent answers on {self.path}; not replacing its control socket")
        tmp = self.path.with_name(f".ctl.{os.getpid()}.{threading.get_ident() % 100000}")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            tmp.unlink(missing_ok=True)
            sock.bind(str(tmp))
            os.chmod(tmp, 0o660)
            if self._gid is not None:
                try:
                    os.chown(tmp, -1, self._gid)
                except OSError as exc:  # not root and not in the group: the process's group stays
                    log.warning("control: cannot give %s to group %s (%s); it keeps the process's group",
                                self.path, self._group, exc.strerror or exc)
            sock.listen(16)
            sock.settimeout(ACCEPT_POLL_S)
            os.replace(tmp, self.path)
            st = os.stat(self.path)
        except OSError as exc:
            sock.close()
            tmp.unlink(missing_ok=True)
            raise ControlError(f"control socket {self.path}: {exc.strerror or exc}") from None
        self._sock, self._ino = sock, (st.st_dev, st.st_ino)
        self._stopping.clear()
        self._thread = threading.Thread(target=self._serve, name="control", daemon=True)
        self._thread.start()
        log.debug("control: listening on %s", self.path)

    def stop(self, timeout: float = 2.0) -> None:
        self._stopping.set()
        if self._thread is not None and self._thread.is_alive():
            try:  # wake the accept() now rather than at its next poll
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as poke:
                    poke.settimeout(0.2)
                    poke.connect(str(self.path))
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        try:
            st = os.stat(self.path)
            if (st.st_dev, st.st_ino) == self._ino:
                self.path.unlink()
        except OSError:
            pass
        self._ino = None

    # -- the accept thread --------------------------------------------------------------------
    def _serve(self) -> None:
        sock = self._sock
        assert sock is not None
        next_tick = time.monotonic()
        while not self._stopping.is_set():
            if self._tick is not None and time.monotonic() >= next_tick:
                next_tick = time.monotonic() + self._tick_s
                try:
                    self._tick()
                except Exception as exc:
                    log.debug("control: tick failed: %s: %s", type(exc).__name__, exc)
            try:
                conn, _ = sock.accept()
            except socket.timeout:
                continue
            except OSError as exc:
                if self._stopping.is_set():
                    return
                log.log(logging.DEBUG if self._failing else logging.WARNING, "control: accept failed: %s", exc)
                self._failing = True
                time.sleep(ACCEPT_POLL_S)
                continue
            if self._stopping.is_set():
                conn.close()
                return
            self._failing = False
            conn.settimeout(self._io_timeout)
            if not self._slots.acquire(blocking=False):
                threading.Thread(target=self._reply_busy, args=(conn,), name="control-busy", daemon=True).start()
                continue
            threading.Thread(target=self._client, args=(conn,), name="control-client", daemon=True).start()

    def _reply_busy(self, conn: socket.socket) -> None:
        with conn:
            _send(conn, {"ok": False, "error": f"busy: {MAX_CLIENTS} requests are being answered; try again"})

    def _client(self, conn: socket.socket) -> None:
        try:
            with conn:
                _send(conn, self._answer(conn))
        except OSError as exc:  # the client went away or stalled: its loss
            log.debug("control: a client connection failed: %s", exc)
        finally:
            self._slots.release()

    def _answer(self, conn: socket.socket) -> dict[str, Any]:
        try:
            raw = _read_request(conn)
        except ValueError as exc:
            return {"ok": False, "error": str(exc)}
        try:
            request = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return {"ok": False, "error": "the request is not a JSON object"}
        if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
            return {"ok": False, "error": 'the request needs "cmd", e.g. {"cmd": "status"}'}
        cmd = request["cmd"]
        if cmd == "ping":
            return {"ok": True, "pid": os.getpid()}
        handler = self._handlers.get(cmd)
        if handler is None:
            return {"ok": False, "error": f"unknown cmd {cmd!r}; known: {', '.join(['ping', *self._handlers])}"}
        try:
            return {"ok": True, cmd: handler(request)}
        except Exception as exc:
            log.warning("control: %s failed: %s: %s", cmd, type(exc).__name__, exc)
            return {"ok": False, "error": f"{cmd} failed: {type(exc).__name__}: {exc}"}


def _read_request(conn: socket.socket) -> bytes:
    """One request: up to the first newline, or to EOF; ValueError past ``MAX_REQUEST``."""
    data = b""
    while b"\n" not in data:
        chunk = conn.recv(MAX_REQUEST + 1 - len(data))
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_REQUEST and b"\n" not in data[:MAX_REQUEST + 1]:
            raise ValueError(f"request too large (more than {MAX_REQUEST} bytes)")
    return data.split(b"\n", 1)[0]


def _send(conn: socket.socket, reply: Mapping[str, Any]) -> None:
    conn.sendall(json.dumps(reply, default=str, separators=(",", ":")).encode("utf-8") + b"\n")


# -- the client ------------------------------------------------------------------------------------
def query(path: Path | str, request: Mapping[str, Any], *, timeout: float = 2.0) -> dict[str, Any]:
    """Send one request, return the reply object. ``ControlUnavailable`` when nobody answers in
    ``timeout`` seconds (in all), or the answer is not a reply."""
    path = Path(path)
    deadline = time.monotonic() + timeout
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
            sock.sendall(json.dumps(dict(request)).encode("utf-8") + b"\n")
            sock.shutdown(socket.SHUT_WR)
            data = b""
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise socket.timeout()
                sock.settimeout(left)
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
                if len(data) > MAX_REPLY:
                    raise ControlUnavailable(f"{path}: the reply is larger than {MAX_REPLY} bytes")
        except FileNotFoundError:
            raise ControlUnavailable(f"no control socket at {path}: the daemon is not running") from None
        except ConnectionRefusedError:
            raise ControlUnavailable(f"nobody listens on {path}: left by a daemon that stopped") from None
        except PermissionError:
            raise ControlUnavailable(f"not permitted to use {path}: run as root or as a member of group "
                                     f"{SERVICE_GROUP}") from None
        except socket.timeout:
            raise ControlUnavailable(f"the daemon did not answer on {path} within {timeout:g} s") from None
        except OSError as exc:
            if exc.errno == errno.ENAMETOOLONG or "too long" in str(exc):
                raise ControlUnavailable(f"{path}: path too long for a socket") from None
            raise ControlUnavailable(f"{path}: {exc.strerror or exc}") from None
    finally:
        sock.close()
    try:
        reply = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ControlUnavailable(f"{path}: the reply is not JSON") from None
    if not isinstance(reply, dict):
        raise ControlUnavailable(f"{path}: the reply is not a JSON object")
    return reply


def status_or_reason(settings: Any, *, timeout: float = 2.0) -> dict[str, Any] | str:
    """The running daemon's status, or why there is none (one line)."""
    path = socket_path(settings.gateway.state_dir)
    try:
        reply = query(path, {"cmd": "status"}, timeout=timeout)
    except ControlUnavailable as exc:
        return str(exc)
    if not reply.get("ok") or not isinstance(reply.get("status"), dict):
        return f"the daemon on {path} answered with an error: {reply.get('error', 'no status')}"
    return reply["status"]


def query_status(settings: Any, timeout: float = 2.0) -> dict[str, Any] | None:
    """The running daemon's status dict, or None when no daemon answers."""
    found = status_or_reason(settings, timeout=timeout)
    return found if isinstance(found, dict) else None
