"""A Modbus device that hands out synthetic residents, for the privacy leak tests.

Holding registers, 0-based: 0 ``batch_no`` (uint16, the batch being served), then ``SLOTS``
slots of ``SLOT_REGS`` registers, each holding one resident as UTF-8 STRING points:

    offset  registers  point           class
    0       10         s{i}_id_no      identifier   18- or 15-character resident ID
    10      10         s{i}_phone      identifier   the mobile; slot i % 3 picks the form:
                                                    13812345678 / +86 138 1234 5678 / 138-1234-5678
    20      6          s{i}_plate      identifier   苏D4K20F
    26      8          s{i}_name       name         Chinese, 2-4 characters
    34      26         s{i}_address    free_text    "3栋2单元501室, 联系电话13812345678"

Each poll is served the next batch of ``SLOTS`` residents: the batch moves on when a read
starts at address 0 (the first request of every poll, as the planner orders requests by
address), so all requests of one poll see one batch. After the last batch it is served again.
"""

from __future__ import annotations

import threading
from typing import Any, Sequence

from edge_agent.model import DType, Point, Reg
from edge_agent.field.registers import encode_value
from edge_agent.sim.devices import DeviceModel
from support.residents import Resident

__all__ = ["ResidentBoard", "FIELDS", "SLOTS", "SLOT_REGS", "phone_forms", "points_config"]

SLOTS = 10
FIELDS: tuple[tuple[str, int, int, str], ...] = (  # name, offset, registers, class
    ("id_no", 0, 10, "identifier"), ("phone", 10, 10, "identifier"), ("plate", 20, 6, "identifier"),
    ("name", 26, 8, "name"), ("address", 34, 26, "free_text"))
SLOT_REGS = 60


def phone_forms(mobile: str) -> tuple[str, str, str]:
    """The three ways the board writes a mobile: plain, +86 spaced 3-4-4, dashed 3-4-4."""
    a, b, c = mobile[:3], mobile[3:7], mobile[7:]
    return mobile, f"+86 {a} {b} {c}", f"{a}-{b}-{c}"


def _values(resident: Resident, slot: int) -> dict[str, str]:
    return {"id_no": resident.id_no, "phone": phone_forms(resident.mobile)[slot % 3], "plate": resident.plate,
            "name": resident.name, "address": resident.address}


def points_config(slots: int = SLOTS) -> list[dict[str, Any]]:
    """The ``modbus_generic`` points of the board, as a config's ``points`` list."""
    out: list[dict[str, Any]] = [{"name": "batch_no", "reg": "holding", "address": 0, "type": "uint16"}]
    for i in range(slots):
        for field, offset, length, cls in FIELDS:
            out.append({"name": f"s{i}_{field}", "reg": "holding", "address": 1 + i * SLOT_REGS + offset,
                        "type": "string", "length": length, "class": cls})
    return out


class ResidentBoard(DeviceModel):
    """Serves ``people`` ``slots`` at a time; ``served`` counts residents handed out so far."""

    def __init__(self, people: Sequence[Resident], slots: int = SLOTS) -> None:
        super().__init__()
        if not people:
            raise ValueError("a resident board needs at least one resident")
        self.people, self.slots = list(people), slots
        self.batches = -(-len(self.people) // slots)
        self.batch = -1
        self.done = threading.Event()  # set once the last batch has been served
        self.set(Reg.HOLDING, 0, [0] * (1 + slots * SLOT_REGS))

    @property
    def served(self) -> int:
        with self._lock:
            return min(len(self.people), (self.batch + 1) * self.slots)

    def _load(self, batch: int) -> None:
        self.set(Reg.HOLDING, 0, [batch])
        for i in range(self.slots):
            resident = self.people[min(batch * self.slots + i, len(self.people) - 1)]
            for field, value in _values(resident, i).items():
                _, offset, length, _ = next(f for f in FIELDS if f[0] == field)
                point = Point(field, Reg.HOLDING, 0, DType.STRING, length=length)
                self.set(Reg.HOLDING, 1 + i * SLOT_REGS + offset, encode_value(point, value))  # type: ignore[arg-type]

    def read(self, table: Reg, address: int, count: int) -> list[int] | None:
        with self._lock:
            if table is Reg.HOLDING and address == 0 and self.batch + 1 < self.batches:
                self.batch += 1
                self._load(self.batch)
                if self.batch + 1 == self.batches:
                    self.done.set()
            return super().read(table, address, count)
