"""The daemon's ``Agent`` as the command ops see it: ``command_view`` shows its readers, asks the
right bus worker for a poll, and tells an absent uplink from a present one. A real ``Agent``
(not started: nothing opens) with stand-in workers and uplink at their seams; the end-to-end
runs (tests/system/test_commands.py) drive the same view through a real broker and devices."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge_agent import __version__
from edge_agent.agent.daemon import Agent
from edge_agent.commands.view import UplinkState
from edge_agent.settings import (BufferSettings, BusSettings, DeviceSettings, GatewaySettings, MqttSettings,
                                 PrivacySettings, Settings)


def settings(tmp_path: Path) -> Settings:
    return Settings(
        gateway=GatewaySettings("gw-t", "site-t", tmp_path / "state"),
        mqtt=MqttSettings(host="127.0.0.1"),
        buffer=BufferSettings(path=tmp_path / "state" / "buffer.db"),
        privacy=PrivacySettings(),
        buses=(BusSettings("gb", "json-lines", host="127.0.0.1", port=1),
               BusSettings("mb", "modbus-tcp", host="127.0.0.1", port=2)),
        devices=(DeviceSettings("gate-1", "gb", "gate_controller", None, 1.0),
                 DeviceSettings("boiler", "mb", "modbus_generic", 3, 5.0),
                 DeviceSettings("pump", "mb", "modbus_generic", 4, 5.0)),
    )


class Worker:
    def __init__(self, bus: str) -> None:
        self.bus = bus
        self.requested: list[str] = []

    def request_poll(self, device: str) -> None:
        self.requested.append(device)


class Uplink:
    connected = True

    def __init__(self) -> None:
        self.replays: list[tuple[str, list[dict], str]] = []

    def stats(self) -> Any:
        return type("S", (), {"reconnects": 3})()

    def publish_replay(self, kind: str, bodies: list[dict], cmd_id: str) -> bool:
        self.replays.append((kind, bodies, cmd_id))
        return True


def test_the_view_asks_the_devices_own_bus_worker_and_only_for_a_running_device(tmp_path: Path) -> None:
    agent = Agent(settings(tmp_path))
    view = agent.command_view()
    agent.workers[:] = [Worker("gb"), Worker("mb")]
    agent.readers.update({"gate-1": object(), "boiler": object()})  # pump: its reader never started
    assert view.request_poll("boiler") is True and view.request_poll("gate-1") is True
    assert [w.requested for w in agent.workers] == [["gate-1"], ["boiler"]]
    assert view.request_poll("pump") is False and [w.requested for w in agent.workers] == [["gate-1"], ["boiler"]]
    assert view.reader("boiler") is agent.readers["boiler"] and view.reader("pump") is None


def test_the_view_shows_the_uplink_once_there_is_one(tmp_path: Path) -> None:
    agent = Agent(settings(tmp_path))
    view = agent.command_view()  # built before start, as the command service is
    assert view.uplink() is None and view.publish_replay("telemetry", [{"id": 1}], "c-1") is False
    assert view.version == __version__ and view.started_ms == agent.started_ms and view.apply_config is None
    agent.uplink = Uplink()  # type: ignore[assignment]
    assert view.uplink() == UplinkState(connected=True, reconnects=3)
    assert view.publish_replay("telemetry", [{"id": 1}], "c-1") is True
    assert agent.uplink.replays == [("telemetry", [{"id": 1}], "c-1")]
