"""DL/T 645 codec: every shared vector both ways, round trips over each format's range, arbitrary
and corrupted bytes only ever raise FrameError, and each failure has its own reason."""

from __future__ import annotations

import json

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from edge_agent.drivers import dlt645_codec as dlt

from support.paths import TESTS
from edge_agent.drivers.dlt645_codec import (
    BadBCD, BadChecksum, BadLength, BadStartOrEnd, FrameError, MeterError, ShortFrame,
    UnknownDI, WrongAddress, WrongControl, WrongDI,
)

VECTORS = json.loads((TESTS / "vectors" / "dlt645.json").read_text(encoding="utf-8"))
METER = "123456789012"


def _hex(text: str) -> bytes:
    return bytes.fromhex(text)


def _wake(raw: bytes) -> int:
    return len(raw) - len(raw.lstrip(b"\xfe"))


# -- the shared vectors ------------------------------------------------------------------------

@pytest.mark.parametrize("case", VECTORS, ids=lambda c: c["what"])
def test_vector_decodes_and_encodes_byte_exact(case: dict) -> None:
    raw = _hex(case["hex"])
    frame = dlt.decode_frame(raw)
    if "value" in case:
        di = int(case["di"], 16)
        reply = dlt.decode_read_reply(raw, expect_address=METER, expect_di=di)
        assert (reply.address, reply.di, reply.value, reply.unit) == (METER, di, case["value"], case["unit"])
        assert dlt.encode_reply(METER, di, case["value"]) == raw
    elif "error" in case:
        with pytest.raises(MeterError) as caught:
            dlt.decode_read_reply(raw, expect_address=METER, expect_di=0x00010000)
        assert caught.value.bits == case["error"]
        assert dlt.encode_error_reply(METER, case["error"]) == raw
    elif frame.control == 0x13:
        assert frame.address == dlt.WILDCARD and frame.data == b""
        assert dlt.encode_read_address(wake=_wake(raw)) == raw
    else:
        version = 2007 if frame.control == 0x11 else 1997
        assert frame.control in (0x11, 0x01) and frame.address == METER
        di = int.from_bytes(frame.data, "little")
        assert dlt.encode_read(METER, di, wake=_wake(raw), version=version) == raw


def test_vector_meanings() -> None:
    """What the vectors' descriptions say, checked apart from the generic round trip."""
    read = dlt.decode_frame(_hex(VECTORS[0]["hex"]))
    assert (read.address, read.control, read.data) == (METER, 0x11, bytes([0, 0, 1, 0]))
    assert dlt.encode_read(METER, 0x00010000) == _hex(VECTORS[0]["hex"])
    old = dlt.decode_frame(_hex(VECTORS[5]["hex"]))
    assert (old.control, old.data) == (0x01, bytes([0x10, 0x90]))
    assert dlt.encode_read(METER, 0x9010, wake=0, version=1997) == _hex(VECTORS[5]["hex"])
    with pytest.raises(MeterError, match="no requested data"):
        dlt.decode_read_reply(_hex(VECTORS[3]["hex"]), expect_address=METER, expect_di=0x00010000)


# -- round trips -------------------------------------------------------------------------------

addresses = st.text("0123456789", min_size=12, max_size=12)
versions_and_dis = st.one_of(
    st.tuples(st.just(2007), st.integers(0, 2**32 - 1)),
    st.tuples(st.just(1997), st.integers(0, 2**16 - 1)),
)


def values(di: int) -> st.SearchStrategy[float]:
    fmt = dlt.DI_TABLE[di]
    top = (8 * 10 ** (2 * fmt.size - 1) if fmt.signed else 10 ** (2 * fmt.size)) - 1
    return st.integers(-top if fmt.signed else 0, top).map(lambda n: n / 10 ** fmt.decimals)


@st.composite
def readings(draw: st.DrawFn) -> tuple[str, int, float]:
    di = draw(st.sampled_from(sorted(dlt.DI_TABLE)))
    return draw(addresses), di, draw(values(di))


@settings(max_examples=200, deadline=None)
@given(addresses, versions_and_dis, st.integers(0, 4))
def test_read_request_round_trip(address: str, version_di: tuple[int, int], wake: int) -> None:
    version, di = version_di
    raw = dlt.encode_read(address, di, wake=wake, version=version)
    assert _wake(raw) == wake
    frame = dlt.decode_frame(raw)
    assert frame.address == address and not frame.is_reply
    assert frame.control == (0x11 if version == 2007 else 0x01)
    assert int.from_bytes(frame.data, "little") == di
    assert dlt.frame_length_needed(raw) == len(raw)


@settings(max_examples=300, deadline=None)
@given(readings(), st.booleans())
def test_value_round_trip(reading: tuple[str, int, float], more: bool) -> None:
    address, di, value = reading
    fmt = dlt.DI_TABLE[di]
    assert dlt.decode_value(di, dlt.encode_value(di, value)) == value
    raw = dlt.encode_reply(address, di, value, more=more, version=fmt.version)
    reply = dlt.decode_read_reply(raw, expect_address=address, expect_di=di, version=fmt.version)
    assert (reply.value, reply.unit, reply.point, reply.more_follows) == (value, fmt.unit, fmt.point, more)


@pytest.mark.parametrize("di, value", [
    (0x02020100, -1.5), (0x02030000, -79.9999), (0x02060000, -0.5), (0x02060000, 1.0),
    (0x00010000, 999999.99), (0x02800002, 50.0), (0x02010100, 0.0),
    (0x00000000, -12345.67), (0x00000000, 799999.99),  # combined active energy is signed (A.1)
])
def test_signed_and_edge_values(di: int, value: float) -> None:
    raw = dlt.encode_value(di, value)
    assert dlt.decode_value(di, raw) == value
    if value < 0:
        assert raw[-1] & 0x80, "the sign is the top bit of the most significant (last) byte"


def test_combined_energy_reads_its_top_bit_as_a_minus_sign() -> None:
    assert dlt.decode_value(0x00000000, bytes([0x67, 0x45, 0x23, 0x81])) == -12345.67
    assert dlt.decode_value(0x00010000, bytes([0x67, 0x45, 0x23, 0x81])) == 812345.67  # forward: unsigned


@pytest.mark.parametrize("di, value", [(0x00010000, -1.0), (0x00010000, 1e6), (0x02060000, 8.0),
                                       (0x00000000, 800000.0)])
def test_values_out_of_range_are_refused(di: int, value: float) -> None:
    with pytest.raises(ValueError):
        dlt.encode_value(di, value)


# -- arbitrary and corrupted bytes -------------------------------------------------------------

@st.composite
def frames(draw: st.DrawFn) -> bytes:
    address, di, value = draw(readings())
    fmt = dlt.DI_TABLE[di]
    raw = dlt.encode_reply(address, di, value, more=draw(st.booleans()), version=fmt.version)
    return bytes([0xFE]) * draw(st.integers(0, 4)) + raw


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.binary(max_size=64), frames().map(lambda f: f[:-3] + b"\x00" + f[-2:]),
                 st.binary(max_size=20).map(lambda b: b"\x68" + b[:6].ljust(6, b"\0") + b"\x68" + b[6:])))
def test_any_bytes_give_a_frame_or_a_frame_error(data: bytes) -> None:
    try:
        frame = dlt.decode_frame(data)
    except FrameError:
        return
    assert isinstance(frame, dlt.Frame)
    try:
        needed = dlt.frame_length_needed(data)
    except FrameError:
        return
    assert needed is None or isinstance(needed, int)


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(sorted(dlt.DI_TABLE)), st.sampled_from([0x91, 0xB1, 0x92, 0xD1, 0x81, 0x93, 0x11]),
       st.binary(max_size=12), st.sampled_from([1997, 2007]))
def test_well_framed_nonsense_gives_a_reply_or_a_frame_error(di: int, control: int, payload: bytes,
                                                             version: int) -> None:
    size = 4 if version == 2007 else 2
    raw = dlt.encode_frame(METER, control, (di & (1 << 8 * size) - 1).to_bytes(size, "little") + payload)
    try:
        reply = dlt.decode_read_reply(raw, expect_address=METER, expect_di=di, version=version)
    except FrameError:
        return
    assert isinstance(reply, dlt.Reply)


@settings(max_examples=400, deadline=None)
@given(frames(), st.data())
def test_single_byte_corruption_is_caught(raw: bytes, data: st.DataObject) -> None:
    position = data.draw(st.integers(0, len(raw) - 1))
    new = data.draw(st.integers(0, 255))
    assume(new != raw[position])
    corrupt = raw[:position] + bytes([new]) + raw[position + 1:]
    try:
        frame = dlt.decode_frame(corrupt)
    except FrameError:
        return
    assert raw[position] == 0xFE and position < _wake(raw), "only a wake-up byte may change unnoticed"
    assert frame == dlt.decode_frame(raw)


@settings(max_examples=200, deadline=None)
@given(frames())
def test_frame_length_needed_on_every_prefix(raw: bytes) -> None:
    header_end = _wake(raw) + 10
    for n in range(len(raw) + 1):
        needed = dlt.frame_length_needed(raw[:n])
        if n >= header_end:
            assert needed == len(raw)
        else:
            assert needed is None or needed >= n


def test_frame_length_needed_rejects_garbage_early() -> None:
    with pytest.raises(BadStartOrEnd):
        dlt.frame_length_needed(b"\xfe\xfe\x00")
    with pytest.raises(BadStartOrEnd):
        dlt.frame_length_needed(b"\x68" + bytes(6) + b"\x00")
    assert dlt.frame_length_needed(b"\xfe\xfe") is None


# -- specific failure reasons ------------------------------------------------------------------

REPLY = _hex(VECTORS[1]["hex"])  # 12345.67 kWh from meter 123456789012


def test_short_frame() -> None:
    for cut in (0, 5, 11, len(REPLY) - 1):
        with pytest.raises(ShortFrame):
            dlt.decode_frame(REPLY[:cut])


def test_bad_checksum() -> None:
    bad = REPLY[:-2] + bytes([REPLY[-2] ^ 0x01]) + REPLY[-1:]
    with pytest.raises(BadChecksum, match="checksum"):
        dlt.decode_frame(bad)


def test_bad_start_and_end_bytes() -> None:
    with pytest.raises(BadStartOrEnd, match="end byte 16"):
        dlt.decode_frame(REPLY[:-1] + b"\x17")
    with pytest.raises(BadStartOrEnd, match="start byte"):
        dlt.decode_frame(b"\x00" + REPLY[1:])
    with pytest.raises(BadStartOrEnd, match="second start byte"):
        dlt.decode_frame(REPLY[:7] + b"\x00" + REPLY[8:])


def test_trailing_bytes_are_a_bad_length() -> None:
    with pytest.raises(BadLength):
        dlt.decode_frame(REPLY + b"\x00")


def test_wrong_address_in_reply() -> None:
    with pytest.raises(WrongAddress, match="123456789012"):
        dlt.decode_read_reply(REPLY, expect_address="000000000001", expect_di=0x00010000)
    # a wildcard request accepts any meter's reply
    assert dlt.decode_read_reply(REPLY, expect_address=dlt.WILDCARD, expect_di=0x00010000).value == 12345.67


def test_wrong_di_in_reply() -> None:
    with pytest.raises(WrongDI, match="00010000"):
        dlt.decode_read_reply(REPLY, expect_address=METER, expect_di=0x00000000)


def test_echo_of_the_request_is_not_a_reply() -> None:
    with pytest.raises(WrongControl, match="request"):
        dlt.decode_read_reply(dlt.encode_read(METER, 0x00010000), expect_address=METER, expect_di=0x00010000)


@pytest.mark.parametrize("bits, names", [
    (0x01, ["other error"]),
    (0x02, ["no requested data"]),
    (0x04, ["password error or unauthorised"]),
    (0x06, ["no requested data", "password error or unauthorised"]),
    (0x70, ["year time zones exceeded", "day time periods exceeded", "tariffs exceeded"]),
])
def test_error_reply_names_its_bits(bits: int, names: list[str]) -> None:
    with pytest.raises(MeterError) as caught:
        dlt.decode_read_reply(dlt.encode_error_reply(METER, bits), expect_address=METER, expect_di=0)
    assert caught.value.bits == bits and list(caught.value.reasons) == names
    assert all(name in str(caught.value) for name in names)


def test_1997_error_reply() -> None:
    raw = dlt.encode_error_reply(METER, 0x02, version=1997)
    assert raw[8] == 0xC1
    with pytest.raises(MeterError, match="bad data identifier"):
        dlt.decode_read_reply(raw, expect_address=METER, expect_di=0x9010, version=1997)


def test_bcd_nibble_above_nine() -> None:
    payload = bytes([0x67, 0x4A, 0x23, 0x01])  # 0x4A: nibble A
    raw = dlt.encode_frame(METER, 0x91, (0x00010000).to_bytes(4, "little") + payload)
    with pytest.raises(BadBCD, match="67 4A 23 01"):
        dlt.decode_read_reply(raw, expect_address=METER, expect_di=0x00010000)


def test_value_of_the_wrong_size_and_unknown_di() -> None:
    with pytest.raises(BadLength):
        dlt.decode_value(0x00010000, bytes(3))
    with pytest.raises(UnknownDI, match="04000401"):
        dlt.decode_value(0x04000401, bytes(6))


def test_more_follows_and_read_next() -> None:
    first = dlt.encode_reply(METER, 0x00010000, 1.0, more=True)
    assert first[8] == 0xB1
    reply = dlt.decode_read_reply(first, expect_address=METER, expect_di=0x00010000)
    assert reply.more_follows and reply.seq is None
    request = dlt.encode_read_next(METER, 0x00010000, 1, wake=0)
    frame = dlt.decode_frame(request)
    assert (frame.control, frame.data) == (0x12, bytes([0, 0, 1, 0, 1]))
    # the meter's follow-up (92: last frame) ends with the sequence byte
    follow = dlt.encode_frame(METER, 0x92, bytes([0, 0, 1, 0]) + dlt.encode_value(0x00010000, 2.5) + b"\x01")
    reply = dlt.decode_read_reply(follow, expect_address=METER, expect_di=0x00010000)
    assert (reply.value, reply.seq, reply.more_follows) == (2.5, 1, False)


def test_read_address_round_trip() -> None:
    assert dlt.read_address_reply(dlt.encode_address_reply(METER, wake=2)) == METER
    with pytest.raises(WrongControl):
        dlt.read_address_reply(REPLY)


def test_short_digit_addresses_are_zero_padded() -> None:
    assert dlt.decode_frame(dlt.encode_read("12345678901", 0)).address == "012345678901"


@pytest.mark.parametrize("address", ["12345678901X", "1234567890123", "AB3456789012"])
def test_bad_addresses_are_refused_when_encoding(address: str) -> None:
    with pytest.raises(ValueError, match="12 digits"):
        dlt.encode_read(address, 0)
