"""The request/answer loop both 68-frame meter drivers share.

``dlt645_meter`` and ``cjt188_meter`` ask one meter at a time on a shared RS-485 line and look
for its answer in whatever arrives: ``ReplyScanner`` finds our reply among wake-up bytes, noise,
the echo of our own request and other meters' replies, keeping the reason the last frame was
skipped; ``ask`` retries on silence or an unusable answer; ``make_reading`` judges a value's
quality as ``poll.DeviceReader`` does, and ``one_stamp`` gives a round's readings one time, as
it does. Error phrases (``reason_for``, ``attempts_text``) never
carry a value or a frame's bytes. The leading underscore keeps ``edge_agent.field.registry`` from
loading this module as a device family.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Callable

from edge_agent.errors import NoResponse
from edge_agent.model import DataClass, PollResult, Quality, Reading

__all__ = ["ReplyScanner", "ask", "reason_for", "make_reading", "one_stamp", "attempts_text"]

_START, _WAKE = 0x68, 0xFE

_REASONS = {  # failure class name -> what the skipped frame was, without its content
    "BadChecksum": "a frame with a bad checksum",
    "WrongMeterType": "a reply from another meter type",
    "WrongAddress": "a reply from another meter",
    "WrongDI": "a reply for another DI",
    "WrongSequence": "a reply with another sequence number",
    "WrongControl": "a frame that is not a read reply",
    "UnsupportedMeterType": "a reply from a meter type this driver cannot decode",
    "UnknownUnit": "a value in a unit this driver cannot convert",
    "UnknownDI": "a DI this driver has no format for",
    "BadBCD": "a value that is not BCD",
    "FrameError": "a malformed frame",
}


def reason_for(exc: BaseException) -> str:
    """A codec failure as a phrase without values (codec messages may quote the bytes read)."""
    for cls in type(exc).__mro__:
        if cls.__name__ in _REASONS:
            return _REASONS[cls.__name__]
    return "an unusable frame"


class ReplyScanner:
    """``complete`` for ``ByteLink.transact``: finds the reply to our request in the bytes so far.

    Every 68 is a candidate frame start. A candidate that is not a sound frame is noise; a sound
    frame that ``judge`` rejects (the echo of our request, another meter's reply, a stale reply)
    is skipped whole, its reason kept in ``reason`` for the error if our reply never comes.
    ``complete`` returns the end of the first accepted frame (``start`` is its first byte), None
    while a candidate is still arriving, and raises ValueError when nothing can become a reply,
    so the link keeps reading and reports "an unusable answer" at its timeout.
    """

    def __init__(self, needed: Callable[[bytes], int | None], parse: Callable[[bytes], Any],
                 judge: Callable[[bytes, Any], str | None]) -> None:
        self.needed, self.parse, self.judge = needed, parse, judge
        self.start = 0
        self.reason = ""

    def complete(self, buf: bytes) -> int | None:
        waiting = buf.endswith(bytes([_WAKE]))  # wake-up bytes of a frame still to come
        i = buf.find(_START)
        while i >= 0:
            end, parsed = self._frame_at(buf, i)
            if end is None:
                waiting = True
            elif parsed is not None:
                why = self.judge(buf[i:end], parsed)
                if why is None:
                    self.start = i
                    return end
                self.reason = why
                i = buf.find(_START, end)  # a sound frame: nothing inside it starts another
                continue
            i = buf.find(_START, i + 1)
        if waiting:
            return None
        raise ValueError(self.reason or "no frame")

    def _frame_at(self, buf: bytes, i: int) -> tuple[int | None, Any]:
        """(end, parsed frame) of the frame starting at ``i``; (None, None) while it is still
        arriving; (0, None) when the bytes there are noise."""
        try:
            need = self.needed(buf[i:])
        except ValueError:
            return 0, None
        if need is None or len(buf) - i < need:
            return None, None
        try:
            return i + need, self.parse(buf[i:i + need])
        except ValueError as exc:
            if type(exc).__name__ == "BadChecksum":
                self.reason = reason_for(exc)
            return 0, None


def ask(link: Any, build: Callable[[], tuple[bytes, ReplyScanner]], *, device: str,
        timeout_s: float | None, retries: int, result: PollResult) -> bytes:
    """One request, retried on silence or an unusable answer; the bytes of our reply frame.

    ``build`` makes each attempt's request and scanner (an attempt may change a sequence byte).
    Call it under ``link.lock`` when several requests must not be interleaved with another
    device's. Raises the last NoResponse (naming the last frame skipped) or LinkError."""
    attempts = max(0, retries) + 1
    for attempt in range(1, attempts + 1):
        request, scanner = build()
        result.requests += 1
        try:
            raw = link.transact(request, scanner.complete, timeout_s, device=device)
        except NoResponse as exc:
            if attempt < attempts:
                continue
            why = f"; skipped {scanner.reason}" if scanner.reason else ""
            raise NoResponse(f"{exc}{why}") from None
        return raw[scanner.start:]
    raise AssertionError("unreachable")


def make_reading(device: str, name: str, value: Any, ts: int, valid: tuple[float, float] | None,
                 data_class: DataClass = DataClass.TELEMETRY) -> Reading:
    """A reading judged as ``poll.DeviceReader`` does: None/NaN -> None and bad; out of range -> bad, kept."""
    q = Quality.GOOD
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        value, q = None, Quality.BAD
    elif valid is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
        q = Quality.GOOD if valid[0] <= value <= valid[1] else Quality.BAD
    return Reading(dev=device, pt=name, val=value, ts=ts, q=q, data_class=data_class)


def one_stamp(result: PollResult) -> PollResult:
    """Every reading of a round stamped with the time its last answer arrived, as
    ``poll.DeviceReader`` stamps a Modbus round: the round becomes one record, whatever the
    number of frames it took."""
    if result.readings:
        ts = max(r.ts for r in result.readings)
        result.readings[:] = [r if r.ts == ts else replace(r, ts=ts) for r in result.readings]
    return result


def attempts_text(retries: int) -> str:
    tries = max(0, retries) + 1
    return f"{tries} attempt{'s' if tries > 1 else ''}"
