"""The retained state message on ``R/state``: what it says and when it is published again.

Payload (docs/protocol.md, "State")::

    {"online": true, "gw": "gw-001", "version": "0.1.0", "started": 1732380000000,
     "backlog": {"count": 1200, "bytes": 96000, "oldest_ts": 1732379000000,
                 "by_prio": {"critical": 0, "high": 0, "normal": 1200}},
     "evicted": {"critical": 0, "high": 0, "normal": 0},
     "uptime_s": 3600.2, "write_errors": 0, "devices": {"online": 3, "offline": 1, "unknown": 0},
     "bad_frames": {"hub-1": 46}, "cpu_s": 41.7, "cpu_pct": 1.2, "rss_bytes": 31457280, "disk_free_bytes": 5368709120,
     "clock": "synced"}

``backlog`` and ``evicted`` come from ``Buffer.stats()`` (``null`` until the buffer could be
read once); any further keys (the agent's: ``status.health_figures``) from the optional
``extra`` callable, which cannot override the keys above. The uplink publishes it, retained,
QoS 1: as the birth on every connect, every ``interval_s`` after the last one, and at once when
the evicted counts change (the buffer is full and is dropping unsent rows: the platform should
know now) or an ``urgent`` extra key does (default ``devices``: a device went offline or came
back).

``StateReporter`` runs one thread of its own: ``Buffer.stats()`` costs ~0.4 s per million
unsent rows, which must not stall the drain. It re-reads the stats every ``CHECK_S`` seconds,
or less often when they are slow (at most ``1/STATS_DUTY`` of the time is spent reading
them), so "at once" means within a few seconds. The birth uses the latest snapshot, so the
network thread that sends it never reads the buffer. The lock is never held across a publish.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol

__all__ = ["StateReporter", "Snapshot", "state_payload", "PRIOS"]

log = logging.getLogger("edge_agent.uplink")

PRIOS = ("critical", "high", "normal")
URGENT_KEYS = ("devices",)  # extra keys whose change publishes the state at once
CHECK_S = 2.0  # how often the stats are re-read to notice evictions (at most)
STATS_DUTY = 20.0  # ... and at least this many times the last read's duration apart


class StatsLike(Protocol):
    """The fields of ``BufferStats`` the state message carries."""

    @property
    def pending(self) -> int: ...
    @property
    def pending_bytes(self) -> int: ...
    @property
    def oldest_pending_ts(self) -> int | None: ...
    @property
    def pending_by_prio(self) -> Mapping[str, int]: ...
    @property
    def evicted(self) -> Mapping[str, int]: ...


@dataclass(frozen=True)
class Snapshot:
    backlog: dict[str, Any] | None  # None until the buffer could be read
    evicted: dict[str, int] | None
    extra: dict[str, Any]


def _backlog(stats: StatsLike) -> dict[str, Any]:
    return {"count": stats.pending, "bytes": stats.pending_bytes, "oldest_ts": stats.oldest_pending_ts,
            "by_prio": {p: int(stats.pending_by_prio.get(p, 0)) for p in PRIOS}}


def state_payload(gw: str, version: str, started_ms: int, snap: Snapshot) -> dict[str, Any]:
    """The online state; ``extra`` keys come last and never replace the ones before them."""
    state: dict[str, Any] = {"online": True, "gw": gw, "version": version, "started": started_ms,
                             "backlog": snap.backlog, "evicted": snap.evicted}
    for key, value in snap.extra.items():
        state.setdefault(key, value)
    return state


class StateReporter:
    """Keeps a fresh ``Snapshot`` and asks ``publish`` to send the state when it is due.

    ``publish(state_dict) -> bool`` is the uplink's: True when the message was handed to the
    client (connected), False otherwise (the reporter tries again at its next check).
    """

    def __init__(self, *, gw: str, version: str, started_ms: int, stats: Callable[[], StatsLike],
                 publish: Callable[[dict[str, Any]], bool], interval_s: float = 60.0,
                 extra: Callable[[], Mapping[str, Any]] | None = None,
                 urgent: tuple[str, ...] = URGENT_KEYS) -> None:
        self._gw, self._version, self._started_ms = gw, version, started_ms
        self._stats = stats
        self._publish = publish
        self._interval = max(0.05, interval_s)
        self._extra = extra
        self._urgent = urgent
        self._lock = threading.Lock()
        self._snapshot = Snapshot(None, None, {})
        self._published_evicted: dict[str, int] | None = None  # in the last state handed out
        self._published_urgent: dict[str, Any] = {}  # the urgent extra keys in it
        self._due = 0.0  # monotonic time of the next periodic publish
        self._handouts = 0  # states handed out (births and ours)
        self._check_s = CHECK_S
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._stats_failing = self._extra_failing = False

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="uplink-state", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Once the thread has ended no online state is published again (the offline one may follow)."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("uplink: the state thread did not stop within %.1f s", timeout)
            self._thread = None

    # -- snapshots ------------------------------------------------------------------------
    def refresh(self) -> Snapshot:
        """Read the buffer's stats and the extra state; a failure keeps the previous values."""
        began = time.monotonic()
        with self._lock:
            backlog, evicted, extra = self._snapshot.backlog, self._snapshot.evicted, self._snapshot.extra
        try:
            stats = self._stats()
            backlog = _backlog(stats)
            evicted = {p: int(stats.evicted.get(p, 0)) for p in PRIOS}
            if self._stats_failing:
                log.info("uplink: reading the buffer's stats for the state message works again")
            self._stats_failing = False
        except Exception as exc:
            log.log(logging.DEBUG if self._stats_failing else logging.WARNING,
                    "uplink: cannot read the buffer's stats for the state message (%s: %s); "
                    "keeping the last ones", type(exc).__name__, exc)
            self._stats_failing = True
        took = time.monotonic() - began
        if self._extra is not None:
            try:
                extra = dict(self._extra())
                self._extra_failing = False
            except Exception as exc:
                log.log(logging.DEBUG if self._extra_failing else logging.WARNING,
                        "uplink: the extra state failed (%s: %s); keeping the last one", type(exc).__name__, exc)
                self._extra_failing = True
        snap = Snapshot(backlog, evicted, extra)
        with self._lock:
            self._snapshot = snap
            self._check_s = max(CHECK_S, STATS_DUTY * took)
        return snap

    def birth(self) -> dict[str, Any]:
        """The state to publish on connect (the latest snapshot), recorded as published."""
        with self._lock:
            return self._handed_out_locked()

    def _handed_out_locked(self) -> dict[str, Any]:
        snap = self._snapshot
        self._handouts += 1
        self._published_evicted = snap.evicted
        self._published_urgent = self._urgent_of(snap)
        self._due = time.monotonic() + self._interval
        return state_payload(self._gw, self._version, self._started_ms, snap)

    # -- the thread ---------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._check()
            except Exception:  # never let the state thread die
                log.exception("uplink: the state check failed")
            with self._lock:
                wait = min(self._check_s, max(0.0, self._due - time.monotonic()))
            self._wake.wait(max(0.01, wait))
            self._wake.clear()

    def _urgent_of(self, snap: Snapshot) -> dict[str, Any]:
        return {key: snap.extra.get(key) for key in self._urgent}

    def _check(self) -> None:
        snap = self.refresh()
        with self._lock:
            evictions = snap.evicted != self._published_evicted
            changed = self._urgent_of(snap) != self._published_urgent
            if not (evictions or changed or time.monotonic() >= self._due) or self._stopping.is_set():
                return
            before = (self._published_evicted, self._published_urgent, self._due)
            handouts = self._handouts
            state = self._handed_out_locked()
        if self._publish(state):
            if evictions or changed:
                log.debug("uplink: evicted counts %s, %s: state published", snap.evicted, self._urgent_of(snap))
            return
        with self._lock:  # not connected: the next birth carries it, unless the next check can
            if self._handouts == handouts + 1:
                self._published_evicted, self._published_urgent, self._due = before
