"""The clock: the kernel's answer through adjtimex(2) (whatever this machine says), the cached
watch with a fake for the unsynchronised case, the agent marking what it buffers while the
clock is unsynchronised, and ids that follow buffering order when the clock jumps back."""

from __future__ import annotations

import time
from itertools import count
from pathlib import Path

import pytest
import yaml

import edge_agent.clock as clock_module
from edge_agent.buffer.stats import read_rows
from edge_agent.clock import STA_UNSYNC, TIME_ERROR, ClockState, ClockWatch, clock_state, read_adjtimex
from edge_agent.config.schema import load_settings
from edge_agent.agent.daemon import Agent
from edge_agent.model import Event, Priority, Reading
from edge_agent.field.poll import DeviceReader
from edge_agent.field.readers import open_link
from edge_agent.field.registry import get_driver
from support.broker import free_port
from support.keys import init_keys
from support.modbus_server import ModbusTestServer

T0 = 1732380000000

SYNCED = ClockState(True, "fake", "synchronised")
UNSYNCED = ClockState(False, "fake", "not synchronised")
UNKNOWN = ClockState(None, "none", "unknown")


# -- the kernel's answer ---------------------------------------------------------------------------
def test_adjtimex_reads_this_machines_clock_state() -> None:
    rc, tx = read_adjtimex()
    # the struct layout is right: the kernel's time is ours, its tick is a plausible length
    assert abs(tx.time.tv_sec - time.time()) < 5
    assert 0 < tx.tick <= 1_000_000 and 0 <= rc <= 5
    state = clock_state()
    assert state.source == "adjtimex"
    assert state.synced is (not tx.status & STA_UNSYNC and rc != TIME_ERROR)
    assert ("not synchronised" in state.detail) is (state.synced is False)
    assert "STA_UNSYNC" in state.detail


def test_when_adjtimex_is_denied_the_timesyncd_flag_or_unknown_answers(tmp_path: Path, monkeypatch) -> None:
    """systemd's ProtectClock= denies adjtimex even for reading: the state falls back."""
    monkeypatch.setattr(clock_module, "_from_adjtimex", lambda: "adjtimex failed: Operation not permitted")
    flag = tmp_path / "synchronized"
    monkeypatch.setattr(clock_module, "TIMESYNCD_FLAG", flag)
    state = clock_state()
    assert state.synced is None and state.source == "none" and "Operation not permitted" in state.detail
    flag.touch()
    assert clock_state() == ClockState(True, "timesyncd", clock_state().detail)


# -- the cached watch ---------------------------------------------------------------------------------
def test_the_watch_caches_and_counts_unknown_as_synced() -> None:
    answers = iter([UNSYNCED, UNSYNCED, SYNCED, UNKNOWN])
    probes = count()
    now = [100.0]

    def probe() -> ClockState:
        next(probes)
        return next(answers)

    watch = ClockWatch(5.0, probe=probe, monotonic=lambda: now[0])
    assert watch.synced is False and watch.state is UNSYNCED
    for _ in range(100):
        assert watch.synced is False
    assert next(probes) == 1  # one probe for all of them
    now[0] += 5.0
    assert watch.synced is False  # the second answer
    now[0] += 5.0
    assert watch.synced is True
    now[0] += 5.0
    assert watch.synced is True and watch.state.synced is None  # unknown: not marked


def test_a_failing_probe_is_unknown_not_an_exception() -> None:
    def probe() -> ClockState:
        raise OSError("no adjtimex")

    watch = ClockWatch(probe=probe)
    assert watch.synced is True and "no adjtimex" in watch.state.detail


# -- through the agent ------------------------------------------------------------------------------
def agent_settings(tmp_path: Path, modbus_port: int = 1):
    cfg = {
        "gateway": {"id": "gw-clk", "site": "clk-site", "state_dir": str(tmp_path / "state")},
        "mqtt": {"host": "127.0.0.1", "port": free_port(), "reconnect_min": "200ms", "reconnect_max": "1s"},
        "buffer": {"commit_interval": "20ms"},
        # the device is polled by the test, not by the agent (disabled), with the test's clock
        "buses": [{"name": "plant", "protocol": "modbus-tcp", "host": "127.0.0.1", "port": modbus_port,
                   "timeout": "1s"}],
        "devices": [{"name": "river-1", "bus": "plant", "driver": "qdy_level", "address": 1, "enabled": False}],
    }
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    init_keys(path)
    return load_settings(path)


class FlipWatch(ClockWatch):
    """A watch whose answer the test sets (the seam: ``Agent(clock=...)``)."""

    def __init__(self, state: ClockState) -> None:
        super().__init__(0.0, probe=lambda: self.now)
        self.now = state


def buffered(tmp_path: Path) -> list[tuple[int, str, dict]]:
    return read_rows(tmp_path / "state" / "buffer.db")


def test_the_agent_marks_what_it_buffers_while_the_clock_is_unsynced(tmp_path: Path) -> None:
    watch = FlipWatch(UNSYNCED)
    agent = Agent(agent_settings(tmp_path), clock=watch)
    agent.start()
    try:
        agent.intake.accept_readings([Reading("river-1", "level_m", 1.0, T0)])
        agent.intake.accept_events([Event("hub-1", "sos", Priority.CRITICAL, T0 + 1, {"band": "B-1"})])
        watch.now = SYNCED
        agent.intake.accept_readings([Reading("river-1", "level_m", 2.0, T0 + 2)])
        agent.intake.accept_events([Event("hub-1", "fall", Priority.CRITICAL, T0 + 3)])
        watch.now = UNKNOWN  # cannot tell: not marked
        agent.intake.accept_readings([Reading("river-1", "level_m", 3.0, T0 + 4)])
        assert agent.writer.flush(5)
        assert agent.intake.unsynced_items == 2 and agent.status()["clock"]["unsynced_items"] == 2
    finally:
        agent.stop()
    rows = buffered(tmp_path)
    assert [(body.get("clk"), body["ts"]) for _, _, body in rows] == [
        ("unsynced", T0), ("unsynced", T0 + 1), (None, T0 + 2), (None, T0 + 3), (None, T0 + 4)]
    assert rows[1][1] == "event" and rows[1][2]["type"] == "sos"


def test_ids_follow_buffering_order_when_the_clock_jumps_back(tmp_path: Path) -> None:
    """NTP steps the clock back an hour between two polls: the readings keep their stamps, and
    their ids still increase in the order they were buffered (never sorted by ts)."""
    hour = 3600.0
    stamps = iter([T0 / 1000, T0 / 1000 + 1, T0 / 1000 + 2, T0 / 1000 + 2 - hour, T0 / 1000 + 3 - hour,
                   T0 / 1000 + 3])
    with ModbusTestServer({1: {"holding": {0: [1, 3, 1, 2, 123]}}}).start() as modbus:
        settings = agent_settings(tmp_path, modbus.port)
        agent = Agent(settings, clock=FlipWatch(SYNCED))
        agent.start()
        link = open_link(settings.bus("plant"))
        try:
            reader = DeviceReader(settings.device("river-1"), get_driver("qdy_level"), link, clock=lambda: next(stamps))
            polled = []
            for _ in range(6):
                result = reader.poll()
                assert result.answered and not result.errors, result.errors
                polled.extend(r.ts for r in result.readings)
                agent.intake.accept_readings(result.readings)
            assert agent.writer.flush(5)
        finally:
            link.close()
            agent.stop()
    rows = buffered(tmp_path)
    ids, ts = [rid for rid, _, _ in rows], [body["ts"] for _, _, body in rows]
    assert ts == polled and len(ts) == 6  # one reading (level_m) per poll, stamps as taken
    assert ts[3] < ts[2] and ts != sorted(ts)  # the clock went back
    assert ids == sorted(ids) and len(set(ids)) == 6  # ids strictly increase in buffering order
    assert all(body.get("clk") is None for _, _, body in rows)  # synced: nothing marked


@pytest.mark.parametrize("state, marked", [(UNSYNCED, True), (SYNCED, False)])
def test_the_agent_asks_the_watch_per_batch(tmp_path: Path, state: ClockState, marked: bool) -> None:
    watch = FlipWatch(state)
    agent = Agent(agent_settings(tmp_path), clock=watch)
    agent.start()
    try:
        agent.intake.accept_readings([Reading("river-1", "level_m", float(i), T0 + i) for i in range(50)])
        assert agent.writer.flush(5)
    finally:
        agent.stop()
    assert {body.get("clk") for _, _, body in buffered(tmp_path)} == ({"unsynced"} if marked else {None})
