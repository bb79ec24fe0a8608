"""The register codec against hand-computed words, and encode/decode round trips."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given, strategies as st

from edge_agent.model import DType, Point, Reg
from edge_agent.field.registers import decode_value, encode_value

ORDERS = {"ABCD": ("big", "big"), "CDAB": ("big", "little"), "BADC": ("little", "big"), "DCBA": ("little", "little")}


def pt(dtype: DType, order: str = "ABCD", **kw: object) -> Point:
    byte_order, word_order = ORDERS[order]
    return Point("x", Reg.HOLDING, 0, dtype, byte_order=byte_order, word_order=word_order, **kw)  # type: ignore[arg-type]


# (dtype, order, words, value): words worked out by hand from the big-endian bytes A B C D ...
WORDS = [
    (DType.UINT16, "ABCD", [0x1234], 0x1234),
    (DType.UINT16, "BADC", [0x3412], 0x1234),
    (DType.INT16, "ABCD", [0xFFFE], -2),
    (DType.INT16, "BADC", [0xFEFF], -2),
    (DType.INT16, "ABCD", [0x8000], -32768),
    (DType.UINT32, "ABCD", [0x1234, 0x5678], 0x12345678),
    (DType.UINT32, "CDAB", [0x5678, 0x1234], 0x12345678),
    (DType.UINT32, "BADC", [0x3412, 0x7856], 0x12345678),
    (DType.UINT32, "DCBA", [0x7856, 0x3412], 0x12345678),
    (DType.INT32, "ABCD", [0xFFFF, 0xFFFE], -2),
    (DType.INT32, "CDAB", [0xFFFE, 0xFFFF], -2),
    (DType.INT32, "DCBA", [0xFEFF, 0xFFFF], -2),
    (DType.FLOAT32, "ABCD", [0x3FC0, 0x0000], 1.5),
    (DType.FLOAT32, "CDAB", [0x0000, 0x3FC0], 1.5),
    (DType.FLOAT32, "BADC", [0xC03F, 0x0000], 1.5),
    (DType.FLOAT32, "DCBA", [0x0000, 0xC03F], 1.5),
    (DType.FLOAT32, "ABCD", [0x4366, 0x3333], 230.2),  # float32 230.19999694..., published as written
    (DType.FLOAT32, "ABCD", [0xC2F6, 0xE979], -123.456),
    (DType.UINT64, "ABCD", [0x0102, 0x0304, 0x0506, 0x0708], 0x0102030405060708),
    (DType.UINT64, "CDAB", [0x0708, 0x0506, 0x0304, 0x0102], 0x0102030405060708),
    (DType.UINT64, "BADC", [0x0201, 0x0403, 0x0605, 0x0807], 0x0102030405060708),
    (DType.UINT64, "DCBA", [0x0807, 0x0605, 0x0403, 0x0201], 0x0102030405060708),
    (DType.INT64, "ABCD", [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFE], -2),
    (DType.INT64, "CDAB", [0xFFFE, 0xFFFF, 0xFFFF, 0xFFFF], -2),
    (DType.FLOAT64, "ABCD", [0x3FF8, 0, 0, 0], 1.5),
    (DType.FLOAT64, "CDAB", [0, 0, 0, 0x3FF8], 1.5),
    (DType.FLOAT64, "BADC", [0xF83F, 0, 0, 0], 1.5),
    (DType.FLOAT64, "DCBA", [0, 0, 0, 0xF83F], 1.5),
    (DType.FLOAT64, "ABCD", [0x400B, 0x3333, 0x3333, 0x3333], 3.4),
]


@pytest.mark.parametrize("dtype,order,words,value", WORDS, ids=[f"{w[0]}-{w[1]}-{w[3]}" for w in WORDS])
def test_decode_and_encode_against_hand_computed_words(dtype: DType, order: str, words: list[int], value: object) -> None:
    point = pt(dtype, order)
    decoded = decode_value(point, words)
    assert decoded == value and type(decoded) is type(value)
    assert encode_value(point, value) == words


def test_decode_uses_only_the_points_own_words() -> None:
    words = [0x3FC0, 0x0000, 0xDEAD]
    assert decode_value(pt(DType.FLOAT32), words) == 1.5
    assert words == [0x3FC0, 0x0000, 0xDEAD]  # not mutated
    with pytest.raises(ValueError, match="x: needs 2"):
        decode_value(pt(DType.FLOAT32), [0x3FC0])


def test_float32_extremes_keep_their_bits() -> None:
    largest = [0x7F7F, 0xFFFF]  # 3.4028234663852886e38: 4-digit rounding would overflow float32
    assert encode_value(pt(DType.FLOAT32), decode_value(pt(DType.FLOAT32), largest)) == largest
    tiny = [0x0000, 0x0001]  # the smallest subnormal
    assert encode_value(pt(DType.FLOAT32), decode_value(pt(DType.FLOAT32), tiny)) == tiny


def test_float32_nan_and_infinity_pass_through() -> None:
    assert math.isnan(decode_value(pt(DType.FLOAT32), [0x7FC0, 0x0000]))  # type: ignore[arg-type]
    assert decode_value(pt(DType.FLOAT32), [0x7F80, 0x0000]) == math.inf
    assert decode_value(pt(DType.FLOAT32, scale=0.1), [0xFF80, 0x0000]) == -math.inf


@pytest.mark.parametrize("order,words", [("ABCD", [0x4142, 0x4344, 0x0000]), ("BADC", [0x4241, 0x4443, 0x0000]),
                                         ("ABCD", [0x4142, 0x4344, 0x2020]), ("ABCD", [0x4142, 0x4344, 0x0045])])
def test_string_two_chars_per_register_trailing_nul_and_space_stripped(order: str, words: list[int]) -> None:
    assert decode_value(pt(DType.STRING, order, length=3), words) == "ABCD"


def test_string_keeps_inner_spaces_and_replaces_undecodable_bytes() -> None:
    assert decode_value(pt(DType.STRING, length=3), [0x4120, 0x4220, 0x2020]) == "A B"
    assert decode_value(pt(DType.STRING, length=2), [0x41FF, 0x4200]) == "A\ufffdB"
    assert decode_value(pt(DType.STRING, length=3), [0xE6B0, 0xB4E4, 0xBD8D]) == "水位"


def test_string_encode_pads_and_refuses_overflow() -> None:
    assert encode_value(pt(DType.STRING, length=3), "ABC") == [0x4142, 0x4300, 0x0000]
    assert encode_value(pt(DType.STRING, "BADC", length=2), "AB") == [0x4241, 0x0000]
    with pytest.raises(ValueError, match="x: .*7 bytes"):
        encode_value(pt(DType.STRING, length=3), "ABCDEFG")


@pytest.mark.parametrize("word,bit,expected", [(0b1000, 3, True), (0b1000, 2, False), (0x8000, 15, True), (0x7FFF, 15, False)])
def test_bool_bit_of_a_register(word: int, bit: int, expected: bool) -> None:
    assert decode_value(pt(DType.BOOL, bit=bit), [word]) is expected


def test_coil_and_discrete_values() -> None:
    coil = Point("relay", Reg.COIL, 5, DType.BOOL)
    assert decode_value(coil, True) is True
    assert decode_value(coil, [False]) is False
    assert encode_value(coil, True) is True and encode_value(coil, 0) is False
    with pytest.raises(ValueError, match="relay"):
        encode_value(coil, "open")


@pytest.mark.parametrize("dtype,words,kw,expected", [
    (DType.UINT16, [1234], {"scale": 0.1}, 123.4),
    (DType.INT16, [0xFFFF], {"scale": 0.1}, -0.1),
    (DType.UINT16, [123], {"scale": 0.01}, 1.23),
    (DType.UINT16, [3], {"scale": 0.001}, 0.003),
    (DType.UINT16, [1000], {"scale": 0.1, "offset": -40.0}, 60.0),
    (DType.UINT16, [655], {"scale": 0.1, "offset": 0.05}, 65.55),
    (DType.UINT16, [7], {"scale": 2.0}, 14.0),
    (DType.UINT32, [1, 4464], {}, 70000),
    (DType.FLOAT32, [0x4366, 0x3333], {"scale": 0.1}, 23.02),
    (DType.FLOAT32, [0x3FC0, 0x0000], {"offset": 1.0}, 2.5),
])
def test_scale_and_offset_round_to_real_decimals(dtype: DType, words: list[int], kw: dict, expected: float) -> None:
    value = decode_value(pt(dtype, **kw), words)
    assert value == expected and type(value) is type(expected)


def test_int_stays_int_only_without_scale_or_offset() -> None:
    assert type(decode_value(pt(DType.INT16), [5])) is int
    assert type(decode_value(pt(DType.INT16, offset=1.0), [5])) is float


def test_encode_applies_scale_offset_and_refuses_what_does_not_fit() -> None:
    assert encode_value(pt(DType.UINT16, scale=0.1), 123.4) == [1234]
    assert encode_value(pt(DType.INT16, scale=0.1, offset=-40.0), -40.1) == [0xFFFF]
    for dtype, value in [(DType.UINT16, 65536), (DType.UINT16, -1), (DType.INT16, 40000), (DType.UINT32, 2**32),
                         (DType.FLOAT32, 1e39), (DType.INT32, math.nan)]:
        with pytest.raises(ValueError, match="^x: "):
            encode_value(pt(dtype), value)
    with pytest.raises(ValueError, match="x: .*number"):
        encode_value(pt(DType.UINT16), "12")
    with pytest.raises(ValueError, match="x: .*number"):
        encode_value(pt(DType.UINT16), True)


# -- round trips ----------------------------------------------------------------------------
NUMERIC = [DType.INT16, DType.UINT16, DType.INT32, DType.UINT32, DType.INT64, DType.UINT64, DType.FLOAT32, DType.FLOAT64]
word = st.integers(0, 0xFFFF)


def _is_nan(dtype: DType, point: Point, words: list[int]) -> bool:
    if dtype not in (DType.FLOAT32, DType.FLOAT64):
        return False
    value = decode_value(point, words)
    return isinstance(value, float) and math.isnan(value)


@given(st.sampled_from(NUMERIC), st.sampled_from(list(ORDERS)), st.lists(word, min_size=4, max_size=4))
def test_words_survive_decode_then_encode(dtype: DType, order: str, words: list[int]) -> None:
    point = pt(dtype, order)
    words = words[:point.count]
    if _is_nan(dtype, point, words):
        return  # NaN payload bits are not preserved, and need not be
    assert encode_value(point, decode_value(point, words)) == words


@given(st.sampled_from(list(ORDERS)), st.integers(-(2**31), 2**31 - 1))
def test_int32_values_survive_encode_then_decode(order: str, value: int) -> None:
    point = pt(DType.INT32, order)
    assert decode_value(point, encode_value(point, value)) == value  # type: ignore[arg-type]


@given(st.sampled_from(list(ORDERS)), st.floats(allow_nan=False, width=32))
def test_float32_values_survive_encode_then_decode(order: str, value: float) -> None:
    point = pt(DType.FLOAT32, order)
    back = decode_value(point, encode_value(point, value))  # type: ignore[arg-type]
    assert struct.pack(">f", back) == struct.pack(">f", value)  # type: ignore[arg-type]


@given(st.integers(0, 0xFFFF), st.sampled_from([0.1, 0.01, 0.5, 2.0]), st.sampled_from([0.0, -40.0, 0.5]))
def test_scaled_values_survive_encode_then_decode(raw: int, scale: float, offset: float) -> None:
    point = pt(DType.UINT16, scale=scale, offset=offset)
    value = decode_value(point, [raw])
    assert encode_value(point, value) == [raw]


@given(st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=8),
       st.sampled_from(["ABCD", "BADC"]))
def test_strings_survive_encode_then_decode(text: str, order: str) -> None:
    point = pt(DType.STRING, order, length=4)
    assert decode_value(point, encode_value(point, text)) == text  # type: ignore[arg-type]
