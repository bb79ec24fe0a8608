"""DL/T 645 meter driver against its simulator on a wire-timed line (pty pair paced at 2400 baud,
11 bits a byte as 8E1; the bus config keeps its 2400 8E1 default), set up from YAML through ``parse_settings``, ``open_link`` and
``make_reader`` as the daemon does: reads, B1 follow-ups, two meters sharing one link, faults
(each leaves the other meter alone), the "no data" DI retired after one poll, the local echo,
and config errors. The reply scanner is also tested on bytes alone.

Few DIs per test (``quantities: energy`` or the two of DL/T 645-1997): a read is ~0.2 s."""

from __future__ import annotations

import logging
import re

import pytest

from edge_agent.config.schema import ConfigError, parse_settings
from edge_agent.drivers import dlt645_codec as dlt
from edge_agent.drivers._meter import ReplyScanner
from edge_agent.drivers.dlt645_meter import DRIVER, select_dis
from edge_agent.model import Quality
from edge_agent.field.readers import make_reader, open_link
from edge_agent.field.registry import get_driver
from edge_agent.sim.meters import Dlt645Bus, Dlt645Meter, MeterFaults
from support.meter_line import meter_lines, said

A, B = "000000000101", "000000000102"


@pytest.fixture
def line():
    """``serve(*meters) -> (path for the agent, Dlt645Bus)`` on a wire-timed pty pair."""
    with meter_lines(Dlt645Bus) as serve:
        yield serve


def config(path: str, devices: str, *, timeout: str = "500ms") -> str:
    return f"""\
gateway: {{id: gw-1, site: site-1}}
mqtt: {{host: 127.0.0.1}}
buses:
  - name: meters
    protocol: dlt645
    serial: {path}
    timeout: {timeout}
devices:
{devices}"""


def readers(yaml_text: str):
    """{device: reader} over one link per bus, exactly as the daemon builds them; and the links."""
    settings = parse_settings(yaml_text)
    line = settings.bus("meters")
    assert (line.baud, line.parity, line.data_bits, line.stop_bits) == (2400, "E", 8, 1)  # the 8E1 default
    links = {b.name: open_link(b) for b in settings.buses}
    out = {d.name: make_reader(d, get_driver(d.driver), links[d.bus]) for d in settings.devices}
    return out, links


@pytest.fixture
def closing():
    links: list = []
    yield links.append
    for group in links:
        for link in group.values():
            link.close()


def values(result) -> dict:
    return {r.pt: r.val for r in result.readings}


# -- over the wire ---------------------------------------------------------------------------

def test_reads_energies_with_a_b1_follow_up_and_they_rise(line, closing):
    path, bus = line(Dlt645Meter(A, energy_kwh=1000.0, multi_frame=True, time_scale=36000.0, seed=1))
    meters, links = readers(config(path, f'  - {{name: flat-1, bus: meters, driver: dlt645_meter, address: "{A[-3:]}",'
                                         ' options: {quantities: energy}}'))
    closing(links)
    first = meters["flat-1"].poll()
    assert first.errors == [] and first.answered
    assert first.requests == 4  # three DIs, the combined energy in two frames (B1, then 12 -> 92)
    assert (0x12, 0x00000000) in bus.meter(A).asked
    assert [r.pt for r in first.readings] == ["energy_total_kWh", "energy_import_kWh", "energy_export_kWh"]
    assert all(r.q is Quality.GOOD and r.dev == "flat-1" for r in first.readings)
    assert len({r.ts for r in first.readings}) == 1  # a frame per DI, one stamp a round: one record
    assert 1000.0 <= values(first)["energy_import_kWh"] < 1100.0
    second = meters["flat-1"].poll()
    assert values(second)["energy_import_kWh"] > values(first)["energy_import_kWh"]  # ~10 simulated hours a second
    assert values(second)["energy_total_kWh"] > values(first)["energy_total_kWh"]


def test_two_meters_share_one_link_and_are_not_mixed_up(line, closing):
    path, bus = line(Dlt645Meter(A, energy_kwh=1111.11, current=0.0), Dlt645Meter(B, version=1997, energy_kwh=2222.22,
                                                                                   current=0.0))
    meters, links = readers(config(path, f'''\
  - {{name: flat-a, bus: meters, driver: dlt645_meter, address: "{A}", options: {{quantities: energy}}}}
  - {{name: flat-b, bus: meters, driver: dlt645_meter, address: "{B}", options: {{version: 1997}}}}
'''))
    closing(links)
    assert len(links) == 1 and meters["flat-a"].link is meters["flat-b"].link
    for _ in range(2):
        a, b = meters["flat-a"].poll(), meters["flat-b"].poll()
        assert a.errors == b.errors == []
        assert values(a) == {"energy_total_kWh": 1111.11, "energy_import_kWh": 1111.11, "energy_export_kWh": 0.0}
        assert values(b) == {"energy_import_kWh": 2222.22, "energy_export_kWh": 0.0}
    assert {di for _, di in bus.meter(B).asked} == {0x9010, 0x9020}  # 1997 reads, and only its own
    assert {c for c, _ in bus.meter(A).asked} == {0x11}


# random bytes are "an unusable answer", or "incomplete" when they end like the start of a frame
GARBLED = re.compile(r"sent an (unusable|incomplete) answer( \(\d+ bytes\))? within")
FAULTS = {
    "silence": ({"silence": True}, "did not answer within 0.25s (2 attempts)", False),
    "garbage": ({"garbage": True}, GARBLED, False),
    "bad_checksum": ({"bad_checksum": True}, "skipped a frame with a bad checksum (2 attempts)", False),
    "error": ({"error": 0x04}, "meter answered with an error reply (password error)", True),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_a_faulty_meter_is_reported_and_its_neighbour_unaffected(line, closing, fault):
    fields, expect, answered = FAULTS[fault]
    path, bus = line(Dlt645Meter(A, version=1997, energy_kwh=1234.56), Dlt645Meter(B, version=1997, energy_kwh=654.32,
                                                                                  current=0.0))
    meters, links = readers(config(path, f'''\
  - {{name: flat-a, bus: meters, driver: dlt645_meter, address: "{A}", retries: 1, options: {{version: 1997}}}}
  - {{name: flat-b, bus: meters, driver: dlt645_meter, address: "{B}", retries: 1, options: {{version: 1997}}}}
''', timeout="250ms"))
    closing(links)
    bus.meter(A).set_faults(**fields)
    a = meters["flat-a"].poll()
    assert a.answered is answered and len(a.errors) == 2
    for error, di in zip(a.errors, ("9010 (energy_import_kWh)", "9020 (energy_export_kWh)")):
        assert error.startswith(f"flat-a: read DI {di}: ") and said(expect, error), error
        assert "1234" not in error and not re.search(r"\b[0-9A-F]{2}( [0-9A-F]{2}){3,}", error)  # no value, no bytes
    if answered:  # refused: the points are published bad, without a value
        assert [(r.pt, r.val, r.q) for r in a.readings] == [
            ("energy_import_kWh", None, Quality.BAD), ("energy_export_kWh", None, Quality.BAD)]
    else:  # no usable answer: no readings at all, and each DI was tried twice
        assert a.readings == [] and a.requests == 4
    b = meters["flat-b"].poll()
    assert b.errors == [] and values(b) == {"energy_import_kWh": 654.32, "energy_export_kWh": 0.0}
    bus.meter(A).set_faults(MeterFaults())
    assert meters["flat-a"].poll().errors == []  # and it recovers once the fault is gone


def test_a_local_echo_and_a_slow_meter_are_handled(line, closing):
    path, bus = line(Dlt645Meter(A, version=1997, energy_kwh=10.0))
    meters, links = readers(config(path, f'  - {{name: flat-a, bus: meters, driver: dlt645_meter, address: "{A}",'
                                         ' retries: 0, options: {version: 1997, wake: 2}}', timeout="800ms"))
    closing(links)
    bus.meter(A).set_faults(echo=True, delay_s=0.1)  # the adapter echoes our request, then the reply comes
    result = meters["flat-a"].poll()
    assert result.errors == [] and result.requests == 2
    assert values(result)["energy_import_kWh"] == 10.0


def test_a_no_data_di_is_said_once_and_not_asked_again(line, closing, caplog):
    path, bus = line(Dlt645Meter(A, missing="energy_export_kWh", current=0.0))
    meters, links = readers(config(path, f'  - {{name: flat-a, bus: meters, driver: dlt645_meter, address: "{A}",'
                                         ' options: {quantities: energy}}'))
    closing(links)
    with caplog.at_level(logging.WARNING):
        first, second = meters["flat-a"].poll(), meters["flat-a"].poll()
    assert first.errors == second.errors == [] and first.answered and second.answered
    assert [r.pt for r in second.readings] == ["energy_total_kWh", "energy_import_kWh"]
    assert (first.requests, second.requests) == (3, 2)
    assert [di for _, di in bus.meter(A).asked].count(0x00020000) == 1
    said = [r.getMessage() for r in caplog.records if "energy_export_kWh" in r.getMessage()]
    assert said == ["device flat-a: the meter has no energy_export_kWh (DI 00020000, error reply 'no requested "
                    "data'); not asked again until the agent restarts"]


def test_a_meter_with_no_data_at_all_is_still_asked_one_di_to_prove_it_is_alive(line, closing):
    path, _ = line(Dlt645Meter(A, version=1997, missing="energy_import_kWh/energy_export_kWh"))
    meters, links = readers(config(path, f'  - {{name: flat-a, bus: meters, driver: dlt645_meter, address: "{A}",'
                                         ' options: {version: 1997}}'))
    closing(links)
    first, second = meters["flat-a"].poll(), meters["flat-a"].poll()
    assert (first.requests, second.requests) == (2, 1)
    assert second.answered and second.readings == [] and second.errors == []


def test_a_link_error_ends_the_round(tmp_path):
    meters, _ = readers(config(str(tmp_path / "ttyUSB7"), f'  - {{name: flat-a, bus: meters, driver: dlt645_meter,'
                                                            f' address: "{A}"}}'))
    result = meters["flat-a"].poll()
    assert not result.answered and result.readings == []
    assert result.errors == [f"flat-a: read DI 00000000 (energy_total_kWh): bus meters: serial port "
                             f"{tmp_path / 'ttyUSB7'} not found"]


# -- declarations and config -----------------------------------------------------------------

def test_declares_every_name_it_can_publish() -> None:
    declared = {o.name for o in DRIVER.outputs}
    assert {f.point for f in dlt.DI_TABLE.values()} == declared
    assert get_driver("dlt645_meter") is DRIVER
    assert [dlt.DI_TABLE[di].point for di in select_dis(2007, 1)] == [
        "energy_total_kWh", "energy_import_kWh", "energy_export_kWh", "voltage_a_V", "current_a_A", "power_kW",
        "power_factor", "frequency_Hz"]
    assert len(select_dis(2007, 3)) == 12 and select_dis(1997, 3) == [0x9010, 0x9020]


def test_options_have_defaults() -> None:
    settings = parse_settings(config("/dev/ttyUSB0", '  - {name: m, bus: meters, driver: dlt645_meter, address: "1"}'))
    device = settings.device("m")
    assert device.address == "000000000001"
    assert device.options == {"version": 2007, "phases": 1, "quantities": "all", "wake": 4}


@pytest.mark.parametrize("entry, expect", [
    ("address: 101", 'write the dlt645 meter address as a quoted string of 12 digits, e.g. "000000123456"'),
    ('address: "12345678901234"', "is not a dlt645 meter address: up to 12 digits"),
    ('address: "1", options: {phase: 3}', "unknown option 'phase' (did you mean 'phases'?)"),
    ('address: "1", options: {version: 2008}', "2008 is not a supported version; use one of 2007, 1997"),
    ('address: "1", options: {quantities: energies}', "unknown quantities 'energies' (did you mean 'energy'?)"),
    ('address: "1", options: {wake: 8}', "8 is not a supported wake"),
])
def test_config_errors_are_clear(entry: str, expect: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_settings(config("/dev/ttyUSB0", f"  - {{name: m, bus: meters, driver: dlt645_meter, {entry}}}"))
    assert len(raised.value.problems) == 1 and expect in str(raised.value), str(raised.value)


# -- the reply scanner, on bytes alone -------------------------------------------------------

def _scanner(di: int = 0x00010000) -> ReplyScanner:
    def judge(frame: bytes, parsed) -> str | None:
        if not parsed.is_reply:
            return "the echo of our own request"
        try:
            dlt.decode_read_data(frame, expect_address=A, expect_di=di)
        except dlt.FrameError as exc:
            return type(exc).__name__
        return None
    return ReplyScanner(dlt.frame_length_needed, dlt.decode_frame, judge)


def test_scanner_skips_noise_echo_and_other_meters_to_find_ours() -> None:
    echo = dlt.encode_read(A, 0x00010000)
    other = dlt.encode_reply(B, 0x00010000, 5.0, wake=2)
    ours = dlt.encode_reply(A, 0x00010000, 7.5, wake=4)
    stream = b"\x00\x68\x16" + echo + other + ours + b"\xfe"
    scanner = _scanner()
    end = scanner.complete(stream)
    assert stream[scanner.start:end] == ours.lstrip(b"\xfe")
    assert scanner.reason == "WrongAddress"
    ours_at = len(stream) - 1 - len(ours)
    for cut in range(ours_at + 5, len(stream) - 1):  # ours begun (its 68 is in) but not whole: keep reading
        assert _scanner().complete(stream[:cut]) is None


def test_scanner_waits_for_a_frame_and_gives_up_on_garbage() -> None:
    ours = dlt.encode_reply(A, 0x00010000, 7.5)
    assert _scanner().complete(ours[:12]) is None
    assert _scanner().complete(b"\xfe\xfe") is None
    with pytest.raises(ValueError):
        _scanner().complete(b"\x01\x02\x03")
    echo_only = _scanner()
    with pytest.raises(ValueError, match="echo"):
        echo_only.complete(dlt.encode_read(A, 0x00010000))
    broken = bytearray(ours)
    broken[-2] ^= 0xFF
    bad = _scanner()
    with pytest.raises(ValueError):
        bad.complete(bytes(broken))
    assert bad.reason == "a frame with a bad checksum"
    stale = dlt.encode_reply(A, 0x00020000, 1.0)  # our meter, but the answer to an earlier DI
    late = _scanner()
    end = late.complete(stale + ours)
    assert late.reason == "WrongDI" and (stale + ours)[late.start:end] == ours
