"""Request planning: the fewest Modbus reads that cover a device's declared points.

A poll's cost on RS-485 is dominated by per-request overhead (turnaround, 3.5-character
silences, the device's own think time), so reading a few filler registers to save a request
is almost always a win. Like Telegraf's ``max_insert`` optimiser, points of one table are
sorted by address and merged into the current request while the filler between them stays
within ``merge_gap`` and the merged span stays within the cap:

- register tables (holding, input): cap ``min(max_block, 125)`` registers, filler up to
  ``merge_gap`` registers;
- bit tables (coil, discrete): cap 2000 bits; ``max_block`` does not apply (it is a register
  limit some devices impose), and the filler limit is ``merge_gap * 16`` bits, i.e. the same
  number of bytes on the wire as ``merge_gap`` registers.

Points that share a register (bools at different bits of one word) or overlap always share a
request. Output order is deterministic: coil, discrete, holding, input, then address.
Pure: no I/O, nothing here knows about pymodbus.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from ..model import MAX_READ_BITS, MAX_READ_REGISTERS, Point, Reg

__all__ = ["ReadRequest", "plan_reads", "TABLE_ORDER"]

TABLE_ORDER: tuple[Reg, ...] = (Reg.COIL, Reg.DISCRETE, Reg.HOLDING, Reg.INPUT)
BITS_PER_REGISTER = 16


@dataclass(frozen=True)
class ReadRequest:
    """One read transaction: ``count`` registers (or bits) of ``reg`` from ``address``,
    carrying ``points`` (in address order)."""

    reg: Reg
    address: int
    count: int
    points: tuple[Point, ...]

    @property
    def end(self) -> int:
        return self.address + self.count

    def __str__(self) -> str:
        return f"{self.reg} {self.address}+{self.count}"


def _limits(reg: Reg, max_block: int, merge_gap: int) -> tuple[int, int]:
    """(cap on span, cap on filler) for one table."""
    if reg.is_bit:
        return MAX_READ_BITS, merge_gap * BITS_PER_REGISTER
    return min(max_block, MAX_READ_REGISTERS), merge_gap


def plan_reads(points: Iterable[Point], *, max_block: int = MAX_READ_REGISTERS,
               merge_gap: int = 8) -> list[ReadRequest]:
    """Group ``points`` into read requests (see the module docstring for the rules).

    Raises ValueError for a nonsensical limit or a point wider than one request can carry;
    the registry and config checks should have refused both before any I/O.
    """
    if max_block < 1:
        raise ValueError(f"max_block must be at least 1, got {max_block}")
    if merge_gap < 0:
        raise ValueError(f"merge_gap must be 0 or more, got {merge_gap}")
    by_table: dict[Reg, list[Point]] = {}
    for point in points:
        by_table.setdefault(point.reg, []).append(point)

    requests: list[ReadRequest] = []
    for reg in TABLE_ORDER:
        table = sorted(by_table.get(reg, ()), key=lambda p: (p.address, p.bit or 0, p.name))
        if not table:
            continue
        cap, gap_limit = _limits(reg, max_block, merge_gap)
        start, end, members = table[0].address, table[0].end, [table[0]]
        for point in table:
            if point.count > cap:
                raise ValueError(f"{point.name}: spans {point.count} {'bits' if reg.is_bit else 'registers'}, "
                                 f"more than one request may carry ({cap})")
            if point is table[0]:
                continue
            new_end = max(end, point.end)
            if point.address - end <= gap_limit and new_end - start <= cap:
                end = new_end
                members.append(point)
                continue
            requests.append(ReadRequest(reg, start, end - start, tuple(members)))
            start, end, members = point.address, point.end, [point]
        requests.append(ReadRequest(reg, start, end - start, tuple(members)))
    return requests
