"""A simulated wearables hub speaking the reference line protocol (CONTRACT section 7).

N synthetic residents (``residents.residents``: valid-format, never real) each wear a band
``B-00001``...; every ``vitals_every_s`` each band sends a ``vitals`` line whose values drift
slowly around that resident's own baseline. The bands are spread evenly over the period, so
the line carries one short line at a time rather than a burst (a paced pty pair pumps both
directions in one thread).

Scheduled alarms: ``sos_after_s``, ``fall_after_s``, ``off_wrist_after_s`` seconds after the
first tick, one line each, from bands 1, 2 and 3 (modulo N), at a position within ~200 m of
``near``. ``trigger(kind, band)`` sends one at the next tick.

The hub clock (``ts``, seconds) can be left out (``hub_clock=False``) or skewed (``skew_s``),
as on a hub whose RTC was never set.

Faults, changeable while serving (``set_faults``): ``silence`` (nothing is sent; alarms wait
until it ends, as a band retries), and four kinds of broken line, each sent once per vitals
period while on: ``garbage`` (random bytes), ``bad_json`` (a line cut short), ``long_line``
(5000 bytes, past the 4096 limit), ``bad_utf8``. ``inject(kind)`` sends one broken line now.
``garbled``: every line goes out scrambled byte by byte, its line break kept, as a hub at another
baud rate is heard: nothing usable arrives, though the hub keeps talking.

The hub takes no commands: whatever it is sent is read and ignored.
"""

from __future__ import annotations

import dataclasses
import json
import random
from dataclasses import dataclass
from typing import Any

from .residents import Resident, residents

__all__ = ["HubFaults", "HubSim", "Band", "BROKEN_KINDS", "EVENT_KINDS", "broken_line"]

BROKEN_KINDS = ("garbage", "bad_json", "long_line", "bad_utf8")
EVENT_KINDS = ("sos", "fall", "off_wrist")
LONG_LINE_BYTES = 5000
_MAX_PENDING = 4096  # what the hub keeps of unread input (it ignores input anyway)


@dataclass(frozen=True)
class HubFaults:
    silence: bool = False
    garbage: bool = False
    bad_json: bool = False
    long_line: bool = False
    bad_utf8: bool = False
    garbled: bool = False


# each byte to another, never to or from a line break: the lines stay lines, but unreadable
_GARBLE = bytes.maketrans(bytes(b for b in range(256) if b != 0x0A),
                          bytes((b + 0x80) % 256 if (b + 0x80) % 256 != 0x0A else 0xFF for b in range(256) if b != 0x0A))


def broken_line(kind: str, rng: random.Random, size: int = LONG_LINE_BYTES) -> bytes:
    """One line of the broken ``kind`` (with its ``\\n``; ``size`` is long_line's length)."""
    if kind == "garbage":
        return bytes(b for b in rng.randbytes(rng.randint(8, 48)) if b != 0x0A) + b"\n"
    if kind == "bad_json":
        return b'{"t":"vitals","band":"B-00001","hr":7\n'
    if kind == "long_line":
        head = b'{"t":"vitals","band":"B-00001","pad":"'
        return head + b"x" * max(0, size - len(head) - 3) + b'"}\n'
    if kind == "bad_utf8":
        return b'{"t":"vitals","band":"B-\xff\xfe","hr":70}\n'
    raise ValueError(f"unknown broken line {kind!r}; one of {', '.join(BROKEN_KINDS)}")


@dataclass
class Band:
    """One band and the vitals it reports (a random walk around its wearer's baseline)."""

    band: str
    wearer: Resident
    hr: float
    spo2: float
    sbp: float
    dbp: float
    temp: float
    bat: float
    due: float = 0.0  # monotonic-ish time of its next vitals line (the server's clock)

    @classmethod
    def for_resident(cls, index: int, wearer: Resident, rng: random.Random) -> "Band":
        return cls(band=f"B-{index + 1:05d}", wearer=wearer, hr=rng.uniform(60, 90), spo2=rng.uniform(95, 99),
                   sbp=rng.uniform(105, 140), dbp=rng.uniform(65, 88), temp=rng.uniform(36.2, 37.0),
                   bat=rng.uniform(50, 100))

    def step(self, rng: random.Random) -> None:
        def walk(value: float, step: float, low: float, high: float) -> float:
            return min(high, max(low, value + rng.uniform(-step, step)))
        self.hr = walk(self.hr, 2.0, 48, 125)
        self.spo2 = walk(self.spo2, 0.5, 92, 100)
        self.sbp = walk(self.sbp, 2.0, 95, 160)
        self.dbp = walk(self.dbp, 1.5, 55, 100)
        self.temp = walk(self.temp, 0.05, 35.8, 37.6)
        self.bat = self.bat - 0.2 if self.bat > 10 else 100.0  # drains, then is recharged

    def wearer_record(self) -> dict[str, str]:
        return {"id_no": self.wearer.id_no, "name": self.wearer.name, "phone": self.wearer.mobile}

    def vitals(self) -> dict[str, Any]:
        return {"t": "vitals", "band": self.band, "wearer": self.wearer_record(), "hr": round(self.hr),
                "spo2": round(self.spo2), "sbp": round(self.sbp), "dbp": round(self.dbp),
                "temp": round(self.temp, 1), "bat": round(self.bat)}


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


class HubSim:
    """A ``byteserver.Handler``: the hub's lines on ``tick``, its input ignored on ``feed``."""

    def __init__(self, residents_count: int = 5, *, seed: int = 20241123, vitals_every_s: float = 5.0,
                 sos_after_s: float | None = None, fall_after_s: float | None = None,
                 off_wrist_after_s: float | None = None, near: tuple[float, float] = (22.817, 108.366),
                 hub_clock: bool = True, skew_s: float = 0.0, people: list[Resident] | None = None) -> None:
        if people is None:
            if not 1 <= residents_count <= 10000:
                raise ValueError(f"residents {residents_count} is outside 1..10000")
            people = residents(residents_count, seed=seed)
        if not people:
            raise ValueError("a hub needs at least one resident")
        if vitals_every_s <= 0:
            raise ValueError(f"vitals period {vitals_every_s:g} s must be positive")
        for what, after in (("sos", sos_after_s), ("fall", fall_after_s), ("off_wrist", off_wrist_after_s)):
            if after is not None and after < 0:
                raise ValueError(f"{what} delay {after:g} s is negative")
        if not (-90 <= near[0] <= 90 and -180 <= near[1] <= 180):
            raise ValueError("near is not a latitude,longitude")
        self.rng = random.Random(seed)
        self.people = list(people)
        self.bands = [Band.for_resident(i, r, self.rng) for i, r in enumerate(self.people)]
        self.vitals_every_s = vitals_every_s
        self.near, self.hub_clock, self.skew_s = near, hub_clock, skew_s
        self.faults = HubFaults()
        self._schedule = [(after, kind, i % len(self.bands)) for i, (kind, after) in
                          enumerate((("sos", sos_after_s), ("fall", fall_after_s), ("off_wrist", off_wrist_after_s)))
                          if after is not None]
        self._queued: list[bytes] = []  # broken lines to send at the next tick
        self._triggered: list[tuple[str, int]] = []  # (event kind, band index) for the next tick
        self._start: float | None = None
        self._broken_due = 0.0
        self.sent: dict[str, int] = {"vitals": 0, **{k: 0 for k in EVENT_KINDS}, **{k: 0 for k in BROKEN_KINDS}}

    # -- control ----------------------------------------------------------------------------
    def set_faults(self, faults: HubFaults | None = None, **changes: bool) -> HubFaults:
        """Replace the faults (``HubFaults()`` clears them) or change some; returns the new set."""
        self.faults = dataclasses.replace(faults or self.faults, **changes)
        return self.faults

    def inject(self, kind: str, size: int = LONG_LINE_BYTES) -> None:
        """Send one broken line of ``kind`` at the next tick."""
        self._queued.append(broken_line(kind, self.rng, size))
        self.sent[kind] += 1

    def trigger(self, kind: str, band: int = 0) -> None:
        """Send one ``sos``/``fall``/``off_wrist`` from ``bands[band]`` at the next tick."""
        if kind not in EVENT_KINDS:
            raise ValueError(f"unknown event {kind!r}; one of {', '.join(EVENT_KINDS)}")
        self._triggered.append((kind, band % len(self.bands)))

    # -- the handler ------------------------------------------------------------------------
    def feed(self, pending: bytearray) -> bytes:
        end = pending.rfind(b"\n")
        if end >= 0:
            del pending[:end + 1]
        if len(pending) > _MAX_PENDING:
            pending.clear()
        return b""

    def tick(self, now: float) -> bytes:
        if self._start is None:
            self._start = self._broken_due = now
            for i, band in enumerate(self.bands):
                band.due = now + self.vitals_every_s * i / len(self.bands)
        if self.faults.silence:
            return b""
        queued, self._queued = self._queued, []  # swapped: a test thread may be adding to it
        triggered, self._triggered = self._triggered, []
        out = bytearray(b"".join(queued))
        out += b"".join(self._event(kind, self.bands[i], now) for kind, i in triggered)
        out += self._alarms(now)
        out += self._broken(now)
        for band in self.bands:
            if band.due <= now:
                out += self._vitals(band, now)
                band.due += self.vitals_every_s
                if band.due <= now:  # fell behind (silence, a stalled host): resume, do not burst
                    band.due = now + self.vitals_every_s
        return bytes(out).translate(_GARBLE) if self.faults.garbled else bytes(out)

    # -- lines ------------------------------------------------------------------------------
    def _clock(self, obj: dict[str, Any], now: float) -> dict[str, Any]:
        if self.hub_clock:
            obj["ts"] = int(now + self.skew_s)
        return obj

    def _vitals(self, band: Band, now: float) -> bytes:
        band.step(self.rng)
        self.sent["vitals"] += 1
        return _line(self._clock(band.vitals(), now))

    def _event(self, kind: str, band: Band, now: float) -> bytes:
        lat = round(self.near[0] + self.rng.uniform(-0.002, 0.002), 6)
        lon = round(self.near[1] + self.rng.uniform(-0.002, 0.002), 6)
        self.sent[kind] += 1
        obj = {"t": kind, "band": band.band, "wearer": band.wearer_record(), "lat": lat, "lon": lon}
        return _line(self._clock(obj, now))

    def _alarms(self, now: float) -> bytes:
        assert self._start is not None
        due = [s for s in self._schedule if self._start + s[0] <= now]
        self._schedule = [s for s in self._schedule if s not in due]
        return b"".join(self._event(kind, self.bands[i], now) for _, kind, i in due)

    def _broken(self, now: float) -> bytes:
        kinds = [k for k in BROKEN_KINDS if getattr(self.faults, k)]
        if not kinds or now < self._broken_due:
            return b""
        self._broken_due = now + self.vitals_every_s
        for kind in kinds:
            self.sent[kind] += 1
        return b"".join(broken_line(kind, self.rng) for kind in kinds)
