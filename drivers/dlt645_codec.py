"""DL/T 645-2007 (and DL/T 645-1997 reads) electricity meter frames: a pure codec, no I/O.

Datasheet facts (DL/T 645-2007, serial 8E1 at 1200/2400/4800/9600 baud)::

    [FE x0-4] 68 A0 A1 A2 A3 A4 A5 68 C L DATA(L bytes) CS 16

- FE: wake-up bytes, skipped by the decoder (any number); the encoder sends 0..4.
- Address: 6 bytes BCD, least significant byte first. Address text "123456789012" is sent
  ``12 90 78 56 34 12`` (the digit pairs, reversed). ``AA`` bytes are wildcards
  (AAAAAAAAAAAA reads the address of the only meter on a line); 999999999999 is broadcast.
- DATA: every byte +0x33 on the wire (Frame.data holds it with the 0x33 already taken off).
- CS: sum of the bytes from the first 68 to the end of DATA, mod 256. End byte 16.
- C (control): bit7 reply, bit6 error reply, bit5 more frames follow, bits 0-4 function.
  2007: 11 read -> 91 ok / B1 ok, more follows (fetch with 12 + DI + sequence byte -> 92/B2,
  the reply ending in the sequence byte) / D1 error with one error byte:
  bit0 other, bit1 no requested data, bit2 password/unauthorised, bit3 baud rate cannot change,
  bit4 year time zones exceeded, bit5 day time periods exceeded, bit6 tariffs exceeded.
  13 read address (to AAAAAAAAAAAA) -> 93 with the 6 address bytes as DATA.
  1997: 2-byte DI, 01 read -> 81 ok / A1 more / C1 error (bit0 illegal data, bit1 bad DI,
  bit2 password, bit4-6 as 2007).
- DI: 4 bytes (1997: 2), sent DI0 (least significant) first, as the start of DATA.
- Values: BCD, least significant byte first. For current, power and power factor the top bit
  of the most significant byte is the minus sign (so their top digit is at most 7).

The frame skeleton (wake-up bytes, start and end bytes, L, CS, BCD) and the shared failure
reasons are in ``_frame68``, with CJ/T 188; each codec has its own classes (see there).

``decode_read_reply`` decodes one frame's value; a reader that follows B1 replies uses
``decode_read_data`` (the same checks, the payload left undecoded), joins the payloads of the
frames and decodes the whole with ``decode_value``.

Failure reasons, one class each (all ``FrameError``, a ``ValueError``)::

    FrameError
     +-- ShortFrame       fewer bytes than the header or L says
     +-- BadStartOrEnd    no 68 where a start byte belongs, or no 16 at the end
     +-- BadLength        bytes after the end byte, or a value of the wrong size for its DI
     +-- BadChecksum      CS does not match
     +-- BadBCD           a nibble > 9 in a BCD value or address
     +-- WrongAddress     the reply comes from another meter
     +-- WrongControl     not the reply we asked for (e.g. the echo of our own request)
     +-- WrongDI          the reply carries another DI than the request
     +-- UnknownDI        a DI this codec has no format for
     +-- MeterError       the meter answered with an error reply; .bits, .reasons

Outputs, by DI (``Reply.point``; names carry their unit)::

    2007 00000000 energy_total_kWh    XXXXXX.XX kWh  4 bytes  combined active energy
         00010000 energy_import_kWh   XXXXXX.XX kWh  4 bytes  forward active energy
         00020000 energy_export_kWh   XXXXXX.XX kWh  4 bytes  reverse active energy
         02010100 voltage_a_V  02010200 voltage_b_V  02010300 voltage_c_V   XXX.X V, 2 bytes
         02020100 current_a_A  02020200 current_b_A  02020300 current_c_A   XXX.XXX A, 3, signed
         02030000 power_kW            XX.XXXX kW     3 bytes  signed, total active power
         02060000 power_factor        X.XXX          2 bytes  signed, total
         02800002 frequency_Hz        XX.XX Hz       2 bytes
    1997 9010     energy_import_kWh   XXXXXX.XX kWh  4 bytes
         9020     energy_export_kWh   XXXXXX.XX kWh  4 bytes
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from . import _frame68
from ._frame68 import (BadBCD, BadChecksum, BadLength, BadStartOrEnd, FrameError,  # re-exported
                       ShortFrame, WrongAddress, WrongControl, WrongDI)

__all__ = [
    "Frame", "Reply", "ReadData", "Format", "DI_TABLE", "WILDCARD", "BROADCAST",
    "encode_frame", "encode_read", "encode_read_next", "encode_read_address",
    "encode_reply", "encode_error_reply", "encode_address_reply",
    "decode_frame", "decode_read_data", "decode_read_reply", "read_address_reply", "frame_length_needed",
    "decode_value", "encode_value",
    "FrameError", "ShortFrame", "BadStartOrEnd", "BadLength", "BadChecksum", "BadBCD",
    "WrongAddress", "WrongControl", "WrongDI", "UnknownDI", "MeterError",
]

WILDCARD = "AAAAAAAAAAAA"
BROADCAST = "999999999999"
_START, _HEADER = _frame68.START, 10  # header: 68 A*6 68 C L

_LAYOUT = {"header_len": _HEADER, "length_at": 9, "second_start_at": 7}


class UnknownDI(FrameError): pass  # noqa: E701


_ERROR_BITS = {
    2007: ("other error", "no requested data", "password error or unauthorised",
           "baud rate cannot be changed", "year time zones exceeded",
           "day time periods exceeded", "tariffs exceeded", "reserved bit 7"),
    1997: ("illegal data", "bad data identifier", "password error", "reserved bit 3",
           "year time zones exceeded", "day time periods exceeded", "tariffs exceeded",
           "reserved bit 7"),
}


class MeterError(FrameError):
    """The meter replied with an error frame; ``bits`` is its error byte."""

    def __init__(self, bits: int, version: int = 2007):
        self.bits = bits
        self.version = version
        names = _ERROR_BITS.get(version, _ERROR_BITS[2007])
        self.reasons = tuple(name for i, name in enumerate(names) if bits >> i & 1)
        super().__init__(f"meter error 0x{bits:02X}: " + (", ".join(self.reasons) or "no reason given"))


class Format(NamedTuple):
    point: str
    unit: str
    size: int       # bytes
    decimals: int
    signed: bool = False  # top bit of the most significant byte is a minus sign
    version: int = 2007


DI_TABLE: dict[int, Format] = {
    0x00000000: Format("energy_total_kWh", "kWh", 4, 2, True),  # XXXXXX.XX, signed (combined: import - export)
    0x00010000: Format("energy_import_kWh", "kWh", 4, 2),
    0x00020000: Format("energy_export_kWh", "kWh", 4, 2),
    0x02010100: Format("voltage_a_V", "V", 2, 1),             # XXX.X
    0x02010200: Format("voltage_b_V", "V", 2, 1),
    0x02010300: Format("voltage_c_V", "V", 2, 1),
    0x02020100: Format("current_a_A", "A", 3, 3, True),       # XXX.XXX, signed
    0x02020200: Format("current_b_A", "A", 3, 3, True),
    0x02020300: Format("current_c_A", "A", 3, 3, True),
    0x02030000: Format("power_kW", "kW", 3, 4, True),         # XX.XXXX, signed
    0x02060000: Format("power_factor", "", 2, 3, True),       # X.XXX, signed
    0x02800002: Format("frequency_Hz", "Hz", 2, 2),           # XX.XX
    0x9010: Format("energy_import_kWh", "kWh", 4, 2, version=1997),
    0x9020: Format("energy_export_kWh", "kWh", 4, 2, version=1997),
}


@dataclass(frozen=True, slots=True)
class Frame:
    address: str        # 12 hex characters, most significant first ("123456789012", "AAAAAAAAAAAA")
    control: int
    data: bytes         # with the 0x33 already taken off
    is_reply: bool      # C bit7
    is_error: bool      # C bit6
    more_follows: bool  # C bit5 (B1: fetch the rest with encode_read_next)


@dataclass(frozen=True, slots=True)
class Reply:
    address: str
    di: int
    value: float
    unit: str
    point: str
    more_follows: bool = False
    seq: int | None = None  # sequence byte of a 92/B2 reply


# -- helpers ---------------------------------------------------------------------------------

def _address_bytes(address: str) -> bytes:
    return _frame68.address_bytes(address, 12)


def _address_matches(expected: str, got: str) -> bool:
    """AA bytes in the expected address match anything; broadcast matches everyone."""
    want = _frame68.address_text(_address_bytes(expected))
    return want == BROADCAST or _frame68.address_matches(want, got)


def _check_version(version: int) -> int:
    if version not in (1997, 2007):
        raise ValueError(f"version {version}: expected 2007 or 1997")
    return version


def _di_bytes(di: int, version: int) -> bytes:
    size = 4 if _check_version(version) == 2007 else 2
    if not 0 <= di < 1 << (8 * size):
        raise ValueError(f"DI {di:#x} does not fit the {size} bytes of DL/T 645-{version}")
    return di.to_bytes(size, "little")


# -- encoding ----------------------------------------------------------------------------------

def encode_frame(address: str, control: int, data: bytes = b"", *, wake: int = 0) -> bytes:
    """One frame from plain DATA (the +0x33 is applied here)."""
    wake_up = _frame68.wake_bytes(wake)
    if len(data) > 255:
        raise ValueError(f"DATA of {len(data)} bytes does not fit L")
    body = (bytes([_START]) + _address_bytes(address) + bytes([_START, control & 0xFF, len(data)])
            + bytes((b + 0x33) & 0xFF for b in data))
    return wake_up + _frame68.seal(body)


def encode_read(address: str, di: int, *, wake: int = 4, version: int = 2007) -> bytes:
    control = 0x11 if _check_version(version) == 2007 else 0x01
    return encode_frame(address, control, _di_bytes(di, version), wake=wake)


def encode_read_next(address: str, di: int, seq: int, *, wake: int = 4) -> bytes:
    """2007 only: fetch the next frame after a B1 reply (control 12, DI + sequence byte)."""
    if not 0 <= seq <= 255:
        raise ValueError(f"sequence {seq}: one byte")
    return encode_frame(address, 0x12, _di_bytes(di, 2007) + bytes([seq]), wake=wake)


def encode_read_address(*, wake: int = 4) -> bytes:
    return encode_frame(WILDCARD, 0x13, b"", wake=wake)


def encode_value(di: int, value: float) -> bytes:
    """Inverse of ``decode_value``: BCD, least significant byte first, sign bit if signed."""
    fmt = _format(di)
    n = round(value * 10 ** fmt.decimals)
    if n < 0 and not fmt.signed:
        raise ValueError(f"{fmt.point}: {value} is negative but the format is unsigned")
    limit = 8 * 10 ** (2 * fmt.size - 1) if fmt.signed else 10 ** (2 * fmt.size)
    if abs(n) >= limit:
        raise ValueError(f"{fmt.point}: {value} does not fit {fmt.size} BCD bytes "
                         f"with {fmt.decimals} decimals")
    return _frame68.encode_bcd(n, fmt.size)


def encode_reply(address: str, di: int, value: float, *, more: bool = False,
                 version: int = 2007, wake: int = 0) -> bytes:
    """A meter's read reply (91/B1, or 81/A1 for 1997), for simulators and tests."""
    control = (0x91 if _check_version(version) == 2007 else 0x81) | (0x20 if more else 0)
    return encode_frame(address, control, _di_bytes(di, version) + encode_value(di, value), wake=wake)


def encode_error_reply(address: str, error_bits: int, *, version: int = 2007, wake: int = 0) -> bytes:
    control = 0xD1 if _check_version(version) == 2007 else 0xC1
    return encode_frame(address, control, bytes([error_bits & 0xFF]), wake=wake)


def encode_address_reply(address: str, *, wake: int = 0) -> bytes:
    return encode_frame(address, 0x93, _address_bytes(address), wake=wake)


# -- decoding ----------------------------------------------------------------------------------

def frame_length_needed(buffer: bytes) -> int | None:
    """Total bytes (wake-up bytes included) the frame at the start of ``buffer`` needs, or None
    while its header (68 A*6 68 C L) is incomplete. Raises BadStartOrEnd as soon as the buffer
    cannot be the start of a frame: the reader should drop bytes up to the next 68."""
    return _frame68.frame_length_needed(buffer, **_LAYOUT)


def decode_frame(data: bytes) -> Frame:
    """Check start bytes, length, end byte and checksum; strip the 0x33 from DATA."""
    frame = _frame68.split_frame(data, **_LAYOUT)
    c = frame[8]
    return Frame(address=_frame68.address_text(frame[1:7]), control=c,
                 data=bytes((b - 0x33) & 0xFF for b in frame[_HEADER:-2]),
                 is_reply=bool(c & 0x80), is_error=bool(c & 0x40), more_follows=bool(c & 0x20))


def _format(di: int) -> Format:
    fmt = DI_TABLE.get(di)
    if fmt is None:
        raise UnknownDI(f"DI {di:08X} has no format in this codec")
    return fmt


def decode_value(di: int, payload: bytes) -> float:
    """The value of ``di`` from its payload (the DATA after the DI, 0x33 already removed)."""
    fmt = _format(di)
    if len(payload) != fmt.size:
        raise BadLength(f"{fmt.point} (DI {di:08X}) has {fmt.size} bytes, got {len(payload)}")
    n = _frame68.decode_bcd(payload, f"{fmt.point} (DI {di:08X})", signed=fmt.signed)
    return n / 10 ** fmt.decimals


def _check_reply(frame: Frame, expect_address: str, version: int) -> None:
    if not _address_matches(expect_address, frame.address):
        raise WrongAddress(f"reply from meter {frame.address}, expected {expect_address}")
    if not frame.is_reply:
        raise WrongControl(f"control {frame.control:02X} is a request, not a reply "
                           "(the echo of our own frame?)")
    if frame.is_error:
        raise MeterError(frame.data[0] if frame.data else 0, version)


@dataclass(frozen=True, slots=True)
class ReadData:
    """One frame of a read reply with its value bytes undecoded: a B1 reply's value is split
    over several frames, and only their joined ``payload`` decodes."""

    address: str
    di: int
    payload: bytes      # the bytes after the DI (0x33 taken off), without a 92/B2 sequence byte
    more_follows: bool
    seq: int | None = None  # sequence byte of a 92/B2 reply


def decode_read_data(frame_bytes: bytes, *, expect_address: str, expect_di: int,
                     version: int = 2007) -> ReadData:
    """Check a read reply (address, reply bit, error reply, function, DI) and return its
    payload undecoded; raises the specific reason there is none (MeterError for an error reply)."""
    frame = decode_frame(frame_bytes)
    _check_reply(frame, expect_address, _check_version(version))
    function = frame.control & 0x1F
    reads = (0x11, 0x12) if version == 2007 else (0x01, 0x02)
    if function not in reads:
        raise WrongControl(f"control {frame.control:02X} is not a read reply")
    size = 4 if version == 2007 else 2
    if len(frame.data) < size:
        raise BadLength(f"{len(frame.data)} DATA bytes cannot hold a {size}-byte DI")
    di = int.from_bytes(frame.data[:size], "little")
    if di != expect_di:
        raise WrongDI(f"reply carries DI {di:0{2 * size}X}, expected {expect_di:0{2 * size}X}")
    payload, seq = frame.data[size:], None
    if function == 0x12 and version == 2007:
        if not payload:
            raise BadLength("a 92/B2 reply must end with its sequence byte")
        payload, seq = payload[:-1], payload[-1]
    return ReadData(address=frame.address, di=di, payload=payload, more_follows=frame.more_follows, seq=seq)


def decode_read_reply(frame_bytes: bytes, *, expect_address: str, expect_di: int,
                      version: int = 2007) -> Reply:
    """The value in a read reply, or the specific reason there is none."""
    data = decode_read_data(frame_bytes, expect_address=expect_address, expect_di=expect_di, version=version)
    fmt = _format(data.di)
    return Reply(address=data.address, di=data.di, value=decode_value(data.di, data.payload), unit=fmt.unit,
                 point=fmt.point, more_follows=data.more_follows, seq=data.seq)


def read_address_reply(data: bytes) -> str:
    """The meter address in a 93 reply to ``encode_read_address``."""
    frame = decode_frame(data)
    _check_reply(frame, WILDCARD, 2007)
    if frame.control != 0x93:
        raise WrongControl(f"control {frame.control:02X} is not a read-address reply (93)")
    if len(frame.data) != 6:
        raise BadLength(f"a read-address reply carries 6 DATA bytes, got {len(frame.data)}")
    address = _frame68.address_text(frame.data)
    if not address.isdigit():
        raise BadBCD(f"address {address} is not BCD")
    return address

