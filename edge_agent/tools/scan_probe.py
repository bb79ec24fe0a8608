"""How ``edge-agent scan`` asks "is anyone there?" on a serial bus, and how it reads the answer.

Why raw frames on ``ByteLink`` and not ``ModbusBus``: a scan must tell *silence* from
*garbage*. Garbage at one baud rate says "something is on this line, but the baud or parity
is wrong, or two devices share an id"; silence says nothing. pymodbus folds both into "no
response" (measured: a bad CRC and random bytes both end as a plain timeout), so the Modbus
probe is built here: one 8-byte request and a CRC, read back byte for byte.

Probes:

- Modbus RTU: read holding register 0, count 1 (function 03), the read nearly every device
  implements or refuses. A read reply or an exception reply both mean a device is there.
- DL/T 645: the read-address request (control 13) to the wildcard address AAAAAAAAAAAA; a
  93 reply carries the meter's address. The whole timeout is listened to, because with
  several meters on one line they all answer: a collision (garbage), or several frames.

Outcomes (``Outcome.kind``): ``found`` (a valid frame), ``garbage`` (bytes, but no valid
answer), ``silence`` (nothing, or only the echo of our own request from an adapter that
echoes). Register values are never kept or shown: they may be personal data; only the kind
of answer is reported.
"""

from __future__ import annotations

import termios
import time
from dataclasses import dataclass, field
from typing import Callable

from ..crc16 import crc16, crc_ok
from ..drivers import dlt645_codec as dlt
from ..errors import EXCEPTION_NAMES, NoResponse
from ..field.link import ByteLink
from ..settings import BusSettings

__all__ = ["FOUND", "GARBAGE", "SILENCE", "Outcome", "Found", "ScanPlan", "Scanner",
           "modbus_request", "classify_modbus", "classify_dlt645", "crc16"]

FOUND, GARBAGE, SILENCE = "found", "garbage", "silence"
_READ_HOLDING = 0x03
_MODBUS_REPLY_MAX = 7  # unit, 03, byte count 2, one register, CRC
_DLT_REPLY_MAX = 4 + 18  # wake-up FE x4, 68 A*6 68 C L, the address (6), CS 16


@dataclass(frozen=True)
class Outcome:
    """One probe's result: who answered (unit id or meter address) and what kind of answer."""

    kind: str
    address: str = ""
    what: str = ""
    direct: bool = True  # False: a Modbus unit answering a request meant for another unit


@dataclass(frozen=True)
class Found:
    """One row of the result table."""

    protocol: str
    baud: int
    framing: str
    address: str
    answer: str


# -- Modbus RTU -------------------------------------------------------------------------------

_crc_ok = crc_ok


def modbus_request(unit: int) -> bytes:
    """Read holding register 0, count 1, from ``unit``."""
    body = bytes([unit, _READ_HOLDING, 0, 0, 0, 1])
    crc = crc16(body)
    return body + bytes([crc & 0xFF, crc >> 8])


def _after_echo(data: bytes, request: bytes) -> bytes | None:
    """``data`` without the echo of ``request`` some RS-485 adapters send back; None while the
    bytes so far may still be the start of that echo."""
    if data.startswith(request):
        return data[len(request):]
    if request.startswith(data):
        return None
    return data


def _modbus_reply_length(body: bytes) -> int | None:
    """Length of the reply at the head of ``body``; ValueError when it cannot be one."""
    if len(body) < 3:
        return None
    if body[1] == _READ_HOLDING:
        return 5 + body[2]
    if body[1] == _READ_HOLDING | 0x80:
        return 5
    raise ValueError("not a reply to function 03")


def classify_modbus(unit: int, body: bytes) -> Outcome:
    """What the bytes received after the request to ``unit`` (echo removed) say."""
    if not body:
        return Outcome(SILENCE)
    try:
        need = _modbus_reply_length(body)
    except ValueError:
        need = None
    if need is None or len(body) < need or not _crc_ok(body[:need]):
        return Outcome(GARBAGE, str(unit), f"{len(body)} byte(s) that are no valid reply")
    frame = body[:need]
    who, direct = str(frame[0]), frame[0] == unit
    if frame[1] & 0x80:
        code = frame[2]
        what = f"exception {code} ({EXCEPTION_NAMES.get(code, 'unknown exception')})"
    else:
        what = "read reply (value not shown)" if frame[2] == 2 else f"read reply of {frame[2]} bytes"
    if not direct:
        what += f", late or to a request for unit {unit}: raise --timeout"
    return Outcome(FOUND, who, what, direct)


class _Listener:
    """The ``complete`` callback for ``ByteLink.transact`` that also keeps every byte seen, so
    that after a timeout the probe knows whether it met silence or garbage."""

    def __init__(self, request: bytes, length: Callable[[bytes], int | None] | None) -> None:
        self.request, self.length = request, length
        self.seen = b""

    def __call__(self, data: bytes) -> int | None:
        self.seen = data
        body = _after_echo(data, self.request)
        if body is None or self.length is None:
            return None  # still the echo, or listening to the end (DL/T 645)
        need = self.length(body)
        return None if need is None else len(data) - len(body) + need

    @property
    def body(self) -> bytes:
        return _after_echo(self.seen, self.request) or b""


def probe_modbus(link: ByteLink, unit: int, timeout_s: float) -> Outcome:
    """One read of holding register 0 from ``unit``."""
    request = modbus_request(unit)
    listener = _Listener(request, _modbus_reply_length)
    try:
        link.transact(request, listener, timeout_s, device=f"unit {unit}")
    except NoResponse:
        pass  # what came, if anything, is in the listener
    return classify_modbus(unit, listener.body)


# -- DL/T 645 ---------------------------------------------------------------------------------

def classify_dlt645(body: bytes) -> list[Outcome]:
    """Every meter address in the bytes that answered the wildcard read, and a garbage
    outcome if anything else came: a collision, or the wrong baud or parity."""
    outcomes: list[Outcome] = []
    rest = body
    while rest:
        try:
            need = dlt.frame_length_needed(rest)
            if need is None or need > len(rest):
                raise dlt.ShortFrame(f"{len(rest)} byte(s) of an incomplete frame")
            address = dlt.read_address_reply(rest[:need])
        except dlt.FrameError as exc:
            outcomes.append(Outcome(GARBAGE, "", f"no valid reply ({exc})"))
            start = rest.find(0x68, 1)  # a line-turnaround glitch may precede a good frame
            rest = rest[start:] if start > 0 else b""
            continue
        outcomes.append(Outcome(FOUND, address, "read-address reply (93)"))
        rest = rest[need:]
    return outcomes or [Outcome(SILENCE)]


def probe_dlt645(link: ByteLink, timeout_s: float) -> list[Outcome]:
    """The wildcard read-address request, listening the whole timeout for every answer."""
    request = dlt.encode_read_address()
    listener = _Listener(request, None)
    try:
        link.transact(request, listener, timeout_s, device="meters")
    except NoResponse:
        pass  # the listener never completes: the end of the timeout ends every DL/T probe
    return classify_dlt645(listener.body)


def _carries_parity(port: object) -> bool:
    """Whether the kernel kept the parity flag pyserial set on ``port`` (a real UART does)."""
    try:
        return bool(termios.tcgetattr(port.fileno())[2] & termios.PARENB)  # type: ignore[attr-defined]
    except (termios.error, AttributeError, OSError, ValueError):
        return True  # not a termios port: nothing to find out, nothing to change


# -- the scan ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class ScanPlan:
    """What to try: every id (Modbus) at every baud rate, or one wildcard read per baud rate."""

    port: str
    protocol: str  # "modbus-rtu" | "dlt645"
    bauds: tuple[int, ...]
    parity: str
    stop_bits: int
    ids: tuple[int, ...]
    timeout_s: float
    stop_at_first: bool = False

    @property
    def modbus(self) -> bool:
        return self.protocol == "modbus-rtu"

    @property
    def framing(self) -> str:
        return f"8{self.parity}{self.stop_bits}"

    @property
    def total(self) -> int:
        return len(self.bauds) * (len(self.ids) if self.modbus else 1)

    @property
    def bits_per_char(self) -> int:
        return 1 + 8 + (self.parity != "N") + self.stop_bits  # start, data, parity, stop

    def wire_s(self, baud: int) -> float:
        """Time the request and the longest expected reply take on the line at ``baud``: added
        to the timeout, so that a slow baud rate is not mistaken for silence."""
        n = 8 + _MODBUS_REPLY_MAX if self.modbus else len(dlt.encode_read_address()) + _DLT_REPLY_MAX
        return n * self.bits_per_char / baud

    def bus(self, baud: int) -> BusSettings:
        gap = max(3.5 * self.bits_per_char / baud, 0.00175)  # Modbus RTU: 3.5 characters of silence between frames
        return BusSettings(name="scan", protocol=self.protocol, serial=self.port, baud=baud,  # type: ignore[arg-type]
                           parity=self.parity, stop_bits=self.stop_bits,  # type: ignore[arg-type]
                           timeout_s=self.timeout_s + self.wire_s(baud), gap_s=gap)


Progress = Callable[[int, int, int], None]  # probes done, baud now, devices found so far


@dataclass
class Scanner:
    """Runs a ``ScanPlan``; ``found``, ``notes`` and ``probes`` hold what is known so far, so
    that a scan cut short (Ctrl-C, port unplugged) still reports what it found."""

    plan: ScanPlan
    found: dict[tuple[int, str], Found] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    probes: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started

    def run(self, progress: Progress) -> list[Found]:
        """Probe every baud rate in turn; LinkError when the port cannot be used."""
        self.started = time.monotonic()
        for baud in self.plan.bauds:
            if self._scan_baud(baud, progress):
                break
        return list(self.found.values())

    def _scan_baud(self, baud: int, progress: Progress) -> bool:
        """True when the scan should stop here (``stop_at_first`` and something answered)."""
        plan = self.plan
        link = ByteLink(plan.bus(baud))
        timeout = link.settings.timeout_s
        garbage: list[Outcome] = []
        try:
            self._open(link)
            if plan.modbus:
                for unit in plan.ids:
                    self._record(baud, [probe_modbus(link, unit, timeout)], garbage)
                    progress(self.probes, baud, len(self.found))
                    if plan.stop_at_first and self.found:
                        return True
            else:
                self._record(baud, probe_dlt645(link, timeout), garbage)
                progress(self.probes, baud, len(self.found))
        finally:
            link.close()
        self._note(baud, garbage)
        return plan.stop_at_first and bool(self.found)

    def _open(self, link: ByteLink) -> None:
        """Open the port; if it silently dropped the parity asked for (a pseudo-terminal does:
        it carries no parity bits), scan without it and say so, instead of failing on the
        next settings change (Linux refuses to set a parity a pty cannot have: EINVAL)."""
        port = link.open()
        if self.plan.parity == "N" or _carries_parity(port):
            return
        port.parity = "N"
        note = (f"{self.plan.port} carries no parity bits (a pseudo-terminal?): parity "
                f"{self.plan.parity} was not tested there")
        if note not in self.notes:
            self.notes.append(note)

    def _record(self, baud: int, outcomes: list[Outcome], garbage: list[Outcome]) -> None:
        self.probes += 1
        for outcome in outcomes:
            if outcome.kind == GARBAGE:
                garbage.append(outcome)
            elif outcome.kind == FOUND:
                key = (baud, outcome.address)
                known = self.found.get(key)
                if known is None or outcome.direct:  # a unit's own answer beats a late one
                    self.found[key] = Found(self.plan.protocol, baud, self.plan.framing,
                                            outcome.address, outcome.what)

    def _note(self, baud: int, garbage: list[Outcome]) -> None:
        at = f"{baud} baud {self.plan.framing}"
        if not self.plan.modbus:
            meters = [f.address for f in self.found.values() if f.baud == baud]
            if len(meters) > 1:
                self.notes.append(f"{at}: {len(meters)} meters answered the wildcard read one after "
                                  "another; on a real line they usually collide: check each address "
                                  "against the meter's name plate")
            if garbage:
                self.notes.append(f"{at}: something answered garbage to the wildcard read: several meters "
                                  "answering at once (a collision), or the wrong baud rate or parity. "
                                  "With several meters on one bus, read each meter's 12-digit address "
                                  "from its name plate and configure it directly")
        elif garbage:
            ids = ", ".join(o.address for o in garbage[:10]) + (", ..." if len(garbage) > 10 else "")
            self.notes.append(f"{at}: something answered garbage to {len(garbage)} probe(s) (unit {ids}): "
                              "wrong baud rate or parity, or two devices with the same id?")
