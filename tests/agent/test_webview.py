"""The agent's ``WebView`` (``agent/webview.py``): a real ``Agent`` (not started; its buffer opened)
fed through a real intake and privacy stage as the daemon will wire it; what it keeps of records
and events, the backlog samples, thresholds from the alarm rules, the audit log and its chain
from a real ledger, and every page rendered from it."""

from __future__ import annotations

import sqlite3
from datetime import date
from pathlib import Path
from typing import Iterator

import pytest

from edge_agent.agent.daemon import Agent
from edge_agent.agent.intake import Intake
from edge_agent.agent.webview import MAX_EVENTS, MAX_UNITS, SAMPLE_EVERY_S, AgentWebView
from edge_agent.clock import ClockState, ClockWatch
from edge_agent.commands.ledger import Ledger, ledger_path
from edge_agent.model import DataClass, Event, Priority, Reading, Record
from edge_agent.privacy.keys import KeyRing
from edge_agent.privacy.stage import Privacy
from edge_agent.rules import RateOfRise, Threshold
from edge_agent.settings import (BufferSettings, BusSettings, DeviceSettings, GatewaySettings, MqttSettings,
                                 PrivacySettings, Settings)
from edge_agent.web.pages import route
from support.residents import residents

T0 = 1732380000000
PEOPLE = residents(3, seed=1515)


def settings(tmp_path: Path) -> Settings:
    alarms = (Threshold("level_m", above=3.0, hysteresis=0.1, name="flood"), Threshold("level_m", below=0.2),
              RateOfRise("level_m", per_minute=0.2), Threshold("temp_C", above=40.0))
    return Settings(
        gateway=GatewaySettings("gw-w", "site-w", tmp_path / "state"),
        mqtt=MqttSettings(host="127.0.0.1"),
        buffer=BufferSettings(path=tmp_path / "state" / "buffer.db"),
        privacy=PrivacySettings(),
        buses=(BusSettings("mb", "modbus-tcp", host="127.0.0.1", port=2),
               BusSettings("gb", "json-lines", host="127.0.0.1", port=1)),
        devices=(DeviceSettings("river-1", "mb", "qdy_level", 1, 5.0, alarms=alarms),
                 DeviceSettings("gate-1", "gb", "gate_controller", None, 1.0)))


class Clock:
    def __init__(self) -> None:
        self.wall, self.mono = T0 / 1000, 100.0

    def now(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.mono


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    agent = Agent(settings(tmp_path))
    agent.buffer.open()
    for d in agent.settings.devices:
        agent.health.add(d.name, d.bus)
    try:
        yield agent
    finally:
        agent.buffer.close()


def wired(agent: Agent, clock: Clock) -> tuple[AgentWebView, Intake]:
    """The view, and an intake handing every batch to it and to the buffer, as the daemon will."""
    view = AgentWebView(agent, clock=clock.now, monotonic=clock.monotonic)
    privacy = Privacy(PrivacySettings(), KeyRing({1: bytes(range(32))}), today=date(2024, 11, 23))

    def put(items: list) -> None:
        view.record(items)
        agent.buffer.append(items)
    synced = ClockWatch(0.0, probe=lambda: ClockState(True, "fake", "synchronised"))
    return view, Intake(privacy, synced, put)


def test_the_view_keeps_each_units_last_record_the_newest_events_and_the_history(agent: Agent) -> None:
    clock = Clock()
    view, intake = wired(agent, clock)
    for i in range(5):
        intake.accept_readings([Reading("river-1", "level_m", 1.0 + i / 10, T0 + i * 1000),
                                Reading("river-1", "status", "ok", T0 + i * 1000)])
    lanes = [Reading("gate-1", "card_no", p.id_no, T0, data_class=DataClass.IDENTIFIER, sub=str(lane))
             for lane, p in enumerate(PEOPLE)]
    intake.accept_readings(lanes + [Reading("gate-1", "open_count", 7, T0)])
    intake.accept_events([Event("gate-1", "passage", Priority.NORMAL, T0 + i, {"plate": p.plate, "owner": p.name},
                                classes={"plate": DataClass.IDENTIFIER, "owner": DataClass.NAME})
                          for i, p in enumerate(PEOPLE)])
    clock.wall += 5
    [river] = view.last_records("river-1")
    assert river == {"dev": "river-1", "ts": T0 + 4000, "vals": {"level_m": 1.4, "status": "ok"}}
    gate = view.last_records("gate-1")
    assert ["sub" in r and r["sub"] for r in gate] == [False, "0", "1", "2"]  # its own record, then units by name
    assert all(r["vals"]["card_no"].startswith("p1:") for r in gate[1:])
    events = view.events(10)
    assert [e["ts"] for e in events] == [T0 + 2, T0 + 1, T0]  # newest first
    shown = repr(view.last_records("gate-1")) + repr(events)
    assert not [v for p in PEOPLE for v in (p.id_no, p.name, p.plate) if v in shown]
    assert view.points("river-1") == ["level_m"] and view.points("gate-1") == ["open_count"]
    assert [v for _, v in view.history("river-1", "level_m", 3600)] == [1.0, 1.4]  # one 10 s bucket: min, max
    assert view.last_records("nobody") == [] and view.history("nobody", "x", 3600) == []


def test_wire_bodies_are_taken_as_they_are_and_what_is_kept_is_bounded(agent: Agent) -> None:
    view = AgentWebView(agent)
    view.record([Record("hub-1", T0, {"battery_pct": 50}, sub=f"B-{i:05d}").to_wire() for i in range(MAX_UNITS + 5)])
    view.record([{"dev": "hub-1", "type": "sos", "prio": "critical", "ts": T0 + i, "data": {}}
                 for i in range(MAX_EVENTS + 5)])
    units = view.last_records("hub-1")
    assert len(units) == MAX_UNITS and units[0]["sub"] == "B-00005"  # the oldest units went first
    assert len(view.events(1000)) == MAX_EVENTS and view.events(1)[0]["ts"] == T0 + MAX_EVENTS + 4
    assert view.events(0) == []


def test_the_backlog_is_sampled_from_the_buffer_at_most_every_few_seconds(agent: Agent) -> None:
    clock = Clock()
    view, intake = wired(agent, clock)
    view.sample()
    intake.accept_readings([Reading("river-1", "level_m", 1.0, T0)])
    clock.wall += 1
    clock.mono += 1
    view.sample()  # too soon: not taken
    clock.wall += SAMPLE_EVERY_S
    clock.mono += SAMPLE_EVERY_S
    view.sample()
    assert [v for _, v in view.backlog_history(3600)] == [0, 1]
    agent.buffer.close()  # a buffer that cannot be read leaves a gap, never an exception
    clock.mono += SAMPLE_EVERY_S
    view.sample()
    assert len(view.backlog_history(86_400)) == 2


def test_thresholds_are_the_set_and_clear_levels_of_the_points_threshold_rules(agent: Agent) -> None:
    view = AgentWebView(agent)
    assert view.thresholds("river-1", "level_m") == [("flood > 3", 3.0), ("flood clears ≤ 2.9", 2.9),
                                                      ("level_m_below < 0.2", 0.2)]
    assert view.thresholds("river-1", "temp_C") == [("temp_C_above > 40", 40.0)]
    assert view.thresholds("gate-1", "level_m") == [] and view.thresholds("nobody", "level_m") == []


def test_the_audit_log_with_its_chain_state(agent: Agent) -> None:
    view = AgentWebView(agent)
    assert view.audit(10) == []  # no ledger yet
    path = ledger_path(agent.settings.gateway.state_dir)
    with Ledger(path) as ledger:
        ledger.audit("cli", actor="local:tech", outcome="done", detail="keys init")
        ledger.audit("command", actor="platform-1", cmd_id="c-1", op="device.write", target="gate-1",
                     outcome="rejected", code="not_writable", detail="point not writable")
        ledger.audit("command", actor="platform-1", cmd_id="c-2", op="agent.ping", outcome="done")
    rows = view.audit(2)
    assert [r["seq"] for r in rows] == [2, 3] and all(r["verified"] for r in rows)
    assert rows[0]["chain"] == "intact (3 rows)" and rows[0]["op"] == "device.write"
    conn = sqlite3.connect(path)
    conn.execute("UPDATE audit SET detail = 'nothing to see' WHERE seq = 2")
    conn.commit()
    conn.close()
    rows = view.audit(10)
    assert [r["verified"] for r in rows] == [True, False, True]
    assert rows[1]["problem"] == "row 2: its content does not match its hash (edited)"
    assert rows[0]["chain"].startswith("BROKEN: row 2:")
    text = route("/audit", {}, view).body.decode()
    assert "Hash chain: BROKEN: row 2" in text and "✗ row 2" in text
    path.write_bytes(b"not a database at all" * 100)
    for extra in ("-wal", "-shm"):
        path.with_name(path.name + extra).unlink(missing_ok=True)
    [row] = view.audit(10)
    assert "commands.db" in row["error"]


def test_every_page_renders_from_the_real_view(agent: Agent) -> None:
    clock = Clock()
    view, intake = wired(agent, clock)
    for i in range(30):
        intake.accept_readings([Reading("river-1", "level_m", 2.0 + i / 20, T0 + i * 10_000)])
    clock.wall += 300
    clock.mono += 300
    view.sample()
    status = view.status()
    assert status["gateway"] == "gw-w" and status["pending"] == 30 and status["source"] == "daemon"
    now = int(clock.wall * 1000)
    for path in ("/", "/devices", "/devices/river-1", "/devices/gate-1", "/events", "/audit", "/metrics",
                 "/plot/river-1/level_m.svg", "/plot/backlog.svg"):
        answer = route(path, {}, view, now_ms=now)
        assert answer is not None and answer.status == 200, path
    page = route("/devices/river-1", {}, view, now_ms=now).body.decode()
    assert '<polyline class="series"' in page and "flood &gt; 3" in page and "<code>3.45</code>" in page
    assert route("/devices/nobody", {}, view, now_ms=now) is None
