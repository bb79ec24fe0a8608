"""DL/T 645 frames as a simulated meter sees them, written from the standard (DL/T 645-2007,
and the 1997 reads) and not from the agent's driver: were both made from one codec, a codec bug
would cancel out in every test that reads a simulator with a driver.

    [FE ...] 68 A0 A1 A2 A3 A4 A5 68 C L DATA(L) CS 16

- FE: wake-up bytes before a frame (the line's ``take_frame`` skips them; replies send 0..4).
- Address: 6 bytes BCD, least significant first ("123456789012" is ``12 90 78 56 34 12``);
  AA bytes are wildcards (AAAAAAAAAAAA asks the only meter its address); 999999999999 broadcasts.
- DATA: each byte +0x33 on the wire (``Frame.data`` holds it without). CS: the sum of the bytes
  from the first 68 to the end of DATA, mod 256.
- C: bit7 reply, bit6 error, bit5 more frames follow. 2007: read 11 (DATA = DI0..DI3) ->
  91, B1 (more: fetch with 12 + DI + sequence byte -> 92) or D1 + one error byte (bit0 other,
  bit1 no requested data); read address 13 -> 93 + the 6 address bytes. 1997: read 01 (DI 2
  bytes) -> 81 or C1.
- Values: BCD, least significant byte first; current, power and power factor put a minus sign
  in the top bit of their most significant byte.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

__all__ = ["Frame", "Point", "POINTS", "WILDCARD", "BROADCAST", "frame_length", "parse", "build",
           "encode_value", "reply", "error_reply", "address_reply", "bcd", "address_bytes", "address_text"]

WILDCARD = "AAAAAAAAAAAA"
BROADCAST = "999999999999"
_START, _END, _WAKE = 0x68, 0x16, 0xFE
_HEADER = 10  # 68 A*6 68 C L


class Point(NamedTuple):
    """What a DI holds: its version, point name, BCD bytes, decimals, and whether it is signed."""

    version: int
    point: str
    size: int
    decimals: int
    signed: bool = False


POINTS: dict[int, Point] = {
    0x00000000: Point(2007, "energy_total_kWh", 4, 2),
    0x00010000: Point(2007, "energy_import_kWh", 4, 2),
    0x00020000: Point(2007, "energy_export_kWh", 4, 2),
    **{0x02010000 | p << 8: Point(2007, f"voltage_{c}_V", 2, 1) for p, c in ((1, "a"), (2, "b"), (3, "c"))},
    **{0x02020000 | p << 8: Point(2007, f"current_{c}_A", 3, 3, True) for p, c in ((1, "a"), (2, "b"), (3, "c"))},
    0x02030000: Point(2007, "power_kW", 3, 4, True),
    0x02060000: Point(2007, "power_factor", 2, 3, True),
    0x02800002: Point(2007, "frequency_Hz", 2, 2),
    0x9010: Point(1997, "energy_import_kWh", 4, 2),
    0x9020: Point(1997, "energy_export_kWh", 4, 2),
}


@dataclass(frozen=True)
class Frame:
    """One frame off the line: ``address`` as 12 characters (digits, or AA pairs), DATA unmasked."""

    address: str
    control: int
    data: bytes

    @property
    def is_reply(self) -> bool:
        return bool(self.control & 0x80)


def bcd(number: int, size: int) -> bytes:
    """``number`` as ``size`` BCD bytes, least significant first (ValueError when it does not fit)."""
    digits = f"{number:0{2 * size}d}"
    if number < 0 or len(digits) > 2 * size:
        raise ValueError(f"{number} does not fit {size} BCD bytes")
    return bytes.fromhex(digits)[::-1]


def address_bytes(address: str) -> bytes:
    """The address text as sent: its digit pairs, last pair first (AA pairs included)."""
    return bytes.fromhex(address)[::-1]


def address_text(raw: bytes) -> str:
    """Inverse of ``address_bytes``; ValueError for a byte that is neither BCD nor AA."""
    text = raw[::-1].hex().upper()
    if any(not (pair.isdigit() or pair == "AA") for pair in (text[i:i + 2] for i in range(0, len(text), 2))):
        raise ValueError(f"address {text} is not BCD")
    return text


def frame_length(head: bytes) -> int | None:
    """The whole length of the frame that starts (at its first 68) ``head``, or None until its
    header is in; ValueError when ``head`` cannot start a frame."""
    if not head or head[0] != _START or (len(head) > 7 and head[7] != _START):
        raise ValueError("no 68 where a DL/T 645 frame starts")
    return None if len(head) < _HEADER else _HEADER + head[9] + 2


def parse(raw: bytes) -> Frame:
    """One whole frame (starting at its first 68): start, end, length and CS checked."""
    if frame_length(raw) != len(raw) or raw[-1] != _END:
        raise ValueError("not one whole DL/T 645 frame")
    if sum(raw[:-2]) & 0xFF != raw[-2]:
        raise ValueError("DL/T 645 checksum does not match")
    return Frame(address_text(raw[1:7]), raw[8], bytes((b - 0x33) & 0xFF for b in raw[_HEADER:-2]))


def build(address: str, control: int, data: bytes = b"", wake: int = 0) -> bytes:
    """A frame to ``address`` (12 characters) with ``data`` (unmasked), after ``wake`` FE bytes."""
    body = (bytes([_START]) + address_bytes(address) + bytes([_START, control, len(data)])
            + bytes((b + 0x33) & 0xFF for b in data))
    return bytes([_WAKE] * wake) + body + bytes([sum(body) & 0xFF, _END])


def encode_value(di: int, value: float) -> bytes:
    """``value`` in DI's format (ValueError for an unknown DI or a value that does not fit)."""
    point = POINTS.get(di)
    if point is None:
        raise ValueError(f"DI {di:08X}: no format known")
    number = round(value * 10 ** point.decimals)
    if number < 0 and not point.signed:
        raise ValueError(f"{point.point} {value} is negative")
    raw = bytearray(bcd(abs(number), point.size))
    if point.signed and raw[-1] & 0x80:
        raise ValueError(f"{point.point} {value} leaves no room for the sign bit")
    if number < 0:
        raw[-1] |= 0x80
    return bytes(raw)


def _di(di: int, version: int) -> bytes:
    return di.to_bytes(4 if version == 2007 else 2, "little")


def reply(address: str, di: int, value: float, version: int = 2007, wake: int = 0) -> bytes:
    """The read reply (91; 1997: 81) carrying ``value`` for ``di``."""
    return build(address, 0x91 if version == 2007 else 0x81, _di(di, version) + encode_value(di, value), wake)


def error_reply(address: str, bits: int, version: int = 2007, wake: int = 0) -> bytes:
    """The error reply (D1; 1997: C1) with its error byte (0x02: no requested data)."""
    return build(address, 0xD1 if version == 2007 else 0xC1, bytes([bits & 0xFF]), wake)


def address_reply(address: str, wake: int = 0) -> bytes:
    """The answer to read address (13): 93 with the meter's 6 address bytes as DATA."""
    return build(address, 0x93, address_bytes(address), wake)
