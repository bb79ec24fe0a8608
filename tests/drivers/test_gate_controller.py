"""The gate controller driver: what each line means (fed to the reader directly), commands
and their acks against our gate simulator over a paced pty pair at 9600 through the agent's own
``open_link``/``make_reader``, and against scripted controllers over TCP for the exact cases
(a passage between command and ack, an error text that is not a code)."""

from __future__ import annotations

import json
import threading
import time

import pytest

from edge_agent.config.schema import parse_settings
from edge_agent.drivers import gate_controller as gate
from edge_agent.errors import DeviceFault, NoResponse
from edge_agent.model import DataClass, Priority, Quality
from edge_agent.field.readers import make_reader, open_link
from edge_agent.field.registry import get_driver
from edge_agent.settings import DeviceSettings
from edge_agent.sim.byteserver import ByteServer
from edge_agent.sim.gate import GateSim
from edge_agent.sim.ptypair import PtyPair
from support.waiting import poll_until

NOW = 1_732_380_005.25
DEVICE = DeviceSettings(name="gate-1", bus="gb", driver="gate_controller", address=None, interval_s=1.0)
PLATE, CARD = "桂A12345", "04a1b2c3"


def line(**fields) -> bytes:
    return json.dumps(fields, ensure_ascii=False).encode()


def take(*lines: bytes):
    r = gate.GateReader(DEVICE, link=None, clock=lambda: NOW)
    for raw in lines:
        r.take(raw)
    return r, r.collect()


# -- lines -> events and readings ----------------------------------------------------------------
def test_a_passage_is_a_normal_event_with_plate_and_card_as_identifiers():
    _, result = take(line(t="passage", lane=1, dir="in", plate=PLATE, card=CARD, ts=1732380000))
    (event,) = result.events
    assert (event.dev, event.type, event.prio, event.ts) == ("gate-1", "passage", Priority.NORMAL, int(NOW * 1000))
    assert event.data == {"lane": 1, "dir": "in", "plate": PLATE, "card": "04A1B2C3", "gate_ts": 1732380000000}
    assert event.classes["plate"] is DataClass.IDENTIFIER and event.classes["card"] is DataClass.IDENTIFIER
    assert set(event.classes) == {"lane", "dir", "plate", "card", "gate_ts"}
    assert result.readings == [] and result.bad_frames == 0


def test_unusable_passage_fields_are_left_out():
    _, result = take(line(t="passage", lane=2, dir="sideways", plate=12345, card="", ts="noon"))
    assert result.events[0].data == {"lane": 2} and result.bad_frames == 0


def test_barrier_states_are_readings_of_the_lane():
    _, result = take(line(t="state", lane=1, barrier="open"), line(t="state", lane=3, barrier="half"),
                     line(t="state", lane=2, barrier=None))
    assert [(x.pt, x.sub, x.val, x.q) for x in result.readings] == [
        ("barrier", "1", "open", Quality.GOOD), ("barrier", "3", None, Quality.BAD), ("barrier", "2", None, Quality.BAD)]
    assert result.events == []


def test_barrier_fault_is_raised_once_per_change_to_fault():
    states = ["closed", "fault", "fault", "closed", "fault", "fault"]
    _, result = take(*(line(t="state", lane=1, barrier=s) for s in states), line(t="state", lane=2, barrier="fault"))
    faults = [e for e in result.events if e.type == "barrier_fault"]
    assert [(e.prio, e.data) for e in faults] == [(Priority.HIGH, {"lane": 1, "previous": "closed"}),
                                                  (Priority.HIGH, {"lane": 1, "previous": "closed"}),
                                                  (Priority.HIGH, {"lane": 2})]
    assert len(result.readings) == 7


def test_a_late_ack_is_dropped_quietly():
    _, result = take(line(t="ack", seq=4, ok=True), line(t="ack", seq=5, ok=False, err="jammed"))
    assert result.events == [] and result.readings == [] and result.bad_frames == 0 and result.errors == []


@pytest.mark.parametrize("raw, reason", [
    (b"\xff\xfe" + PLATE.encode(), "not UTF-8"),
    (line(t="passage", lane=1, plate=PLATE)[:-3], "not JSON"),
    (line(t="open_sesame", lane=1, plate=PLATE), "unknown message type"),
    (line(t="passage", plate=PLATE), "no lane"),
    (line(t="passage", lane=True, plate=PLATE), "no lane"),
    (line(t="state", lane=256, barrier="open"), "no lane"),
    (line(t="state", lane="1", barrier="open"), "no lane"),
    (line(t="ack", ok=True), "ack without seq"),
    (line(t="ack", seq=1, ok="yes"), "ack without a true/false ok"),
])
def test_bad_lines_are_counted_and_named_without_content(raw, reason):
    _, result = take(line(t="passage", lane=1), raw)
    assert result.bad_frames == 1 and len(result.events) == 1
    assert result.bad_frame_notes == [f"line 2: {reason}"] and result.errors == []  # not a failure


@pytest.mark.parametrize("point, value, lane, message", [
    ("relay", "open", 1, "only 'barrier' is writable"),
    ("barrier", "opened", 1, "barrier takes 'open' or 'close'"),
    ("barrier", True, 1, "barrier takes 'open' or 'close'"),
    ("barrier", "open", 256, "lane must be an integer 0..255"),
    ("barrier", "open", "1", "lane must be an integer 0..255"),
])
def test_write_refuses_what_a_gate_cannot_do_before_sending(point, value, lane, message):
    r = gate.GateReader(DEVICE, link=None)  # nothing may be sent: there is no link
    with pytest.raises(ValueError, match=message):
        r.write(point, value, lane=lane)


def test_the_command_line():
    assert gate.encode_command(5, "open", 1) == b'{"t":"cmd","seq":5,"op":"open","lane":1}\n'


# -- the simulated gate over a paced pty pair at 9600 ----------------------------------------------
def gate_settings(bus: str):
    return parse_settings(f"""
gateway: {{id: gw-test, site: test}}
mqtt: {{host: 127.0.0.1}}
buses:
  - {{name: gb, {bus}, protocol: json-lines, timeout: 500ms}}
devices:
  - {{name: gate-1, bus: gb, driver: gate_controller}}
""")


def reader_for(s):
    device = s.device("gate-1")
    return make_reader(device, get_driver(device.driver), open_link(s.bus("gb")))


@pytest.fixture
def gate_on_pty(request):
    sim = GateSim(2, passage_every_s=getattr(request, "param", 0.25), vehicles=4, seed=3)
    server = ByteServer(sim)
    with PtyPair(baud=9600) as pair:
        server.serve_serial(pair.b, baud=9600)
        r = reader_for(gate_settings(f"serial: {pair.a}"))
        assert r.link.settings.baud == 9600 and r.link.settings.timeout_s == 0.5
        yield sim, r
        r.link.close()
        server.stop()


def events(results, kind: str = "passage"):
    return [e for p in results for e in p.events if e.type == kind]


def test_simulated_passages_arrive_as_events(gate_on_pty):
    sim, r = gate_on_pty
    got = poll_until(r, lambda rs: len(events(rs)) >= 4)
    passages = events(got)[:4]
    assert [e.data["plate"] for e in passages] == [v.plate for v in sim.vehicles]
    assert {len(e.data["plate"]) for e in passages} == {7, 8}  # ordinary and new-energy plates
    assert [e.data["card"] for e in passages] == [v.card for v in sim.vehicles]
    assert [e.data["lane"] for e in passages] == [1, 2, 1, 2] and [e.data["dir"] for e in passages] == [
        "in", "in", "out", "out"]
    assert all(e.classes["plate"] is DataClass.IDENTIFIER and e.classes["card"] is DataClass.IDENTIFIER
               for e in passages)
    assert all(p.answered and p.bad_frames == 0 for p in got)


@pytest.mark.parametrize("gate_on_pty", [60.0], indirect=True)
def test_open_and_close_are_acked_and_the_barrier_moves(gate_on_pty):
    sim, r = gate_on_pty
    r.write("barrier", "open", lane=2)
    r.write("barrier", "close", lane=2)
    r.write("barrier", "close", lane=1)  # already closed: acked, nothing moves
    assert [(c["seq"], c["op"], c["lane"]) for c in sim.commands] == [(1, "open", 2), (2, "close", 2), (3, "close", 1)]
    got = poll_until(r, lambda rs: len([x for p in rs for x in p.readings]) >= 2)
    assert [(x.sub, x.val) for p in got for x in p.readings] == [("2", "open"), ("2", "closed")]
    assert sim.barriers == {1: "closed", 2: "closed"}


@pytest.mark.parametrize("gate_on_pty", [60.0], indirect=True)
def test_a_refusal_is_a_device_fault_with_the_gate_code(gate_on_pty):
    sim, r = gate_on_pty
    sim.set_faults(nack=True)
    with pytest.raises(DeviceFault) as fault:
        r.write("barrier", "open")
    assert fault.value.code == "jammed" and str(fault.value) == "gate-1: gate refused open lane 1: jammed"
    assert sim.barriers[1] == "closed"


@pytest.mark.parametrize("gate_on_pty", [60.0], indirect=True)
def test_no_ack_is_no_response_within_the_timeout_and_a_passage_meanwhile_is_kept(gate_on_pty):
    sim, r = gate_on_pty
    sim.set_faults(no_ack=True)
    sim.trigger_passage()  # arrives while the write waits for its ack
    start = time.monotonic()
    with pytest.raises(NoResponse, match=r"gate-1: gate did not acknowledge open lane 1 within 0.5s"):
        r.write("barrier", "open")
    assert 0.5 <= time.monotonic() - start < 0.9
    result = r.poll()
    assert [e.data["plate"] for e in result.events] == [sim.vehicles[0].plate]
    sim.set_faults(no_ack=False)
    r.write("barrier", "open", timeout_s=2.0)  # the next command has the next seq; the gate answers it
    assert [c["seq"] for c in sim.commands] == [1, 2]


@pytest.mark.parametrize("gate_on_pty", [0.2], indirect=True)
def test_a_write_gets_the_link_while_the_bus_worker_polls(gate_on_pty):
    sim, r = gate_on_pty
    stop, results = threading.Event(), []

    def worker() -> None:  # as the scheduler does for a streaming device: poll again at once
        while not stop.is_set():
            results.append(r.poll())
    thread = threading.Thread(target=worker)
    thread.start()
    try:
        time.sleep(0.3)
        times = []
        for op in ("open", "close", "open"):
            start = time.monotonic()
            r.write("barrier", op, lane=1)
            times.append(time.monotonic() - start)
        time.sleep(0.8)
    finally:
        stop.set()
        thread.join()
    assert max(times) < 0.35, times  # not held up by the poll's 0.5 s wait
    assert [x.val for p in results for x in p.readings] == ["open", "closed", "open"]
    assert len(events(results)) >= 3  # passages kept flowing, none lost to the writes
    seen = [e.data["plate"] for e in events(results)]
    assert seen == [sim.vehicles[i % 4].plate for i in range(len(seen))]


# -- scripted controllers over TCP, for the exact cases -------------------------------------------
class Scripted:
    """A controller that answers each command with the lines ``answer(cmd)`` returns."""

    def __init__(self, answer) -> None:
        self.answer = answer

    def feed(self, pending: bytearray) -> bytes:
        out = b""
        while (end := pending.find(b"\n")) >= 0:
            cmd = json.loads(bytes(pending[:end]))
            del pending[:end + 1]
            out += b"".join(x + b"\n" for x in self.answer(cmd))
        return out

    def tick(self, now: float) -> bytes:
        return b""


@pytest.fixture
def scripted():
    opened = []

    def start(answer):
        server = ByteServer(Scripted(answer))
        host, port = server.serve_tcp()
        r = reader_for(gate_settings(f"host: {host}, port: {port}"))
        opened.append((server, r))
        return r
    yield start
    for server, r in opened:
        r.link.close()
        server.stop()


def test_lines_between_command_and_ack_are_kept_for_the_next_poll(scripted):
    r = scripted(lambda cmd: [line(t="ack", seq=cmd["seq"] + 7, ok=True),  # a stale ack: not ours
                              line(t="passage", lane=1, dir="out", plate=PLATE, card=CARD), b"garbage",
                              line(t="ack", seq=cmd["seq"], ok=True),
                              line(t="state", lane=cmd["lane"], barrier="open")])
    r.write("barrier", "open", lane=1)
    got = poll_until(r, lambda rs: any(p.readings for p in rs), timeout=3)
    assert [e.data["plate"] for e in events(got)] == [PLATE]
    assert sum(p.bad_frames for p in got) == 1
    assert [(x.sub, x.val) for p in got for x in p.readings] == [("1", "open")]


@pytest.mark.parametrize("err, code", [("jammed", "jammed"), ("obstacle_detected", "obstacle_detected"),
                                       (f"blocked by {PLATE}", "refused"), ("JAMMED", "refused"), (None, "refused"),
                                       ("x" * 40, "refused")])
def test_only_a_short_error_code_is_passed_on(scripted, err, code):
    r = scripted(lambda cmd: [line(t="ack", seq=cmd["seq"], ok=False, **({"err": err} if err else {}))])
    with pytest.raises(DeviceFault) as fault:
        r.write("barrier", "close", lane=3)
    assert fault.value.code == code and str(fault.value) == f"gate-1: gate refused close lane 3: {code}"
