"""CJ/T 188 meter driver against its simulator on a wire-timed line (pty pair paced at 2400 baud,
11 bits a byte as 8E1), set up from YAML through ``parse_settings``, ``open_link`` and
``make_reader``: water, gas and heat meters, replies in the other DI order, our own DI order,
faults (each leaving the other meter on the line alone), a stale SER, and config errors."""

from __future__ import annotations

import re

import pytest

from edge_agent.config.schema import ConfigError, parse_settings
from edge_agent.drivers import cjt188_codec as cjt
from edge_agent.drivers.cjt188_meter import DRIVER, METER_TYPES
from edge_agent.model import Quality
from edge_agent.field.readers import make_reader, open_link
from edge_agent.field.registry import get_driver
from edge_agent.sim.meters import Cjt188Bus, Cjt188Meter, MeterFaults
from support.meter_line import meter_lines, said

W1, W2, HEAT, GAS = "00000000000101", "00000000000102", "00000000000201", "00000000000301"


@pytest.fixture
def line():
    """``serve(*meters) -> (path for the agent, Cjt188Bus)`` on a wire-timed pty pair."""
    with meter_lines(Cjt188Bus) as serve:
        yield serve


def config(path: str, devices: str, *, timeout: str = "500ms") -> str:
    return f"""\
gateway: {{id: gw-1, site: site-1}}
mqtt: {{host: 127.0.0.1}}
buses:
  - {{name: water, protocol: cjt188, serial: {path}, timeout: {timeout}}}
devices:
{devices}"""


@pytest.fixture
def readers():
    """``build(yaml) -> {device: reader}`` over one link per bus, as the daemon builds them."""
    links: list = []

    def build(yaml_text: str) -> dict:
        settings = parse_settings(yaml_text)
        bus_links = {b.name: open_link(b) for b in settings.buses}
        links.extend(bus_links.values())
        return {d.name: make_reader(d, get_driver(d.driver), bus_links[d.bus]) for d in settings.devices}
    yield build
    for link in links:
        link.close()


def values(result) -> dict:
    return {r.pt: r.val for r in result.readings}


def test_water_gas_and_heat_meters_on_one_line_replying_in_either_di_order(line, readers):
    path, bus = line(Cjt188Meter(W1, reply_di_order="1F 90", flow_m3=12.5, rate_m3_per_h=0.0),
                     Cjt188Meter(GAS, meter_type="gas", flow_m3=876.54, rate_m3_per_h=0.0, valve="closed",
                                 battery_low=True),
                     Cjt188Meter(HEAT, meter_type="heat", heat_kwh=4321.0, power_kw=0.0))
    meters = readers(config(path, f'''\
  - {{name: water-1, bus: water, driver: cjt188_meter, address: "{W1[-3:]}"}}
  - {{name: gas-1, bus: water, driver: cjt188_meter, address: "{GAS}", options: {{meter_type: gas, di_order: 1F 90}}}}
  - {{name: heat-1, bus: water, driver: cjt188_meter, address: "{HEAT}", options: {{meter_type: heat}}}}
'''))
    water = meters["water-1"].poll()  # we send 90 1F, the meter answers 1F 90
    assert water.errors == [] and water.answered and water.requests == 1
    assert values(water) == {"flow_total_m3": 12.5, "flow_settlement_m3": 12.5, "valve": "open", "battery_low": False}
    assert all(r.q is Quality.GOOD and r.dev == "water-1" for r in water.readings)
    gas = meters["gas-1"].poll()  # we send 1F 90, the meter answers 90 1F
    assert values(gas) == {"flow_total_m3": 876.54, "flow_settlement_m3": 876.54, "valve": "closed",
                           "battery_low": True}
    heat = meters["heat-1"].poll()
    assert heat.errors == [] and values(heat) == {"heat_total_kWh": 4321.0, "heat_settlement_kWh": 4321.0}
    assert {a for m in bus.meters for a in m.asked} == {(0x01, 0x901F)}


def test_the_di_order_option_sets_the_request_bytes(readers):
    meters = readers(config("/dev/ttyUSB0", f'''\
  - {{name: a, bus: water, driver: cjt188_meter, address: "{W1}"}}
  - {{name: b, bus: water, driver: cjt188_meter, address: "{W2}", options: {{di_order: 1F 90, wake: 0}}}}
'''))
    a, _ = meters["a"]._attempt()
    b, _ = meters["b"]._attempt()
    assert a.startswith(b"\xfe" * 4 + b"\x68\x10") and a[-5:-2] == bytes([0x90, 0x1F, 1])
    assert b.startswith(b"\x68\x10") and b[-5:-2] == bytes([0x1F, 0x90, 1])
    assert meters["a"]._attempt()[0][-3] == 2  # SER moves on with every request


# random bytes are "an unusable answer", or "incomplete" when they end like the start of a frame
GARBLED = re.compile(r"sent an (unusable|incomplete) answer( \(\d+ bytes\))? within")
FAULTS = {
    "silence": ({"silence": True}, "did not answer within 0.7s (1 attempt)", False),
    "garbage": ({"garbage": True}, GARBLED, False),
    "bad_checksum": ({"bad_checksum": True}, "skipped a frame with a bad checksum (1 attempt)", False),
    "error": ({"error": 0x0003}, "meter answered with an error reply (C1)", True),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_a_faulty_meter_is_reported_and_its_neighbour_unaffected(line, readers, fault):
    fields, expect, answered = FAULTS[fault]
    path, bus = line(Cjt188Meter(W1, flow_m3=55.5, rate_m3_per_h=0.0), Cjt188Meter(W2, flow_m3=66.6, rate_m3_per_h=0.0))
    meters = readers(config(path, f'''\
  - {{name: w1, bus: water, driver: cjt188_meter, address: "{W1}", retries: 0}}
  - {{name: w2, bus: water, driver: cjt188_meter, address: "{W2}", retries: 0}}
''', timeout="700ms"))  # the echo doubles the request's wire time
    bus.meter(W1).set_faults(**fields)
    one = meters["w1"].poll()
    assert one.answered is answered and len(one.errors) == 1
    assert one.errors[0].startswith("w1: read data (DI 901F): ") and said(expect, one.errors[0]), one.errors
    assert "55.5" not in one.errors[0] and "5550" not in one.errors[0]
    if answered:
        assert {(r.pt, r.val, r.q) for r in one.readings} == {
            (name, None, Quality.BAD) for name in ("flow_total_m3", "flow_settlement_m3", "valve", "battery_low")}
    else:
        assert one.readings == []
    two = meters["w2"].poll()
    assert two.errors == [] and values(two)["flow_total_m3"] == 66.6
    bus.meter(W1).set_faults(MeterFaults(echo=True))  # cured, behind an adapter with local echo
    cured = meters["w1"].poll()
    assert values(cured).get("flow_total_m3") == 55.5, cured


def test_a_meter_of_another_type_is_not_taken_for_ours(line, readers):
    path, _ = line(Cjt188Meter(W1, meter_type="hot_water"))
    meters = readers(config(path, f'  - {{name: w1, bus: water, driver: cjt188_meter, address: "{W1}", retries: 0}}',
                            timeout="300ms"))
    result = meters["w1"].poll()  # asked as cold water (T=10): a hot-water meter stays silent
    assert not result.answered and "did not answer" in result.errors[0]


def test_a_stale_reply_with_an_old_ser_is_skipped() -> None:
    reader = DRIVER.reader(parse_settings(config("/dev/ttyUSB0", f'  - {{name: w1, bus: water, driver: cjt188_meter,'
                                                                   f' address: "{W1}"}}')).device("w1"), None)
    request, scanner = reader._attempt()
    ser = request[-3]
    stale = cjt.encode_reply(W1, flow=1.0, ser=(ser - 1) & 0xFF, wake=2)
    fresh = cjt.encode_reply(W1, flow=2.0, ser=ser, di_order="1F 90")
    end = scanner.complete(request + stale + fresh)
    assert (request + stale + fresh)[scanner.start:end] == fresh
    assert scanner.reason == "a reply with another sequence number"


def test_declarations_and_defaults() -> None:
    assert {o.name for o in DRIVER.outputs} == {"flow_total_m3", "flow_settlement_m3", "valve", "battery_low",
                                               "heat_total_kWh", "heat_settlement_kWh"}
    assert METER_TYPES == {"cold_water": 0x10, "hot_water": 0x11, "heat": 0x20, "gas": 0x30}
    device = parse_settings(config("/dev/ttyUSB0", '  - {name: w, bus: water, driver: cjt188_meter, address: "7"}')
                            ).device("w")
    assert device.address == "00000000000007"
    assert device.options == {"meter_type": "cold_water", "di_order": "90 1F", "wake": 4}


@pytest.mark.parametrize("entry, expect", [
    ("address: 101", "write the cjt188 meter address as a quoted string of 14 digits"),
    ('address: "1", options: {meter_typ: gas}', "unknown option 'meter_typ' (did you mean 'meter_type'?)"),
    ('address: "1", options: {meter_type: cold-water}', "unknown meter type 'cold-water' (did you mean 'cold_water'?)"),
    ('address: "1", options: {di_order: 901F}', "unknown di order"),
])
def test_config_errors_are_clear(entry: str, expect: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_settings(config("/dev/ttyUSB0", f"  - {{name: m, bus: water, driver: cjt188_meter, {entry}}}"))
    assert len(raised.value.problems) == 1 and expect in str(raised.value), str(raised.value)
