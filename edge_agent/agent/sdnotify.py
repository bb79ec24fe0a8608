"""sd_notify(3) over the socket itself: systemd's readiness, watchdog and status protocol.

Under ``Type=notify`` systemd passes ``$NOTIFY_SOCKET``: a path, or an abstract name written
``@name``. Each notification is one datagram of ``KEY=VALUE`` lines (``READY=1``,
``RELOADING=1``, ``STOPPING=1``, ``STATUS=...``, ``WATCHDOG=1``). Without ``$NOTIFY_SOCKET``
(the agent run by hand, or by a test) nothing is sent and ``notify`` returns False. No
dependency: libsystemd would be one more thing to install on a Pi for one ``sendto``.

``Watchdog`` is a thread that sends ``WATCHDOG=1`` every ``WATCHDOG_USEC / 2`` (systemd's own
advice: half the timeout), but only while ``is_alive()`` says the daemon's loops go round; a
stalled loop therefore stops the pings and systemd restarts the service after ``WatchdogSec``.
``STATUS=`` (what ``systemctl status`` shows) is asked for every round (every
``STATUS_EVERY_S`` without a watchdog) and sent when it changes, whether alive or not, so the
status of a stalled agent says why. It is asked after the ping is sent and the rounds keep
their pace, so a slow ``status()`` (it may read the buffer) never delays a ping by more than
itself; ``liveness.StatusLine`` keeps it cheap.
``WATCHDOG_PID``, when set to another process, means the watchdog is not ours: no pings.

A failed send is logged once at ERROR (under systemd a silent agent is restarted), repeats
at DEBUG, the recovery once at INFO.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Callable, Mapping

from ..field.health import FailureLog

__all__ = ["notify", "enabled", "watchdog_interval", "Watchdog"]

log = logging.getLogger("edge_agent.sdnotify")

SEND_TIMEOUT_S = 2.0  # a datagram to a busy systemd may block: never for longer than this
STATUS_EVERY_S = 10.0  # without a watchdog: how often STATUS is looked at
STATUS_MAX = 500  # characters; systemctl shows one line

_failures = FailureLog(log, "sd_notify")
_failures_lock = threading.Lock()


def _address(env: Mapping[str, str]) -> str | None:
    value = env.get("NOTIFY_SOCKET") or ""
    if value.startswith("@"):
        return "\0" + value[1:]  # an abstract socket name
    if value.startswith("/"):
        return value
    return None  # unset, or a kind we do not speak (vsock:); nothing to send to


def enabled(env: Mapping[str, str] | None = None) -> bool:
    """True when systemd listens for notifications (``$NOTIFY_SOCKET`` names a unix socket)."""
    return _address(os.environ if env is None else env) is not None


def notify(*lines: str, env: Mapping[str, str] | None = None) -> bool:
    """Send ``lines`` (``"READY=1"``, ``"STATUS=..."``) as one datagram; False when there is no
    ``$NOTIFY_SOCKET`` or the send failed (logged, never raised)."""
    address = _address(os.environ if env is None else env)
    if address is None or not lines:
        return False
    data = "\n".join(line.replace("\n", " ") for line in lines).encode("utf-8", "replace")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(SEND_TIMEOUT_S)
            sock.sendto(data, address)
    except OSError as exc:
        with _failures_lock:
            _failures.failed(f"cannot notify systemd at {address.lstrip(chr(0))!r}: {exc.strerror or exc}")
        return False
    with _failures_lock:
        _failures.recovered()
    return True


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds between pings (half of ``$WATCHDOG_USEC``), or None when no watchdog is ours."""
    env = os.environ if env is None else env
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if usec <= 0 or (pid and pid != str(os.getpid())):
        return None
    return usec / 2 / 1_000_000


class Watchdog:
    """``WATCHDOG=1`` every ``interval_s`` while ``is_alive()``; ``STATUS=`` when it changes.

    ``interval_s`` defaults to ``watchdog_interval()`` (read at construction); without a
    watchdog the thread only keeps the status fresh, every ``STATUS_EVERY_S``. ``start()`` does
    nothing without ``$NOTIFY_SOCKET``. ``tick()`` is one round, for tests.
    """

    def __init__(self, is_alive: Callable[[], bool], status: Callable[[], str] | None = None, *,
                 interval_s: float | None = None, env: Mapping[str, str] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._env = os.environ if env is None else env
        self._is_alive = is_alive
        self._status = status
        self.interval_s = interval_s if interval_s is not None else watchdog_interval(self._env)
        self._clock = clock
        self._sent_status: str | None = None
        self.pings = 0  # WATCHDOG=1 sent
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._dead_logged = False

    def start(self) -> "Watchdog":
        if self._thread is None and enabled(self._env):
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="sd-watchdog", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        period = self.interval_s if self.interval_s is not None else STATUS_EVERY_S
        next_at = self._clock()
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # the watchdog thread must outlive a bad status
                log.exception("sd_notify: the watchdog round failed")
            now = self._clock()
            next_at = max(now, next_at + period)  # keep the pace; never a burst after a slow round
            self._stop.wait(next_at - now)

    def tick(self) -> bool:
        """One round: the ping (when alive and a watchdog is ours), then the status when it
        changed. Returns whether the loops were alive."""
        try:
            alive = bool(self._is_alive())
            self._dead_logged = False
        except Exception as exc:  # a broken check is no proof of life
            if not self._dead_logged:
                log.error("sd_notify: the liveness check failed (%s); no watchdog pings", type(exc).__name__)
                self._dead_logged = True
            alive = False
        if alive and self.interval_s is not None and notify("WATCHDOG=1", env=self._env):
            self.pings += 1
        if self._status is not None:
            self.send_status(self._status())
        return alive

    def send_status(self, text: str) -> None:
        """``STATUS=text``, unless it is the one sent last."""
        text = " ".join(text.split())[:STATUS_MAX]
        if text != self._sent_status and notify(f"STATUS={text}", env=self._env):
            self._sent_status = text
