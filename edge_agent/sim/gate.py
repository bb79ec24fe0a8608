"""A simulated gate controller speaking the reference line protocol (CONTRACT section 7).

Every ``passage_every_s`` a vehicle passes: lanes in turn, ``in`` and ``out`` in turn, with a
synthetic plate (even vehicles an ordinary 7-character plate, odd ones an 8-character
new-energy plate; ``residents.plate``) and a card UID of 8 upper-case hex digits. ``vehicles``
lists them, so a test knows every raw value the gate can send.

Everything the gate receives is recorded: ``received`` holds every line (bounded, the newest
dropped past ``RECEIVED_MAX``) and ``received_bytes`` counts every byte, lines or not, so a
test can prove that nothing at all reached the device.

Commands: ``{"t":"cmd","seq":N,"op":"open"|"close","lane":L}`` is answered with
``{"t":"ack","seq":N,"ok":true}`` and, when the barrier moves, a ``state`` line after the ack.
An unknown op or lane gets ``ok:false`` with ``err`` ``bad_op``/``bad_lane``; anything that is
not a command is ignored. ``set_barrier(lane, "fault")`` makes a barrier report a state of
its own (a jammed arm), at the next tick.

Faults, changeable while serving (``set_faults``): ``silence`` (nothing is sent and commands
are ignored), ``no_ack`` (commands are neither carried out nor answered, as if lost on the
line), ``nack`` (``ok:false, err:"jammed"``, the barrier stays), ``garbage`` (one line of random
bytes per passage period).
"""

from __future__ import annotations

import dataclasses
import json
import random
from dataclasses import dataclass
from typing import Any

from .residents import plate

__all__ = ["GateFaults", "GateSim", "Vehicle", "BARRIER_STATES", "RECEIVED_MAX"]

BARRIER_STATES = ("open", "closed", "fault")
_MAX_PENDING = 4096  # an unterminated command longer than this is dropped
RECEIVED_MAX = 1000  # lines kept in GateSim.received
_TARGET = {"open": "open", "close": "closed"}


@dataclass(frozen=True)
class GateFaults:
    silence: bool = False
    no_ack: bool = False
    nack: bool = False
    garbage: bool = False


@dataclass(frozen=True)
class Vehicle:
    plate: str
    card: str


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


class GateSim:
    """A ``byteserver.Handler``: passages and states on ``tick``, acks on ``feed``."""

    def __init__(self, lanes: int = 2, *, passage_every_s: float = 5.0, vehicles: int = 8,
                 seed: int = 20241123, gate_clock: bool = True) -> None:
        if not 1 <= lanes <= 255:
            raise ValueError(f"lanes {lanes} is outside 1..255")
        if passage_every_s <= 0:
            raise ValueError(f"passage period {passage_every_s:g} s must be positive")
        if not 1 <= vehicles <= 10000:
            raise ValueError(f"vehicles {vehicles} is outside 1..10000")
        self.rng = random.Random(seed)
        self.vehicles = [Vehicle(plate(self.rng, new_energy=i % 2 == 1), f"{self.rng.getrandbits(32):08X}")
                         for i in range(vehicles)]
        self.lanes, self.passage_every_s, self.gate_clock = lanes, passage_every_s, gate_clock
        self.barriers = {lane: "closed" for lane in range(1, lanes + 1)}
        self.faults = GateFaults()
        self.commands: list[dict[str, Any]] = []  # the commands received (bounded), for tests
        self.received: list[bytes] = []  # every line received, command or not (bounded), for tests
        self.received_bytes = 0  # every byte received, in lines or not
        self._seen: dict[int, int] = {}  # id of a connection's pending buffer -> bytes of it counted
        self.passages = 0
        self._queued: list[tuple[str, Any]] = []  # ("state", lane) / ("passage", None) for the next tick
        self._due: float | None = None
        self._now = 0.0

    # -- control ----------------------------------------------------------------------------
    def set_faults(self, faults: GateFaults | None = None, **changes: bool) -> GateFaults:
        """Replace the faults (``GateFaults()`` clears them) or change some; returns the new set."""
        self.faults = dataclasses.replace(faults or self.faults, **changes)
        return self.faults

    def set_barrier(self, lane: int, state: str) -> None:
        """Move ``lane``'s barrier to ``state`` by itself; its state line goes out at the next tick."""
        if state not in BARRIER_STATES or lane not in self.barriers:
            raise ValueError(f"no lane {lane} or no barrier state {state!r}")
        self.barriers[lane] = state
        self._queued.append(("state", lane))

    def trigger_passage(self) -> None:
        """One passage at the next tick, outside the schedule."""
        self._queued.append(("passage", None))

    # -- the handler ------------------------------------------------------------------------
    def feed(self, pending: bytearray) -> bytes:
        key = id(pending)
        self.received_bytes += max(0, len(pending) - self._seen.pop(key, 0))
        out = bytearray()
        while (end := pending.find(b"\n")) >= 0:
            line = bytes(pending[:end])
            del pending[:end + 1]
            if len(self.received) < RECEIVED_MAX:
                self.received.append(line)
            out += self._command(line)
        if len(pending) > _MAX_PENDING:
            pending.clear()
        if pending:
            self._seen[key] = len(pending)
        return bytes(out)

    def tick(self, now: float) -> bytes:
        self._now = now
        if self._due is None:
            self._due = now + self.passage_every_s
        if self.faults.silence:
            return b""
        queued, self._queued = self._queued, []  # swapped: a test thread may be adding to it
        out = bytearray()
        for kind, lane in queued:
            out += self._passage() if kind == "passage" else self._state(lane)
        if now >= self._due:
            self._due += self.passage_every_s
            if self._due <= now:  # fell behind (silence, a stalled host): resume, do not burst
                self._due = now + self.passage_every_s
            if self.faults.garbage:
                out += bytes(b for b in self.rng.randbytes(self.rng.randint(8, 40)) if b != 0x0A) + b"\n"
            out += self._passage()
        return bytes(out)

    # -- lines ------------------------------------------------------------------------------
    def _state(self, lane: int) -> bytes:
        return _line({"t": "state", "lane": lane, "barrier": self.barriers[lane]})

    def _passage(self) -> bytes:
        n = self.passages
        self.passages += 1
        vehicle = self.vehicles[n % len(self.vehicles)]
        obj: dict[str, Any] = {"t": "passage", "lane": n % self.lanes + 1, "dir": "in" if n // self.lanes % 2 == 0
                               else "out", "plate": vehicle.plate, "card": vehicle.card}
        if self.gate_clock:
            obj["ts"] = int(self._now)
        return _line(obj)

    def _command(self, line: bytes) -> bytes:
        try:
            cmd = json.loads(line)
        except (ValueError, RecursionError):
            return b""
        if not isinstance(cmd, dict) or cmd.get("t") != "cmd" or not isinstance(cmd.get("seq"), int):
            return b""
        if len(self.commands) < 1000:
            self.commands.append(cmd)
        if self.faults.silence or self.faults.no_ack:
            return b""
        seq, op, lane = cmd["seq"], cmd.get("op"), cmd.get("lane")
        if not isinstance(op, str) or op not in _TARGET:
            return _line({"t": "ack", "seq": seq, "ok": False, "err": "bad_op"})
        if isinstance(lane, bool) or not isinstance(lane, int) or lane not in self.barriers:
            return _line({"t": "ack", "seq": seq, "ok": False, "err": "bad_lane"})
        if self.faults.nack:
            return _line({"t": "ack", "seq": seq, "ok": False, "err": "jammed"})
        ack = _line({"t": "ack", "seq": seq, "ok": True})
        if self.barriers[lane] == _TARGET[op]:
            return ack
        self.barriers[lane] = _TARGET[op]
        return ack + self._state(lane)
