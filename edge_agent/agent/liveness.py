"""Is the agent alive? The rule behind its watchdog pings, and the status line systemd shows.

``Liveness(agent)`` answers True while all of these hold (``problem`` says which did not):

- every bus worker's loop went round recently: its ``heartbeat`` (monotonic time of the last
  loop) is at most ``stall_after_s(...)`` old. The loop wakes at least once a second between
  polls, so the only legitimate gap is one poll, plus the hand-off of its readings to the
  writer. The limit is therefore ``max(STALL_FLOOR_S, 2 x the longest a poll on that bus can
  legitimately take)``, where a poll can take its requests x attempts x (timeout + bus gap).
  The device interval plays no part: an idle worker still beats every second, and a dead
  device with many requests can overrun a short interval without anything being stuck. The
  30 s floor absorbs a Pi's SD card stalling a commit (``put`` blocks while the writer's queue
  is full) and a command write holding the bus lock; a hung poll is caught within the limit
  plus ``WatchdogSec``, and a healthy agent with a dead meter is never restarted for it.
- the buffer writer's thread is alive (it survives any exception, so a dead one is a bug);
- the uplink's drain thread is alive (alive with the broker down too: it waits to connect).

``StatusLine(agent)`` builds the ``STATUS=`` text: devices and buses, the uplink (connected,
or the last error), and the backlog from ``Buffer.stats()``. The backlog costs ~0.4 s per
million unsent rows, so it is re-read at most every ``BACKLOG_EVERY_S`` and at least
``BACKLOG_DUTY`` times its last duration apart; in between the last figures are shown.
The text is scrubbed like a log line.

Both read the writer's and the uplink's ``_thread``: those classes have no public "alive".
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Iterable

from ..privacy.pii_scan import scrub
from ..units import format_duration, format_size

__all__ = ["Liveness", "StatusLine", "stall_after_s", "poll_budget_s", "STALL_FLOOR_S"]

STALL_FLOOR_S = 30.0
BACKLOG_EVERY_S = 10.0
BACKLOG_DUTY = 20.0


def poll_budget_s(device: Any, reader: Any, bus: Any, driver: Any = None) -> float:
    """The longest one poll of ``device`` may take without anything being wrong: every request
    unanswered, each attempt waiting its whole timeout. Requests are the reader's Modbus plan,
    or for other readers the driver's outputs (a generous count: one request each)."""
    timeout = device.timeout_s if device.timeout_s is not None else bus.timeout_s
    plan = getattr(reader, "plan", None)
    requests = len(plan) if plan else max(1, len(getattr(driver, "outputs", ()) or ()))
    return requests * (max(0, device.retries) + 1) * (timeout + bus.gap_s)


def stall_after_s(budgets: Iterable[float], floor_s: float = STALL_FLOOR_S) -> float:
    """How old a worker's heartbeat may be before the worker counts as stalled."""
    return max([floor_s, *(2 * b for b in budgets)])


def _thread_alive(owner: Any) -> bool:
    thread = getattr(owner, "_thread", None)
    return isinstance(thread, threading.Thread) and thread.is_alive()


class Liveness:
    """The watchdog's ``is_alive``. ``limits`` maps a bus name to its stall limit (seconds);
    a worker not in it gets ``floor_s``. ``problem`` is None while alive, else the reason."""

    def __init__(self, agent: Any, limits: dict[str, float] | None = None, *, floor_s: float = STALL_FLOOR_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._agent = agent
        self._limits = dict(limits or {})
        self._floor = floor_s
        self._clock = clock
        self.problem: str | None = None

    @classmethod
    def for_agent(cls, agent: Any, *, floor_s: float = STALL_FLOOR_S,
                  clock: Callable[[], float] = time.monotonic) -> "Liveness":
        """Limits from the agent's settings and readers (module docstring)."""
        from ..field.registry import get_driver

        settings = agent.settings
        limits: dict[str, float] = {}
        for worker in agent.workers:
            bus = settings.bus(worker.bus)
            budgets = [poll_budget_s(d, agent.readers[d.name], bus, get_driver(d.driver)) for d in settings.devices
                       if d.bus == worker.bus and d.name in agent.readers]
            limits[worker.bus] = stall_after_s(budgets, floor_s)
        return cls(agent, limits, floor_s=floor_s, clock=clock)

    def __call__(self) -> bool:
        self.problem = self._check()
        return self.problem is None

    def _check(self) -> str | None:
        agent = self._agent
        now = self._clock()
        for worker in agent.workers:
            age = now - worker.heartbeat
            limit = self._limits.get(worker.bus, self._floor)
            if not worker.is_alive():
                return f"the poll loop of bus {worker.bus} has ended"
            if age > limit:
                return f"the poll loop of bus {worker.bus} is stuck ({age:.0f} s without a round, limit {limit:.0f} s)"
        if not _thread_alive(agent.writer):
            return "the buffer writer thread is not running"
        if not _thread_alive(agent.uplink):
            return "the uplink drain thread is not running"
        return None


class StatusLine:
    """The ``STATUS=`` text for one agent; ``liveness`` adds its problem in front."""

    def __init__(self, agent: Any, liveness: Liveness | None = None, *,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self._agent = agent
        self._liveness = liveness
        self._clock = clock
        self._wall = wall
        self._backlog = "backlog unknown"
        self._backlog_due = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> str:
        agent = self._agent
        parts = [f"polling {len(agent.readers)} device(s) on {len(agent.workers)} bus(es)", self._uplink(), self._read_backlog()]
        problem = self._liveness.problem if self._liveness is not None else None
        if problem:
            parts.insert(0, f"STALLED: {problem}")
        return scrub("; ".join(parts))

    def _uplink(self) -> str:
        uplink = self._agent.uplink
        if uplink is None:
            return "uplink not started"
        stats = uplink.stats()
        if stats.connected:
            return f"uplink connected to {uplink.address}"
        why = f" ({stats.last_error})" if stats.last_error else ""
        return f"uplink disconnected from {uplink.address}{why}"

    def _read_backlog(self) -> str:
        with self._lock:
            if self._clock() < self._backlog_due:
                return self._backlog
            began = self._clock()
            try:
                stats = self._agent.buffer.stats()
            except Exception as exc:  # closed during a restart, or unreadable: say so, keep going
                self._backlog = f"backlog unknown ({type(exc).__name__})"
            else:
                oldest = ("" if stats.oldest_pending_ts is None else
                          f", oldest {format_duration(max(0.0, self._wall() - stats.oldest_pending_ts / 1000))}")
                lanes = " ".join(f"{k} {v}" for k, v in stats.pending_by_prio.items() if v)
                self._backlog = (f"backlog {stats.pending} unsent ({format_size(stats.pending_bytes)}{oldest})"
                                 + (f" [{lanes}]" if lanes and stats.pending else ""))
            took = self._clock() - began
            self._backlog_due = self._clock() + max(BACKLOG_EVERY_S, BACKLOG_DUTY * took)
            return self._backlog
