"""The floor everything stands on: points, drivers, readings, records, events and a poll's result.

A driver *declares* its points; the planner, the decoder, privacy and the buffer all work
from these declarations. This module imports nothing of ours but ``units``, so drivers can
depend on it alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any, Callable, Iterable, Literal

from .units import parse_duration

__all__ = [
    "Reg", "DType", "DataClass", "Quality", "Priority", "Point", "Output", "Option", "Driver", "Reading", "Record",
    "Event", "PollResult", "PROTOCOLS", "group_readings", "records_of",
    "REGISTER_WIDTH", "MAX_READ_REGISTERS", "MAX_READ_BITS", "MAX_LINE",
]

MAX_READ_REGISTERS = 125  # Modbus application protocol 1.1b3, function 03/04
MAX_READ_BITS = 2000  # function 01/02
MAX_LINE = 4096  # CONTRACT section 7: a hub or gate line is at most 4096 bytes


class Reg(StrEnum):
    """Modbus data tables, by their 0-based protocol addresses (never 40001-style)."""

    COIL = "coil"
    DISCRETE = "discrete"
    INPUT = "input"
    HOLDING = "holding"

    @property
    def is_bit(self) -> bool:
        return self in (Reg.COIL, Reg.DISCRETE)

    @property
    def max_read(self) -> int:
        return MAX_READ_BITS if self.is_bit else MAX_READ_REGISTERS


class DType(StrEnum):
    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    INT64 = "int64"
    UINT64 = "uint64"
    FLOAT32 = "float32"
    FLOAT64 = "float64"
    STRING = "string"
    BOOL = "bool"


REGISTER_WIDTH: dict[DType, int] = {
    DType.INT16: 1, DType.UINT16: 1, DType.INT32: 2, DType.UINT32: 2,
    DType.INT64: 4, DType.UINT64: 4, DType.FLOAT32: 2, DType.FLOAT64: 4,
}


class DataClass(StrEnum):
    """What a value says about a person; privacy maps each class to an action."""

    TELEMETRY = "telemetry"
    IDENTIFIER = "identifier"
    NAME = "name"
    HEALTH = "health"
    LOCATION = "location"
    FREE_TEXT = "free_text"


class Quality(StrEnum):
    GOOD = "good"
    BAD = "bad"  # the device answered with an error, or the value is out of its valid range
    STALE = "stale"


class Priority(IntEnum):
    """Buffer lanes; a higher value is published first and evicted last."""

    NORMAL = 0
    HIGH = 1
    CRITICAL = 2

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> "Priority":
        return cls[text.upper()]


@dataclass(frozen=True)
class Point:
    """One value a device offers, at a fixed place in one Modbus table.

    ``length`` is the register count of a STRING; ``bit`` picks one bit of a holding or input
    register for a BOOL. The value on the wire is ``raw * scale + offset``; ``valid`` is the
    range outside which the reading is marked ``bad`` but still kept.
    """

    name: str
    reg: Reg
    address: int
    dtype: DType
    length: int = 0
    bit: int | None = None
    byte_order: Literal["big", "little"] = "big"
    word_order: Literal["big", "little"] = "big"
    scale: float = 1.0
    offset: float = 0.0
    valid: tuple[float, float] | None = None
    data_class: DataClass = DataClass.TELEMETRY
    writable: bool = False
    internal: bool = False  # read to compute others (e.g. a decimals register), never published

    @property
    def count(self) -> int:
        """Registers (or bits, for coil/discrete tables) this point spans."""
        if self.reg.is_bit or self.dtype is DType.BOOL:
            return 1
        if self.dtype is DType.STRING:
            return self.length
        return REGISTER_WIDTH[self.dtype]

    @property
    def end(self) -> int:
        """One past the last address used."""
        return self.address + self.count

    def problems(self) -> list[str]:
        """What is wrong with this declaration on its own (empty when it is sound)."""
        found: list[str] = []
        if not self.name or not self.name.replace("_", "").isalnum():
            found.append(f"point name {self.name!r} must be snake_case letters, digits and '_'")
        if not 0 <= self.address <= 0xFFFF:
            found.append(f"{self.name}: address {self.address} is outside 0..65535 (addresses are 0-based)")
        if self.reg.is_bit and self.dtype is not DType.BOOL:
            found.append(f"{self.name}: a {self.reg} holds single bits, so its type must be bool, not {self.dtype}")
        if self.dtype is DType.STRING and self.length <= 0:
            found.append(f"{self.name}: a string needs length (registers, 2 characters each)")
        if self.dtype is not DType.STRING and self.length:
            found.append(f"{self.name}: length only applies to strings; {self.dtype} spans {self.count} register(s)")
        if self.bit is not None:
            if self.dtype is not DType.BOOL or self.reg.is_bit:
                found.append(f"{self.name}: bit only applies to a bool inside a holding or input register")
            elif not 0 <= self.bit <= 15:
                found.append(f"{self.name}: bit {self.bit} is outside 0..15")
        if self.dtype is DType.BOOL and not self.reg.is_bit and self.bit is None:
            found.append(f"{self.name}: a bool in a {self.reg} register needs bit (0..15)")
        if self.end - 1 > 0xFFFF:
            found.append(f"{self.name}: spans past address 65535")
        if self.count > self.reg.max_read:
            found.append(f"{self.name}: spans {self.count} registers, more than one read can carry ({self.reg.max_read})")
        if self.valid is not None and self.valid[0] > self.valid[1]:
            found.append(f"{self.name}: valid range {self.valid} has its low end above its high end")
        if self.writable and self.reg in (Reg.INPUT, Reg.DISCRETE):
            found.append(f"{self.name}: reg: {self.reg} is read-only in Modbus; writable: true needs reg: holding or coil")
        if self.byte_order not in ("big", "little") or self.word_order not in ("big", "little"):
            found.append(f"{self.name}: byte_order and word_order are 'big' or 'little'")
        return found


@dataclass(frozen=True)
class Output:
    """A value a driver computes rather than reads from one place (its ``decode`` hook makes it).

    Declared so that privacy knows its class and the poller its valid range, exactly as for a
    register point.
    """

    name: str
    valid: tuple[float, float] | None = None
    data_class: DataClass = DataClass.TELEMETRY


DecodeHook = Callable[[dict[str, Any]], dict[str, Any]]

# Bus protocols, and which of them a driver's ``protocol`` runs on: a Modbus driver runs on
# either Modbus link; every other driver needs a bus of exactly its protocol.
PROTOCOLS = ("modbus-tcp", "modbus-rtu", "dlt645", "cjt188", "json-lines")
DRIVER_PROTOCOLS = {"modbus": ("modbus-tcp", "modbus-rtu"), "dlt645": ("dlt645",), "cjt188": ("cjt188",),
                    "json-lines": ("json-lines",)}


@dataclass(frozen=True)
class Option:
    """A per-device setting a driver accepts under ``options:`` in the config (e.g. CJ/T 188's DI
    byte order). ``choices`` limits the value; ``default`` applies when the option is absent."""

    name: str
    default: Any
    choices: tuple[Any, ...] = ()
    help: str = ""


@dataclass(frozen=True)
class Driver:
    """A device family: its points and the one hook its quirks may need.

    ``decode`` gets ``{point name: decoded value}`` (internal points included) and returns the
    values to publish; it is where a value that depends on another register is computed.
    Every value ``decode`` returns must be a non-internal point or a declared ``outputs`` entry.
    ``points_from_config`` marks the generic driver, whose points come from the device entry.

    A driver for another protocol than Modbus sets ``protocol`` and ``reader``: a factory
    ``reader(device: DeviceSettings, link: ByteLink, clock) -> object`` whose ``poll()`` returns
    a ``PollResult``, publishing only ``outputs`` names. ``streaming`` marks a device that
    talks unprompted (hub, gate): its reader's ``poll()`` waits up to about a second for lines
    and is called again at once; the device ``interval`` does not apply to it. A reader may offer
    ``write(point, value, **args)``, raising ``errors.DeviceFault``/``NoResponse`` when refused
    or unanswered, and ValueError when the value or point is not writable.
    """

    id: str
    points: tuple[Point, ...] = ()
    default_interval: str = "10s"
    max_block: int = MAX_READ_REGISTERS
    decode: DecodeHook | None = None
    outputs: tuple[Output, ...] = ()
    points_from_config: bool = False
    summary: str = ""
    protocol: str = "modbus"  # a key of DRIVER_PROTOCOLS
    reader: Callable[..., Any] | None = None  # non-Modbus drivers: (device, link, clock) -> reader
    streaming: bool = False
    options: tuple[Option, ...] = ()
    writable: tuple[str, ...] = ()  # non-Modbus points a reader's write() accepts

    @property
    def default_interval_s(self) -> float:
        return parse_duration(self.default_interval)


@dataclass(frozen=True)
class Reading:
    """One value of one point, as a poll produces it; privacy turns a poll's readings into
    ``Record`` s (``group_readings``), which the buffer stores."""

    dev: str
    pt: str
    val: Any
    ts: int  # ms since the epoch, UTC, taken by the gateway
    q: Quality = Quality.GOOD
    clk_synced: bool = True
    data_class: DataClass = DataClass.TELEMETRY
    # the unit inside a multi-unit device this value belongs to: a band on a wearables hub, a
    # lane of a gate; on the wire as "sub", absent when None
    sub: str | None = None

    def to_wire(self) -> dict[str, Any]:
        """The reading as one flat object (wire v1's item, without its id): for tools and logs of
        single values; the buffer and the wire carry ``Record`` s."""
        out: dict[str, Any] = {"dev": self.dev, "pt": self.pt, "val": self.val, "ts": self.ts, "q": str(self.q)}
        if self.sub is not None:
            out["sub"] = self.sub
        if not self.clk_synced:
            out["clk"] = "unsynced"
        return out


def group_readings(readings: Iterable[Reading]) -> list[list[Reading]]:
    """Readings of one poll as the groups that become records: those sharing (dev, sub, ts,
    clock mark), in the order their first reading arrived. A point seen twice under one key
    (two lines of one band within a millisecond) opens a new group, so no value overwrites
    another. A Modbus round, a DL/T 645 round (a frame per DI) and a CJ/T 188 frame stamp every
    reading with the time the round's last answer arrived (``field.poll``, the drivers), so a
    poll is one record."""
    groups: list[list[Reading]] = []
    current: dict[tuple[str, str | None, int, bool], tuple[list[Reading], set[str]]] = {}
    for r in readings:
        key = (r.dev, r.sub, r.ts, r.clk_synced)
        slot = current.get(key)
        if slot is None or r.pt in slot[1]:
            slot = ([], set())
            groups.append(slot[0])
            current[key] = slot
        slot[0].append(r)
        slot[1].add(r.pt)
    return groups


@dataclass(frozen=True)
class Record:
    """What one poll of one device (or one unit ``sub`` inside it) produced at one time, after
    privacy: the unit of the outbox and of the wire (CONTRACT section 4, v2).

    ``vals`` maps point name -> value (``None`` for a bad one); ``q`` holds the quality label of
    each point that is not ``good``; ``sealed`` is the one ``{"kid", "ct"}`` seal of the
    record's points whose action is ``seal``. Points privacy drops are in neither.
    """

    dev: str
    ts: int  # ms since the epoch, UTC, taken by the gateway
    vals: dict[str, Any]
    q: dict[str, str] = field(default_factory=dict)
    sub: str | None = None
    clk_synced: bool = True
    sealed: dict[str, str] | None = None

    @property
    def prio(self) -> Priority:
        return Priority.NORMAL  # records are normal; only events rank higher

    @classmethod
    def of(cls, readings: list[Reading]) -> "Record":
        """One group of ``group_readings`` as it stands, with no privacy applied (tests, tools)."""
        first = readings[0]
        return cls(dev=first.dev, ts=first.ts, vals={r.pt: r.val for r in readings},
                   q={r.pt: str(r.q) for r in readings if r.q is not Quality.GOOD},
                   sub=first.sub, clk_synced=first.clk_synced)

    def to_wire(self) -> dict[str, Any]:
        """The contract's record, without the ``id`` that the buffer assigns; optional keys are
        absent when empty."""
        out: dict[str, Any] = {"dev": self.dev}
        if self.sub is not None:
            out["sub"] = self.sub
        out["ts"] = self.ts
        out["vals"] = self.vals
        if self.q:
            out["q"] = self.q
        if self.sealed is not None:
            out["sealed"] = self.sealed
        if not self.clk_synced:
            out["clk"] = "unsynced"
        return out


def records_of(readings: Iterable[Reading]) -> list[Record]:
    """Readings grouped into records as they are (``group_readings``), with no privacy applied."""
    return [Record.of(group) for group in group_readings(readings)]


@dataclass(frozen=True)
class Event:
    """Something that happened: an alarm, an SOS, a gate passage, a device going offline."""

    dev: str
    type: str
    prio: Priority
    ts: int
    data: dict[str, Any] = field(default_factory=dict)
    clk_synced: bool = True
    # data key (dotted for nested keys: "wearer.id_no") -> class, for privacy; unlisted keys are
    # free_text. Never on the wire.
    classes: dict[str, DataClass] = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"dev": self.dev, "type": self.type, "prio": self.prio.label,
                               "ts": self.ts, "data": self.data}
        if not self.clk_synced:
            out["clk"] = "unsynced"
        return out


@dataclass
class PollResult:
    """What one poll of one device returns, whichever reader made it (``field.poll`` for
    Modbus, a driver's own reader otherwise). ``requests`` counts bus transactions made (retries
    included); ``answered`` is False when no request got any answer (the device or its link is
    down). ``events`` are what the device itself reported (SOS, passage); ``bad_frames`` counts
    what it sent that could not be used (a garbled or over-long line), skipped without failing
    the poll: they are not ``errors``, and the first few are named in ``bad_frame_notes``
    (``line N: reason``, never content)."""

    readings: list[Reading] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    requests: int = 0
    answered: bool = False
    events: list[Event] = field(default_factory=list)
    bad_frames: int = 0
    bad_frame_notes: list[str] = field(default_factory=list)
