"""The meter simulators: frames in, frames out (checked with the codecs, no I/O), faults, the
``simulate dlt645``/``simulate cjt188`` command line as a subprocess, and one end-to-end run:
the real agent with two DL/T 645 meters on one pty line and a CJ/T 188 meter over TCP, its
readings arriving at a real Mosquitto on R/telemetry."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from edge_agent.config.schema import parse_settings
from edge_agent.drivers import cjt188_codec as cjt
from edge_agent.drivers import dlt645_codec as dlt
from edge_agent.field.readers import make_reader, open_link
from edge_agent.field.registry import get_driver
from edge_agent.sim import cli
from edge_agent.sim.byteserver import ByteServer
from edge_agent.sim.meters import Cjt188Bus, Cjt188Meter, Dlt645Bus, Dlt645Meter, MeterFaults, take_frame
from edge_agent.sim.ptypair import PtyPair
from support.agent import start_agent, stop_agent
from support.broker import Mosquitto, Subscriber
from support.keys import init_keys
from support.simproc import line_with, start_simulator, stop_simulator
from support.wire import records, values

A, B = "000000000101", "000000000102"
W = "00000000000101"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def ask(line, request: bytes) -> bytes:
    return line.feed(bytearray(request))


# -- DL/T 645 ------------------------------------------------------------------------------------

def test_dlt_meter_answers_its_dis_and_no_data_for_the_rest() -> None:
    line = Dlt645Bus([Dlt645Meter(A, energy_kwh=321.5), Dlt645Meter(B, phases=3)])
    reply = dlt.decode_read_reply(ask(line, dlt.encode_read(A, 0x00010000)), expect_address=A, expect_di=0x00010000)
    assert reply.value == 321.5
    with pytest.raises(dlt.MeterError) as refused:  # single phase: no phase B
        dlt.decode_read_reply(ask(line, dlt.encode_read(A, 0x02010200)), expect_address=A, expect_di=0x02010200)
    assert refused.value.bits == 0x02
    volts = dlt.decode_read_reply(ask(line, dlt.encode_read(B, 0x02010200)), expect_address=B, expect_di=0x02010200)
    assert 220 < volts.value < 240
    assert ask(line, dlt.encode_read(A, 0x9010, version=1997)) == b""  # a 2007 meter ignores 1997 reads
    assert ask(line, dlt.encode_read("000000000999", 0x00010000)) == b""  # nobody there
    assert ask(line, dlt.encode_read(dlt.BROADCAST, 0x00010000)) == b""


def test_dlt_1997_meter_and_missing_points() -> None:
    line = Dlt645Bus([Dlt645Meter(A, version=1997, missing="energy_export_kWh")])
    assert dlt.decode_read_reply(ask(line, dlt.encode_read(A, 0x9010, version=1997)), expect_address=A,
                                 expect_di=0x9010, version=1997).value == 1234.56
    with pytest.raises(dlt.MeterError):
        dlt.decode_read_reply(ask(line, dlt.encode_read(A, 0x9020, version=1997)), expect_address=A,
                              expect_di=0x9020, version=1997)
    assert ask(line, dlt.encode_read(A, 0x00010000)) == b""


def test_dlt_multi_frame_b1_then_92() -> None:
    line = Dlt645Bus([Dlt645Meter(A, energy_kwh=4321.09, multi_frame=True)])
    first = dlt.decode_read_data(ask(line, dlt.encode_read(A, 0)), expect_address=A, expect_di=0)
    assert first.more_follows and len(first.payload) == 2
    rest = dlt.decode_read_data(ask(line, dlt.encode_read_next(A, 0, 1)), expect_address=A, expect_di=0)
    assert not rest.more_follows and rest.seq == 1
    assert dlt.decode_value(0, first.payload + rest.payload) == 4321.09
    with pytest.raises(dlt.MeterError):  # nothing more to fetch
        dlt.decode_read_data(ask(line, dlt.encode_read_next(A, 0, 2)), expect_address=A, expect_di=0)


def test_dlt_read_address_alone_and_colliding() -> None:
    alone = Dlt645Bus([Dlt645Meter(A)])
    assert dlt.read_address_reply(ask(alone, dlt.encode_read_address())) == A
    crowded = Dlt645Bus([Dlt645Meter(A), Dlt645Meter(B)])
    garbled = ask(crowded, dlt.encode_read_address())
    assert garbled
    with pytest.raises(dlt.FrameError):  # two meters at once: what a real line makes of it
        dlt.read_address_reply(garbled)


def test_dlt_energy_rises_with_the_power_drawn() -> None:
    clock = Clock()
    meter = Dlt645Meter(A, energy_kwh=100.0, voltage=200.0, current=5.0, power_factor=1.0, wander=0.0, clock=clock)
    line = Dlt645Bus([meter])

    def energy() -> float:
        return dlt.decode_read_reply(ask(line, dlt.encode_read(A, 0x00010000)), expect_address=A,
                                     expect_di=0x00010000).value
    assert energy() == 100.0
    clock.now += 3600  # an hour at 1 kW
    assert energy() == 101.0
    power = dlt.decode_read_reply(ask(line, dlt.encode_read(A, 0x02030000)), expect_address=A, expect_di=0x02030000)
    assert power.value == 1.0


@pytest.mark.parametrize("kwargs, expect", [
    ({"version": 2000}, "version 2000"), ({"phases": 2}, "phases 2"), ({"missing": "freq"}, "unknown point 'freq'"),
    ({"current": 900.0}, "current_a_A 909 does not fit"), ({"time_scale": 0}, "time_scale 0"),
])
def test_dlt_meter_checks_its_options(kwargs, expect) -> None:
    with pytest.raises(ValueError, match=expect):
        Dlt645Meter(A, **kwargs)
    with pytest.raises(ValueError, match="two meters at address"):
        Dlt645Bus([Dlt645Meter(A), Dlt645Meter(A)])


# -- CJ/T 188 ------------------------------------------------------------------------------------

@pytest.mark.parametrize("order", ["90 1F", "1F 90"])
def test_cjt_meter_answers_in_its_own_di_order_and_echoes_ser(order) -> None:
    line = Cjt188Bus([Cjt188Meter(W, reply_di_order=order.replace(" ", ""), flow_m3=42.42)])
    for request_order in ("90 1F", "1F 90"):
        raw = ask(line, cjt.encode_read(W, ser=7, di_order=request_order))
        assert cjt.decode_frame(raw).data[:2] == bytes.fromhex(order)
        reading = cjt.decode_read_reply(raw, expect_address=W, expect_type=0x10, expect_ser=7)
        assert (reading.flow_m3, reading.valve, reading.battery_low) == (42.42, "open", False)
    assert ask(line, cjt.encode_read(W, 0x30)) == b""  # asked as a gas meter: not this one


def test_cjt_heat_and_gas_meters() -> None:
    clock = Clock()
    line = Cjt188Bus([Cjt188Meter(W, meter_type="heat", heat_kwh=100.0, power_kw=2.0, clock=clock),
                      Cjt188Meter("7", meter_type=0x30, flow_m3=5.0, rate_m3_per_h=1.0, clock=clock)])
    heat = cjt.decode_read_reply(ask(line, cjt.encode_read(W, 0x20)), expect_address=W, expect_type=0x20)
    assert isinstance(heat, cjt.HeatReading) and heat.heat_kWh == 100.0
    clock.now += 1800
    assert cjt.decode_read_reply(ask(line, cjt.encode_read(W, 0x20)), expect_address=W).heat_kWh == 101.0
    gas = cjt.decode_read_reply(ask(line, cjt.encode_read("7", 0x30)), expect_address="7", expect_type=0x30)
    assert gas.flow_m3 == 5.0 and gas.settlement_flow_m3 == 5.0


# -- faults and framing --------------------------------------------------------------------------

def test_faults_shape_the_answer() -> None:
    meter = Dlt645Meter(A)
    line = Dlt645Bus([meter])
    request = dlt.encode_read(A, 0x00010000)
    meter.set_faults(silence=True)
    assert ask(line, request) == b""
    meter.set_faults(MeterFaults(bad_checksum=True))
    with pytest.raises(dlt.BadChecksum):
        dlt.decode_frame(ask(line, request))
    meter.set_faults(MeterFaults(error=0x04))
    with pytest.raises(dlt.MeterError, match="password"):
        dlt.decode_read_reply(ask(line, request), expect_address=A, expect_di=0x00010000)
    meter.set_faults(MeterFaults(echo=True))
    echoed = ask(line, request)
    assert echoed.startswith(request) and dlt.decode_frame(echoed[len(request):]).control == 0x91
    meter.set_faults(MeterFaults(garbage=True))
    assert 3 <= len(ask(line, request)) <= 12
    meter.set_faults(MeterFaults(delay_s=0.2))
    started = time.monotonic()
    assert ask(line, request)
    assert time.monotonic() - started >= 0.2
    cjt_meter = Cjt188Meter(W)
    cjt_meter.set_faults(error=0x0103)
    with pytest.raises(cjt.MeterError):
        cjt.decode_read_reply(ask(Cjt188Bus([cjt_meter]), cjt.encode_read(W)), expect_address=W)
    with pytest.raises(ValueError):
        MeterFaults(delay_s=-1)


def test_the_line_skips_noise_and_waits_for_whole_frames() -> None:
    line = Dlt645Bus([Dlt645Meter(A)])
    request = dlt.encode_read(A, 0x00010000)
    pending = bytearray(b"\x00\x68\x99" + request[:9])
    assert line.feed(pending) == b"" and pending == request[:9]  # noise gone, wake bytes and start kept
    pending += request[9:] + request  # the rest, then a second request in the same chunk
    answers = line.feed(pending)
    assert pending == b"" and answers.count(b"\x68\x91") == 2
    stray = bytearray(b"\x68" + bytes(20) + request)  # a 68 that never becomes a frame
    assert take_frame(stray, dlt.frame_length_needed, dlt.decode_frame)[0].endswith(request)


# -- the command line ------------------------------------------------------------------------------
def _poll_once(bus_yaml: str, devices_yaml: str) -> dict:
    settings = parse_settings(f"gateway: {{id: gw-1, site: site-1}}\nmqtt: {{host: 127.0.0.1}}\n"
                              f"buses:\n  - {bus_yaml}\ndevices:\n{devices_yaml}")
    link = open_link(settings.buses[0])
    try:
        return {d.name: make_reader(d, get_driver(d.driver), link).poll() for d in settings.devices}
    finally:
        link.close()


def test_cli_dlt645_on_a_pty_until_sigterm() -> None:
    with start_simulator("dlt645", "--pty", "--meter", f"{A}:version=1997,energy_kwh=77.7", "--meter", f"{B}:version=1997",
                "--fault", f"{B}:silence") as proc:
        try:
            line = line_with(proc, "serial port for the agent:")
            assert line.startswith("dlt645 on a pty, 2400 8E1; serial port for the agent: /dev/")
            assert line_with(proc, "meters:") == ("meters: Dlt645Meter(000000000101, 1997, 1 phase), "
                                                      "Dlt645Meter(000000000102, 1997, 1 phase)")
            results = _poll_once(f"{{name: m, protocol: dlt645, serial: {line.rsplit(' ', 1)[1]}, timeout: 300ms}}",
                                 f'  - {{name: a, bus: m, driver: dlt645_meter, address: "{A}", retries: 0,'
                                 ' options: {version: 1997}}\n'
                                 f'  - {{name: b, bus: m, driver: dlt645_meter, address: "{B}", retries: 0,'
                                 ' options: {version: 1997}}\n')
        finally:
            code = stop_simulator(proc)
        assert code == 0, proc.stderr.read()
    assert results["a"].errors == [] and results["a"].readings[0].val == 77.7
    assert not results["b"].answered and len(results["b"].errors) == 2


def test_cli_cjt188_over_tcp() -> None:
    with start_simulator("cjt188", "--tcp", "127.0.0.1:0", "--meter", f"{W}:reply_di_order=1F90,flow_m3=9.5") as proc:
        try:
            port = int(line_with(proc, "cjt188 TCP on 127.0.0.1:").rsplit(":", 1)[1])
            results = _poll_once(f"{{name: w, protocol: cjt188, host: 127.0.0.1, port: {port}}}",
                                 f'  - {{name: w1, bus: w, driver: cjt188_meter, address: "{W}"}}\n')
        finally:
            code = stop_simulator(proc)
        assert code == 0, proc.stderr.read()
    assert results["w1"].errors == [] and results["w1"].readings[0].val == 9.5


def test_cli_bad_argument_is_one_line_and_exit_2() -> None:
    proc = subprocess.run([sys.executable, "-m", "edge_agent.cli", "simulate", "dlt645", "--pty",
                           "--meter", f"{A}:phase=3"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "did you mean 'phases'" in proc.stderr


@pytest.mark.parametrize("argv, expect", [
    (["dlt645", "--pty", "--meter", "1234567890123"], "not up to 12 digits"),
    (["dlt645", "--pty", "--meter", "1:current=x"], "not a number"),
    (["dlt645", "--pty", "--meter", "1:missing=freq"], "unknown point 'freq'"),
    (["dlt645", "--meter", "1"], "nothing to serve on"),
    (["dlt645", "--pty", "--meter", "1", "--meter", "000000000001"], "given twice"),
    (["dlt645", "--pty", "--meter", "1", "--fault", "2:silence"], "has no --meter"),
    (["dlt645", "--pty", "--meter", "1", "--fault", "1:slience"], "did you mean 'silence'"),
    (["dlt645", "--pty", "--meter", "1", "--fault", "1:delay=soon"], "delay"),
    (["dlt645", "--pty", "--meter", "1", "--fault", "1"], "is not ADDRESS:FAULT"),
    (["cjt188", "--pty", "--meter", "1:meter_type=steam"], "meter_type 'steam'"),
    (["cjt188", "--pty", "--meter", "1:reply_di_order=901E"], "reply_di_order"),
    (["cjt188", "--tcp", "localhost", "--meter", "1"], "HOST:PORT"),
])
def test_cli_bad_arguments(capsys, argv, expect) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["simulate", *argv])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err.count("\n") == 1 and expect in err and "Traceback" not in err, err


def test_cli_parsers() -> None:
    from edge_agent.sim.cli_meters import fault_parser, meter_parser
    assert meter_parser("dlt645")("7:phases=3,multi_frame=true,missing=frequency_Hz") == (
        "000000000007", {"phases": 3, "multi_frame": True, "missing": "frequency_Hz"})
    assert fault_parser("cjt188")("7:echo,error=0x0103,delay=250ms") == (
        "00000000000007", {"echo": True, "error": 0x0103, "delay_s": 0.25})


# -- end to end ------------------------------------------------------------------------------------

def test_agent_publishes_meter_readings_end_to_end(tmp_path: Path) -> None:
    """Two DL/T 645 meters on one pty line and a CJ/T 188 meter over TCP, through the real agent
    to Mosquitto: every device's readings arrive on R/telemetry, each with its own values."""
    root = "edge/v1/site-m/gw-m"
    pair = PtyPair(baud=2400, bits_per_byte=11)
    dlt_server = ByteServer(Dlt645Bus([Dlt645Meter(A, version=1997, energy_kwh=111.11, current=0.0),
                                       Dlt645Meter(B, version=1997, energy_kwh=222.22, current=0.0)]))
    dlt_server.serve_serial(pair.b, baud=2400)
    cjt_server = ByteServer(Cjt188Bus([Cjt188Meter(W, reply_di_order="1F 90", flow_m3=33.33, rate_m3_per_h=0.0)]))
    _, port = cjt_server.serve_tcp(baud=2400, bits_per_byte=11)
    cfg = {
        "gateway": {"id": "gw-m", "site": "site-m", "state_dir": str(tmp_path / "state")},
        "buses": [{"name": "rs485", "protocol": "dlt645", "serial": pair.a, "timeout": "500ms"},
                  {"name": "water", "protocol": "cjt188", "host": "127.0.0.1", "port": port, "timeout": "500ms"}],
        "devices": [
            {"name": "flat-a", "bus": "rs485", "driver": "dlt645_meter", "address": A, "interval": "1s",
             "options": {"version": 1997}},
            {"name": "flat-b", "bus": "rs485", "driver": "dlt645_meter", "address": B, "interval": "1s",
             "options": {"version": 1997}},
            {"name": "water-a", "bus": "water", "driver": "cjt188_meter", "address": W, "interval": "1s"},
        ],
    }
    log = tmp_path / "agent.log"
    try:
        with Mosquitto(tmp_path) as broker, Subscriber(broker, f"{root}/telemetry") as platform:
            cfg["mqtt"] = {"host": broker.host, "port": broker.port, "reconnect_min": "200ms", "reconnect_max": "1s"}
            cfg["buffer"] = {"commit_interval": "50ms"}
            config = tmp_path / "gateway.yaml"
            config.write_text(yaml.safe_dump(cfg, sort_keys=False))
            init_keys(config)
            agent = start_agent(config, log)
            try:
                def seen(messages) -> dict:
                    return {(v.dev, v.pt): (v.val, v.q) for v in values(records(messages, f"{root}/telemetry"))}
                wanted = {("flat-a", "energy_import_kWh"), ("flat-b", "energy_import_kWh"),
                          ("water-a", "flow_total_m3"), ("water-a", "valve")}
                platform.wait_for(lambda ms: wanted <= set(seen(ms)), 30, "records of all three meters")
            finally:
                stop_agent(agent, log, timeout=20)
            got = seen(platform.messages)
            recs = records(platform.messages, f"{root}/telemetry")
    finally:
        dlt_server.stop()
        cjt_server.stop()
        pair.close()
    assert got[("flat-a", "energy_import_kWh")] == (111.11, "good")
    assert got[("flat-b", "energy_import_kWh")] == (222.22, "good")
    assert got[("water-a", "flow_total_m3")] == (33.33, "good") and got[("water-a", "valve")] == ("open", "good")
    # a poll is one record: a DL/T 645 round (a frame per DI) and a CJ/T 188 frame, all their points
    for dev in ("flat-a", "flat-b", "water-a"):
        points = [frozenset(r["vals"]) for r in recs if r["dev"] == dev]
        assert points and len(set(points)) == 1, (dev, set(points))
    assert "Traceback" not in log.read_text()
