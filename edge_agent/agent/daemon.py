"""The running gateway (``Agent``), wiring the pipeline: buses -> pollers -> intake (privacy) -> buffer -> uplink.

Privacy is built first, in ``Agent.__init__``, before any file, device or broker is touched:
its key files are the one thing that may stop the agent at start (``KeyFileError``,
``SealError``), and every reading and event passes it, in the ``Intake`` the bus workers feed,
before it is queued for the buffer.

Start order follows the data: the command service first when ``commands`` has keys (its key
files are checked before anything opens), the buffer (nothing polled may be lost), then the
uplink (it drains what a previous run left; ``R/cmd`` goes to the service), then the bus
workers. Stop order is the reverse, so every reading already polled is committed before the
process ends, and no command acts on a device that is being closed.

``supervisor.run`` runs one ``Agent`` at a time and swaps it on ``config.apply``; systemd's
READY/RELOADING/watchdog are the supervisor's too.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable

from .. import __version__
from ..field.alarms import DeviceAlarms
from ..buffer.outbox import Buffer
from ..clock import ClockWatch
from ..commands.view import AgentView, ApplyConfig, UplinkState
from ..buffer.live import LiveOutbox
from ..buffer.writer import BufferWriter
from ..buffer.idfloor import ID_FLOOR_COPY
from .control import ControlError, ControlServer, socket_path
from .intake import Intake
from ..field.health import HealthBoard
from .procstat import RateMeter, cpu_seconds
from . import status as status_view
from ..privacy.stage import Privacy
from ..field.readers import make_reader, open_link
from ..field.registry import get_driver
from ..field.scheduler import BusWorker, Schedule
from ..settings import DeviceSettings, Settings
from ..uplink.drain import Uplink

__all__ = ["Agent"]

log = logging.getLogger("edge_agent")

FINAL_DRAIN_S = 3.0  # on stop, how long to keep publishing what the last polls buffered

BuildService = Callable[[Settings, AgentView], Any]  # -> the command service (commands.service.CommandService)


class Agent:
    """The running gateway. ``start()`` returns once polling and the buffer are up.

    Everything polled enters through ``intake`` (``agent/intake.py``), fed by the bus workers:
    marked ``clk_synced=False`` while ``clock`` (a cached ``ClockWatch``; the seam tests replace)
    says the system clock is not synchronised, then privacy, then the writer, whose buffer
    assigns ids in buffering order whatever the stamps say. ``control`` serves ``edge-agent
    status`` (``status.live``) on ``{state_dir}/control.sock``; started last, stopped first."""

    def __init__(self, settings: Settings, *, apply_config: ApplyConfig | None = None,
                 build_service: BuildService | None = None, clock: ClockWatch | None = None) -> None:
        self.settings = settings
        self._apply_config = apply_config
        self._build_service = build_service or _command_service
        self.commands: Any = None  # commands.CommandService when settings.commands has keys
        self.health = HealthBoard()
        self.privacy = Privacy.load(settings.privacy, overrides=settings.privacy_overrides)
        self.buffer = Buffer(settings.buffer.path, max_bytes=settings.buffer.max_bytes,
                             retain_sent_s=settings.buffer.retain_sent_s,
                             id_floor_copy=Path(settings.gateway.state_dir) / ID_FLOOR_COPY)
        self.uplink: Uplink | None = None
        self.writer: BufferWriter | None = None
        self.buses: dict[str, object] = {}  # bus name -> ModbusBus or ByteLink
        self.readers: dict[str, object] = {}  # device name -> its reader (its write() is the device's write path)
        self.workers: list[BusWorker] = []
        self.started_ms = int(time.time() * 1000)
        self.started_mono = time.monotonic()  # uptime: the wall clock may jump at NTP sync
        self.clock = clock or ClockWatch()  # is the system clock synchronised (cached)?
        self.intake: Intake | None = None  # clock mark and privacy, from the bus workers to the writer
        self.drain_meter = RateMeter(60.0)  # acked items/s over the last minute (status)
        self.cpu_meter = RateMeter(60.0)  # CPU seconds/s over the last minute (state, status)
        self.control: ControlServer | None = None
        self.web_view: Any = None  # agent/webview.AgentWebView when the config has a web section
        self.web: Any = None  # its server (web/server.py)

    def start(self) -> None:
        s = self.settings
        for warning in self.privacy.warnings:
            log.warning("privacy: %s", warning)
        if s.commands.enabled or s.commands.unsigned.get(s.mqtt.dialect):
            self.commands = self._build_service(s, self.command_view())
        self.buffer.open()
        # with the intake log on, rows are numbered when taken and may be published before their
        # group commit (buffer/live.py): the writer wakes the uplink at once (after mqtt.linger)
        self.writer = BufferWriter(self.buffer, commit_interval_s=s.buffer.commit_interval_s,
                                   commit_max=s.buffer.commit_max, on_commit=lambda ids: self.uplink.wake(),
                                   intake_log=s.buffer.intake_log, on_queued=lambda: self.uplink.wake_soon())
        outbox = LiveOutbox(self.buffer, self.writer) if s.buffer.intake_log else self.buffer
        self.uplink = Uplink(s.mqtt, s.gateway, outbox, version=__version__, started_at_ms=self.started_ms,
                             extra_state=self._extra_state, dialect=platform_dialect(s),
                             on_command=self.commands.submit if self.commands is not None else None)
        if self.commands is not None:
            self.commands.start(self.uplink.publish_result)
        self.writer.start()
        if s.web is not None:  # the technician's page: imported only when configured (web/, issue 15)
            from .webview import AgentWebView

            self.web_view = AgentWebView(self)
        self.intake = Intake(self.privacy, self.clock, self.writer.put,
                             observe=self.web_view.record if self.web_view is not None else None)
        for d in s.devices:  # counted (as unknown) from the first R/state on, before any poll
            if d.enabled:
                self.health.add(d.name, d.bus)
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
            self.workers.append(BusWorker(bus_settings.name, schedules, self.intake.accept_readings, self.health,
                                          events_sink=self.intake.accept_events))
        for worker in self.workers:
            worker.start()
        self._start_control()
        if self.web_view is not None:
            from ..web.server import start_web

            self.web = start_web(s, self.web_view)
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

    def command_view(self) -> AgentView:
        """What the command ops may use of this agent, and nothing more (``commands.view``)."""
        return AgentView(settings=self.settings, version=__version__, started_ms=self.started_ms,
                         reader=self.readers.get, request_poll=self._request_poll, backlog=self.buffer.stats,
                         uplink=self._uplink_state, publish_replay=self._publish_replay,
                         apply_config=self._apply_config)

    def _request_poll(self, device: str) -> bool:
        """Ask the device's bus worker to poll it at its next turn; False when nobody polls it."""
        bus = self.settings.device(device).bus
        for worker in self.workers:
            if worker.bus == bus and device in self.readers:
                worker.request_poll(device)
                return True
        return False

    def _uplink_state(self) -> UplinkState | None:
        uplink = self.uplink
        return None if uplink is None else UplinkState(uplink.connected, uplink.stats().reconnects)

    def _publish_replay(self, kind: str, bodies: list[dict[str, Any]], cmd_id: str) -> bool:
        uplink = self.uplink
        return uplink is not None and uplink.publish_replay(kind, bodies, cmd_id)

    def publish_result(self, answer: dict[str, Any]) -> None:
        """A command result this agent's service did not answer itself (the supervisor's, when a
        config.apply concludes); kept through an outage like any result."""
        if self.uplink is not None:
            self.uplink.publish_result(answer)

    def _extra_state(self) -> dict:
        """What the state message adds to the uplink's own figures: failed buffer commits,
        uptime, device counts by health, bad frames per device, CPU, RSS, disk free, clock
        (``status.health_figures``)."""
        return status_view.health_figures(self)

    def _start_control(self) -> None:
        """The control socket for ``edge-agent status``; without it status reads the buffer file."""
        self.control = ControlServer(socket_path(self.settings.gateway.state_dir), {"status": self.status},
                                     tick=self._tick)
        try:
            self.control.start()
        except ControlError as exc:
            log.warning("control: %s; 'edge-agent status' will read the buffer file instead", exc)
            self.control = None

    def _tick(self) -> None:
        """Every few seconds, on the control thread: the samples behind the drain and CPU rates."""
        if self.uplink is not None:
            self.drain_meter.sample(self.uplink.stats().acked_items)
        self.cpu_meter.sample(cpu_seconds())
        if self.web_view is not None:
            self.web_view.sample()

    def status(self, request: Any = None) -> dict:
        """What ``edge-agent status`` shows, as the running agent sees it (``status.live``)."""
        return status_view.live(self)

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
        if self.web is not None:
            self.web.stop()  # first: no page is read from a closing agent
            self.web = None
        if self.control is not None:
            self.control.stop()  # first: no status is read from a closing buffer
            self.control = None
        if self.commands is not None:
            self.commands.stop()
        for worker in self.workers:
            worker.stop()
        for worker in self.workers:
            worker.join(timeout=10)
        if self.writer is not None:
            self.writer.stop()
        if self.uplink is not None:
            self._final_drain()
            self.uplink.stop()
            connected = getattr(self.uplink.dialect, "connected", None)
            if connected is not None:  # ThingsBoard: what this run connected, for the next birth
                _remember_devices(Path(self.settings.gateway.state_dir), list(connected()))
        for bus in self.buses.values():
            bus.close()
        self.buffer.close()
        log.info("edge-agent stopped")


def platform_dialect(settings: Settings) -> Any:
    """The uplink's dialect for ``mqtt.dialect`` (None: the uplink's own, ``edge``). Imported only
    when chosen: Sparkplug's protobuf costs memory a gateway on the edge dialect should not pay."""
    state_dir = Path(settings.gateway.state_dir)
    if settings.mqtt.dialect == "thingsboard":
        from ..uplink.thingsboard import ThingsBoardDialect

        try:  # what earlier runs connected: those no longer configured are disconnected at birth
            previous = [str(d) for d in json.loads((state_dir / TB_DEVICES).read_text())]
        except (OSError, ValueError, TypeError):
            previous = []
        # until a clean stop writes what this run connected, a kill -9 must not forget either list
        _remember_devices(state_dir, sorted(set(previous) | {d.name for d in settings.devices if d.enabled}))
        return ThingsBoardDialect(settings, previous_devices=previous)
    if settings.mqtt.dialect == "sparkplug":
        from ..uplink.sparkplug import SparkplugDialect

        from ..field.registry import drivers

        return SparkplugDialect(settings, bdseq_path=state_dir / "sparkplug-bdseq", drivers=drivers())
    return None


TB_DEVICES = "thingsboard-devices.json"  # in state_dir: the ThingsBoard devices (and units) connected


def _remember_devices(state_dir: Path, names: list[str]) -> None:
    path = state_dir / TB_DEVICES
    try:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(names))
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("thingsboard: cannot record the connected devices in %s (%s)", path, exc)


def _command_service(settings: Settings, view: AgentView) -> Any:
    from ..commands.service import CommandService

    return CommandService.build(settings, view)
