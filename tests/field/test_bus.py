"""ModbusBus over real links: pymodbus' server over TCP and over RTU through a pty pair, and a
scripted RTU device for the answers no honest server gives."""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Iterator

import pytest
from support.modbus_server import ModbusTestServer, ScriptedRtuDevice, rtu_frame

import edge_agent.field.bus as bus_module
from edge_agent.field.bus import DeviceFault, LinkError, ModbusBus, NoResponse
from edge_agent.model import DType, Point, Reg
from edge_agent.settings import BusSettings
from edge_agent.sim.ptypair import PtyPair

UNITS = {
    1: {"holding": {0: [10, 20, 30, 40], 100: [0, 0, 0, 0]}, "input": {5: [7, 8]},
        "coil": {0: [True, False, True]}, "discrete": {16: [False, True, True]}},
    2: {"holding": {0: [222]}},
}
READS = [(Reg.HOLDING, 0, 4, [10, 20, 30, 40]), (Reg.INPUT, 5, 2, [7, 8]),
         (Reg.COIL, 0, 3, [True, False, True]), (Reg.DISCRETE, 16, 3, [False, True, True])]


def tcp_bus(port: int, **kw: object) -> ModbusBus:
    return ModbusBus(BusSettings("lan-1", "modbus-tcp", host="127.0.0.1", port=port, **kw))  # type: ignore[arg-type]


def rtu_bus(path: str, **kw: object) -> ModbusBus:
    return ModbusBus(BusSettings("rs485-1", "modbus-rtu", serial=path, **kw))  # type: ignore[arg-type]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def tcp_server() -> Iterator[ModbusTestServer]:
    with ModbusTestServer(UNITS) as server:
        yield server


@pytest.fixture
def tcp(tcp_server: ModbusTestServer) -> Iterator[ModbusBus]:
    bus = tcp_bus(tcp_server.port, timeout_s=1.0)
    yield bus
    bus.close()


@pytest.fixture
def pair() -> Iterator[PtyPair]:
    with PtyPair() as p:
        yield p


@pytest.mark.parametrize("reg,address,count,expected", READS)
def test_tcp_reads_each_table(tcp: ModbusBus, reg: Reg, address: int, count: int, expected: list) -> None:
    assert tcp.read(1, reg, address, count) == expected


def test_rtu_reads_each_table_through_a_pty(pair: PtyPair) -> None:
    with ModbusTestServer(UNITS, serial=pair.b):
        bus = rtu_bus(pair.a, timeout_s=1.0)
        try:
            for reg, address, count, expected in READS:
                assert bus.read(1, reg, address, count) == expected
            assert bus.read(2, Reg.HOLDING, 0, 1) == [222]
        finally:
            bus.close()


def test_rtu_over_tcp() -> None:
    """A serial-to-Ethernet converter: RTU frames (CRC, no MBAP header) inside a TCP stream."""
    with ModbusTestServer(UNITS, rtu_over_tcp=True) as server:
        bus = ModbusBus(BusSettings("conv-1", "modbus-rtu", host="127.0.0.1", port=server.port, timeout_s=1.0))
        try:
            assert bus.settings.link == "rtu-over-tcp"
            assert bus.read(1, Reg.HOLDING, 0, 2) == [10, 20]
            assert bus.read(1, Reg.COIL, 0, 3) == [True, False, True]
        finally:
            bus.close()


def test_exception_reply_is_a_device_fault_with_its_code(tcp: ModbusBus) -> None:
    with pytest.raises(DeviceFault, match=r"exception 2 \(illegal data address\)") as caught:
        tcp.read(1, Reg.HOLDING, 50, 2)
    assert caught.value.code == 2
    assert tcp.read(1, Reg.HOLDING, 0, 1) == [10]  # the link is still fine


def test_absent_unit_on_tcp_is_exception_4(tcp: ModbusBus) -> None:
    with pytest.raises(DeviceFault) as caught:
        tcp.read(9, Reg.HOLDING, 0, 1)
    assert caught.value.code == 4


def test_refused_port_is_a_quick_link_error_naming_host_and_port(monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    bus = tcp_bus(port, timeout_s=2.0)
    started = time.monotonic()
    with pytest.raises(LinkError, match=rf"^bus lan-1: cannot connect to 127\.0\.0\.1:{port}: connection refused"):
        bus.read(1, Reg.HOLDING, 0, 1)
    assert time.monotonic() - started < 0.5
    # within the back-off the link is not even tried: same message, no delay, no busy loop
    with pytest.raises(LinkError, match=f"127.0.0.1:{port}"):
        bus.read(1, Reg.HOLDING, 0, 1)
    # once a server listens there, the next call after the back-off connects
    monkeypatch.setattr(bus_module, "RETRY_LINK_AFTER_S", 0.0)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", port))
        listener.listen()
        with pytest.raises(NoResponse):  # connected this time; the bare listener just never answers
            bus.read(1, Reg.HOLDING, 0, 1, timeout_s=0.1)
    bus.close()


def test_a_lost_server_fails_each_device_in_its_own_name() -> None:
    """Several unit ids behind one Modbus TCP server that goes away: every device's LinkError
    names that device (the back-off's cached failure carries no other device's context)."""
    units = (7, 16, 9)
    server = ModbusTestServer({u: {"holding": {0: [u]}} for u in units}).start()
    bus = tcp_bus(server.port, timeout_s=0.5)
    try:
        assert [bus.read(u, Reg.HOLDING, 0, 1) for u in units] == [[7], [16], [9]]
        server.stop()
        seen: dict[int, list[str]] = {u: [] for u in units}
        deadline = time.monotonic() + 3 * bus_module.RETRY_LINK_AFTER_S
        while time.monotonic() < deadline:  # the loss, the back-off, the refused reconnects
            for unit in units:
                with pytest.raises(LinkError) as caught:
                    bus.read(unit, Reg.HOLDING, 0, 1)
                seen[unit].append(str(caught.value))
            time.sleep(0.1)
    finally:
        server.stop()
        bus.close()
    for unit, messages in seen.items():
        others = [f"device {u}" for u in units if u != unit]
        assert all(f"device {unit}" in m and not any(o in m for o in others) for m in messages), messages
    assert any(" lost during a request to device " in m for ms in seen.values() for m in ms)
    assert any("connection refused" in m for m in seen[7])  # the reconnect was tried too


def test_absent_serial_port_is_a_link_error() -> None:
    bus = rtu_bus("/dev/ttyUSB-edge-agent-absent")
    with pytest.raises(LinkError, match="^bus rs485-1: serial port /dev/ttyUSB-edge-agent-absent not found; request to device 1 not sent$"):
        bus.read(1, Reg.HOLDING, 0, 1)


def test_silent_rtu_device_is_no_response_within_its_own_timeout(pair: PtyPair) -> None:
    bus = rtu_bus(pair.a, timeout_s=2.0)
    try:
        for timeout in (0.15, 0.4):  # per request, on one open link
            started = time.monotonic()
            with pytest.raises(NoResponse, match="device 1 did not answer within"):
                bus.read(1, Reg.HOLDING, 0, 1, timeout_s=timeout)
            elapsed = time.monotonic() - started
            assert timeout * 0.9 <= elapsed < timeout + 0.3
    finally:
        bus.close()


def test_slow_tcp_device_times_out_and_the_late_answer_is_not_mistaken() -> None:
    with ModbusTestServer({1: {"holding": {0: [1]}}, 2: {"holding": {0: [2]}}}, delays={1: 0.5}) as server:
        bus = tcp_bus(server.port, timeout_s=2.0)
        try:
            started = time.monotonic()
            with pytest.raises(NoResponse):
                bus.read(1, Reg.HOLDING, 0, 1, timeout_s=0.2)
            assert time.monotonic() - started < 0.45
            time.sleep(0.4)  # the late answer to unit 1 is now waiting in the socket
            assert bus.read(2, Reg.HOLDING, 0, 1) == [2]
        finally:
            bus.close()


def _holding_answer(unit: int, words: list[int]) -> bytes:
    data = b"".join(w.to_bytes(2, "big") for w in words)
    return rtu_frame(bytes([unit, 3, len(data)]) + data)


def test_garbage_on_the_line_is_no_response_and_the_next_request_works(pair: PtyPair) -> None:
    good = _holding_answer(1, [0x1234])
    answers = iter([
        b"\x13\x37\xde\xad\xbe\xef",  # line noise
        good[:-1] + bytes([good[-1] ^ 0xFF]),  # bad CRC
        good[:4],  # short frame
        _holding_answer(7, [0x1234]),  # another unit's answer
        good,
    ])
    with ScriptedRtuDevice(pair.b, lambda request: next(answers)) as device:
        bus = rtu_bus(pair.a, timeout_s=0.2)
        try:
            for _ in range(4):
                with pytest.raises(NoResponse):
                    bus.read(1, Reg.HOLDING, 0, 1)
            assert bus.read(1, Reg.HOLDING, 0, 1) == [0x1234]
        finally:
            bus.close()
    assert len(device.requests) == 5
    assert device.requests[0] == rtu_frame(bytes([1, 3, 0, 0, 0, 1]))  # a standard FC03 request


def test_gap_is_silence_between_transactions(pair: PtyPair) -> None:
    with ScriptedRtuDevice(pair.b, lambda request: _holding_answer(1, [5])) as device:
        bus = rtu_bus(pair.a, timeout_s=0.5, gap_s=0.15)
        try:
            bus.read(1, Reg.HOLDING, 0, 1)
            started = time.monotonic()
            bus.read(1, Reg.HOLDING, 0, 1)
            assert time.monotonic() - started >= 0.15
        finally:
            bus.close()
    assert len(device.requests) == 2


def test_writes_then_read_back(tcp: ModbusBus) -> None:
    tcp.write(1, Point("relay", Reg.COIL, 1, DType.BOOL, writable=True), True)
    assert tcp.read(1, Reg.COIL, 0, 3) == [True, True, True]
    tcp.write(1, Point("setpoint", Reg.HOLDING, 100, DType.UINT16, scale=0.1, writable=True), 12.3)  # FC06
    tcp.write(1, Point("limit", Reg.HOLDING, 101, DType.FLOAT32, writable=True), 1.5)  # FC16
    assert tcp.read(1, Reg.HOLDING, 100, 3) == [123, 0x3FC0, 0x0000]
    flag = Point("pump_on", Reg.HOLDING, 103, DType.BOOL, bit=2, writable=True)
    tcp.write(1, flag, True)
    tcp.write(1, Point("pump_alarm", Reg.HOLDING, 103, DType.BOOL, bit=0, writable=True), True)
    tcp.write(1, flag, False)
    assert tcp.read(1, Reg.HOLDING, 103, 1) == [0b001]
    with pytest.raises(DeviceFault):
        tcp.write(1, Point("nowhere", Reg.HOLDING, 90, DType.UINT16, writable=True), 1)
    with pytest.raises(ValueError, match="setpoint"):
        tcp.write(1, Point("setpoint", Reg.HOLDING, 100, DType.UINT16, writable=True), 70000)


def test_a_dead_device_holds_only_its_own_bus(pair: PtyPair, tcp: ModbusBus) -> None:
    dead = rtu_bus(pair.a, timeout_s=0.6)
    assert dead.lock is not tcp.lock
    caught: list[BaseException] = []

    def poll_dead() -> None:
        try:
            dead.read(1, Reg.HOLDING, 0, 1)
        except NoResponse as exc:
            caught.append(exc)

    worker = threading.Thread(target=poll_dead)
    worker.start()
    time.sleep(0.05)
    started = time.monotonic()
    assert tcp.read(1, Reg.HOLDING, 0, 1) == [10]
    assert time.monotonic() - started < 0.45  # the dead device holds its own bus for 0.6 s
    worker.join()
    dead.close()
    assert caught


def test_pymodbus_does_not_log_errors_or_frames_into_ours(pair: PtyPair, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    bus = rtu_bus(pair.a, timeout_s=0.1)
    try:
        with pytest.raises(NoResponse):
            bus.read(1, Reg.HOLDING, 0, 1)
    finally:
        bus.close()
    assert not [r for r in caplog.records if r.name.startswith("pymodbus")]
