"""The command service and its ops with fakes at every seam: a scripted verifier (the
``command_verify`` interface), an in-memory audit log (the ``ledger`` interface), a stand-in
agent seen through ``AgentView`` (readers, polls, uplink; the Modbus device's reader is the real
``poll.DeviceReader`` over a fake bus) and, for replays, the real buffer file.

What these prove: authorisation refuses every case the config does not allow before anything
reaches a device; each accepted command is audited before it acts (and not at all when the audit
log fails); device errors map to ``timeout``/``device_error``/``bad_request`` with messages that
carry no value; a Modbus write is read back; ``buffer.replay`` republishes exactly its range,
rate-limited; the queue that paho's thread feeds is bounded; ``handle`` never raises.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from edge_agent.buffer.outbox import Buffer
from edge_agent.commands.ops import CommandOps, parse_range
from edge_agent.commands.types import Command, CommandRejected
from edge_agent.commands.service import QUEUE_MAX, CommandService
from edge_agent.commands.view import AgentView, UplinkState
from edge_agent.errors import DeviceFault, LinkError, NoResponse
from edge_agent.uplink.dialect import Inbound
from edge_agent.field.poll import DeviceReader
from edge_agent.field.registry import get_driver
from edge_agent.model import DType, Event, Point, Priority, Record, Reg
from edge_agent.settings import (BufferSettings, BusSettings, CommandSettings, DeviceSettings, GatewaySettings,
                                 MqttSettings, PrivacySettings, Settings, TrustedKey, WriteRule)

NOW = 1_732_380_000.0
PLATE = "桂A12345"
SETPOINT = Point("setpoint_C", Reg.HOLDING, 10, DType.INT16, scale=0.1, writable=True)
RELAY = Point("relay", Reg.COIL, 0, DType.BOOL, writable=True)
LEVEL = Point("level_m", Reg.HOLDING, 4, DType.INT16, scale=0.001)


def make_settings(tmp_path: Path, *, ops: tuple[str, ...] | None = None, replay_rate: int = 2000,
                  batch_max: int = 500) -> Settings:
    commands = CommandSettings(keys=(TrustedKey("k-test", tmp_path / "platform.pub"),), replay_rate=replay_rate,
                               **({"ops": ops} if ops is not None else {}))
    return Settings(
        gateway=GatewaySettings("gw-t", "site-t", tmp_path / "state"),
        mqtt=MqttSettings(host="127.0.0.1", batch_max=batch_max),
        buffer=BufferSettings(path=tmp_path / "state" / "buffer.db"),
        privacy=PrivacySettings(),
        buses=(BusSettings("gb", "json-lines", host="127.0.0.1", port=1),
               BusSettings("mb", "modbus-tcp", host="127.0.0.1", port=2)),
        devices=(
            DeviceSettings("gate-1", "gb", "gate_controller", None, 1.0,
                           writable={"barrier": WriteRule(values=("open", "close"))}),
            DeviceSettings("gate-2", "gb", "gate_controller", None, 1.0),  # nothing writable
            DeviceSettings("gate-off", "gb", "gate_controller", None, 1.0, enabled=False,
                           writable={"barrier": WriteRule(values=("open", "close"))}),
            DeviceSettings("boiler", "mb", "modbus_generic", 3, 5.0, points=(SETPOINT, RELAY, LEVEL),
                           writable={"setpoint_C": WriteRule(min=5, max=30), "relay": WriteRule(values=(True, False))}),
        ),
        commands=commands,
    )


# -- fakes ----------------------------------------------------------------------------------------
def cmd(op: str, target: str | None = None, cmd_id: str = "c-1", signer: str = "k-test", **args: Any) -> Command:
    return Command(id=cmd_id, op=op, target=target, args=args, iat=int(NOW * 1000), exp=int(NOW * 1000) + 60_000,
                   signer=signer)


class FakeVerifier:
    """Payloads are JSON of ``{"reject": [code, message, cmd_id, signer]}`` or of a command."""

    def __init__(self) -> None:
        self.seen: list[bytes] = []

    def verify(self, payload: bytes) -> Command:
        self.seen.append(payload)
        if len(payload) > 1024:
            raise CommandRejected("too_large", "command larger than 1024 bytes")
        obj = json.loads(payload)
        if "boom" in obj:
            raise RuntimeError(f"verifier bug near {PLATE}")
        if "reject" in obj:
            code, message, cmd_id, signer = obj["reject"]
            raise CommandRejected(code, message, cmd_id=cmd_id, signer=signer)
        return cmd(obj["op"], obj.get("target"), obj.get("id", "c-1"), **obj.get("args", {}))


class FakeLedger:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.fail = False
        self.closed = False

    def audit(self, kind: str, *, actor: str, cmd_id: str | None = None, op: str | None = None,
              target: str | None = None, outcome: str, code: str | None = None, detail: str = "") -> int:
        if self.fail:
            raise OSError("disk I/O error")
        self.rows.append(dict(kind=kind, actor=actor, cmd_id=cmd_id, op=op, target=target, outcome=outcome,
                              code=code, detail=detail))
        return len(self.rows)

    def close(self) -> None:
        self.closed = True


class FakeGate:
    """A gate reader: ``write`` does what ``answer`` says."""

    def __init__(self, answer: Any = None) -> None:
        self.answer = answer
        self.writes: list[tuple[str, Any, dict]] = []

    def write(self, point: str, value: Any, **extra: Any) -> None:
        self.writes.append((point, value, extra))
        if isinstance(self.answer, BaseException):
            raise self.answer


class FakeBus:
    """Registers in memory; ``stuck`` makes writes not take."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.regs: dict[tuple[Reg, int], Any] = {(Reg.HOLDING, 10): 200, (Reg.COIL, 0): False}
        self.stuck = False
        self.calls: list[tuple] = []

    def write(self, device_id: int, point: Point, value: Any, *, timeout_s: float | None = None) -> None:
        from edge_agent.field.registers import encode_value
        self.calls.append(("write", device_id, point.name))
        payload = encode_value(point, value)
        if not self.stuck:
            self.regs[(point.reg, point.address)] = payload if isinstance(payload, bool) else payload[0]

    def read(self, device_id: int, reg: Reg, address: int, count: int, *, timeout_s: float | None = None):
        self.calls.append(("read", device_id, reg, address, count))
        value = self.regs[(reg, address)]
        return [value] if reg.is_bit else [value]


@dataclass(frozen=True)
class Stats:
    pending: int = 7
    pending_bytes: int = 700
    oldest_pending_ts: int | None = 1
    pending_by_prio: dict = field(default_factory=lambda: {"critical": 0, "high": 1, "normal": 6})


class FakeUplink:
    def __init__(self) -> None:
        self.connected = True
        self.replays: list[tuple[str, list[dict], str, float]] = []
        self.lock = threading.Lock()

    def stats(self):
        return type("S", (), {"reconnects": 2})()

    def publish_replay(self, kind: str, bodies: list[dict], cmd_id: str, **_: Any) -> bool:
        if not self.connected:
            return False
        with self.lock:
            self.replays.append((kind, [dict(b) for b in bodies], cmd_id, time.monotonic()))
        return True

    def replayed(self) -> list[dict]:
        with self.lock:
            return [b for _, bodies, _, _ in self.replays for b in bodies]


class FakeAgent:
    """The running agent's parts the view shows; ``view()`` is what the daemon's ``command_view`` gives."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.buses: dict[str, Any] = {"mb": FakeBus(), "gb": object()}
        boiler = DeviceReader(settings.device("boiler"), get_driver("modbus_generic"), self.buses["mb"])
        self.readers: dict[str, Any] = {"gate-1": FakeGate(), "gate-2": FakeGate(), "boiler": boiler}
        self.polled: list[str] = []
        self.uplink = FakeUplink()
        self.started_ms = int(NOW * 1000) - 90_000

    def request_poll(self, device: str) -> bool:
        if device not in self.readers:
            return False
        self.polled.append(device)
        return True

    def view(self, apply_config: Any = None) -> AgentView:
        uplink = self.uplink
        return AgentView(settings=self.settings, version="0.1.0", started_ms=self.started_ms,
                         reader=self.readers.get, request_poll=self.request_poll, backlog=Stats,
                         uplink=lambda: UplinkState(uplink.connected, uplink.stats().reconnects),
                         publish_replay=uplink.publish_replay, apply_config=apply_config)


@pytest.fixture
def world(tmp_path: Path):
    settings = make_settings(tmp_path)
    agent = FakeAgent(settings)
    ledger = FakeLedger()
    applied: list[Command] = []
    ops = CommandOps(agent.view(applied.append), clock=lambda: NOW)
    service = CommandService(settings, FakeVerifier(), ledger, ops, clock=lambda: NOW)
    yield service, agent, ledger, applied
    service.stop()


def payload(**obj: Any) -> bytes:
    return json.dumps(obj).encode()


def nothing_written(agent: FakeAgent) -> bool:
    return not agent.readers["gate-1"].writes and not agent.readers["gate-2"].writes and not agent.buses["mb"].calls


# -- verification and authorisation: refused before anything is done ------------------------------
@pytest.mark.parametrize("code", ["bad_signature", "unknown_key", "expired", "not_yet_valid", "replayed",
                                  "unknown_op", "bad_request", "too_large"])
def test_a_verifier_refusal_is_answered_with_its_code_and_audited(world, code):
    service, agent, ledger, _ = world
    signer = "k-test" if code == "replayed" else None
    answer = service.handle(payload(reject=[code, f"because {code}", "c-9", signer]))
    assert answer == {"v": 1, "id": "c-9", "ok": False, "ts": int(NOW * 1000),
                      "error": {"code": code, "message": f"because {code}"}}
    assert ledger.rows == [dict(kind="command", actor=signer or "unverified", cmd_id="c-9", op=None, target=None,
                                outcome="rejected", code=code, detail=f"because {code}")]
    assert nothing_written(agent)


def test_an_id_that_is_not_an_id_is_not_echoed(world):
    service, _, ledger, _ = world
    answer = service.handle(payload(reject=["bad_request", "id is not a command id", PLATE, None]))
    assert answer["id"] is None and ledger.rows[0]["cmd_id"] is None
    assert PLATE not in json.dumps(answer) + json.dumps(ledger.rows, ensure_ascii=False)


@pytest.mark.parametrize("op, target, args, code, message", [
    ("device.write", "gate-1", {"point": "barrier", "value": "opened"}, "not_allowed",
     "gate-1: that value is not allowed for barrier (devices.writable)"),
    ("device.write", "gate-1", {"point": "barrier", "value": True}, "not_allowed",
     "gate-1: that value is not allowed for barrier (devices.writable)"),
    ("device.write", "gate-1", {"point": "relay", "value": "open"}, "not_allowed",
     "gate-1: point relay is not writable by commands (devices.writable)"),
    ("device.write", "gate-2", {"point": "barrier", "value": "open"}, "not_allowed",
     "gate-2: point barrier is not writable by commands (devices.writable)"),
    ("device.write", "gate-off", {"point": "barrier", "value": "open"}, "not_allowed", "device gate-off is disabled"),
    ("device.write", "gate-9", {"point": "barrier", "value": "open"}, "not_allowed",
     "gate-9 is not a device of this gateway"),
    ("device.write", PLATE, {"point": "barrier", "value": "open"}, "not_allowed",
     "(unprintable name) is not a device of this gateway"),
    ("device.write", None, {"point": "barrier", "value": "open"}, "bad_request", "device.write needs a target device"),
    ("device.write", "gate-1", {"point": "barrier"}, "bad_request",
     "device.write needs args.point (a name) and args.value"),
    ("device.write", "boiler", {"point": "setpoint_C", "value": 31}, "not_allowed",
     "boiler: that value is not allowed for setpoint_C (devices.writable)"),
    ("device.write", "boiler", {"point": "setpoint_C", "value": "20"}, "not_allowed",
     "boiler: that value is not allowed for setpoint_C (devices.writable)"),
    ("device.write", "boiler", {"point": "level_m", "value": 1}, "not_allowed",
     "boiler: point level_m is not writable by commands (devices.writable)"),
    ("device.poll", "gate-9", {}, "not_allowed", "gate-9 is not a device of this gateway"),
    ("agent.ping", "gate-1", {}, "bad_request", "agent.ping takes no target"),
    ("buffer.replay", "gate-1", {"from_id": 1}, "bad_request", "buffer.replay takes no target"),
    # the shape of args is checked before the accepted row: a malformed request is rejected
    ("agent.ping", None, {"f": 0.1}, "bad_request", "agent.ping takes no args, not f"),
    ("device.poll", "gate-1", {"x": 1}, "bad_request", "device.poll takes no args, not x"),
    ("device.write", "gate-1", {"point": "barrier", "value": "open", "speed": 9}, "bad_request",
     "device.write takes point, value and lane, not speed"),
    ("device.write", "gate-1", {"point": "barrier", "value": "open", "lane": 1.0}, "bad_request",
     "args.lane must be a non-negative integer"),
    ("device.write", "gate-1", {"point": "barrier", "value": "open", "lane": True}, "bad_request",
     "args.lane must be a non-negative integer"),
    ("device.write", "boiler", {"point": "setpoint_C", "value": 20, "lane": 1}, "bad_request",
     "a Modbus write takes only point and value, not lane"),
    ("buffer.replay", None, {"from_id": 9, "to_id": 3}, "bad_request", "buffer.replay: from_id is after to_id"),
])
def test_authorisation_refuses_what_the_config_does_not_allow(world, op, target, args, code, message):
    service, agent, ledger, _ = world
    answer = service.handle(payload(op=op, target=target, args=args, id="c-2"))
    assert answer["ok"] is False and answer["error"] == {"code": code, "message": message}
    assert [(r["outcome"], r["code"], r["actor"], r["op"], r["cmd_id"]) for r in ledger.rows] == [
        ("rejected", code, "k-test", op, "c-2")]
    assert nothing_written(agent) and not agent.polled
    assert PLATE not in json.dumps(answer)


def test_an_op_not_enabled_in_the_config_is_not_allowed(tmp_path):
    settings = make_settings(tmp_path, ops=("agent.ping",))
    agent, ledger = FakeAgent(settings), FakeLedger()
    service = CommandService(settings, FakeVerifier(), ledger, CommandOps(agent.view()))
    answer = service.handle(payload(op="device.write", target="gate-1", args={"point": "barrier", "value": "open"}))
    assert answer["error"] == {"code": "not_allowed", "message": "op device.write is not enabled on this gateway"}
    assert nothing_written(agent)
    assert service.handle(payload(op="agent.ping"))["ok"] is True


def test_a_config_apply_with_an_argument_it_does_not_take_is_rejected_before_acting(tmp_path):
    settings = make_settings(tmp_path, ops=("config.apply",))
    agent, ledger = FakeAgent(settings), FakeLedger()
    service = CommandService(settings, FakeVerifier(), ledger, CommandOps(agent.view()))
    answer = service.handle(payload(op="config.apply", args={"config": "x", "force": True}, id="c-3"))
    assert answer["error"] == {"code": "bad_request", "message": "config.apply takes only config, not force"}
    assert [(r["outcome"], r["code"]) for r in ledger.rows] == [("rejected", "bad_request")]


# -- device.write ---------------------------------------------------------------------------------
def test_an_allowed_gate_open_goes_through_the_driver_and_is_audited_before_and_after(world):
    service, agent, ledger, _ = world
    answer = service.handle(payload(op="device.write", target="gate-1", args={"point": "barrier", "value": "open",
                                                                              "lane": 2}))
    assert answer == {"v": 1, "id": "c-1", "ok": True, "ts": int(NOW * 1000),
                      "data": {"point": "barrier", "acked": True, "lane": 2}}
    assert agent.readers["gate-1"].writes == [("barrier", "open", {"lane": 2})]
    assert [(r["outcome"], r["detail"], r["target"], r["actor"]) for r in ledger.rows] == [
        ("accepted", "barrier=open lane 2", "gate-1", "k-test"), ("done", "barrier=open lane 2 acked", "gate-1", "k-test")]


@pytest.mark.parametrize("error, code, message", [
    (NoResponse("gate-1: gate did not acknowledge open lane 1 within 0.5s"), "timeout",
     "gate-1: gate did not acknowledge open lane 1 within 0.5s"),
    (DeviceFault("jammed", "gate-1: gate refused open lane 1: jammed"), "device_error",
     "gate-1: gate refused open lane 1: jammed"),
    (LinkError("bus gb: cannot connect to 127.0.0.1:1: connection refused"), "device_error",
     "bus gb: cannot connect to 127.0.0.1:1: connection refused"),
    (ValueError("gate-1: lane must be an integer 0..255"), "bad_request", "gate-1: lane must be an integer 0..255"),
])
def test_device_failures_become_error_results(world, error, code, message):
    service, agent, ledger, _ = world
    agent.readers["gate-1"].answer = error
    answer = service.handle(payload(op="device.write", target="gate-1", args={"point": "barrier", "value": "open"}))
    assert answer["ok"] is False and answer["error"] == {"code": code, "message": message}
    assert [(r["outcome"], r["code"]) for r in ledger.rows] == [("accepted", None), ("failed", code)]


def test_an_unknown_write_argument_is_a_bad_request_before_the_device(world):
    service, agent, _, _ = world
    answer = service.handle(payload(op="device.write", target="gate-1",
                                    args={"point": "barrier", "value": "open", "speed": 9}))
    assert answer["error"] == {"code": "bad_request",
                               "message": "device.write takes point, value and lane, not speed"}
    assert nothing_written(agent)


def test_a_bug_in_an_op_is_internal_and_its_message_never_leaves(world):
    service, agent, ledger, _ = world
    agent.readers["gate-1"].answer = KeyError(PLATE)
    answer = service.handle(payload(op="device.write", target="gate-1", args={"point": "barrier", "value": "open"}))
    assert answer["error"] == {"code": "internal", "message": "the gateway failed to carry out the command (KeyError)"}
    assert PLATE not in json.dumps(answer, ensure_ascii=False) + json.dumps(ledger.rows, ensure_ascii=False)


def test_nothing_is_done_when_the_audit_log_cannot_be_written(world):
    service, agent, ledger, _ = world
    ledger.fail = True
    answer = service.handle(payload(op="device.write", target="gate-1", args={"point": "barrier", "value": "open"}))
    assert answer["error"]["code"] == "internal" and "audit" in answer["error"]["message"]
    assert nothing_written(agent)


def test_a_modbus_write_is_read_back(world):
    service, agent, ledger, _ = world
    answer = service.handle(payload(op="device.write", target="boiler", args={"point": "setpoint_C", "value": 21.5}))
    assert answer["data"] == {"point": "setpoint_C", "read_back": "match"}
    bus = agent.buses["mb"]
    assert bus.regs[(Reg.HOLDING, 10)] == 215
    assert bus.calls == [("write", 3, "setpoint_C"), ("read", 3, Reg.HOLDING, 10, 1)]
    answer = service.handle(payload(op="device.write", target="boiler", args={"point": "relay", "value": True}))
    assert answer["data"] == {"point": "relay", "read_back": "match"} and bus.regs[(Reg.COIL, 0)] is True
    assert ledger.rows[-1]["detail"] == "relay=true read back: match"


def test_a_modbus_write_that_does_not_take_is_a_device_error(world):
    service, agent, _, _ = world
    agent.buses["mb"].stuck = True
    answer = service.handle(payload(op="device.write", target="boiler", args={"point": "setpoint_C", "value": 25}))
    assert answer["error"] == {"code": "device_error", "message": "boiler: setpoint_C reads back differently after "
                                                                  "the write (the device did not take the value)"}


def test_a_modbus_write_takes_no_extra_arguments(world):
    service, agent, _, _ = world
    answer = service.handle(payload(op="device.write", target="boiler",
                                    args={"point": "setpoint_C", "value": 25, "lane": 1}))
    assert answer["error"]["code"] == "bad_request" and not agent.buses["mb"].calls


# -- ping, poll, config.apply -----------------------------------------------------------------------
def test_ping_reports_version_uptime_uplink_and_backlog(world):
    service, _, ledger, _ = world
    answer = service.handle(payload(op="agent.ping"))
    assert answer["ok"] is True and answer["data"] == {
        "version": "0.1.0", "started": int(NOW * 1000) - 90_000, "uptime_s": 90,
        "uplink": {"connected": True, "reconnects": 2},
        "backlog": {"count": 7, "bytes": 700, "oldest_ts": 1, "by_prio": {"critical": 0, "high": 1, "normal": 6}}}
    assert [r["outcome"] for r in ledger.rows] == ["accepted", "done"]


def test_poll_asks_the_device_bus_worker(world):
    service, agent, _, _ = world
    assert service.handle(payload(op="device.poll", target="boiler"))["data"] == {"requested": True}
    assert agent.polled == ["boiler"]
    del agent.readers["gate-2"]  # not running (its bus failed to open, say)
    answer = service.handle(payload(op="device.poll", target="gate-2"))
    assert answer["error"] == {"code": "device_error", "message": "device gate-2 is not being polled"}


def test_config_apply_goes_to_the_daemon_which_answers_later(tmp_path):
    settings = make_settings(tmp_path, ops=("config.apply",))  # off unless listed
    ledger, applied = FakeLedger(), []
    service = CommandService(settings, FakeVerifier(), ledger, CommandOps(FakeAgent(settings).view(applied.append)))
    assert service.handle(payload(op="config.apply", args={"config": "gateway: {}"})) is None
    assert [c.op for c in applied] == ["config.apply"]
    assert [(r["outcome"], r["detail"]) for r in ledger.rows] == [("accepted", "config apply requested")]


def test_config_apply_refused_by_the_daemon_is_a_failed_result(tmp_path):
    settings = make_settings(tmp_path, ops=("config.apply",))

    def apply(command: Command) -> None:
        raise CommandRejected("bad_request", "gateway.yaml:3: mqtt.port: not a port")
    ledger = FakeLedger()
    service = CommandService(settings, FakeVerifier(), ledger, CommandOps(FakeAgent(settings).view(apply)))
    answer = service.handle(payload(op="config.apply", args={"config": "x"}))
    assert answer["error"] == {"code": "bad_request", "message": "gateway.yaml:3: mqtt.port: not a port"}
    assert [r["outcome"] for r in ledger.rows] == ["accepted", "failed"]
    no_apply = CommandService(settings, FakeVerifier(), FakeLedger(), CommandOps(FakeAgent(settings).view(None)))
    assert no_apply.handle(payload(op="config.apply", args={}))["error"]["code"] == "not_allowed"


# -- the queue and the worker -------------------------------------------------------------------------
def test_handle_never_raises(world):
    service, _, ledger, _ = world
    answer = service.handle(payload(boom=1))
    assert answer["error"] == {"code": "internal", "message": "the command could not be checked"}
    assert PLATE not in json.dumps(ledger.rows, ensure_ascii=False)


def test_the_worker_answers_in_order_and_stop_can_come_from_the_worker_itself(world):
    service, _, _, _ = world
    results: list[dict] = []
    done = threading.Event()

    def publish(result: dict) -> None:
        results.append(result)
        if len(results) == 3:
            service.stop()  # as a config apply that restarts the agent would, from the worker
            done.set()
    service.start(publish)
    for i in range(3):
        service.submit(payload(op="agent.ping", id=f"c-{i}"))
    assert done.wait(5)
    assert [r["id"] for r in results] == ["c-0", "c-1", "c-2"]


def test_the_queue_is_bounded_big_payloads_are_not_kept_and_drops_are_audited(tmp_path):
    settings = make_settings(tmp_path)
    verifier, ledger = FakeVerifier(), FakeLedger()
    service = CommandService(settings, verifier, ledger, CommandOps(FakeAgent(settings).view()))
    big = b"x" * (settings.commands.max_bytes * 4)
    for _ in range(QUEUE_MAX + 5):
        service.submit(big)  # no worker yet: the queue fills
    assert service.dropped == 5 and service.received == QUEUE_MAX + 5
    results: list[dict] = []
    service.start(results.append)
    deadline = time.monotonic() + 10
    while len(results) < QUEUE_MAX and time.monotonic() < deadline:
        time.sleep(0.01)
    service.stop()
    assert verifier.seen == []  # refused by size alone: the bytes were never kept
    assert {r["error"]["code"] for r in results} == {"too_large"} and len(results) == QUEUE_MAX
    assert results[0]["error"]["message"] == f"payload is {len(big)} bytes, more than the 16384 allowed"
    drops = [r for r in ledger.rows if "dropped" in r["detail"]]
    assert drops == [dict(kind="command", actor="unverified", cmd_id=None, op=None, target=None, outcome="rejected",
                          code=None, detail="5 message(s) on R/cmd dropped unread: the queue was full")]


# -- buffer.replay --------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, expected", [
    ({"from_id": 3, "to_id": 9}, ("id", 3, 9)),
    ({"from_id": 3}, ("id", 3, 2**63 - 1)),
    ({"to_ts": 50}, ("ts", 0, 50)),
])
def test_replay_ranges(args, expected):
    assert parse_range(args) == expected


@pytest.mark.parametrize("args, message", [
    ({}, "buffer.replay needs an id range (from_id, to_id) or a time range (from_ts, to_ts), not both"),
    ({"from_id": 1, "to_ts": 5}, "buffer.replay needs an id range (from_id, to_id) or a time range (from_ts, to_ts), "
                                 "not both"),
    ({"from_id": 9, "to_id": 3}, "buffer.replay: from_id is after to_id"),
    ({"from_id": "1"}, "args.from_id must be a non-negative integer"),
    ({"from_id": True}, "args.from_id must be a non-negative integer"),
    ({"from_id": -1}, "args.from_id must be a non-negative integer"),
    ({"from_id": 1, "limit": 5}, "buffer.replay takes from_id/to_id or from_ts/to_ts, not limit"),
])
def test_bad_replay_ranges_are_bad_requests(args, message):
    with pytest.raises(CommandRejected) as refused:
        parse_range(args)
    assert refused.value.code == "bad_request" and refused.value.message == message


def fill_buffer(settings: Settings, n: int) -> dict[int, dict]:
    """n rows: records, and every 10th an event; ts = 1000 * id. Returns id -> wire body."""
    buf = Buffer(settings.buffer.path, retain_sent_s=3600).open()
    try:
        items = [Event("gate-1", "passage", Priority.NORMAL, 1000 * (i + 1), {"lane": 1, "card": "p1:TOKEN"})
                 if (i + 1) % 10 == 0 else Record("boiler", 1000 * (i + 1), {"setpoint_C": i * 0.5}) for i in range(n)]
        ids = buf.append(items)
        buf.mark_sent(ids[: n // 2])  # half of them sent (and retained): a replay takes both
        return {r.id: r.body for r in buf.pending(n)} | {
            i: {"id": i, **item.to_wire()} for i, item in zip(ids, items)}
    finally:
        buf.close()


def test_replay_republishes_exactly_the_id_range_with_the_original_bodies(tmp_path):
    settings = make_settings(tmp_path, batch_max=7)
    bodies = fill_buffer(settings, 60)
    agent, ledger = FakeAgent(settings), FakeLedger()
    service = CommandService(settings, FakeVerifier(), ledger, CommandOps(agent.view()))
    answer = service.handle(payload(op="buffer.replay", id="c-r", args={"from_id": 5, "to_id": 44}))
    assert answer["data"] == {"rows": 40, "first_id": 5, "last_id": 44}
    deadline = time.monotonic() + 10
    while len(agent.uplink.replayed()) < 40 and time.monotonic() < deadline:
        time.sleep(0.01)
    service.stop()
    assert agent.uplink.replayed() == [bodies[i] for i in range(5, 45)]
    for kind, sent, cmd_id, _ in agent.uplink.replays:
        assert cmd_id == "c-r" and len(sent) <= 7 and {("vals" in b) for b in sent} == {kind == "record"}
    assert ledger.rows[-1]["detail"] == "replaying 40 row(s) ids 5..44"


def test_replay_by_time_and_an_empty_range(tmp_path):
    settings = make_settings(tmp_path)
    bodies = fill_buffer(settings, 30)
    agent = FakeAgent(settings)
    ops = CommandOps(agent.view())
    assert ops.replay({"from_ts": 10_000, "to_ts": 12_500}, "c-t") == {"rows": 3, "first_id": 10, "last_id": 12}
    deadline = time.monotonic() + 5
    while len(agent.uplink.replayed()) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert agent.uplink.replayed() == [bodies[10], bodies[11], bodies[12]]
    assert ops.replay({"from_id": 1000}, "c-e") == {"rows": 0}
    ops.stop()


def test_replay_is_rate_limited_one_at_a_time_and_waits_for_the_uplink(tmp_path):
    settings = make_settings(tmp_path, replay_rate=100, batch_max=500)
    fill_buffer(settings, 250)
    agent = FakeAgent(settings)
    agent.uplink.connected = False
    ops = CommandOps(agent.view())
    began = time.monotonic()
    assert ops.replay({"from_id": 1}, "c-1")["rows"] == 250
    with pytest.raises(CommandRejected) as busy:
        ops.replay({"from_id": 1}, "c-2")
    assert busy.value.code == "not_allowed"
    time.sleep(1.2)
    assert agent.uplink.replays == []  # nothing while the uplink is away
    agent.uplink.connected = True
    deadline = time.monotonic() + 10
    while len(agent.uplink.replayed()) < 250 and time.monotonic() < deadline:
        time.sleep(0.01)
    took = agent.uplink.replays[-1][3] - agent.uplink.replays[0][3]
    assert len(agent.uplink.replayed()) == 250 and took >= 1.4  # 250 rows at 100/s: 100 per message
    assert max(len(b) for _, b, _, _ in agent.uplink.replays) <= 100
    assert time.monotonic() - began < 8
    ops.stop()


def test_commands_still_queued_at_stop_are_counted_in_one_audit_row(tmp_path):
    settings = make_settings(tmp_path)
    release = threading.Event()

    class SlowVerifier(FakeVerifier):
        def verify(self, payload: bytes) -> Command:
            release.wait(5)
            return super().verify(payload)
    ledger = FakeLedger()
    service = CommandService(settings, SlowVerifier(), ledger, CommandOps(FakeAgent(settings).view()))
    results: list[dict] = []
    service.start(results.append)
    for i in range(4):
        service.submit(payload(op="agent.ping", id=f"c-{i}"))
    time.sleep(0.2)  # the worker holds c-0
    stopper = threading.Thread(target=service.stop)
    stopper.start()
    time.sleep(0.2)
    release.set()
    stopper.join(5)
    assert [r["id"] for r in results] == ["c-0"] and service.unhandled == 3
    assert ledger.rows[-1]["detail"] == "3 message(s) on R/cmd not handled: the agent stopped"


# -- unsigned commands from another dialect (issue 14) --------------------------------------------
def _unsigned_world(tmp_path: Path, allowed: dict[str, tuple[str, ...]]):
    base = make_settings(tmp_path)
    settings = replace(base, commands=replace(base.commands, unsigned=allowed))
    agent, ledger = FakeAgent(settings), FakeLedger()
    ops = CommandOps(agent.view(lambda c: None), clock=lambda: NOW)
    return CommandService(settings, FakeVerifier(), ledger, ops, clock=lambda: NOW), agent, ledger


def test_an_unsigned_write_runs_only_when_its_dialect_allows_the_op(tmp_path):
    service, agent, ledger = _unsigned_world(tmp_path, {"thingsboard": ("device.write",)})
    write = {"id": "tb-gate-1-7", "op": "device.write", "target": "gate-1", "args": {"point": "barrier", "value": "open"}}
    try:
        answer = service.handle(Inbound("thingsboard", unsigned=write, reply=("gate-1", 7)))
        assert answer["ok"] is True and answer["id"] == "tb-gate-1-7"
        assert agent.readers["gate-1"].writes == [("barrier", "open", {})]
        assert {r["actor"] for r in ledger.rows} == {"unsigned:thingsboard"}
        ledger.rows.clear()
        refused = service.handle(Inbound("sparkplug", unsigned=dict(write, id="spb-1"), reply=None))
        assert refused["error"]["code"] == "bad_signature"
        assert "device.write is not allowed unsigned in the sparkplug dialect" in refused["error"]["message"]
        assert [(r["actor"], r["outcome"]) for r in ledger.rows] == [("unsigned:sparkplug", "rejected")]
        # still under the same allow-list: a point not writable is refused though the op is allowed unsigned
        other = service.handle(Inbound("thingsboard", unsigned=dict(write, target="gate-2"), reply=None))
        assert other["error"]["code"] == "not_allowed" and len(agent.readers["gate-2"].writes) == 0
        assert service.handle(Inbound("thingsboard", unsigned=None, reply=1))["error"]["code"] == "bad_request"
    finally:
        service.stop()


def test_a_signed_command_inside_a_dialect_is_verified_as_on_r_cmd(tmp_path):
    service, agent, _ = _unsigned_world(tmp_path, {})
    sent: list[tuple] = []
    try:
        service.start(lambda answer, reply=None: sent.append((answer, reply)))
        inbound = Inbound("thingsboard", signed=payload(op="agent.ping", id="c-5"), reply=("gw", 3))
        service.submit(inbound)
        deadline = time.monotonic() + 5
        while not sent and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sent and sent[0][0]["ok"] is True and sent[0][0]["id"] == "c-5" and sent[0][1] is inbound
        assert service._verifier.seen == [payload(op="agent.ping", id="c-5")]
    finally:
        service.stop()
