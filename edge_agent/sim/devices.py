"""Simulated field devices: register maps that evolve with time, and faults to inject.

Datasheet facts the models follow (0-based protocol addresses):

- QDY30A-type level transmitter (Modbus RTU, 9600 8N1, address 1), holding registers:
  0x0000 device address (1..247), 0x0001 baud code (0=1200 1=2400 2=4800 3=9600 4=19200
  5=38400 6=57600 7=115200), 0x0002 unit code, 0x0003 decimals (0..3), 0x0004 level int16
  in the unit, scaled by 10^-decimals. The simulator always reports metres; writing the
  decimals register rescales the level register, as the real transmitter does.
- Eastron SDM120/230-type meter, input registers, IEEE-754 float32, big-endian words:
  0x0000 V, 0x0006 A, 0x000C W, 0x0012 VA, 0x0018 var, 0x001E PF, 0x0046 Hz, 0x0048 import
  kWh, 0x004A export kWh, 0x0156 total kWh. The meter answers the whole blocks 0x0000-0x004F
  and 0x0156-0x0157 (unlisted words read 0), so a poller that merges across gaps is served.
- Relay board: coils 0..n-1 are the relays (function 05/15), discrete inputs 0..n-1 their
  feedback contacts, which follow the coils (e.g. a barrier's "is open" contact).

Every model is a ``RegisterBank`` (four tables of address -> 16-bit value, one lock) whose
``tick(now)`` runs before each request is served, so values move between polls. Faults are
per unit and may be changed while a server runs.
"""

from __future__ import annotations

import dataclasses
import random
import struct
import threading
from dataclasses import dataclass
from enum import IntEnum
from typing import Sequence

from edge_agent.model import Reg

__all__ = [
    "ExceptionCode", "Faults", "RegisterBank", "DeviceModel", "LevelSensor", "EnergyMeter",
    "RelayBoard", "MODELS",
]


class ExceptionCode(IntEnum):
    """Modbus exception codes the simulator answers with (application protocol 1.1b3, 7)."""

    ILLEGAL_FUNCTION = 0x01
    ILLEGAL_DATA_ADDRESS = 0x02
    ILLEGAL_DATA_VALUE = 0x03
    DEVICE_FAILURE = 0x04
    GATEWAY_TARGET_FAILED = 0x0B  # a TCP gateway found no device behind the unit id


@dataclass(frozen=True)
class Faults:
    """What goes wrong with one unit. ``silence``: the device neither acts nor answers (as if
    powered off); ``garbage``: random bytes instead of the reply; ``bad_crc``: a correct reply
    with the CRC flipped (RTU) or a wrong MBAP length (TCP); ``exception``: that code in reply
    to every read; ``delay_s``: the reply comes this late. Writes are still carried out under
    garbage, bad_crc and delay: the fault is on the way back. ``deaf_s`` (RTU only): a request
    to this unit is dropped when it comes within this many seconds of a request to another unit
    that got no answer, as libmodbus slaves do while they still wait for that unit's reply."""

    silence: bool = False
    garbage: bool = False
    bad_crc: bool = False
    exception: int | None = None
    delay_s: float = 0.0
    deaf_s: float = 0.0

    def __post_init__(self) -> None:
        if self.exception is not None and not 1 <= self.exception <= 0xFF:
            raise ValueError(f"exception code {self.exception} is outside 1..255")
        if self.delay_s < 0:
            raise ValueError(f"delay {self.delay_s} s is negative")
        if self.deaf_s < 0:
            raise ValueError(f"deaf {self.deaf_s} s is negative")


class RegisterBank:
    """Four Modbus tables, each a map address -> value (0/1 for bits, 0..65535 for words).

    An address absent from its map is unmapped: a request touching it gets exception 02.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._tables: dict[Reg, dict[int, int]] = {table: {} for table in Reg}

    def get(self, table: Reg, address: int) -> int:
        """One value; KeyError when the address is not mapped."""
        with self._lock:
            return self._tables[table][address]

    def set(self, table: Reg, address: int, values: int | Sequence[int]) -> None:
        """Map (or overwrite) ``values`` from ``address`` on, without the device's write checks."""
        seq = [values] if isinstance(values, int) else list(values)
        limit = 1 if table.is_bit else 0xFFFF
        with self._lock:
            for offset, value in enumerate(seq):
                if not 0 <= int(value) <= limit:
                    raise ValueError(f"{table} {address + offset}: {value} is outside 0..{limit}")
                self._tables[table][address + offset] = int(value)

    def read(self, table: Reg, address: int, count: int) -> list[int] | None:
        """A block of values, or None when any address in it is unmapped."""
        with self._lock:
            bank = self._tables[table]
            try:
                return [bank[a] for a in range(address, address + count)]
            except KeyError:
                return None


class DeviceModel(RegisterBank):
    """A unit on the bus: its tables, its clock hook and its faults.

    Subclasses map their registers in ``__init__``, move values in ``tick`` and may refuse a
    write in ``check_write``. ``read_only`` holds (table, address) pairs a write may not touch.
    """

    read_only: frozenset[tuple[Reg, int]] = frozenset()

    def __init__(self) -> None:
        super().__init__()
        self._faults = Faults()

    @property
    def faults(self) -> Faults:
        with self._lock:
            return self._faults

    def set_faults(self, faults: Faults | None = None, **changes: object) -> Faults:
        """Replace the faults (``Faults()`` clears them) or change some fields; returns the new set."""
        with self._lock:
            self._faults = dataclasses.replace(faults or self._faults, **changes)  # type: ignore[arg-type]
            return self._faults

    def tick(self, now: float) -> None:
        """Called with ``time.monotonic()`` before each request is served."""

    def check_write(self, table: Reg, address: int, values: Sequence[int]) -> int | None:
        """An exception code to refuse this write with, or None to accept it."""
        return None

    def after_write(self, table: Reg, address: int, values: Sequence[int]) -> None:
        """React to an accepted write (e.g. rescale a value)."""

    def write(self, table: Reg, address: int, values: Sequence[int]) -> int | None:
        """A write from the bus: None when done, else the exception code to answer with."""
        with self._lock:
            bank = self._tables[table]
            span = [(table, a) for a in range(address, address + len(values))]
            if any(key[1] not in bank or key in self.read_only for key in span):
                return ExceptionCode.ILLEGAL_DATA_ADDRESS
            refused = self.check_write(table, address, values)
            if refused is not None:
                return refused
            self.set(table, address, values)
            self.after_write(table, address, values)
            return None


class LevelSensor(DeviceModel):
    """QDY30A-type water level transmitter; the level rises at ``rise_m_per_min`` up to
    ``max_level_m`` (a river in flood that tops out at the bank)."""

    LEVEL = 0x0004
    DECIMALS = 0x0003
    read_only = frozenset({(Reg.HOLDING, 0x0004)})

    def __init__(self, level_m: float = 0.8, decimals: int = 2, rise_m_per_min: float = 0.0,
                 max_level_m: float = 6.0, address: int = 1, baud_code: int = 3, unit_code: int = 1) -> None:
        super().__init__()
        if not 0 <= decimals <= 3:
            raise ValueError(f"decimals {decimals} is outside 0..3")
        self._level_m = float(level_m)
        self.rise_m_per_min = float(rise_m_per_min)
        self.max_level_m = float(max_level_m)
        self._last: float | None = None
        self.set(Reg.HOLDING, 0x0000, [address, baud_code, unit_code, decimals, 0])
        self._sync()

    @property
    def level_m(self) -> float:
        with self._lock:
            return self._level_m

    @level_m.setter
    def level_m(self, value: float) -> None:
        with self._lock:
            self._level_m = float(value)
            self._sync()

    def _sync(self) -> None:
        raw = round(self._level_m * 10 ** self.get(Reg.HOLDING, self.DECIMALS))
        raw = max(-0x8000, min(0x7FFF, raw))
        self.set(Reg.HOLDING, self.LEVEL, raw & 0xFFFF)

    def tick(self, now: float) -> None:
        with self._lock:
            if self._last is not None and self.rise_m_per_min:
                risen = self._level_m + self.rise_m_per_min * (now - self._last) / 60.0
                self._level_m = min(risen, self.max_level_m) if self.rise_m_per_min > 0 else risen
            self._last = now
            self._sync()

    def check_write(self, table: Reg, address: int, values: Sequence[int]) -> int | None:
        limits = {0x0000: (1, 247), 0x0001: (0, 7), self.DECIMALS: (0, 3)}
        for offset, value in enumerate(values):
            low, high = limits.get(address + offset, (0, 0xFFFF))
            if not low <= value <= high:
                return ExceptionCode.ILLEGAL_DATA_VALUE
        return None

    def after_write(self, table: Reg, address: int, values: Sequence[int]) -> None:
        self._sync()


_METER_FLOATS = {
    "voltage_V": 0x0000, "current_A": 0x0006, "power_W": 0x000C, "apparent_power_VA": 0x0012,
    "reactive_power_var": 0x0018, "power_factor": 0x001E, "frequency_Hz": 0x0046,
    "energy_import_kWh": 0x0048, "energy_export_kWh": 0x004A, "energy_total_kWh": 0x0156,
}


class EnergyMeter(DeviceModel):
    """Eastron SDM-type single-phase meter. Voltage, current and frequency wander by
    ``wander`` (relative, 0 holds them still) around their nominal values; energy integrates
    power over time. A negative ``current`` means export (power and export energy)."""

    def __init__(self, voltage: float = 230.0, current: float = 4.8, power_factor: float = 0.95,
                 frequency: float = 50.0, import_kwh: float = 1234.5, export_kwh: float = 0.0,
                 wander: float = 0.01, seed: int | None = None) -> None:
        super().__init__()
        self.nominal = {"voltage": voltage, "current": current, "frequency": frequency}
        self.power_factor = power_factor
        self.wander = wander
        self._rng = random.Random(seed)
        self._energy = {"import": float(import_kwh), "export": float(export_kwh)}
        self._now = dict(self.nominal)
        self._last: float | None = None
        self.set(Reg.INPUT, 0x0000, [0] * 0x50)
        self.set(Reg.INPUT, 0x0156, [0, 0])
        self._publish()

    def values(self) -> dict[str, float]:
        """The present quantities, under the driver's point names."""
        with self._lock:
            v, i, pf = self._now["voltage"], self._now["current"], self.power_factor
            va = v * abs(i)
            p = va * pf * (1 if i >= 0 else -1)
            return {
                "voltage_V": v, "current_A": i, "power_W": p, "apparent_power_VA": va,
                "reactive_power_var": (max(va * va - p * p, 0.0)) ** 0.5, "power_factor": pf,
                "frequency_Hz": self._now["frequency"], "energy_import_kWh": self._energy["import"],
                "energy_export_kWh": self._energy["export"],
                "energy_total_kWh": self._energy["import"] + self._energy["export"],
            }

    def _publish(self) -> None:
        for name, value in self.values().items():
            self.set(Reg.INPUT, _METER_FLOATS[name], struct.unpack(">HH", struct.pack(">f", value)))

    def tick(self, now: float) -> None:
        with self._lock:
            if self._last is not None and now > self._last:
                power_w = self.values()["power_W"]
                self._energy["import" if power_w >= 0 else "export"] += abs(power_w) * (now - self._last) / 3.6e6
            self._last = now
            for key, nominal in self.nominal.items():
                spread = self.wander / (10 if key == "frequency" else 1)
                self._now[key] = nominal * (1 + spread * self._rng.uniform(-1.0, 1.0))
            self._publish()


class RelayBoard(DeviceModel):
    """``coils`` relays; discrete input n reads back coil n after each tick."""

    def __init__(self, coils: int = 8) -> None:
        super().__init__()
        if not 1 <= coils <= 2000:
            raise ValueError(f"coils {coils} is outside 1..2000")
        self.set(Reg.COIL, 0, [0] * coils)
        self.set(Reg.DISCRETE, 0, [0] * coils)
        self.size = coils

    def tick(self, now: float) -> None:
        with self._lock:
            self.set(Reg.DISCRETE, 0, self.read(Reg.COIL, 0, self.size) or [])


MODELS: dict[str, type[DeviceModel]] = {"qdy_level": LevelSensor, "eastron_meter": EnergyMeter, "relay": RelayBoard}
