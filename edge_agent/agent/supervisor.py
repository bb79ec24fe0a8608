"""Supervises one ``Agent`` at a time until SIGTERM (``run``): the process's main loop.

A ``config.apply`` reaches the supervisor one way only: the command worker checks and writes the
new config and posts a ``Restart`` to ``handover`` (``agent/handover.py``); the supervisor takes it
on its own thread, stops the running agent (its buffer committed and closed: nothing is lost)
and starts one with the new settings. When the new uplink has not connected within
``commands.rollback_after`` (or the new agent fails to start), the previous config file is put
back and an agent runs with it again. The command's result is published once, through the agent
that runs at the end, and audited (``handover.conclude``): ``ok`` once the new uplink is
connected, or ``rolled_back``. The file work and
the pending-apply record that makes a crash mid-apply roll back at the next start are
``config_apply``'s.

Under systemd (``Type=notify``, ``sdnotify``) the supervisor says ``READY=1`` once an agent is
up (buffer open, uplink started, buses polling), ``RELOADING=1`` before a ``config.apply``
restart and ``READY=1`` again after it, ``STOPPING=1`` on stop, and keeps ``STATUS=`` (devices,
uplink, backlog) fresh; its watchdog thread sends ``WATCHDOG=1`` only while the agent's loops
go round (``liveness``: bus workers' heartbeats, the writer, the uplink's drain).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from functools import partial
from typing import Any, Callable

from ..config import apply as config_apply
from ..settings import Settings
from . import sdnotify
from .daemon import Agent, BuildService
from .handover import ApplyHandover, Restart
from .liveness import STALL_FLOOR_S, Liveness, StatusLine

__all__ = ["Supervisor", "run"]

log = logging.getLogger("edge_agent")

PRUNE_EVERY_S = 5.0  # sent rows past retention go within this (tail follows them until then)
TRIAL_POLL_S = 0.05  # during a config.apply trial: how often the new uplink is looked at
IDLE_POLL_S = 0.25  # otherwise: how soon an apply request is taken up
RELOAD_GRACE_S = 90.0  # a config.apply restart (stop up to ~25 s, then start) counts as alive this long


def run(settings: Settings, *, stop_event: threading.Event | None = None,
        on_started: Callable[[Agent], None] | None = None, build_service: BuildService | None = None) -> int:
    """Run until SIGTERM/SIGINT (or ``stop_event``); returns the process exit code."""
    stop_event = stop_event or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop_event.set())
    return Supervisor(settings, stop_event, on_started=on_started, build_service=build_service).run()


class Supervisor:
    """One ``Agent`` at a time; a ``config.apply`` swaps it for one with the new settings, and a
    swap whose uplink does not connect in time is undone (module docstring)."""

    def __init__(self, settings: Settings, stop_event: threading.Event, *,
                 on_started: Callable[[Agent], None] | None = None, build_service: BuildService | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.stop_event = stop_event
        self.on_started = on_started
        self.build_service = build_service
        self.clock = clock
        self.agent: Agent | None = None
        self.handover = ApplyHandover(settings.gateway.state_dir, clock)  # config.apply, from the command worker
        self._trial: config_apply.PendingApply | None = None
        self._trial_started = 0.0  # monotonic
        self._trial_until = 0.0
        # systemd (sdnotify): the current agent's liveness and status line, read by the watchdog
        # thread; while a config.apply restarts the agent, the time it began and why
        self._watch: tuple[Liveness, StatusLine] | None = None
        self._reloading: tuple[float, str] | None = None
        self._stalled = False
        self.watchdog = sdnotify.Watchdog(self._alive, self._status)

    # -- run's thread ----------------------------------------------------------------------------
    def run(self) -> int:
        resumed = self._resume()
        self._start(self.settings)
        if resumed is not None:
            self._finish(resumed, ok=False, code="rolled_back",
                         message="the agent stopped before the new config was confirmed; the previous config "
                                 "is running again")
        next_housekeeping = time.monotonic() + PRUNE_EVERY_S
        self.watchdog.start()
        try:
            while not self.stop_event.wait(TRIAL_POLL_S if self._trial is not None else IDLE_POLL_S):
                restart = self.handover.take()
                if restart is not None:
                    self._swap(restart)
                if self._trial is not None:
                    self._watch_trial()
                if time.monotonic() >= next_housekeeping and self.agent is not None:
                    self.agent.housekeeping()
                    next_housekeeping = time.monotonic() + PRUNE_EVERY_S
        finally:
            self.watchdog.stop()  # first: no ping or status of a running agent may follow STOPPING=1
            sdnotify.notify("STOPPING=1", "STATUS=stopping: committing what was polled")
            self._stop_agent()
        return 0

    def _resume(self) -> config_apply.PendingApply | None:
        """A record left by an apply that never finished: its new config is not trusted; the
        previous file goes back (when the new one is in place) before anything starts."""
        pending = config_apply.read_pending(self.settings.gateway.state_dir)
        if pending is None:
            return None
        log.warning("config.apply %s did not finish before the agent stopped; rolling back", pending.cmd_id)
        self.handover.hold(pending.cmd_id)
        if config_apply.restore(pending) and pending.config == self.settings.source:
            from ..config.schema import load_settings

            self.settings = load_settings(pending.config)
        return pending

    def _start(self, settings: Settings) -> None:
        """An agent on ``settings``, started; on failure nothing of it stays open."""
        agent = Agent(settings, apply_config=partial(self.handover.submit, current=settings),
                      build_service=self.build_service)
        try:
            agent.start()
        except BaseException:
            _quietly(agent.stop)
            raise
        self.agent, self.settings = agent, settings
        self._ready(agent)
        if self.on_started:
            self.on_started(agent)

    # -- systemd: READY, RELOADING, the watchdog's liveness and status (sdnotify, liveness) ----------
    def _ready(self, agent: Agent) -> None:
        """The agent is up (buffer open, uplink started, buses polling): READY=1 (again after a
        config.apply restart), and the watchdog follows this agent from now on."""
        try:
            liveness = Liveness.for_agent(agent)
        except Exception as exc:  # never fail a started agent over its watchdog's limits
            log.warning("watchdog: cannot work out the poll limits (%s: %s); using %.0f s for every bus",
                        type(exc).__name__, exc, STALL_FLOOR_S)
            liveness = Liveness(agent)
        status = StatusLine(agent, liveness)
        self._watch, self._reloading = (liveness, status), None
        if sdnotify.enabled():
            sdnotify.notify("READY=1", f"STATUS={status()}")

    def _reload(self, why: str) -> None:
        """RELOADING=1 before the running agent stops for a restart; READY=1 follows."""
        self._reloading = (time.monotonic(), why)
        sdnotify.notify("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}",
                        f"STATUS={why}")

    def _alive(self) -> bool:
        """The watchdog's question (liveness.py has the rule). During a restart the old agent's
        threads are going: alive while the restart is younger than RELOAD_GRACE_S."""
        reloading, watch = self._reloading, self._watch
        if reloading is not None:
            return time.monotonic() - reloading[0] < RELOAD_GRACE_S
        if watch is None:
            return False
        alive = watch[0]()
        if not alive and not self._stalled:
            log.error("watchdog: %s; pings to systemd stop, so it restarts the agent after WatchdogSec",
                      watch[0].problem)
        elif alive and self._stalled:
            log.info("watchdog: the agent's loops go round again; pings resume")
        self._stalled = not alive
        return alive

    def _status(self) -> str:
        reloading, watch = self._reloading, self._watch
        if reloading is not None:
            return reloading[1]
        return watch[1]() if watch is not None else "starting"

    def _stop_agent(self) -> None:
        agent, self.agent = self.agent, None
        if agent is not None:
            agent.stop()

    def _swap(self, restart: Restart) -> None:
        pending, new = restart.pending, restart.settings
        log.info("config.apply %s: restarting with the new config (rollback after %.0f s without the uplink)",
                 pending.cmd_id, pending.rollback_after_s)
        self._trial, self._trial_started = pending, time.monotonic()
        self._trial_until = self._trial_started + pending.rollback_after_s
        self._reload(f"restarting with a new config (config.apply {pending.cmd_id})")
        self._stop_agent()
        try:
            self._start(new)
        except Exception as exc:
            log.error("config.apply %s: the new config does not start: %s", pending.cmd_id, exc)
            self._rollback(f"the new config failed to start ({_clip(exc)})")

    def _watch_trial(self) -> None:
        pending = self._trial
        assert pending is not None
        uplink = self.agent.uplink if self.agent is not None else None
        if uplink is not None and uplink.connected:
            took_ms = int((time.monotonic() - self._trial_started) * 1000)
            log.info("config.apply %s: applied; the uplink connected %d ms after the restart", pending.cmd_id, took_ms)
            self._finish(pending, ok=True, data={**config_apply.describe(pending), "connected_after_ms": took_ms})
        elif time.monotonic() >= self._trial_until:
            log.error("config.apply %s: the uplink did not connect within %.0f s; rolling back",
                      pending.cmd_id, pending.rollback_after_s)
            self._rollback(f"the uplink did not connect within {pending.rollback_after_s:g} s with the new config")

    def _rollback(self, why: str) -> None:
        """The previous file back, an agent on it, and the result saying so."""
        from ..config.schema import load_settings

        pending = self._trial
        assert pending is not None
        self._reload(f"rolling back config.apply {pending.cmd_id}: {why}")
        self._stop_agent()
        config_apply.restore(pending)
        self._start(load_settings(pending.config))  # it ran before the apply; a failure here ends the run
        self._finish(pending, ok=False, code="rolled_back", message=f"{why}; the previous config is running again",
                     data={"restored": pending.backup.name})

    def _finish(self, pending: config_apply.PendingApply, *, ok: bool, code: str | None = None,
                message: str = "", data: dict[str, Any] | None = None) -> None:
        """The apply is over: its one result goes out through the agent that runs now, audited
        (``handover.conclude``)."""
        self._trial = None
        publish = self.agent.publish_result if self.agent is not None else None
        self.handover.conclude(pending, publish, ok=ok, code=code, message=message, data=data)


def _quietly(action: Callable[[], None]) -> None:
    try:
        action()
    except Exception as exc:
        log.debug("cleanup after a failed start: %s: %s", type(exc).__name__, exc)


def _clip(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[:limit - 1] + "…"
