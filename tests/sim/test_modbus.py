"""The Modbus simulator against pymodbus' clients as an independent peer, and against raw bytes."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import time

import pytest
import serial
from hypothesis import given, settings, strategies as st
from pymodbus.client import ModbusSerialClient, ModbusTcpClient
from pymodbus.exceptions import ModbusException
from pymodbus.framer import FramerType
from pymodbus.framer.rtu import FramerRTU

from edge_agent.model import Reg
from edge_agent.sim import cli
from edge_agent.sim.args import parse_hostport
from edge_agent.sim.devices import EnergyMeter, Faults, LevelSensor, RelayBoard
from edge_agent.sim.modbus import ModbusSimulator, _RtuStream, crc16, execute, rtu_frame
from edge_agent.sim.ptypair import PtyPair
from support.simproc import line_with, start_simulator, stop_simulator

SHORT = 0.3  # client timeout where no answer is the expected outcome


@pytest.fixture
def sim():
    units = {1: LevelSensor(level_m=0.8, decimals=2), 2: EnergyMeter(wander=0.0), 3: RelayBoard()}
    simulator = ModbusSimulator(units)
    simulator.port = simulator.serve_tcp()[1]
    yield simulator
    simulator.stop()


@pytest.fixture
def tcp(sim):
    client = ModbusTcpClient("127.0.0.1", port=sim.port, timeout=SHORT, retries=0)
    assert client.connect()
    yield client
    client.close()


@pytest.fixture
def rtu(sim):
    pair = PtyPair()
    sim.serve_serial(pair.b, baud=9600)
    client = ModbusSerialClient(pair.a, baudrate=9600, timeout=SHORT, retries=0)
    client.line_path = pair.a  # for tests that put their own bytes on the line
    assert client.connect()
    yield client
    client.close()
    sim.stop()
    pair.close()


def mbap(unit: int, pdu: bytes, tid: int = 7) -> bytes:
    return struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu


def recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, "server closed the connection"
        data += chunk
    return data


def recv_mbap(sock: socket.socket) -> tuple[int, int, bytes]:
    tid, proto, length, unit = struct.unpack(">HHHB", recv_exact(sock, 7))
    assert proto == 0
    return tid, unit, recv_exact(sock, length - 1)


def raw_tcp(port: int, unit: int, pdu: bytes) -> bytes:
    """The reply PDU to one request sent as raw MBAP bytes."""
    with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
        sock.sendall(mbap(unit, pdu))
        tid, got_unit, reply = recv_mbap(sock)
    assert (tid, got_unit) == (7, unit)
    return reply


def fails(call) -> bool:
    try:
        return call().isError()
    except ModbusException:
        return True


# -- framing --------------------------------------------------------------------------------
def test_crc16_known_vectors():
    assert rtu_frame(1, bytes.fromhex("030000000A")) == bytes.fromhex("01030000000AC5CD")
    assert crc16(b"123456789") == 0x4B37  # CRC-16/MODBUS check value of the CRC catalogue
    assert crc16(b"") == 0xFFFF
    frame = bytes.fromhex("0103020050")
    assert struct.pack("<H", crc16(frame)) == FramerRTU.compute_CRC(frame).to_bytes(2, "big")


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=260))
def test_execute_never_raises_and_answers_the_function(pdu):
    reply = execute(RelayBoard(), pdu)
    assert reply[0] in (pdu[0], (pdu[0] | 0x80) & 0xFF)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=8))
def test_rtu_stream_survives_any_bytes(chunks):
    bad = []
    stream = _RtuStream(lambda: bad.append(1))
    for chunk in chunks:
        for frame in stream.feed(chunk) if chunk else stream.silence():
            assert crc16(frame[:-2]) == struct.unpack("<H", frame[-2:])[0]


def test_does_not_import_pymodbus():
    code = ("import sys, edge_agent.sim.modbus, edge_agent.sim.devices, edge_agent.sim.cli;"
            "sys.exit(any(m.split('.')[0] == 'pymodbus' for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# -- device models ---------------------------------------------------------------------------
def test_level_rises_and_caps():
    sensor = LevelSensor(level_m=0.8, decimals=2, rise_m_per_min=6.0, max_level_m=6.0)
    sensor.tick(100.0)
    sensor.tick(110.0)
    assert sensor.read(Reg.HOLDING, 3, 2) == [2, 180]
    sensor.tick(1000.0)
    assert sensor.get(Reg.HOLDING, 4) == 600


def test_level_negative_is_twos_complement():
    assert LevelSensor(level_m=-0.25, decimals=2).get(Reg.HOLDING, 4) == (-25) & 0xFFFF


def test_meter_energy_integrates_power():
    meter = EnergyMeter(voltage=230.0, current=4.8, power_factor=0.95, import_kwh=10.0, wander=0.0)
    meter.tick(0.0)
    meter.tick(3600.0)
    assert meter.values()["energy_import_kWh"] == pytest.approx(10.0 + 230 * 4.8 * 0.95 / 1000)
    exporter = EnergyMeter(current=-2.0, wander=0.0)
    exporter.tick(0.0)
    exporter.tick(3600.0)
    assert exporter.values()["power_W"] < 0 and exporter.values()["energy_export_kWh"] > 0


def test_meter_wanders_within_bounds():
    meter = EnergyMeter(wander=0.01, seed=3)
    volts = set()
    for t in range(20):
        meter.tick(float(t))
        volts.add(meter.values()["voltage_V"])
    assert len(volts) > 1 and all(227.7 <= v <= 232.3 for v in volts)


# -- reads and writes through pymodbus ------------------------------------------------------
def test_level_over_tcp(tcp):
    reply = tcp.read_holding_registers(0, count=5, device_id=1)
    assert not reply.isError()
    address, baud_code, _unit, decimals, raw = reply.registers
    assert (address, baud_code) == (1, 3)
    assert raw == round(0.8 * 10**decimals) == 80


def test_level_over_rtu_pty(sim, rtu):
    sim.units[1].level_m = 1.234
    sim.units[1].write(Reg.HOLDING, 3, [3])
    decimals, raw = rtu.read_holding_registers(3, count=2, device_id=1).registers
    assert raw * 10.0**-decimals == pytest.approx(1.234)


def test_level_over_rtu_tcp(sim):
    port = sim.serve_tcp(rtu_framing=True)[1]
    client = ModbusTcpClient("127.0.0.1", port=port, framer=FramerType.RTU, timeout=1, retries=0)
    assert client.connect()
    try:
        assert client.read_holding_registers(3, count=2, device_id=1).registers == [2, 80]
    finally:
        client.close()


def test_meter_float32(tcp):
    def floats(address, count):
        regs = tcp.read_input_registers(address, count=count, device_id=2).registers
        return struct.unpack(f">{count // 2}f", struct.pack(f">{count}H", *regs))
    block = floats(0x0000, 0x20)  # the driver's merged request, gaps included
    volts, amps, watts, va, var, pf = block[0], block[3], block[6], block[9], block[12], block[15]
    assert volts == pytest.approx(230.0) and amps == pytest.approx(4.8) and pf == pytest.approx(0.95)
    assert watts == pytest.approx(230 * 4.8 * 0.95, rel=1e-5) and va == pytest.approx(230 * 4.8, rel=1e-5)
    assert var == pytest.approx((va**2 - watts**2) ** 0.5, rel=1e-4)
    hz, imp, exp = floats(0x0046, 6)
    assert hz == pytest.approx(50.0) and imp == pytest.approx(1234.5, abs=0.01) and exp == 0.0
    (total,) = floats(0x0156, 2)
    assert total == pytest.approx(imp + exp, abs=0.01)


def test_write_coils_and_read_back(tcp):
    assert not tcp.write_coils(0, [True, False, True, True], device_id=3).isError()
    assert not tcp.write_coil(1, True, device_id=3).isError()
    assert not tcp.write_coil(3, False, device_id=3).isError()
    assert tcp.read_coils(0, count=8, device_id=3).bits[:8] == [True, True, True, False, False, False, False, False]
    assert tcp.read_discrete_inputs(0, count=4, device_id=3).bits[:4] == [True, True, True, False]


def test_write_registers_and_read_back(tcp):
    assert not tcp.write_register(3, 3, device_id=1).isError()  # decimals 3: the level rescales
    assert tcp.read_holding_registers(3, count=2, device_id=1).registers == [3, 800]
    assert not tcp.write_registers(0, [5, 4, 1], device_id=1).isError()
    assert tcp.read_holding_registers(0, count=3, device_id=1).registers == [5, 4, 1]


# -- exceptions -----------------------------------------------------------------------------
@pytest.mark.parametrize("unit, pdu, code", [
    (1, bytes.fromhex("07"), 0x01),  # read exception status: not implemented
    (1, bytes.fromhex("2B0E0100"), 0x01),  # read device identification
    (1, bytes.fromhex("0300050001"), 0x02),  # past the level register
    (1, bytes.fromhex("0300030003"), 0x02),  # partly mapped
    (1, bytes.fromhex("0600040001"), 0x02),  # the level register is read-only
    (1, bytes.fromhex("04FFFF0002"), 0x02),  # past 65535
    (1, bytes.fromhex("0300000000"), 0x03),  # count 0
    (1, bytes.fromhex("030000007E"), 0x03),  # 126 registers
    (3, bytes.fromhex("01000007D1"), 0x03),  # 2001 bits
    (3, bytes.fromhex("0500001234"), 0x03),  # a coil is FF00 or 0000
    (1, bytes.fromhex("0600030007"), 0x03),  # decimals 7
    (1, bytes.fromhex("100000000203000100"), 0x03),  # byte count does not match
    (3, bytes.fromhex("0300000001"), 0x02),  # a relay board has no holding registers
])
def test_exception_replies(sim, unit, pdu, code):
    assert raw_tcp(sim.port, unit, pdu) == bytes([pdu[0] | 0x80, code])


def test_exception_reply_through_pymodbus(tcp):
    reply = tcp.read_holding_registers(5, count=1, device_id=1)
    assert reply.isError() and reply.exception_code == 2


def test_unknown_unit_tcp_is_gateway_exception(tcp):
    reply = tcp.read_holding_registers(0, count=1, device_id=9)
    assert reply.isError() and reply.exception_code == 0x0B


def test_unknown_unit_rtu_is_silent(sim, rtu):
    started = time.monotonic()
    assert fails(lambda: rtu.read_holding_registers(0, count=1, device_id=9))
    assert time.monotonic() - started < SHORT + 0.5
    assert [(r.unit, r.function) for r in sim.requests] == [(9, 3)]


# -- faults ---------------------------------------------------------------------------------
@pytest.mark.parametrize("fault", ["silence", "garbage", "bad_crc"])
def test_fault_breaks_tcp_reply(sim, tcp, fault):
    sim.set_faults(1, **{fault: True})
    assert fails(lambda: tcp.read_holding_registers(3, count=2, device_id=1))
    sim.set_faults(1, Faults())
    assert tcp.read_holding_registers(3, count=2, device_id=1).registers == [2, 80]


@pytest.mark.parametrize("fault", ["silence", "garbage", "bad_crc"])
def test_fault_breaks_rtu_reply(sim, rtu, fault):
    sim.set_faults(1, **{fault: True})
    assert fails(lambda: rtu.read_holding_registers(3, count=2, device_id=1))
    sim.set_faults(1, Faults())
    assert rtu.read_holding_registers(3, count=2, device_id=1).registers == [2, 80]


def test_fault_exception_on_reads(sim, tcp):
    sim.set_faults(1, exception=4)
    reply = tcp.read_holding_registers(3, count=2, device_id=1)
    assert reply.isError() and reply.exception_code == 4
    assert not tcp.write_register(3, 1, device_id=1).isError()  # writes still work


def test_fault_delay(sim):
    sim.set_faults(1, delay_s=0.25)
    client = ModbusTcpClient("127.0.0.1", port=sim.port, timeout=2, retries=0)
    assert client.connect()
    try:
        started = time.monotonic()
        assert client.read_holding_registers(4, count=1, device_id=1).registers == [80]
        assert time.monotonic() - started >= 0.25
    finally:
        client.close()


def test_fault_deaf_drops_requests_soon_after_an_unanswered_one_to_another_unit(sim, rtu):
    """``deaf``: like a libmodbus slave still waiting for an absent unit's reply (docs/devices.md,
    a device fails right after an absent one)."""
    sim.set_faults(1, deaf_s=1.0)

    def read_1():
        return rtu.read_holding_registers(4, count=1, device_id=1)

    assert read_1().registers == [80]  # nothing unanswered before it
    assert fails(lambda: rtu.read_holding_registers(0, count=1, device_id=9))  # nobody is unit 9
    assert fails(read_1) and fails(read_1)  # 0.3 and 0.6 s later: still waiting for unit 9's reply
    time.sleep(1.0)
    assert read_1().registers == [80]
    assert rtu.read_input_registers(0, count=2, device_id=2).registers  # answered: nobody waits
    assert read_1().registers == [80]
    assert [(r.unit, r.function) for r in sim.requests][-3:] == [(1, 3), (2, 4), (1, 3)]


def test_silent_device_does_not_act(sim, tcp):
    sim.set_faults(3, silence=True)
    assert fails(lambda: tcp.write_coil(0, True, device_id=3))
    sim.set_faults(3, silence=False)
    assert tcp.read_coils(0, count=1, device_id=3).bits[0] is False


def test_faults_validate():
    with pytest.raises(ValueError):
        Faults(exception=0)
    with pytest.raises(ValueError):
        Faults(delay_s=-1)


# -- bad request frames ---------------------------------------------------------------------
def test_bad_mbap_frames_are_skipped(sim):
    with socket.create_connection(("127.0.0.1", sim.port), timeout=2) as sock:
        sock.sendall(b"\x00\x01\x12\x34\x00\x06\x01\x03")  # protocol id 0x1234
        time.sleep(0.05)
        sock.sendall(mbap(1, bytes.fromhex("0300040001")))
        assert recv_mbap(sock)[2] == bytes.fromhex("03020050")
        sock.sendall(mbap(1, bytes.fromhex("0300040001"))[:9])  # truncated, then a pause
        time.sleep(0.7)
        sock.sendall(mbap(1, bytes.fromhex("0300040001")))
        assert recv_mbap(sock)[2] == bytes.fromhex("03020050")
    with socket.create_connection(("127.0.0.1", sim.port), timeout=2) as sock:
        sock.sendall(b"\x00\x01\x00")  # half a header, then hang up
    assert raw_tcp(sim.port, 1, bytes.fromhex("0300040001")) == bytes.fromhex("03020050")
    assert sim.bad_frames == 2


def test_bad_rtu_frames_over_tcp_are_skipped(sim):
    port = sim.serve_tcp(rtu_framing=True)[1]
    good = rtu_frame(1, bytes.fromhex("0300040001"))
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        for junk in (good[:-1] + bytes([good[-1] ^ 1]), good[:5], b"\xff\xfe\x00"):
            sock.sendall(junk)
            time.sleep(0.15)
        sock.sendall(good)
        assert recv_exact(sock, 7) == rtu_frame(1, bytes.fromhex("03020050"))
    assert sim.bad_frames == 3
    assert [r.frame for r in sim.requests] == [good]


def test_rtu_broadcast_writes_without_reply(sim):
    port = sim.serve_tcp(rtu_framing=True)[1]
    with socket.create_connection(("127.0.0.1", port), timeout=0.3) as sock:
        sock.sendall(rtu_frame(0, bytes.fromhex("050002FF00")))
        with pytest.raises(TimeoutError):
            sock.recv(16)
    assert sim.units[3].get(Reg.COIL, 2) == 1


def test_garbage_on_the_serial_line_is_skipped(sim, rtu):
    with serial.Serial(rtu.line_path, timeout=0) as line:
        line.write(b"\x01\x03\x00")
        line.write(b"\x55" * 20)
    time.sleep(0.1)
    assert rtu.read_holding_registers(4, count=1, device_id=1).registers == [80]
    assert sim.bad_frames >= 1


# -- recorded frames ------------------------------------------------------------------------
def test_requests_are_recorded(sim, tcp):
    tcp.read_holding_registers(3, count=2, device_id=1)
    tcp.write_coil(0, True, device_id=3)
    tcp.read_coils(0, count=1, device_id=9)
    got = [(r.transport, r.unit, r.function) for r in sim.requests]
    assert got == [("tcp", 1, 3), ("tcp", 3, 5), ("tcp", 9, 1)]
    assert sim.requests[0].frame[6:] == bytes.fromhex("010300030002")
    sim.clear()
    assert sim.requests == []


def test_request_history_is_bounded():
    simulator = ModbusSimulator({1: RelayBoard()}, history=5)
    port = simulator.serve_tcp()[1]
    try:
        for _ in range(10):
            raw_tcp(port, 1, bytes.fromhex("0100000001"))
        assert len(simulator.requests) == 5
    finally:
        simulator.stop()


# -- command line ---------------------------------------------------------------------------
def test_cli_serves_tcp_until_sigterm():
    with start_simulator("modbus", "--tcp", "127.0.0.1:0", "--device", "1:qdy_level:level_m=1.5,decimals=3") as proc:
        try:
            port = int(line_with(proc, "modbus TCP on").rsplit(":", 1)[1])
            client = ModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)
            assert client.connect()
            assert client.read_holding_registers(3, count=2, device_id=1).registers == [3, 1500]
            client.close()
        finally:
            code = stop_simulator(proc)
        assert code == 0, proc.stderr.read()


def test_cli_pty_with_fault():
    with start_simulator("modbus", "--pty", "--device", "1:relay:coils=4", "--device", "2:eastron_meter",
                    "--fault", "2:exception=4") as proc:
        try:
            path = line_with(proc, "serial port for the agent:").rsplit(" ", 1)[1]
            assert os.path.exists(path)
            client = ModbusSerialClient(path, baudrate=9600, timeout=2, retries=0)
            assert client.connect()
            assert client.read_coils(0, count=4, device_id=1).bits[:4] == [False] * 4
            assert client.read_input_registers(0, count=2, device_id=2).exception_code == 4
            client.close()
        finally:
            code = stop_simulator(proc)
        assert code == 0, proc.stderr.read()


def test_cli_bad_args_subprocess():
    proc = subprocess.run([sys.executable, "-m", "edge_agent.sim.cli", "simulate", "modbus",
                           "--tcp", "127.0.0.1:0", "--device", "1:qdy_levle"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "did you mean 'qdy_level'" in proc.stderr


@pytest.mark.parametrize("argv, expect", [
    (["--tcp", "127.0.0.1:0", "--device", "1:qdy_level:rise=1"], "did you mean 'rise_m_per_min'"),
    (["--tcp", "127.0.0.1:0", "--device", "1:qdy_level:decimals=9"], "decimals 9"),
    (["--tcp", "127.0.0.1:0", "--device", "1:qdy_level:decimals=x"], "not an integer"),
    (["--tcp", "127.0.0.1:0", "--device", "300:relay"], "1..247"),
    (["--tcp", "localhost", "--device", "1:relay"], "HOST:PORT"),
    (["--device", "1:relay"], "nothing to serve on"),
    (["--tcp", "127.0.0.1:0"], "--device"),
    (["--tcp", "127.0.0.1:0", "--device", "1:relay", "--device", "1:relay"], "twice"),
    (["--tcp", "127.0.0.1:0", "--device", "1:relay", "--fault", "2:silence"], "no --device"),
    (["--tcp", "127.0.0.1:0", "--device", "1:relay", "--fault", "1:slience"], "did you mean 'silence'"),
    (["--tcp", "127.0.0.1:0", "--device", "1:relay", "--fault", "1:delay=soon"], "delay"),
    (["--tcp", "127.0.0.1:0", "--device", "1:relay", "--fault", "1:deaf=-1"], "negative"),
    (["--serial", "/dev/null", "--pty", "--device", "1:relay"], "not allowed with"),
])
def test_cli_bad_args(capsys, argv, expect):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["simulate", "modbus", *argv])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err.count("\n") == 1 and expect in err and "Traceback" not in err


def test_cli_parsers():
    assert cli.parse_device("2:eastron_meter:voltage=120,seed=4") == (2, "eastron_meter", {"voltage": 120.0, "seed": 4})
    assert cli.parse_fault("1:garbage,delay=500ms,exception=0x0B") == (
        1, {"garbage": True, "delay_s": 0.5, "exception": 11})
    assert cli.parse_fault("4:deaf=0.5") == cli.parse_fault("4:deaf=500ms") == (4, {"deaf_s": 0.5})
    assert parse_hostport("[::1]:502") == ("::1", 502)


def test_cli_port_in_use_is_one_line(capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert cli.main(["simulate", "modbus", "--tcp", f"127.0.0.1:{port}", "--device", "1:relay"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Address already in use" in err
