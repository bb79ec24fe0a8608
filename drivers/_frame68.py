"""The frame skeleton DL/T 645 and CJ/T 188 share: a pure helper for both codecs, no I/O.

Both are members of one family of serial meter frames::

    [FE ...] 68 <header> L DATA(L bytes) CS 16

- FE: wake-up bytes before the frame, skipped by the decoders (any number); encoders send 0..4.
- 68 starts the frame (DL/T 645 has a second 68 after the address); L, the length of DATA, is
  the last header byte; CS is the sum of the bytes from the first 68 to the end of DATA, mod 256;
  16 ends the frame.
- Numbers and addresses are BCD, least significant byte first; ``AA`` address bytes are wildcards.

What differs (header layout, address size, DATA scrambling, replies) stays in the codecs, which
pass their layout to ``split_frame`` and ``frame_length_needed``.

The failure reasons they share are one exception tree, defined here and re-exported by each
codec; a codec derives its own reasons (``MeterError``, ...) from ``FrameError``. The leading
underscore keeps ``edge_agent.field.registry`` from loading this module as a device family.
"""

from __future__ import annotations


__all__ = [
    "WAKE", "START", "END", "FrameError", "ShortFrame", "BadStartOrEnd", "BadLength", "BadChecksum",
    "BadBCD", "WrongAddress", "WrongControl", "WrongDI",
    "skip_wake", "checksum", "wake_bytes", "seal", "split_frame", "frame_length_needed",
    "decode_bcd", "encode_bcd", "address_bytes", "address_text", "address_matches",
]

WAKE, START, END = 0xFE, 0x68, 0x16


# -- errors ------------------------------------------------------------------------------------

class FrameError(ValueError):
    """A frame or reply that cannot be trusted; the subclass names the reason."""


class ShortFrame(FrameError):
    """Fewer bytes than the header or L says."""


class BadStartOrEnd(FrameError):
    """No 68 where a start byte belongs, or no 16 at the end."""


class BadLength(FrameError):
    """Bytes after the end byte, or a field of the wrong size."""


class BadChecksum(FrameError):
    """CS does not match."""


class BadBCD(FrameError):
    """A nibble > 9 in a BCD value or address."""


class WrongAddress(FrameError):
    """The reply comes from another meter."""


class WrongControl(FrameError):
    """Not the reply we asked for (e.g. our own request echoed on the RS-485 line)."""


class WrongDI(FrameError):
    """The reply carries another DI than the request."""


# -- framing -----------------------------------------------------------------------------------

def skip_wake(data: bytes) -> int:
    """How many wake-up bytes (FE) ``data`` starts with."""
    i = 0
    while i < len(data) and data[i] == WAKE:
        i += 1
    return i


def checksum(data: bytes) -> int:
    """CS: the sum of the bytes, mod 256."""
    return sum(data) & 0xFF


def wake_bytes(wake: int) -> bytes:
    """The ``wake`` FE bytes an encoder sends before a frame (0 to 4)."""
    if not 0 <= wake <= 4:
        raise ValueError(f"wake {wake}: 0 to 4 FE bytes")
    return bytes([WAKE]) * wake


def seal(body: bytes) -> bytes:
    """A frame from its bytes from the first 68 to the end of DATA: ``body`` CS 16."""
    return body + bytes([checksum(body), END])


def _check_starts(frame: bytes, offset: int, second_start_at: int | None) -> None:
    """Raise BadStartOrEnd if the bytes there are so far cannot start a frame. ``frame`` starts
    after the wake-up bytes, which were ``offset`` bytes."""
    if frame and frame[0] != START:
        raise BadStartOrEnd(f"expected start byte 68 at offset {offset}, got {frame[0]:02X}")
    if second_start_at is not None and len(frame) > second_start_at and frame[second_start_at] != START:
        raise BadStartOrEnd(f"expected second start byte 68 at offset {offset + second_start_at}, "
                                   f"got {frame[second_start_at]:02X}")


def split_frame(data: bytes, *, header_len: int, length_at: int, second_start_at: int | None = None) -> bytes:
    """The frame in ``data``, from its first 68 to its end byte 16, wake-up bytes skipped, after
    checking the start byte(s), the length, the end byte and the checksum.

    ``header_len``: bytes from the first 68 to L included; ``length_at``: the offset of L from
    the first 68; ``second_start_at``: the offset of a second 68, if the layout has one.
    """
    data = bytes(data)
    i = skip_wake(data)
    frame = data[i:]
    if not frame:
        raise ShortFrame(f"no frame: {len(data)} bytes, all wake-up (FE)")
    _check_starts(frame, i, second_start_at)
    if len(frame) < header_len + 2:
        raise ShortFrame(f"{len(frame)} bytes; the shortest frame has {header_len + 2}")
    need = header_len + frame[length_at] + 2
    if len(frame) < need:
        raise ShortFrame(f"L={frame[length_at]} needs {need} bytes, got {len(frame)}")
    if len(frame) > need:
        raise BadLength(f"{len(frame) - need} bytes after the end of a frame with L={frame[length_at]}")
    if frame[-1] != END:
        raise BadStartOrEnd(f"expected end byte 16, got {frame[-1]:02X}")
    cs = checksum(frame[:-2])
    if cs != frame[-2]:
        raise BadChecksum(f"checksum {frame[-2]:02X}, computed {cs:02X}")
    return frame


def frame_length_needed(buffer: bytes, *, header_len: int, length_at: int,
                        second_start_at: int | None = None) -> int | None:
    """Total bytes (wake-up bytes included) the frame at the start of ``buffer`` needs, or None
    while its header is incomplete; the layout arguments are those of ``split_frame``. Raises
    BadStartOrEnd as soon as the buffer cannot be the start of a frame."""
    i = skip_wake(buffer)
    _check_starts(buffer[i:], i, second_start_at)
    if len(buffer) - i < header_len:
        return None
    return i + header_len + buffer[i + length_at] + 2


# -- BCD ---------------------------------------------------------------------------------------

def decode_bcd(raw: bytes, what: str, *, signed: bool = False) -> int:
    """The number in BCD bytes ``raw``, least significant byte first. ``signed``: the top bit of
    the most significant (last) byte is a minus sign. Raises BadBCD naming ``what``."""
    digits = bytearray(raw[::-1])
    negative = signed and bool(digits and digits[0] & 0x80)
    if signed and digits:
        digits[0] &= 0x7F
    text = digits.hex()
    if not text.isdigit():
        raise BadBCD(f"{what}: {bytes(raw).hex(' ').upper()} is not BCD")
    return -int(text) if negative else int(text)


def encode_bcd(n: int, size: int) -> bytes:
    """``n`` as ``size`` BCD bytes, least significant first; a negative ``n`` sets the top bit of
    the most significant byte. The caller checks that ``n`` fits."""
    raw = bytearray.fromhex(f"{abs(n):0{2 * size}d}")
    if n < 0:
        raw[0] |= 0x80
    return bytes(raw[::-1])


def address_bytes(address: str, digits: int) -> bytes:
    """A meter address (``digits`` digits, most significant first; ``AA`` pairs are wildcards,
    shorter digit strings are zero-padded) as it is sent: least significant byte first."""
    text = str(address).strip().upper()
    if text.isdigit() and len(text) < digits:
        text = text.zfill(digits)
    pairs = [text[i:i + 2] for i in range(0, len(text), 2)]
    if len(text) != digits or not all(p.isdigit() or p == "AA" for p in pairs):
        raise ValueError(f"address {address!r}: expected {digits} digits (AA for a wildcard byte)")
    return bytes.fromhex(text)[::-1]


def address_text(raw: bytes) -> str:
    """The address text (hex, most significant first) of address bytes as sent."""
    return raw[::-1].hex().upper()


def address_matches(want: str, got: str) -> bool:
    """Whether address text ``got`` answers ``want`` (normalised text), whose AA pairs match anything."""
    return all(want[i:i + 2] in ("AA", got[i:i + 2]) for i in range(0, len(want), 2))
