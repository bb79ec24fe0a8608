"""The streaming JSON-line reader both reference line-protocol drivers share.

``wearables_hub`` and ``gate_controller`` speak one UTF-8 JSON object per ``\\n``-terminated
line (CONTRACT section 7). What they have in common lives here: ``JsonLineReader``'s poll loop
(waiting up to ``WAIT_S`` for lines, returning at once after something urgent), bad-frame
counting (named by line number and reason, never by content), bounded lines (``MAX_LINE``) and
batches, and the lines a write reads while it waits for its ack, kept for the next ``poll()``;
plus ``decode_line``, ``number`` and ``clock_ms``. The leading underscore keeps
``edge_agent.field.registry`` from loading this module as a device family.

What a poll of a talking device means for its health (the bus worker's view):

- a bad frame is not a failed poll: it is counted (``bad_frames``) and named in
  ``bad_frame_notes``, never in ``errors``, so a hub that garbles one line in fifty stays online;
- silence is not a failed poll either (a quiet gate at night is not offline; a ``stale_after``
  alarm says when vitals stop);
- the poll fails (``answered`` False, one error) when the link fails, or when the device talks
  but says nothing usable: bad frames arrived within the last device ``interval`` and no good
  one did (a wrong baud rate, a protocol variant). Good frames arriving again end it at once.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any, Callable, Iterable

from edge_agent.errors import LineTooLong, LinkError
from edge_agent.model import MAX_LINE, Event, PollResult, Reading
from edge_agent.units import format_duration

__all__ = ["JsonLineReader", "BadFrame", "decode_line", "number", "clock_ms",
           "WAIT_S", "SLICE_S", "MAX_LINES_PER_POLL", "MAX_NOTES_PER_POLL"]

WAIT_S = 0.5  # how long one poll waits for lines; the bus worker calls poll() again at once
SLICE_S = 0.1  # the link is held at most this long per read, so a write gets its turn quickly
MAX_LINES_PER_POLL = 500  # a flooding device still hands its lines on in bounded batches
MAX_NOTES_PER_POLL = 5  # bad lines named one by one in a poll's bad_frame_notes; the rest are counted
DEFAULT_WINDOW_S = 10.0  # "nothing usable lately" without a device interval (the drivers' default)
_MS_THRESHOLD = 1e11  # a device clock above this is in ms already (1e11 s is the year 5138)
_MAX_NUMBER = 2**53


class BadFrame(ValueError):
    """A line that cannot be used; the message is the reason, never the line's content."""


def _reject_constant(name: str) -> Any:
    raise ValueError("NaN and Infinity are not JSON")


def decode_line(line: bytes) -> dict[str, Any]:
    """The JSON object on ``line``; BadFrame saying why there is none."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise BadFrame("not UTF-8") from None
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):  # RecursionError: brackets nested past Python's limit
        raise BadFrame("not JSON") from None
    if not isinstance(obj, dict):
        raise BadFrame("not a JSON object")
    return obj


def number(value: Any) -> int | float | None:
    """``value`` if it is a JSON number (not a bool) that every JSON reader holds exactly (below
    2^53 in size: a 4000-digit integer is garbage, not a measurement), else None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) < _MAX_NUMBER:
        return value
    return None


def clock_ms(value: Any) -> int | None:
    """A device clock (seconds, or ms when implausibly large for seconds) as integer ms; None
    when it is not a number."""
    n = number(value)
    if n is None:
        return None
    return int(n) if abs(n) > _MS_THRESHOLD else int(round(n * 1000))


class JsonLineReader:
    """Reads a JSON-line device that talks unprompted; subclasses say what a line means.

    ``handle(obj, ts_ms)`` turns one decoded object into readings and events (``add``), raises
    BadFrame for an unusable one, and returns True when what it found is urgent (an SOS): the
    poll then returns at once rather than waiting out its ``WAIT_S``.

    Everything read goes into one pending result, under its own lock, whoever read it: a write
    waiting for its ack on another thread files the passages it reads there, and the next
    ``poll()`` hands them on. ``answered`` is False when the link failed, or when only bad
    frames came for the device's ``interval`` (``window_s``; the module's docstring says why):
    a quiet device is not an offline one (staleness is configured with alarms).
    """

    def __init__(self, device: Any, link: Any, clock: Callable[[], float] = time.time) -> None:
        self.device, self.link, self.clock = device, link, clock
        self.name: str = device.name
        self.window_s: float = getattr(device, "interval_s", None) or DEFAULT_WINDOW_S
        self.lines = 0  # lines received since start: bad ones are named by this number
        self._pending = PollResult(answered=True)
        self._pending_lock = threading.Lock()
        self._writers = 0  # writes in progress: poll steps aside so they get the link at once
        self._good_at = time.monotonic()  # the last good frame; from the start, a window's grace
        self._bad_at: float | None = None  # the last bad frame

    # -- what subclasses call --------------------------------------------------------------
    def handle(self, obj: dict[str, Any], ts_ms: int) -> bool:
        raise NotImplementedError

    def add(self, readings: Iterable[Reading] = (), events: Iterable[Event] = ()) -> None:
        with self._pending_lock:
            self._pending.readings.extend(readings)
            self._pending.events.extend(events)

    def bad(self, reason: str) -> None:
        """Count a bad frame; the first few of a poll are named by line number and reason."""
        with self._pending_lock:
            self._bad_at = time.monotonic()
            self._pending.bad_frames += 1
            if self._pending.bad_frames <= MAX_NOTES_PER_POLL:
                self._pending.bad_frame_notes.append(f"line {self.lines}: {reason}")

    def good(self) -> None:
        """A frame that could be used (a reading, an event, an ack): the device talks sense."""
        self._good_at = time.monotonic()

    def take(self, line: bytes) -> bool:
        """Decode and handle one line; True when it was urgent. A line past the protocol's limit
        is refused here too, whatever link delivered it."""
        if len(line) > MAX_LINE:
            self.too_long()
            return False
        self.lines += 1
        ts = int(self.clock() * 1000)
        try:
            return self.take_object(decode_line(line), ts)
        except BadFrame as exc:
            self.bad(str(exc))
            return False

    def take_object(self, obj: dict[str, Any], ts_ms: int) -> bool:
        try:
            urgent = bool(self.handle(obj, ts_ms))
        except BadFrame as exc:
            self.bad(str(exc))
            return False
        self.good()
        return urgent

    def too_long(self) -> None:
        self.lines += 1
        self.bad(f"longer than {MAX_LINE} bytes")

    # -- the streaming poll ----------------------------------------------------------------
    def poll(self) -> PollResult:
        """Up to ``WAIT_S`` of lines (less after something urgent); never raises for the device."""
        deadline = time.monotonic() + WAIT_S
        taken = 0
        while taken < MAX_LINES_PER_POLL:
            left = deadline - time.monotonic()
            if self._writers:  # a write holds or wants the link: let it have it
                if left <= 0:
                    break
                time.sleep(min(left, 0.01))
                continue
            try:
                line, urgent = self._read_one(max(0.0, min(left, SLICE_S)))
            except LinkError as exc:
                self._link_failed(exc, deadline)
                break
            if line is None:
                if left <= 0:
                    break
                continue
            taken += 1
            if urgent:
                break
        return self.collect()

    def _read_one(self, wait_s: float) -> tuple[bytes | None, bool]:
        """One line read and handled under the link's lock (a write does the same, so lines are
        handled one at a time whichever thread reads them): (the line, None on timeout or b""
        for an over-long line already counted; whether it was urgent)."""
        with self.link.lock:
            try:
                line = self.link.read_line(wait_s)
            except LineTooLong:
                self.too_long()
                return b"", False
            return line, line is not None and self.take(line)

    def _link_failed(self, exc: LinkError, deadline: float) -> None:
        with self._pending_lock:
            self._pending.answered = False
            self._pending.errors.append(f"{self.name}: {exc}")
        left = deadline - time.monotonic()
        if left > 0:  # the worker calls again at once: do not spin on a dead port
            time.sleep(left)

    def collect(self) -> PollResult:
        """What was read since the last poll (by any thread), handed over once; not answered
        when the link failed or nothing but bad frames came for ``window_s``."""
        with self._pending_lock:
            result, self._pending = self._pending, PollResult(answered=True)
            now, bad_at, good_at = time.monotonic(), self._bad_at, self._good_at
        if result.answered and bad_at is not None and now - bad_at <= self.window_s < now - good_at:
            result.answered = False
            result.errors.append(f"{self.name}: nothing usable for {format_duration(self.window_s)}, only bad "
                                 "frames (a wrong baud rate, or a protocol variant this driver does not speak?)")
        return result
