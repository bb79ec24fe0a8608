"""CRC-16/MODBUS, for the code that frames Modbus RTU itself (our simulator, `scan`'s probes)
rather than through pymodbus: one table, one function."""

from __future__ import annotations

__all__ = ["crc16", "crc_ok"]


def _entry(crc: int) -> int:
    for _ in range(8):
        crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


_TABLE = [_entry(byte) for byte in range(256)]


def crc16(data: bytes) -> int:
    """CRC-16/MODBUS (reflected 0xA001, init 0xFFFF) of ``data``; on the wire low byte first."""
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ _TABLE[(crc ^ byte) & 0xFF]
    return crc


def crc_ok(frame: bytes) -> bool:
    """Whether an RTU frame (address .. CRC) ends in the right CRC."""
    return len(frame) >= 4 and crc16(frame[:-2]) == frame[-2] | frame[-1] << 8
