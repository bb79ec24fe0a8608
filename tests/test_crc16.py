"""CRC-16/MODBUS (``crc16.py``) against the published values, and ``crc_ok`` on whole RTU frames.

The expected values come from outside this project: the CRC catalogue's check value, the
worked example of the Modbus over Serial Line specification (V1.02, 6.2.2), and request frames
as Modbus masters send them. pymodbus' own CRC, an independent implementation, is the
reference for arbitrary bytes.
"""

from __future__ import annotations

import struct

from hypothesis import given, settings, strategies as st
from pymodbus.framer import FramerRTU

from edge_agent.crc16 import crc16, crc_ok


def test_the_catalogue_check_value() -> None:
    """CRC-16/MODBUS: poly 0x8005 reflected (0xA001), init 0xFFFF, no final xor; check 0x4B37."""
    assert crc16(b"123456789") == 0x4B37


def test_no_bytes_leave_the_initial_value() -> None:
    assert crc16(b"") == 0xFFFF


def test_the_worked_example_of_the_serial_line_specification() -> None:
    """Frame ``02 07``: CRC 0x1241, sent low byte first (``41 12``)."""
    assert crc16(bytes.fromhex("0207")) == 0x1241
    assert crc_ok(bytes.fromhex("02074112"))


def test_read_holding_registers_requests_as_masters_send_them() -> None:
    """Unit 1, function 3, from 0, 10 registers: ``01 03 00 00 00 0A C5 CD`` on the wire; and
    one register: ``01 03 00 00 00 01 84 0A``."""
    for request, wire_crc in (("01030000000A", "C5CD"), ("010300000001", "840A")):
        body = bytes.fromhex(request)
        assert struct.pack("<H", crc16(body)) == bytes.fromhex(wire_crc)  # low byte first
        assert crc_ok(body + bytes.fromhex(wire_crc))


def test_the_crc_is_low_byte_first_on_the_wire_not_high() -> None:
    body = bytes.fromhex("01030000000A")
    assert crc16(body) == 0xCDC5
    assert crc_ok(body + b"\xC5\xCD")
    assert not crc_ok(body + b"\xCD\xC5")  # the byte order a big-endian slip would send


def test_crc_ok_refuses_a_frame_with_any_bit_changed() -> None:
    frame = bytes.fromhex("01030000000AC5CD")
    for i in range(len(frame)):
        for bit in range(8):
            damaged = bytearray(frame)
            damaged[i] ^= 1 << bit
            assert not crc_ok(bytes(damaged)), (i, bit)  # a CRC-16 catches every single-bit error


def test_crc_ok_refuses_frames_too_short_to_hold_an_address_a_function_and_a_crc() -> None:
    assert [crc_ok(frame) for frame in (b"", b"\xFF", b"\xFF\xFF", b"\x01\xFF\xFF")] == [False] * 4
    # three bytes may end in their own CRC (0x807E for b"\x01"), but there is no function code
    assert crc16(b"\x01") == 0x807E and not crc_ok(b"\x01\x7E\x80")
    assert crc_ok(b"\x01\x03" + struct.pack("<H", crc16(b"\x01\x03")))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=256))
def test_agrees_with_pymodbus_on_any_bytes(data: bytes) -> None:
    """pymodbus returns the CRC as the wire's two bytes read big-endian (low byte first)."""
    assert struct.pack("<H", crc16(data)) == FramerRTU.compute_CRC(data).to_bytes(2, "big")


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=2, max_size=254))
def test_a_frame_with_its_own_crc_appended_is_ok(body: bytes) -> None:
    assert crc_ok(body + struct.pack("<H", crc16(body)))
