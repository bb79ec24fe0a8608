"""CJ/T 188-2004 water, gas and heat meter frames: a pure codec, no I/O.

Datasheet facts (serial usually 2400 8E1)::

    [FE ...] 68 T A0 A1 A2 A3 A4 A5 A6 C L DATA(L bytes) CS 16

- FE: wake-up bytes, skipped by the decoder (any number); the encoder sends 0..4 (default 2).
- T (meter type): 10-19 water (10 cold, 11 hot, 12 drinking, 13 reclaimed), 20-29 heat
  (20 heat, 21 cooling), 30-39 gas. Anything else raises UnsupportedMeterType.
- Address: 7 bytes, least significant byte first; the text is the 14 digits most significant
  first ("00000000000001" is sent ``01 00 00 00 00 00 00``). ``AA`` bytes are wildcards.
- DATA is sent as is (no +0x33). CS: sum of the bytes from 68 to the end of DATA, mod 256.
- C: bit7 reply, bit6 error reply. Read data: 01 -> 81 ok / C1 error. The error reply carries
  SER ST1 ST2 (MeterError.data keeps whatever came, .status decodes ST1 ST2 when present).
- Read data request DATA: DI 901F + SER (a sequence byte the meter echoes). The 2004 text sends
  ``90 1F``, many meters (and the 2018 revision) ``1F 90``: replies may use either, requests use
  ``di_order`` ("90 1F" by default, as in the shared vector).
- Numbers are BCD, least significant byte first: a 4-byte XXXXXX.XX value 556677.00 is sent
  ``00 77 66 55``. Each quantity is followed by a unit byte (table below).
- Clock: 7 BCD bytes ``ss mm hh DD MM YY YY``, the whole field least significant first, so the
  year comes low pair first: 2015-05-11 22:01:31 is ``31 01 22 11 05 15 20``. A clock that is
  all zero or not a date decodes to None (meter local time, naive datetime).
- Status ST1 ST2 (ST1 first): ST1 bits 0-1 valve (00 open, 01 closed, 11 abnormal; the undefined
  10 is reported abnormal), bit2 battery low; ST2 reserved.

Read-data reply DATA, water and gas (L = 22)::

    DI(2) SER(1) flow XXXXXX.XX(4) unit(1) settlement-day flow XXXXXX.XX(4) unit(1)
    clock(7) ST1 ST2

Heat (L = 46): DI SER, settlement-day heat(4)+unit, current heat(4)+unit, thermal power(4)+unit,
flow rate(4)+unit, accumulated flow(4)+unit, supply temp(3), return temp(3), working hours(3),
clock(7), ST(2). Decoded here: the two heats (as kWh) and the clock. Power, flow rate, volume,
temperatures, hours and status are not: their decimals differ between vendors and we hold no
verified vector. A meter type this codec does not decode raises UnsupportedMeterType.

Units (code: unit; converted to kWh, kW, m3 or m3/h)::

    01 J  0B kJ  0E MJ  11 GJ  13 GJ*100  02 Wh  05 kWh  08 MWh  0A MWh*100
    14 W  17 kW  1A MW  29 L  2C m3  32 L/h  35 m3/h

Failure reasons (all ``FrameError``, a ``ValueError``)::

    FrameError
     +-- ShortFrame, BadStartOrEnd, BadLength, BadChecksum      framing
     +-- BadBCD                 a nibble > 9 in a flow or heat value
     +-- UnknownUnit            a unit code not in the table, or not a volume/energy
     +-- WrongAddress           reply from another meter
     |    +-- WrongMeterType    ... or from another kind of meter at that address
     +-- WrongControl, WrongDI, WrongSequence   not the reply to our request
     +-- UnsupportedMeterType   T outside water, heat and gas
     +-- MeterError             the meter answered with an error reply (C1)

Outputs: WaterReading(flow_m3, settlement_flow_m3, clock, valve, battery_low, unit, ...) for
water and gas; HeatReading(heat_kWh, settlement_heat_kWh, clock, unit, ...) for heat.
Encoders for simulators and tests: ``encode_reply`` (water, gas), ``encode_heat_reply``,
``encode_error_reply``.

The frame skeleton (wake-up bytes, start and end bytes, L, CS, BCD) and the shared failure
reasons are in ``_frame68``, with DL/T 645; each codec has its own classes (see there).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from . import _frame68
from ._frame68 import (BadBCD, BadChecksum, BadLength, BadStartOrEnd, FrameError,  # re-exported
                       ShortFrame, WrongAddress, WrongControl, WrongDI)

__all__ = [
    "Frame", "WaterReading", "HeatReading", "UNITS", "WILDCARD",
    "encode_frame", "encode_read", "encode_reply", "encode_heat_reply", "encode_error_reply",
    "decode_frame", "decode_read_reply", "frame_length_needed",
    "FrameError", "ShortFrame", "BadStartOrEnd", "BadLength", "BadChecksum", "BadBCD",
    "UnknownUnit", "WrongAddress", "WrongMeterType", "WrongControl", "WrongDI",
    "WrongSequence", "UnsupportedMeterType", "MeterError",
]

WILDCARD = "AAAAAAAAAAAAAA"
_START, _HEADER = _frame68.START, 11  # header: 68 T A*7 C L
_DI_ORDERS = {"90 1F": b"\x90\x1f", "1F 90": b"\x1f\x90"}
_WATER_LEN, _HEAT_LEN = 22, 46

_LAYOUT = {"header_len": _HEADER, "length_at": 10}


class UnknownUnit(FrameError): pass  # noqa: E701
class WrongMeterType(WrongAddress): pass  # noqa: E701
class WrongSequence(FrameError): pass  # noqa: E701
class UnsupportedMeterType(FrameError): pass  # noqa: E701


class MeterError(FrameError):
    """The meter replied C1. ``data`` is its DATA; ``status`` is ST1 | ST2 << 8 if it has them."""

    def __init__(self, data: bytes):
        self.data = bytes(data)
        self.status = int.from_bytes(self.data[-2:], "little") if len(self.data) >= 2 else None
        detail = "no status"
        if self.status is not None:
            detail = (f"status {self.status:04X}: valve {_valve(self.status)}"
                      + (", battery low" if self.status & 0x04 else ""))
        super().__init__(f"meter error reply ({detail})")


# code: (text, quantity, power of ten from the base unit, divisor); base units kWh, kW, m3, m3/h
UNITS: dict[int, tuple[str, str, int, str]] = {
    0x01: ("J", "energy", -6, "3.6"), 0x0B: ("kJ", "energy", -3, "3.6"),
    0x0E: ("MJ", "energy", 0, "3.6"), 0x11: ("GJ", "energy", 3, "3.6"),
    0x13: ("GJ*100", "energy", 5, "3.6"), 0x02: ("Wh", "energy", -3, "1"),
    0x05: ("kWh", "energy", 0, "1"), 0x08: ("MWh", "energy", 3, "1"),
    0x0A: ("MWh*100", "energy", 5, "1"), 0x14: ("W", "power", -3, "1"),
    0x17: ("kW", "power", 0, "1"), 0x1A: ("MW", "power", 3, "1"),
    0x29: ("L", "volume", -3, "1"), 0x2C: ("m3", "volume", 0, "1"),
    0x32: ("L/h", "flow", -3, "1"), 0x35: ("m3/h", "flow", 0, "1"),
}
_UNIT_CODES = {text: code for code, (text, *_rest) in UNITS.items()}


@dataclass(frozen=True, slots=True)
class Frame:
    meter_type: int
    address: str        # 14 hex characters, most significant first
    control: int
    data: bytes
    is_reply: bool      # C bit7
    is_error: bool      # C bit6


@dataclass(frozen=True, slots=True)
class WaterReading:
    flow_m3: float
    settlement_flow_m3: float
    clock: datetime | None
    valve: str            # "open" | "closed" | "abnormal"
    battery_low: bool
    unit: str             # the unit the meter sent the current flow in ("m3", "L")
    address: str = ""
    meter_type: int = 0x10
    ser: int = 0


@dataclass(frozen=True, slots=True)
class HeatReading:
    heat_kWh: float
    settlement_heat_kWh: float
    clock: datetime | None
    unit: str             # the unit the meter sent the current heat in ("kWh", "GJ", ...)
    address: str = ""
    meter_type: int = 0x20
    ser: int = 0


# -- helpers ---------------------------------------------------------------------------------

def _address_bytes(address: str) -> bytes:
    return _frame68.address_bytes(address, 14)


def _address_matches(expected: str, got: str) -> bool:
    return _frame68.address_matches(_frame68.address_text(_address_bytes(expected)), got)


def _valve(st1: int) -> str:
    return {0: "open", 1: "closed"}.get(st1 & 0x03, "abnormal")


def _bcd(raw: bytes, what: str) -> int:
    return _frame68.decode_bcd(raw, what)


def _quantity(raw: bytes, unit: int, want: str, what: str) -> tuple[float, str]:
    """A 4-byte XXXXXX.XX value with its unit byte, in the base unit of ``want``."""
    entry = UNITS.get(unit)
    if entry is None:
        raise UnknownUnit(f"{what}: unit code {unit:02X} is not in the CJ/T 188 table")
    text, quantity, exponent, divisor = entry
    if quantity != want:
        raise UnknownUnit(f"{what}: unit {text} (code {unit:02X}) is not a unit of {want}")
    return float(Decimal(_bcd(raw, what)).scaleb(exponent - 2) / Decimal(divisor)), text


def _clock(raw: bytes) -> datetime | None:
    digits = raw[::-1].hex()  # YYYYMMDDhhmmss
    if not digits.isdigit():
        return None
    fields = [int(digits[i:i + 2]) for i in range(4, 14, 2)]  # not strptime: it backtracks
    try:
        return datetime(int(digits[:4]), *fields)
    except ValueError:
        return None


# -- encoding ----------------------------------------------------------------------------------

def encode_frame(address: str, meter_type: int, control: int, data: bytes = b"", *,
                 wake: int = 0) -> bytes:
    wake_up = _frame68.wake_bytes(wake)
    if not 0 <= meter_type <= 255 or len(data) > 255:
        raise ValueError("meter type and L are one byte each")
    body = (bytes([_START, meter_type]) + _address_bytes(address)
            + bytes([control & 0xFF, len(data)]) + bytes(data))
    return wake_up + _frame68.seal(body)


def _di(di_order: str, ser: int) -> bytes:
    if not 0 <= ser <= 255:
        raise ValueError(f"SER {ser}: one byte")
    if di_order not in _DI_ORDERS:
        raise ValueError(f"di_order {di_order!r}: expected one of {sorted(_DI_ORDERS)}")
    return _DI_ORDERS[di_order] + bytes([ser])


def encode_read(address: str, meter_type: int = 0x10, *, ser: int = 0, di_order: str = "90 1F",
                wake: int = 2) -> bytes:
    """Read data (C=01, DI 901F, SER)."""
    return encode_frame(address, meter_type, 0x01, _di(di_order, ser), wake=wake)


def _encode_bcd(value: float, what: str, size: int = 4, decimals: int = 2) -> bytes:
    n = round(value * 10 ** decimals)
    if not 0 <= n < 10 ** (2 * size):
        raise ValueError(f"{what}: {value} does not fit {size} BCD bytes with {decimals} decimals")
    return _frame68.encode_bcd(n, size)


def _encode_clock(clock: datetime | None) -> bytes:
    if clock is None:
        return bytes(7)
    c = clock
    return bytes.fromhex(f"{c.year:04d}{c.month:02d}{c.day:02d}{c.hour:02d}{c.minute:02d}{c.second:02d}")[::-1]


def encode_reply(address: str, meter_type: int = 0x10, *, flow: float,
                 settlement_flow: float | None = None, unit: str = "m3",
                 clock: datetime | None = None, valve: str = "open", battery_low: bool = False,
                 ser: int = 0, di_order: str = "90 1F", wake: int = 0) -> bytes:
    """A water or gas meter's read-data reply (C=81), for simulators and tests. ``flow`` and
    ``settlement_flow`` are in ``unit`` ("m3" or "L"), as the meter would send them."""
    code = _UNIT_CODES.get(unit)
    if code is None or UNITS[code][1] != "volume":
        raise ValueError(f"unit {unit!r}: expected m3 or L")
    if valve not in ("open", "closed", "abnormal"):
        raise ValueError(f"valve {valve!r}: expected open, closed or abnormal")
    st1 = {"open": 0, "closed": 1, "abnormal": 3}[valve] | (0x04 if battery_low else 0)
    data = (_di(di_order, ser) + _encode_bcd(flow, "flow") + bytes([code])
            + _encode_bcd(flow if settlement_flow is None else settlement_flow, "settlement flow")
            + bytes([code]) + _encode_clock(clock) + bytes([st1, 0]))
    return encode_frame(address, meter_type, 0x81, data, wake=wake)


def encode_heat_reply(address: str, meter_type: int = 0x20, *, heat_kwh: float,
                      settlement_heat_kwh: float | None = None, clock: datetime | None = None,
                      status: int = 0, ser: int = 0, di_order: str = "90 1F", wake: int = 0) -> bytes:
    """A heat meter's read-data reply (C=81, L=46), for simulators and tests. The heats go in kWh;
    thermal power, flow rate, volume, temperatures and hours, which this codec does not decode,
    are sent as zeros with their units (kW, m3/h, m3)."""
    settlement = heat_kwh if settlement_heat_kwh is None else settlement_heat_kwh
    kwh, zero = _UNIT_CODES["kWh"], _encode_bcd(0, "unused")
    data = (_di(di_order, ser) + _encode_bcd(settlement, "settlement heat") + bytes([kwh])
            + _encode_bcd(heat_kwh, "heat") + bytes([kwh]) + zero + bytes([_UNIT_CODES["kW"]])
            + zero + bytes([_UNIT_CODES["m3/h"]]) + zero + bytes([_UNIT_CODES["m3"]])
            + bytes(9) + _encode_clock(clock) + status.to_bytes(2, "little"))
    return encode_frame(address, meter_type, 0x81, data, wake=wake)


def encode_error_reply(address: str, meter_type: int = 0x10, *, ser: int = 0, status: int = 0,
                       wake: int = 0) -> bytes:
    """An error reply (C=C1): SER ST1 ST2."""
    return encode_frame(address, meter_type, 0xC1, bytes([ser]) + status.to_bytes(2, "little"),
                        wake=wake)


# -- decoding ----------------------------------------------------------------------------------

def frame_length_needed(buffer: bytes) -> int | None:
    """Total bytes (wake-up bytes included) the frame at the start of ``buffer`` needs, or None
    while its header (68 T A*7 C L) is incomplete. Raises BadStartOrEnd as soon as the buffer
    cannot be the start of a frame: the reader should drop bytes up to the next 68."""
    return _frame68.frame_length_needed(buffer, **_LAYOUT)


def decode_frame(data: bytes) -> Frame:
    """Check start byte, length, end byte and checksum."""
    frame = _frame68.split_frame(data, **_LAYOUT)
    c = frame[9]
    return Frame(meter_type=frame[1], address=_frame68.address_text(frame[2:9]), control=c,
                 data=frame[_HEADER:-2], is_reply=bool(c & 0x80), is_error=bool(c & 0x40))


def decode_read_reply(data: bytes, *, expect_address: str, expect_type: int | None = None,
                      expect_ser: int | None = None) -> WaterReading | HeatReading:
    """The reading in a read-data reply (C=81), or the specific reason there is none."""
    frame = decode_frame(data)
    if not _address_matches(expect_address, frame.address):
        raise WrongAddress(f"reply from meter {frame.address}, expected {expect_address}")
    if expect_type is not None and frame.meter_type != expect_type:
        raise WrongMeterType(f"reply from meter type {frame.meter_type:02X}, expected {expect_type:02X}")
    if frame.control & 0x3F != 0x01 or not frame.is_reply:
        raise WrongControl(f"control {frame.control:02X} is not a read-data reply (81/C1)")
    if frame.is_error:
        raise MeterError(frame.data)
    family = frame.meter_type >> 4
    if family not in (1, 2, 3):
        raise UnsupportedMeterType(f"meter type {frame.meter_type:02X}: this codec decodes "
                                   "water (1x), heat (2x) and gas (3x)")
    body = frame.data
    size = _HEAT_LEN if family == 2 else _WATER_LEN
    if len(body) != size:
        raise BadLength(f"meter type {frame.meter_type:02X} replies with L={size}, got {len(body)}")
    if body[:2] not in _DI_ORDERS.values():
        raise WrongDI(f"reply carries DI {body[:2].hex(' ').upper()}, expected 90 1F or 1F 90")
    if expect_ser is not None and body[2] != expect_ser:
        raise WrongSequence(f"reply carries SER {body[2]:02X}, expected {expect_ser:02X}")
    common = {"address": frame.address, "meter_type": frame.meter_type, "ser": body[2]}
    if family == 2:
        settlement, _ = _quantity(body[3:7], body[7], "energy", "settlement-day heat")
        heat, unit = _quantity(body[8:12], body[12], "energy", "current heat")
        return HeatReading(heat_kWh=heat, settlement_heat_kWh=settlement, clock=_clock(body[37:44]),
                           unit=unit, **common)
    flow, unit = _quantity(body[3:7], body[7], "volume", "current flow")
    settlement, _ = _quantity(body[8:12], body[12], "volume", "settlement-day flow")
    return WaterReading(flow_m3=flow, settlement_flow_m3=settlement, clock=_clock(body[13:20]),
                        valve=_valve(body[20]), battery_low=bool(body[20] & 0x04), unit=unit,
                        **common)
