"""CJ/T 188-2004 frames as a simulated water, gas or heat meter sees them, written from the
standard and not from the agent's driver (see ``frames645`` for why).

    [FE ...] 68 T A0..A6 C L DATA(L) CS 16

- T: the meter type (10 cold water, 11 hot water, 20 heat, 30 gas; AA: any).
- Address: 7 bytes, least significant first; the text is 14 digits (AA pairs are wildcards).
- DATA is sent as is (no +0x33). CS: the sum of the bytes from 68 to the end of DATA, mod 256.
- C: bit7 reply, bit6 error. Read data 01 (DATA: DI 901F, then SER, a sequence byte the meter
  echoes) -> 81, or C1 with SER ST1 ST2. The 2004 text sends the DI ``90 1F``, many meters
  ``1F 90``: a meter answers in its own order.
- Numbers: BCD, least significant byte first, each quantity followed by its unit byte
  (05 kWh, 17 kW, 2C m3, 35 m3/h). Clock: YYYYMMDDhhmmss as 7 BCD bytes, least significant
  first (``ss mm hh DD MM YY YY``, the year's low pair first). ST1: bits 0-1 the valve (00 open,
  01 closed, 11 abnormal), bit 2 battery low; ST2 reserved.
- Water and gas reply DATA (22 bytes): DI SER, flow(4)+unit, settlement-day flow(4)+unit,
  clock(7), ST1 ST2. Heat (46): DI SER, settlement-day heat(4)+unit, heat(4)+unit, thermal
  power(4)+unit, flow rate(4)+unit, accumulated flow(4)+unit, supply and return temperature
  (3 each), working hours(3), clock(7), ST1 ST2.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from .frames645 import address_bytes, address_text, bcd

__all__ = ["Frame", "frame_length", "parse", "build", "water_reply", "heat_reply", "error_reply",
           "VALVE_BITS"]

_START, _END, _WAKE = 0x68, 0x16, 0xFE
_HEADER = 11  # 68 T A*7 C L
_KWH, _KW, _M3, _M3_PER_H = 0x05, 0x17, 0x2C, 0x35
VALVE_BITS = {"open": 0b00, "closed": 0b01, "abnormal": 0b11}


@dataclass(frozen=True)
class Frame:
    """One frame off the line: ``address`` as 14 characters (digits, or AA pairs)."""

    meter_type: int
    address: str
    control: int
    data: bytes

    @property
    def is_reply(self) -> bool:
        return bool(self.control & 0x80)


def frame_length(head: bytes) -> int | None:
    """The whole length of the frame that starts ``head`` (at its 68), or None until its header
    is in; ValueError when ``head`` cannot start a frame."""
    if not head or head[0] != _START:
        raise ValueError("no 68 where a CJ/T 188 frame starts")
    return None if len(head) < _HEADER else _HEADER + head[10] + 2


def parse(raw: bytes) -> Frame:
    """One whole frame (starting at its 68): start, end, length and CS checked."""
    if frame_length(raw) != len(raw) or raw[-1] != _END:
        raise ValueError("not one whole CJ/T 188 frame")
    if sum(raw[:-2]) & 0xFF != raw[-2]:
        raise ValueError("CJ/T 188 checksum does not match")
    return Frame(raw[1], address_text(raw[2:9]), raw[9], raw[_HEADER:-2])


def build(address: str, meter_type: int, control: int, data: bytes = b"", wake: int = 0) -> bytes:
    """A frame from meter ``address`` (14 characters) of type ``meter_type``, after ``wake`` FE bytes."""
    body = bytes([_START, meter_type]) + address_bytes(address) + bytes([control, len(data)]) + data
    return bytes([_WAKE] * wake) + body + bytes([sum(body) & 0xFF, _END])


def _di_ser(di_order: str, ser: int) -> bytes:
    return bytes.fromhex(di_order) + bytes([ser])


def _quantity(value: float, unit: int, decimals: int = 2) -> bytes:
    return bcd(round(value * 10 ** decimals), 4) + bytes([unit])


def _clock(when: datetime) -> bytes:
    return bytes.fromhex(when.strftime("%Y%m%d%H%M%S"))[::-1]


def water_reply(address: str, meter_type: int, *, ser: int, di_order: str, flow_m3: float,
                settlement_m3: float, clock: datetime, valve: str = "open", battery_low: bool = False,
                wake: int = 0) -> bytes:
    """The read-data reply (81) of a water or gas meter; ``di_order`` "90 1F" or "1F 90"."""
    st1 = VALVE_BITS[valve] | (0x04 if battery_low else 0)
    data = (_di_ser(di_order, ser) + _quantity(flow_m3, _M3) + _quantity(settlement_m3, _M3) + _clock(clock)
            + bytes([st1, 0]))
    return build(address, meter_type, 0x81, data, wake)


def heat_reply(address: str, meter_type: int, *, ser: int, di_order: str, heat_kwh: float,
               settlement_kwh: float, clock: datetime, wake: int = 0) -> bytes:
    """The read-data reply (81) of a heat meter: the heats as given; thermal power, flow rate,
    volume, temperatures and hours zero (the agent does not read them)."""
    data = (_di_ser(di_order, ser) + _quantity(settlement_kwh, _KWH) + _quantity(heat_kwh, _KWH)
            + _quantity(0, _KW) + _quantity(0, _M3_PER_H) + _quantity(0, _M3) + bytes(9) + _clock(clock)
            + bytes(2))
    return build(address, meter_type, 0x81, data, wake)


def error_reply(address: str, meter_type: int, *, ser: int, status: int, wake: int = 0) -> bytes:
    """The error reply (C1): SER, then ST1 ST2 (``status``'s low byte first)."""
    return build(address, meter_type, 0xC1, bytes([ser]) + status.to_bytes(2, "little"), wake)
