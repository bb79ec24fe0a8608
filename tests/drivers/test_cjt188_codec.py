"""CJ/T 188 codec: the shared vector and public examples both ways, round trips, arbitrary and
corrupted bytes only ever raise FrameError, and each failure has its own reason."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from edge_agent.drivers import cjt188_codec as cjt

from support.paths import TESTS
from edge_agent.drivers.cjt188_codec import (
    BadBCD, BadChecksum, BadLength, BadStartOrEnd, FrameError, MeterError, ShortFrame,
    UnknownUnit, UnsupportedMeterType, WrongAddress, WrongControl, WrongDI, WrongMeterType,
    WrongSequence,
)

VECTORS = json.loads((TESTS / "vectors" / "cjt188.json").read_text(encoding="utf-8"))
METER = "78330011223344"  # public example: number 0011223344, factory code 7833

# Public worked examples (CJ/T 188 protocol analysis, topic.alibabacloud.com); the article
# gives the requests' checksums (80, 91) and sends the DI as 1F 90. The water reply's status
# and checksum are illegible there: status 00 00 and CS 6E are ours.
EXAMPLE_READ = "FE FE FE FE 68 10 44 33 22 11 00 33 78 01 03 1F 90 00 80 16"
EXAMPLE_HEAT_READ = "68 20 44 33 22 11 00 33 78 01 03 1F 90 01 91 16"
EXAMPLE_REPLY = ("FE FE FE FE 68 10 44 33 22 11 00 33 78 81 16 1F 90 00 00 77 66 55 2C "
                 "00 77 66 55 2C 31 01 22 11 05 15 20 00 00 6E 16")


def _hex(text: str) -> bytes:
    return bytes.fromhex(text)


def _wake(raw: bytes) -> int:
    return len(raw) - len(raw.lstrip(b"\xfe"))


# -- vectors and examples ----------------------------------------------------------------------

@pytest.mark.parametrize("case", VECTORS, ids=lambda c: c["what"])
def test_vector_decodes_and_encodes_byte_exact(case: dict) -> None:
    raw = _hex(case["hex"])
    frame = cjt.decode_frame(raw)
    assert (frame.meter_type, frame.address, frame.control) == (0x10, "00000000000001", 0x01)
    assert frame.data == bytes([0x90, 0x1F, 0x00]) and not frame.is_reply
    assert cjt.encode_read("00000000000001", 0x10, ser=0, wake=0) == raw


def test_public_examples() -> None:
    assert cjt.encode_read(METER, 0x10, di_order="1F 90", wake=4) == _hex(EXAMPLE_READ)
    assert cjt.encode_read(METER, 0x20, ser=1, di_order="1F 90", wake=0) == _hex(EXAMPLE_HEAT_READ)
    reading = cjt.decode_read_reply(_hex(EXAMPLE_REPLY), expect_address=METER, expect_type=0x10)
    assert reading == cjt.WaterReading(
        flow_m3=556677.0, settlement_flow_m3=556677.0, clock=datetime(2015, 5, 11, 22, 1, 31),
        valve="open", battery_low=False, unit="m3", address=METER, meter_type=0x10, ser=0)
    assert cjt.encode_reply(METER, 0x10, flow=556677.0, clock=datetime(2015, 5, 11, 22, 1, 31),
                            di_order="1F 90", wake=4) == _hex(EXAMPLE_REPLY)


def test_clock_year_is_sent_low_pair_first() -> None:
    raw = cjt.encode_reply(METER, flow=0, clock=datetime(2024, 12, 31, 23, 59, 58))
    frame = cjt.decode_frame(raw)
    assert frame.data[13:20] == bytes([0x58, 0x59, 0x23, 0x31, 0x12, 0x24, 0x20])


def _heat_reply(heat: bytes, unit: int, **kw) -> bytes:
    data = (b"\x1f\x90\x01" + _hex("78 56 34 12 05") + heat + bytes([unit])
            + _hex("00 25 00 00 17") + _hex("00 50 01 00 35") + _hex("45 23 01 00 2C")
            + _hex("00 75 00") + _hex("00 50 00") + _hex("34 12 00")
            + _hex("31 01 22 11 05 15 20") + b"\x00\x00")
    assert len(data) == 46
    return cjt.encode_frame(METER, kw.get("meter_type", 0x20), 0x81, data)


@pytest.mark.parametrize("heat, unit, kwh, text", [
    ("00 00 01 00", 0x05, 100.0, "kWh"),
    ("00 00 01 00", 0x08, 100000.0, "MWh"),
    ("00 00 36 00", 0x0E, 1000.0, "MJ"),         # 3600 MJ = 1000 kWh
    ("00 00 36 00", 0x11, 1000000.0, "GJ"),
    ("00 00 01 00", 0x02, 0.1, "Wh"),
])
def test_heat_meter_heats_in_kwh(heat: str, unit: int, kwh: float, text: str) -> None:
    reading = cjt.decode_read_reply(_heat_reply(_hex(heat), unit), expect_address=METER)
    assert isinstance(reading, cjt.HeatReading)
    assert reading.heat_kWh == pytest.approx(kwh) and reading.unit == text
    assert reading.settlement_heat_kWh == 123456.78
    assert reading.clock == datetime(2015, 5, 11, 22, 1, 31) and reading.ser == 1


def test_heat_with_a_volume_unit_is_refused() -> None:
    with pytest.raises(UnknownUnit, match="not a unit of energy"):
        cjt.decode_read_reply(_heat_reply(bytes(4), 0x2C), expect_address=METER)


def test_unsupported_meter_type() -> None:
    raw = cjt.encode_reply(METER, 0x40, flow=1.0)
    with pytest.raises(UnsupportedMeterType, match="40"):
        cjt.decode_read_reply(raw, expect_address=METER)


# -- round trips -------------------------------------------------------------------------------

addresses = st.text("0123456789", min_size=14, max_size=14)
water_types = st.sampled_from([0x10, 0x11, 0x12, 0x13, 0x30, 0x31])
flows = st.integers(0, 10**8 - 1).map(lambda n: n / 100)
clocks = st.one_of(st.none(), st.datetimes(datetime(2000, 1, 1), datetime(2099, 12, 31)).map(
    lambda d: d.replace(microsecond=0)))


@st.composite
def replies(draw: st.DrawFn) -> tuple[dict, bytes]:
    kw = {"address": draw(addresses), "meter_type": draw(water_types), "flow": draw(flows),
          "settlement_flow": draw(flows), "unit": draw(st.sampled_from(["m3", "L"])),
          "clock": draw(clocks), "valve": draw(st.sampled_from(["open", "closed", "abnormal"])),
          "battery_low": draw(st.booleans()), "ser": draw(st.integers(0, 255)),
          "di_order": draw(st.sampled_from(["90 1F", "1F 90"])), "wake": draw(st.integers(0, 4))}
    return kw, cjt.encode_reply(**kw)


@settings(max_examples=200, deadline=None)
@given(addresses, st.integers(0, 255), st.integers(0, 255), st.sampled_from(["90 1F", "1F 90"]),
       st.integers(0, 4))
def test_read_request_round_trip(address: str, meter_type: int, ser: int, order: str, wake: int) -> None:
    raw = cjt.encode_read(address, meter_type, ser=ser, di_order=order, wake=wake)
    frame = cjt.decode_frame(raw)
    assert (frame.address, frame.meter_type, frame.control) == (address, meter_type, 0x01)
    assert frame.data == bytes.fromhex(order) + bytes([ser])
    assert cjt.frame_length_needed(raw) == len(raw) and _wake(raw) == wake


@settings(max_examples=300, deadline=None)
@given(replies())
def test_reply_round_trip(reply: tuple[dict, bytes]) -> None:
    kw, raw = reply
    reading = cjt.decode_read_reply(raw, expect_address=kw["address"], expect_type=kw["meter_type"],
                                    expect_ser=kw["ser"])
    scale = 1000 if kw["unit"] == "L" else 1
    assert reading.flow_m3 == pytest.approx(kw["flow"] / scale, abs=1e-9)
    assert reading.settlement_flow_m3 == pytest.approx(kw["settlement_flow"] / scale, abs=1e-9)
    assert (reading.clock, reading.valve, reading.battery_low, reading.unit) == (
        kw["clock"], kw["valve"], kw["battery_low"], kw["unit"])
    assert (reading.address, reading.meter_type, reading.ser) == (kw["address"], kw["meter_type"], kw["ser"])


# -- arbitrary and corrupted bytes -------------------------------------------------------------

@settings(max_examples=500, deadline=None)
@given(st.one_of(st.binary(max_size=64),
                 st.binary(max_size=60).map(lambda b: b"\x68" + b),
                 replies().map(lambda r: r[1][:-3] + b"\x00" + r[1][-2:])))
def test_any_bytes_give_a_frame_or_a_frame_error(data: bytes) -> None:
    try:
        frame = cjt.decode_frame(data)
    except FrameError:
        return
    assert isinstance(frame, cjt.Frame)
    try:  # a well-framed reply with any content: a reading or a specific reason
        cjt.decode_read_reply(data, expect_address=cjt.WILDCARD)
    except FrameError:
        pass


@settings(max_examples=500, deadline=None)
@given(st.sampled_from([0x10, 0x20, 0x30, 0x40]), st.integers(0, 255),
       st.one_of(st.binary(max_size=50), st.binary(min_size=22, max_size=22),
                 st.binary(min_size=46, max_size=46)))
def test_well_framed_nonsense_gives_a_reading_or_a_frame_error(meter_type: int, control: int,
                                                               data: bytes) -> None:
    raw = cjt.encode_frame(METER, meter_type, control, data)
    try:
        reading = cjt.decode_read_reply(raw, expect_address=METER)
    except FrameError:
        return
    assert isinstance(reading, (cjt.WaterReading, cjt.HeatReading))


@settings(max_examples=400, deadline=None)
@given(replies(), st.data())
def test_single_byte_corruption_is_caught(reply: tuple[dict, bytes], data: st.DataObject) -> None:
    raw = reply[1]
    position = data.draw(st.integers(0, len(raw) - 1))
    new = data.draw(st.integers(0, 255))
    assume(new != raw[position])
    corrupt = raw[:position] + bytes([new]) + raw[position + 1:]
    try:
        frame = cjt.decode_frame(corrupt)
    except FrameError:
        return
    assert raw[position] == 0xFE and position < _wake(raw), "only a wake-up byte may change unnoticed"
    assert frame == cjt.decode_frame(raw)


@settings(max_examples=200, deadline=None)
@given(replies())
def test_frame_length_needed_on_every_prefix(reply: tuple[dict, bytes]) -> None:
    raw = reply[1]
    header_end = _wake(raw) + 11
    for n in range(len(raw) + 1):
        needed = cjt.frame_length_needed(raw[:n])
        if n >= header_end:
            assert needed == len(raw)
        else:
            assert needed is None or needed >= n


def test_frame_length_needed_rejects_garbage_early() -> None:
    with pytest.raises(BadStartOrEnd):
        cjt.frame_length_needed(b"\xfe\x00")
    assert cjt.frame_length_needed(b"\xfe\xfe\x68\x10") is None


# -- specific failure reasons ------------------------------------------------------------------

REPLY = _hex(EXAMPLE_REPLY)


def test_short_frame() -> None:
    for cut in (0, 4, 12, len(REPLY) - 1):
        with pytest.raises(ShortFrame):
            cjt.decode_frame(REPLY[:cut])


def test_bad_checksum() -> None:
    with pytest.raises(BadChecksum, match="checksum 6F, computed 6E"):
        cjt.decode_frame(REPLY[:-2] + b"\x6f\x16")


def test_bad_start_and_end_bytes() -> None:
    with pytest.raises(BadStartOrEnd, match="end byte 16"):
        cjt.decode_frame(REPLY[:-1] + b"\x00")
    with pytest.raises(BadStartOrEnd, match="start byte"):
        cjt.decode_frame(REPLY[:4] + b"\x69" + REPLY[5:])


def test_trailing_bytes_are_a_bad_length() -> None:
    with pytest.raises(BadLength):
        cjt.decode_frame(REPLY + b"\x16")


def test_wrong_address_and_type() -> None:
    with pytest.raises(WrongAddress, match=METER):
        cjt.decode_read_reply(REPLY, expect_address="00000000000001")
    with pytest.raises(WrongMeterType, match="expected 30"):
        cjt.decode_read_reply(REPLY, expect_address=METER, expect_type=0x30)


def test_wrong_di_sequence_and_control() -> None:
    wrong_di = cjt.encode_frame(METER, 0x10, 0x81, b"\x90\x20" + cjt.decode_frame(REPLY).data[2:])
    with pytest.raises(WrongDI, match="90 20"):
        cjt.decode_read_reply(wrong_di, expect_address=METER)
    with pytest.raises(WrongSequence):
        cjt.decode_read_reply(REPLY, expect_address=METER, expect_ser=1)
    with pytest.raises(WrongControl):  # our own request, echoed
        cjt.decode_read_reply(cjt.encode_read(METER), expect_address=METER)


def test_wrong_reply_length() -> None:
    short = cjt.encode_frame(METER, 0x10, 0x81, cjt.decode_frame(REPLY).data[:-1])
    with pytest.raises(BadLength, match="L=22"):
        cjt.decode_read_reply(short, expect_address=METER)


def test_error_reply() -> None:
    with pytest.raises(MeterError, match="valve closed, battery low") as caught:
        cjt.decode_read_reply(cjt.encode_error_reply(METER, status=0x0005), expect_address=METER)
    assert caught.value.status == 0x0005


def test_bcd_nibble_above_nine() -> None:
    data = bytearray(cjt.decode_frame(REPLY).data)
    data[4] = 0x7A
    with pytest.raises(BadBCD, match="current flow: 00 7A 66 55"):
        cjt.decode_read_reply(cjt.encode_frame(METER, 0x10, 0x81, bytes(data)), expect_address=METER)


def test_unknown_unit() -> None:
    data = bytearray(cjt.decode_frame(REPLY).data)
    data[7] = 0x2B
    with pytest.raises(UnknownUnit, match="2B"):
        cjt.decode_read_reply(cjt.encode_frame(METER, 0x10, 0x81, bytes(data)), expect_address=METER)
    data[7] = 0x05  # kWh is in the table, but not a volume
    with pytest.raises(UnknownUnit, match="kWh"):
        cjt.decode_read_reply(cjt.encode_frame(METER, 0x10, 0x81, bytes(data)), expect_address=METER)


@pytest.mark.parametrize("st1, valve, low", [(0x00, "open", False), (0x01, "closed", False),
                                             (0x03, "abnormal", False), (0x02, "abnormal", False),
                                             (0x04, "open", True), (0x07, "abnormal", True)])
def test_status_byte(st1: int, valve: str, low: bool) -> None:
    data = bytearray(cjt.decode_frame(REPLY).data)
    data[20] = st1
    reading = cjt.decode_read_reply(cjt.encode_frame(METER, 0x10, 0x81, bytes(data)), expect_address=METER)
    assert (reading.valve, reading.battery_low) == (valve, low)


def test_invalid_clock_is_none() -> None:
    data = bytearray(cjt.decode_frame(REPLY).data)
    data[17] = 0x13  # month 13 (ss mm hh DD MM YY YY from offset 13)
    reading = cjt.decode_read_reply(cjt.encode_frame(METER, 0x10, 0x81, bytes(data)), expect_address=METER)
    assert reading.clock is None and reading.flow_m3 == 556677.0
    data[13:20] = bytes(7)  # meters without a clock send zeros
    reading = cjt.decode_read_reply(cjt.encode_frame(METER, 0x10, 0x81, bytes(data)), expect_address=METER)
    assert reading.clock is None


def test_bad_arguments_when_encoding() -> None:
    with pytest.raises(ValueError, match="di_order"):
        cjt.encode_read(METER, di_order="901F")
    with pytest.raises(ValueError, match="14 digits"):
        cjt.encode_read("1234567890123X")
    with pytest.raises(ValueError, match="m3 or L"):
        cjt.encode_reply(METER, flow=1.0, unit="kWh")
