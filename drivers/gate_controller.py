"""Gate controller: the project's reference line protocol (CONTRACT section 7).

Wire facts: serial 9600 8N1 (or TCP through a converter), one UTF-8 JSON object per
``\\n``-terminated line both ways, at most 4096 bytes::

    up:   {"t": "passage", "lane": 1, "dir": "in", "plate": "桂A12345", "card": "04A1B2C3", "ts": ...}
    up:   {"t": "state", "lane": 1, "barrier": "open" | "closed" | "fault"}
    down: {"t": "cmd", "seq": 5, "op": "open" | "close", "lane": 1}
    up:   {"t": "ack", "seq": 5, "ok": true}          (or "ok": false, "err": "...")

``ts`` is the controller's clock, read as the hub's is (seconds; ms when above 1e11) and
passed on as ``gate_ts`` in ms; events carry the gateway's receive time. ``lane`` is an integer
0..255. Card UIDs in hex are upper-cased, so one card gives one pseudonym whichever reader
case a controller uses.

Bad frames (counted and skipped, named by line number and reason, never content): those of
the hub (``_jsonlines.decode_line``), an unknown ``t``, a passage or state without a
usable lane, an ack without a seq or with a non-boolean ``ok``. An ack nobody waits for (its
write already timed out) is dropped without complaint.

Outputs: reading ``barrier`` (``sub`` = the lane as a string; ``open``/``closed``/``fault``,
anything else ``val=None, q=bad``). Events: ``passage`` (normal: ``lane``, ``dir``, ``plate``
and ``card`` (identifier), ``gate_ts``); ``barrier_fault`` (high, once per change to fault:
``lane``, ``previous`` when known). Writable: ``barrier`` (``open``/``close``, per lane).
"""

from __future__ import annotations

import json
import re
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from edge_agent.errors import DeviceFault, LineTooLong, NoResponse
from edge_agent.model import DataClass, Driver, Event, Output, Priority, Quality, Reading

from ._jsonlines import BadFrame, JsonLineReader, clock_ms, decode_line

__all__ = ["DRIVER", "GateReader", "encode_command", "reader"]

BARRIER_STATES = ("open", "closed", "fault")
OPS = ("open", "close")
DIRECTIONS = ("in", "out")
MAX_LANE = 255
MAX_SEQ = 2**31 - 1
_ERROR_CODE = re.compile(r"[a-z_]{1,32}")
_HEX = re.compile(r"[0-9A-Fa-f]+")
PASSAGE_CLASSES = {"lane": DataClass.TELEMETRY, "dir": DataClass.TELEMETRY, "plate": DataClass.IDENTIFIER,
                   "card": DataClass.IDENTIFIER, "gate_ts": DataClass.TELEMETRY}
FAULT_CLASSES = {"lane": DataClass.TELEMETRY, "previous": DataClass.TELEMETRY}


def encode_command(seq: int, op: str, lane: int) -> bytes:
    """The ``cmd`` line for ``op`` on ``lane``."""
    return json.dumps({"t": "cmd", "seq": seq, "op": op, "lane": lane}, separators=(",", ":")).encode() + b"\n"


def lane_of(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_LANE:
        return value
    return None


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _card(value: Any) -> str | None:
    card = _text(value)
    return card.upper() if card is not None and _HEX.fullmatch(card) else card


class GateReader(JsonLineReader):
    """Passages and barrier states from the controller; ``write`` opens or closes a barrier."""

    def __init__(self, device: Any, link: Any, clock: Callable[[], float] = time.time) -> None:
        super().__init__(device, link, clock)
        self.barriers: dict[int, str] = {}  # lane -> last state reported (bounded by MAX_LANE)
        self.seq = 0

    # -- what the controller says -----------------------------------------------------------
    def handle(self, obj: dict[str, Any], ts_ms: int) -> bool:
        kind = obj.get("t")
        if kind == "ack":
            self._ack_fields(obj)  # a late ack: checked, then dropped
            return False
        if kind not in ("passage", "state"):
            raise BadFrame("unknown message type")
        lane = lane_of(obj.get("lane"))
        if lane is None:
            raise BadFrame("no lane")
        if kind == "passage":
            self.add(events=[self.passage(obj, lane, ts_ms)])
            return False
        return self.state(obj, lane, ts_ms)

    def passage(self, obj: dict[str, Any], lane: int, ts_ms: int) -> Event:
        data: dict[str, Any] = {"lane": lane}
        if obj.get("dir") in DIRECTIONS:
            data["dir"] = obj["dir"]
        for key, value in (("plate", _text(obj.get("plate"))), ("card", _card(obj.get("card"))),
                           ("gate_ts", clock_ms(obj.get("ts")))):
            if value is not None:
                data[key] = value
        return Event(self.name, "passage", Priority.NORMAL, ts_ms, data, classes=dict(PASSAGE_CLASSES))

    def state(self, obj: dict[str, Any], lane: int, ts_ms: int) -> bool:
        """The barrier reading; a ``barrier_fault`` event (urgent) when it has just become fault."""
        value = obj.get("barrier")
        known = value if value in BARRIER_STATES else None
        self.add(readings=[Reading(self.name, "barrier", known, ts_ms, Quality.GOOD if known else Quality.BAD,
                                   sub=str(lane))])
        if known is None:
            return False
        previous = self.barriers.get(lane)
        self.barriers[lane] = known
        if known != "fault" or previous == "fault":
            return False
        data: dict[str, Any] = {"lane": lane} if previous is None else {"lane": lane, "previous": previous}
        self.add(events=[Event(self.name, "barrier_fault", Priority.HIGH, ts_ms, data, classes=dict(FAULT_CLASSES))])
        return True

    @staticmethod
    def _ack_fields(obj: dict[str, Any]) -> tuple[int, bool]:
        seq, ok = obj.get("seq"), obj.get("ok")
        if not isinstance(seq, int) or isinstance(seq, bool):
            raise BadFrame("ack without seq")
        if not isinstance(ok, bool):
            raise BadFrame("ack without a true/false ok")
        return seq, ok

    # -- commands ---------------------------------------------------------------------------
    def write(self, point: str, value: Any, *, lane: int = 1, timeout_s: float | None = None) -> None:
        """Open or close the barrier of ``lane`` and wait for the controller's ack.

        ValueError for a point, value or lane the gate does not take; DeviceFault when the
        controller refuses (its ``err`` code when it is a short ``[a-z_]`` word, else
        ``refused``); NoResponse when no ack comes within the device's timeout (default: the
        bus's); LinkError when the link is down. Lines that arrive meanwhile are handled as
        in a poll, and the next poll reports them."""
        if point != "barrier":
            raise ValueError(f"{self.name}: only 'barrier' is writable on a gate controller")
        if value not in OPS:
            raise ValueError(f"{self.name}: barrier takes 'open' or 'close'")
        if lane_of(lane) is None:
            raise ValueError(f"{self.name}: lane must be an integer 0..{MAX_LANE}")
        timeout = timeout_s if timeout_s is not None else self._timeout()
        with self._writing(), self.link.lock:
            self.seq = self.seq % MAX_SEQ + 1
            seq = self.seq
            self.link.send(encode_command(seq, value, lane))
            self._await_ack(seq, f"{value} lane {lane}", timeout)

    def _timeout(self) -> float:
        own = getattr(self.device, "timeout_s", None)
        return own if own is not None else getattr(getattr(self.link, "settings", None), "timeout_s", 1.0)

    @contextmanager
    def _writing(self) -> Iterator[None]:
        with self._pending_lock:
            self._writers += 1  # poll() sees it and leaves the link alone
        try:
            yield
        finally:
            with self._pending_lock:
                self._writers -= 1

    def _await_ack(self, seq: int, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise NoResponse(f"{self.name}: gate did not acknowledge {what} within {timeout:g}s")
            try:
                line = self.link.read_line(left)
            except LineTooLong:
                self.too_long()
                continue
            if line is None:
                continue
            if self._is_our_ack(line, seq, what):
                return

    def _is_our_ack(self, line: bytes, seq: int, what: str) -> bool:
        """True for the ack to ``seq`` (DeviceFault when it refuses); anything else is handled
        as a poll would handle it."""
        self.lines += 1
        ts = int(self.clock() * 1000)
        try:
            obj = decode_line(line)
            if obj.get("t") == "ack":
                got, ok = self._ack_fields(obj)
                self.good()
                if got == seq and not ok:
                    err = obj.get("err")
                    code = err if isinstance(err, str) and _ERROR_CODE.fullmatch(err) else "refused"
                    raise DeviceFault(code, f"{self.name}: gate refused {what}: {code}")
                return got == seq
        except BadFrame as exc:
            self.bad(str(exc))
            return False
        self.take_object(obj, ts)
        return False


def reader(device: Any, link: Any, clock: Callable[[], float] = time.time) -> GateReader:
    return GateReader(device, link, clock)


DRIVER = Driver(id="gate_controller", protocol="json-lines", reader=reader, streaming=True,
                outputs=(Output("barrier"),), writable=("barrier",),
                summary="gate controller (reference JSON-line protocol): passages, barrier state, open/close")
