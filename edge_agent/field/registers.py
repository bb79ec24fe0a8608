"""Register words <-> values, from a point's declaration alone.

Our own struct-based codec rather than pymodbus' ``convert_from_registers`` (which mutates its
input and moves between minor versions). Conventions, for the bytes ``A B C D`` of a 32-bit
value in big-endian order:

=============  ==========  ==========  =============
name           byte_order  word_order  words
=============  ==========  ==========  =============
ABCD           big         big         [AB, CD]
CDAB           big         little      [CD, AB]
BADC           little      big         [BA, DC]
DCBA           little      little      [DC, BA]
=============  ==========  ==========  =============

``byte_order`` is the order of the two bytes inside each 16-bit word; ``word_order`` the order
of the words (``big``: most significant word first). A STRING carries two characters per
register; only ``byte_order`` applies to it (``little`` swaps each pair). Decoding stops at
the first NUL (C terminator) and strips trailing spaces; undecodable bytes become U+FFFD.

The published value is ``raw * scale + offset``. An integer type with scale 1 and offset 0
stays an ``int``; anything else becomes a float rounded to the decimals the operands really
have, so ``1234 * 0.1`` is ``123.4``. A float32 is first turned into the shortest decimal that
maps back to the same float32 (``230.2``, not ``230.1999969482422``). NaN and infinities pass
through unchanged: judging them is the poller's job.
"""

from __future__ import annotations

import math
import struct
from decimal import Decimal
from typing import Sequence

from ..model import DType, Point

__all__ = ["decode_value", "encode_value", "Value"]

Value = int | float | str | bool

_STRUCT: dict[DType, str] = {
    DType.INT16: "h", DType.UINT16: "H", DType.INT32: "i", DType.UINT32: "I",
    DType.INT64: "q", DType.UINT64: "Q", DType.FLOAT32: "f", DType.FLOAT64: "d",
}
_INTEGER = {DType.INT16, DType.UINT16, DType.INT32, DType.UINT32, DType.INT64, DType.UINT64}


def _words_to_bytes(point: Point, words: Sequence[int], *, swap_words: bool = True) -> bytes:
    ordered = list(words)
    if swap_words and point.word_order == "little":
        ordered.reverse()
    return b"".join(int(w & 0xFFFF).to_bytes(2, point.byte_order) for w in ordered)


def _bytes_to_words(point: Point, data: bytes, *, swap_words: bool = True) -> list[int]:
    words = [int.from_bytes(data[i:i + 2], point.byte_order) for i in range(0, len(data), 2)]
    if swap_words and point.word_order == "little":
        words.reverse()
    return words


def _decimals(x: float | int) -> int:
    """Digits after the decimal point in the shortest repr of ``x`` (0 for integers)."""
    if isinstance(x, int) or not math.isfinite(x):
        return 0
    exponent = Decimal(repr(x)).as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def _shortest_float32(x: float) -> float:
    """The shortest decimal that packs to the same float32 as ``x``."""
    if not math.isfinite(x) or x == 0:
        return x
    target = struct.pack(">f", x)
    for digits in range(1, 10):
        candidate = float(f"{x:.{digits}g}")
        try:
            if struct.pack(">f", candidate) == target:
                return candidate
        except OverflowError:  # rounded up past the largest float32
            continue
    return x


def _scaled(point: Point, raw: int | float) -> int | float:
    if point.scale == 1 and point.offset == 0:
        return int(raw) if point.dtype in _INTEGER else float(raw)
    if isinstance(raw, float) and not math.isfinite(raw):
        return raw
    value = raw * point.scale + point.offset
    if not math.isfinite(value):
        return value
    ndigits = max(_decimals(raw) + _decimals(point.scale), _decimals(point.offset))
    return round(float(value), min(ndigits, 17))


def decode_value(point: Point, regs: Sequence[int] | Sequence[bool] | bool) -> Value:
    """The value of ``point`` from its own slice of the answer.

    ``regs`` is the point's 16-bit words (``point.count`` of them), or for a coil/discrete
    point a bool (or a one-element sequence of bools). Raises ValueError for a short slice.
    """
    if point.reg.is_bit:
        bit = regs if isinstance(regs, bool) else regs[0]  # type: ignore[index]
        return bool(bit)
    words = list(regs)  # type: ignore[arg-type]
    if len(words) < point.count:
        raise ValueError(f"{point.name}: needs {point.count} register(s), got {len(words)}")
    words = words[:point.count]
    if point.dtype is DType.BOOL:
        return bool((int(words[0]) >> (point.bit or 0)) & 1)
    if point.dtype is DType.STRING:
        data = _words_to_bytes(point, words, swap_words=False)
        data = data.split(b"\x00", 1)[0]
        return data.decode("utf-8", errors="replace").rstrip(" ")
    (raw,) = struct.unpack(">" + _STRUCT[point.dtype], _words_to_bytes(point, words))
    if point.dtype is DType.FLOAT32:
        raw = _shortest_float32(raw)
    return _scaled(point, raw)


def _refuse(point: Point, value: object, why: str) -> ValueError:
    return ValueError(f"{point.name}: cannot write {type(value).__name__} value: {why}")


def encode_value(point: Point, value: object) -> list[int] | bool:
    """Words to write for ``value`` (the inverse of ``decode_value``), or a bool for a coil or a
    bit inside a register (the bus does the read-modify-write). ValueError names the point when
    the value has the wrong type or does not fit."""
    if point.reg.is_bit or point.dtype is DType.BOOL:
        if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
            return bool(value)
        raise _refuse(point, value, "expected true/false (or 0/1)")
    if point.dtype is DType.STRING:
        if not isinstance(value, str):
            raise _refuse(point, value, "expected text")
        data = value.encode("utf-8")
        room = point.length * 2
        if len(data) > room:
            raise _refuse(point, value, f"{len(data)} bytes of UTF-8 exceed {room} ({point.length} registers)")
        return _bytes_to_words(point, data.ljust(room, b"\x00"), swap_words=False)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _refuse(point, value, f"expected a number for {point.dtype}")
    if point.scale == 0:
        raise _refuse(point, value, "the point's scale is 0")
    raw: int | float = value
    if point.scale != 1 or point.offset != 0:
        raw = (value - point.offset) / point.scale
    fmt = ">" + _STRUCT[point.dtype]
    if point.dtype in _INTEGER:
        if not math.isfinite(raw):
            raise _refuse(point, value, f"{raw} is not a whole number")
        raw = round(raw)
    try:
        data = struct.pack(fmt, raw)
    except (struct.error, OverflowError):
        raise _refuse(point, value, f"out of range for {point.dtype}") from None
    return _bytes_to_words(point, data)
