"""Simulated DL/T 645 electricity meters and CJ/T 188 water, gas and heat meters, several on
one line, as ``byteserver.ByteServer`` handlers. Frames are built and parsed by ``frames645``
and ``frames188``, written from the standards apart from the agent's drivers (which the tests
read these meters with), so a codec bug cannot cancel itself out.

A line (``Dlt645Bus``, ``Cjt188Bus``) takes the frames the agent sends, skipping noise, and
hands each to the meters it addresses (AA bytes of an address are wildcards):

- nobody addressed, a broadcast, or a request the meter does not speak (a 1997 read to a 2007
  meter and the other way round): silence, as on a real line;
- one meter: its reply; several (the read-address request 13 to AAAAAAAAAAAA with more than
  one meter on the line): their replies at once, i.e. bytes ANDed together: garbage, as the
  drivers of a real RS-485 line would make of it.

DL/T 645 meters answer reads (11, 1997: 01) of the DIs they have with 91, others with D1 "no
requested data"; a single-phase meter has no B/C phase. With ``multi_frame`` the combined energy
(DI 00000000) comes as B1 with half of its bytes, the rest after a 12 request (92). Energies
rise with the power drawn; voltages, currents and frequency wander around nominal values.
CJ/T 188 meters answer read data (01, DI 901F in either byte order) with 81, their DI in
``reply_di_order``, echoing SER; water and gas totals rise at ``rate_m3_per_h``, heat at ``power_kw``.

Faults, per meter, changeable while a server runs (``set_faults``): ``silence`` (no answer),
``garbage`` (random bytes instead of the reply), ``bad_checksum`` (the reply with CS flipped),
``error`` (an error reply with these bits to every read: DL/T error byte, CJ/T status),
``delay_s`` (the answer comes this late), ``echo`` (the line echoes the request before any answer,
as an RS-485 adapter with local echo does; here the echo follows the whole request, so on a
paced line it costs the request's wire time once more, where a real adapter echoes as it sends).
"""

from __future__ import annotations

import dataclasses
import os
import random
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Iterable

from . import frames188 as f188
from . import frames645 as f645

__all__ = ["MeterFaults", "Dlt645Meter", "Cjt188Meter", "Dlt645Bus", "Cjt188Bus", "CJT_METER_TYPES"]

_START, _WAKE = 0x68, 0xFE
CJT_METER_TYPES = {"cold_water": 0x10, "hot_water": 0x11, "heat": 0x20, "gas": 0x30}
_BC_PHASE = ("voltage_b_V", "voltage_c_V", "current_b_A", "current_c_A")
_WANDERING = ("voltage", "current", "power_kW", "frequency")


@dataclass(frozen=True)
class MeterFaults:
    """What goes wrong with one meter (see the module docstring)."""

    silence: bool = False
    garbage: bool = False
    bad_checksum: bool = False
    error: int | None = None
    delay_s: float = 0.0
    echo: bool = False

    def __post_init__(self) -> None:
        if self.error is not None and not 0 <= self.error <= 0xFFFF:
            raise ValueError(f"error bits {self.error} are outside 0..65535")
        if self.delay_s < 0:
            raise ValueError(f"delay {self.delay_s} s is negative")


def _digits(address: str | int, digits: int) -> str:
    text = str(address).strip()
    if not text.isdigit() or not text.isascii() or len(text) > digits:
        raise ValueError(f"address {address!r}: up to {digits} digits")
    return text.zfill(digits)


def _addressed(request_address: str, own: str) -> bool:
    """Whether a request to ``request_address`` (AA pairs are wildcards) reaches meter ``own``."""
    return all(request_address[i:i + 2] in ("AA", own[i:i + 2]) for i in range(0, len(own), 2))


class _Meter:
    """What every simulated meter has: an address, a lock, faults, a log of what it was asked, and
    a clock whose seconds count ``time_scale`` simulated seconds (3600: an hour of use per second)."""

    def __init__(self, address: str, clock: Callable[[], float], time_scale: float) -> None:
        if time_scale <= 0:
            raise ValueError(f"time_scale {time_scale} must be positive")
        self.address = address
        self.clock = clock
        self.time_scale = time_scale
        self._last: float | None = None
        self._lock = threading.RLock()
        self._faults = MeterFaults()
        self.asked: deque[tuple[int, int | None]] = deque(maxlen=1000)  # (control, DI) per request

    @property
    def faults(self) -> MeterFaults:
        with self._lock:
            return self._faults

    def set_faults(self, faults: MeterFaults | None = None, **changes: Any) -> MeterFaults:
        """Replace the faults (``MeterFaults()`` clears them) or change some fields; returns the new set."""
        with self._lock:
            self._faults = dataclasses.replace(faults or self._faults, **changes)
            return self._faults

    def respond(self, frame: Any) -> bytes:
        """The bytes this meter puts on the line for ``frame``, faults applied (b"" for silence)."""
        with self._lock:
            faults = self._faults
            if faults.silence:
                return b""
            answer = self.answer(frame, faults.error)
            if not answer:
                return b""
            if faults.garbage:
                return os.urandom(3 + os.urandom(1)[0] % 10)
            if faults.bad_checksum:
                return answer[:-2] + bytes([answer[-2] ^ 0xFF]) + answer[-1:]
            return answer

    def answer(self, frame: Any, error: int | None) -> bytes:
        raise NotImplementedError

    def _elapsed_h(self) -> float:
        """Simulated hours since the last call (0 on the first)."""
        now = self.clock()
        hours = (now - self._last) * self.time_scale / 3600.0 if self._last is not None and now > self._last else 0.0
        self._last = now
        return hours


# -- DL/T 645 ------------------------------------------------------------------------------------

class Dlt645Meter(_Meter):
    """A DL/T 645 meter at ``address`` (up to 12 digits). ``missing``: point names (separated by
    ``/`` or ``+``, or a sequence) it answers "no requested data" for, besides what its version
    and phases lack. A negative ``current`` exports."""

    def __init__(self, address: str | int, version: int = 2007, phases: int = 1, energy_kwh: float = 1234.56,
                 export_kwh: float = 0.0, voltage: float = 230.0, current: float = 5.0, power_factor: float = 0.95,
                 frequency: float = 50.0, missing: str | Iterable[str] = "", multi_frame: bool = False,
                 wander: float = 0.01, reply_wake: int = 4, time_scale: float = 1.0, seed: int | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(_digits(address, 12), clock, time_scale)
        if version not in (2007, 1997):
            raise ValueError(f"version {version}: 2007 or 1997")
        if phases not in (1, 3):
            raise ValueError(f"phases {phases}: 1 or 3")
        if not -1.0 <= power_factor <= 1.0:
            raise ValueError(f"power_factor {power_factor} is outside -1..1")
        if not 0 <= reply_wake <= 4:
            raise ValueError(f"reply_wake {reply_wake}: 0 to 4 FE bytes")
        names = missing.replace("+", "/").split("/") if isinstance(missing, str) else list(missing)
        points = {p.point for p in f645.POINTS.values()}
        unknown = [n for n in names if n and n not in points]
        if unknown:
            raise ValueError(f"missing: unknown point {unknown[0]!r}; points: {', '.join(sorted(points))}")
        self.version, self.phases, self.multi_frame, self.reply_wake = version, phases, multi_frame, reply_wake
        self.has = {di for di, p in f645.POINTS.items() if p.version == version and p.point not in names
                    and not (phases == 1 and p.point in _BC_PHASE)}
        self.nominal = {"voltage": voltage, "current": current, "frequency": frequency}
        self.power_factor, self.wander = power_factor, wander
        self._energy = {"import": float(energy_kwh), "export": float(export_kwh)}
        self._rng = random.Random(seed)
        self._now = {key: [value] * 3 for key, value in self.nominal.items()}
        for di in self.has:  # every value must fit its format, the wandering ones at their widest
            point = f645.POINTS[di].point
            value = self.values()[point] * (1 + wander if point.startswith(_WANDERING) else 1.0)
            try:
                f645.encode_value(di, value)
            except ValueError:
                raise ValueError(f"{point} {value:.6g} does not fit its DL/T 645 register") from None
        self._rest: dict[int, bytes] = {}  # DI -> the bytes a 12 request fetches after a B1

    def _advance(self) -> None:
        """Move the values to now: energy integrates the power since the last request."""
        power = self._power_kw()
        key = "import" if power >= 0 else "export"
        self._energy[key] = (self._energy[key] + abs(power) * self._elapsed_h()) % 1e6  # the register rolls over
        for key, nominal in self.nominal.items():
            spread = self.wander / (10 if key == "frequency" else 1)
            self._now[key] = [nominal * (1 + spread * self._rng.uniform(-1.0, 1.0)) for _ in range(3)]

    def _power_kw(self) -> float:
        n = self.phases
        return sum(v * i for v, i in zip(self._now["voltage"][:n], self._now["current"][:n])) * self.power_factor / 1000

    def values(self) -> dict[str, float]:
        """The present quantities, by point name (``frames645.POINTS``; B/C phases read 0 on a single-phase meter)."""
        with self._lock:
            v, i = self._now["voltage"], self._now["current"]
            out = {"energy_import_kWh": self._energy["import"], "energy_export_kWh": self._energy["export"],
                   "energy_total_kWh": (self._energy["import"] + self._energy["export"]) % 1e6,
                   "power_kW": self._power_kw(), "power_factor": self.power_factor,
                   "frequency_Hz": self._now["frequency"][0]}
            for k, phase in enumerate("abc"):
                live = k < self.phases
                out[f"voltage_{phase}_V"] = v[k] if live else 0.0
                out[f"current_{phase}_A"] = i[k] if live else 0.0
            return out

    def answer(self, frame: f645.Frame, error: int | None) -> bytes:
        c, data = frame.control, frame.data
        reads = {0x11: 4, 0x12: 5} if self.version == 2007 else {0x01: 2}
        if c == 0x13 and frame.address == f645.WILDCARD:
            self.asked.append((c, None))
            return f645.address_reply(self.address, wake=self.reply_wake)
        if c not in reads or len(data) != reads[c]:
            return b""  # not a read this meter speaks: silence
        size = 4 if self.version == 2007 else 2
        di = int.from_bytes(data[:size], "little")
        self.asked.append((c, di))
        if error is not None:
            return f645.error_reply(self.address, error, version=self.version, wake=self.reply_wake)
        if c == 0x12:
            return self._next(di, data[4])
        return self._read(di)

    def _read(self, di: int) -> bytes:
        if di not in self.has:
            return f645.error_reply(self.address, 0x02, version=self.version, wake=self.reply_wake)
        self._advance()
        value = self.values()[f645.POINTS[di].point]
        if not (self.multi_frame and di == 0x00000000):
            return f645.reply(self.address, di, value, version=self.version, wake=self.reply_wake)
        raw = f645.encode_value(di, value)
        self._rest[di] = raw[2:]
        return f645.build(self.address, 0xB1, di.to_bytes(4, "little") + raw[:2], wake=self.reply_wake)

    def _next(self, di: int, seq: int) -> bytes:
        rest = self._rest.pop(di, None)
        if rest is None or seq != 1:
            return f645.error_reply(self.address, 0x01, wake=self.reply_wake)  # other error
        return f645.build(self.address, 0x92, di.to_bytes(4, "little") + rest + bytes([seq]),
                                wake=self.reply_wake)

    def addressed_by(self, frame: f645.Frame) -> bool:
        return frame.address != f645.BROADCAST and _addressed(frame.address, self.address)

    def __repr__(self) -> str:
        return f"Dlt645Meter({self.address}, {self.version}, {self.phases} phase{'s' if self.phases > 1 else ''})"


# -- CJ/T 188 ------------------------------------------------------------------------------------

class Cjt188Meter(_Meter):
    """A CJ/T 188 meter at ``address`` (up to 14 digits); ``meter_type`` a name of
    ``CJT_METER_TYPES`` or the T byte. Water and gas totals rise at ``rate_m3_per_h``, heat at
    ``power_kw``. ``reply_di_order``: "90 1F" or "1F 90" (spaces optional)."""

    def __init__(self, address: str | int, meter_type: str | int = "cold_water", reply_di_order: str = "90 1F",
                 flow_m3: float = 123.45, settlement_m3: float | None = None, rate_m3_per_h: float = 0.6,
                 valve: str = "open", battery_low: bool = False, heat_kwh: float = 4321.0,
                 power_kw: float = 5.0, reply_wake: int = 4, time_scale: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(_digits(address, 14), clock, time_scale)
        self.meter_type = CJT_METER_TYPES.get(meter_type, meter_type) if isinstance(meter_type, str) else meter_type
        if self.meter_type not in CJT_METER_TYPES.values():
            raise ValueError(f"meter_type {meter_type!r}: one of {', '.join(CJT_METER_TYPES)}")
        order = str(reply_di_order).upper().replace(" ", "").replace("_", "")
        if order not in ("901F", "1F90"):
            raise ValueError(f"reply_di_order {reply_di_order!r}: '90 1F' or '1F 90'")
        if valve not in ("open", "closed", "abnormal"):
            raise ValueError(f"valve {valve!r}: open, closed or abnormal")
        if not 0 <= reply_wake <= 4:
            raise ValueError(f"reply_wake {reply_wake}: 0 to 4 FE bytes")
        self.reply_di_order = f"{order[:2]} {order[2:]}"
        self.valve, self.battery_low, self.reply_wake = valve, battery_low, reply_wake
        self.rate_m3_per_h, self.power_kw = rate_m3_per_h, power_kw
        self.total = float(heat_kwh if self.is_heat else flow_m3)
        self.settlement = self.total if settlement_m3 is None or self.is_heat else float(settlement_m3)
        if not (0 <= self.total < 1e6 and 0 <= self.settlement < 1e6):
            raise ValueError("totals must be 0 to 999999.99 (what the 4 BCD bytes hold)")

    @property
    def is_heat(self) -> bool:
        return self.meter_type >> 4 == 2

    def _advance(self) -> None:
        rate = self.power_kw if self.is_heat else self.rate_m3_per_h
        self.total = (self.total + rate * self._elapsed_h()) % 1e6  # the register rolls over

    def answer(self, frame: f188.Frame, error: int | None) -> bytes:
        if frame.control != 0x01 or len(frame.data) != 3 or frame.data[:2] not in (b"\x90\x1f", b"\x1f\x90"):
            return b""
        ser = frame.data[2]
        self.asked.append((frame.control, 0x901F))
        common = {"ser": ser, "di_order": self.reply_di_order, "wake": self.reply_wake}
        if error is not None:
            return f188.error_reply(self.address, self.meter_type, ser=ser, status=error, wake=self.reply_wake)
        self._advance()
        clock = datetime.now().replace(microsecond=0)
        if self.is_heat:
            return f188.heat_reply(self.address, self.meter_type, heat_kwh=round(self.total, 2),
                                   settlement_kwh=round(self.settlement, 2), clock=clock, **common)
        return f188.water_reply(self.address, self.meter_type, flow_m3=round(self.total, 2),
                                settlement_m3=round(self.settlement, 2), clock=clock, valve=self.valve,
                                battery_low=self.battery_low, **common)

    def addressed_by(self, frame: f188.Frame) -> bool:
        return frame.meter_type in (self.meter_type, 0xAA) and _addressed(frame.address, self.address)

    def __repr__(self) -> str:
        kind = next(k for k, v in CJT_METER_TYPES.items() if v == self.meter_type)
        return f"Cjt188Meter({self.address}, {kind}, replies {self.reply_di_order})"


# -- the line ------------------------------------------------------------------------------------

def take_frame(pending: bytearray, needed: Callable[[bytes], int | None],
               parse: Callable[[bytes], Any]) -> tuple[bytes, Any] | None:
    """(bytes consumed, parsed frame) for the first sound frame in ``pending``, which loses those
    bytes; None when there is none yet, after dropping what cannot become one."""
    waiting_at = None
    i = pending.find(_START)
    while i >= 0:
        try:
            need = needed(bytes(pending[i:]))
        except ValueError:
            need = 0
        if need is None or (need and len(pending) - i < need):
            waiting_at = i if waiting_at is None else waiting_at
        elif need:
            try:
                parsed = parse(bytes(pending[i:i + need]))
            except ValueError:
                parsed = None
            if parsed is not None:
                consumed = bytes(pending[:i + need])
                del pending[:i + need]
                return consumed, parsed
        i = pending.find(_START, i + 1)
    keep = len(pending) if waiting_at is None else waiting_at
    while keep > 0 and pending[keep - 1] == _WAKE:  # the wake-up bytes of a frame to come
        keep -= 1
    del pending[:keep]
    return None


def collide(answers: list[bytes]) -> bytes:
    """Several meters talking at once: their bytes ANDed (an idle line reads as FF)."""
    out = bytearray(b"\xff" * max(map(len, answers)))
    for answer in answers:
        for k, byte in enumerate(answer):
            out[k] &= byte
    return bytes(out)


class _Line:
    """Meters on one line: ``feed`` and ``tick`` for ``ByteServer``."""

    needed: Callable[[bytes], int | None]
    parse: Callable[[bytes], Any]

    def __init__(self, meters: Iterable[_Meter]) -> None:
        self.meters = list(meters)
        seen: set[str] = set()
        for meter in self.meters:
            if meter.address in seen:
                raise ValueError(f"two meters at address {meter.address}")
            seen.add(meter.address)

    def meter(self, address: str) -> _Meter:
        return next(m for m in self.meters if m.address == address)

    def feed(self, pending: bytearray) -> bytes:
        out = b""
        while (taken := take_frame(pending, type(self).needed, type(self).parse)) is not None:
            out += self._serve(*taken)
        return out

    def tick(self, now: float) -> bytes:
        return b""  # meters only speak when asked

    def _serve(self, raw: bytes, frame: Any) -> bytes:
        if frame.is_reply:
            return b""  # another meter's reply: not a request
        targets = [m for m in self.meters if m.addressed_by(frame)]
        answers = [a for a in (m.respond(frame) for m in targets) if a]
        delay = max((m.faults.delay_s for m in targets if not m.faults.silence), default=0.0)
        echo = raw if any(m.faults.echo for m in targets) else b""
        if answers and delay:
            time.sleep(delay)
        if len(answers) > 1:
            return echo + collide(answers)
        return echo + (answers[0] if answers else b"")


class Dlt645Bus(_Line):
    """DL/T 645 meters sharing one RS-485 line."""

    needed = staticmethod(f645.frame_length)
    parse = staticmethod(f645.parse)


class Cjt188Bus(_Line):
    """CJ/T 188 meters sharing one line."""

    needed = staticmethod(f188.frame_length)
    parse = staticmethod(f188.parse)
