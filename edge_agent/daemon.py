"""Wires the pipeline and runs it until SIGTERM: buses -> pollers -> privacy -> buffer -> uplink.

Privacy is built first, in ``Agent.__init__``, before any file, device or broker is touched:
its key files are the one thing that may stop the agent at start (``KeyFileError``,
``SealError``), and every reading (``accept``) and event (``accept_events``) passes it before
it is queued for the buffer.

Start order follows the data: the buffer opens first (nothing polled may be lost), then the
uplink (it drains what a previous run left), then the bus workers. Stop order is the reverse,
so every reading already polled is committed before the process ends.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Callable, Iterable

from . import __version__
from .alarms import DeviceAlarms
from .buffer import Buffer
from .writer import BufferWriter
from .health import HealthBoard
from .model import Event, Reading
from .privacy import Privacy
from .readers import make_reader, open_link
from .registry import get_driver
from .scheduler import BusWorker, Schedule
from .settings import DeviceSettings, Settings
from .uplink import Uplink

__all__ = ["Agent", "run"]

log = logging.getLogger("edge_agent")

PRUNE_EVERY_S = 5.0  # sent rows past retention go within this (tail follows them until then)
FINAL_DRAIN_S = 3.0  # on stop, how long to keep publishing what the last polls buffered


class Agent:
    """The running gateway. ``start()`` returns once polling and the buffer are up."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.health = HealthBoard()
        self.privacy = Privacy.load(settings.privacy, overrides=settings.privacy_overrides)
        self.buffer = Buffer(settings.buffer.path, max_bytes=settings.buffer.max_bytes,
                             retain_sent_s=settings.buffer.retain_sent_s)
        self.uplink: Uplink | None = None
        self.writer: BufferWriter | None = None
        self.buses: dict[str, object] = {}  # bus name -> ModbusBus or ByteLink
        self.readers: dict[str, object] = {}  # device name -> its reader (write() for issue 6's commands)
        self.workers: list[BusWorker] = []
        self.started_ms = int(time.time() * 1000)

    def start(self) -> None:
        s = self.settings
        for warning in self.privacy.warnings:
            log.warning("privacy: %s", warning)
        self.buffer.open()
        self.uplink = Uplink(s.mqtt, s.gateway, self.buffer, version=__version__, started_at_ms=self.started_ms,
                             extra_state=self._extra_state)
        self.writer = BufferWriter(self.buffer, commit_interval_s=s.buffer.commit_interval_s,
                                   commit_max=s.buffer.commit_max, on_commit=lambda ids: self.uplink.wake())
        self.writer.start()
        self.uplink.start()
        for bus_settings in s.buses:
            devices = [d for d in s.devices if d.bus == bus_settings.name and d.enabled]
            if not devices:
                continue
            bus = open_link(bus_settings)
            self.buses[bus_settings.name] = bus
            schedules = []
            for d in devices:
                driver = get_driver(d.driver)
                self.readers[d.name] = make_reader(d, driver, bus)
                schedules.append(Schedule(d.name, self.readers[d.name], d.interval_s, alarms=self._alarms(d),
                                          stream=driver.streaming))
            self.workers.append(BusWorker(bus_settings.name, schedules, self.accept, self.health,
                                          events_sink=self.accept_events))
        for worker in self.workers:
            worker.start()
        log.info("edge-agent %s started: gateway %s, %d device(s) on %d bus(es), buffer %s",
                 __version__, s.gateway.id, sum(d.enabled for d in s.devices), len(self.workers), s.buffer.path)

    @staticmethod
    def _alarms(device: DeviceSettings) -> DeviceAlarms | None:
        """The device's alarms, built from its settings; None for a device that configures none of
        alarms, report and offline_after (it sends every reading and no online/offline events)."""
        if not device.watched:
            return None
        return DeviceAlarms(device.name, device.interval_s, device.alarms, device.report,
                            offline_after=device.offline_after or 3)

    def _extra_state(self) -> dict:
        """What the state message adds to the uplink's own figures: failed buffer commits."""
        return {"write_errors": self.writer.stats.failures if self.writer else 0}

    def accept(self, readings: list[Reading]) -> None:
        """Everything polled enters here: privacy first, then the buffer."""
        protected = self.privacy.apply_readings(readings)
        if protected and self.writer is not None:
            self.writer.put(protected)

    def accept_events(self, events: Iterable[Event]) -> None:
        """Every event (alarm, SOS, passage) enters here: privacy first, then the buffer."""
        protected = [self.privacy.apply_event(e) for e in events]
        if protected and self.writer is not None:
            self.writer.put(protected)

    def housekeeping(self) -> None:
        try:
            pruned = self.buffer.prune()
            if pruned:
                log.debug("buffer: pruned %d sent row(s) past retention", pruned)
        except Exception as exc:  # housekeeping must never stop the agent
            log.warning("buffer: pruning failed: %s", exc)

    def _final_drain(self) -> None:
        """While connected, publish what the last polls left, briefly: data otherwise waits for
        the next start. Bounded, so a slow broker never holds up a systemd stop."""
        deadline = time.monotonic() + FINAL_DRAIN_S
        self.uplink.wake()
        while self.uplink.connected and time.monotonic() < deadline:
            if self.buffer.stats().pending == 0:
                return
            time.sleep(0.05)

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
        for worker in self.workers:
            worker.join(timeout=10)
        if self.writer is not None:
            self.writer.stop()
        if self.uplink is not None:
            self._final_drain()
            self.uplink.stop()
        for bus in self.buses.values():
            bus.close()
        self.buffer.close()
        log.info("edge-agent stopped")


def run(settings: Settings, *, stop_event: threading.Event | None = None,
        on_started: Callable[[Agent], None] | None = None) -> int:
    """Run until SIGTERM/SIGINT (or ``stop_event``); returns the process exit code."""
    stop_event = stop_event or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop_event.set())
    agent = Agent(settings)
    agent.start()
    if on_started:
        on_started(agent)
    try:
        while not stop_event.wait(PRUNE_EVERY_S):
            agent.housekeeping()
    finally:
        agent.stop()
    return 0
