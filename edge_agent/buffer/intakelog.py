"""The intake log: what a poll returned survives kill -9 before the group commit stores it.

Why: the buffer writer gathers items for up to ``buffer.commit_interval`` before one transaction
stores them (``writer.py``; a transaction per poll costs ~10x the bytes and CPU). Until then an
item lived only in the process's memory: a kill -9 lost whatever had arrived since the last
commit, read but never given an id, so the platform could not even see the loss. Now ``put``
first writes the poll's batch here, then queues it. One ``os.write()`` per batch: when it
returns the bytes are in the kernel's page cache, which a killed process does not take with it.
The next start replays the log into the buffer before anything else (``BufferWriter.start``).

What is written: the rows ``outbox.encode_items`` made, i.e. the items *after* the privacy stage
(pseudonyms, masks, seals; dropped values absent), exactly what the buffer will store. Never a
raw personal value.

Files: ``<db>.intake-0`` and ``<db>.intake-1`` beside the database (the buffer's lock covers
them), written in turn. After each group commit every file whose entries are all committed is
truncated to zero, and appending moves to the other file once it is empty, so each file is
truncated within two commits, however steady the inflow. Truncating a file whose pages the
kernel has not yet written back drops them unwritten (``cancelled_write_bytes`` in
/proc/PID/io): with ``commit_interval`` well under the kernel's writeback age
(``vm.dirty_expire_centisecs``, 30 s by default) the log costs the flash card ~no bytes.

Entry: ``magic (2) | length (u32) | crc32 (u32) || seq (u64) | count (u32) | rows``; the CRC and
the length cover everything after the header; ``seq`` numbers the entry's first row, the next
rows follow on (a row's seq is ``seq + i``). The buffer keeps the seq of the last row committed
in the commit's own transaction (``Buffer.intake_seq``), so a replay after a crash skips every
row that was committed, exactly, even when a commit took part of an entry (``commit_max``).
Rows are tuples of int, float, str, bytes and None, each field tagged.

Damage: a torn entry (a write cut short, a power cut's zero-filled page) or one whose CRC does
not match ends what is read of that file: a WARNING names the file, the offset and what was
skipped; the file is cut back to its last sound entry (so new entries are readable after it)
and start goes on. An unreadable file is an ERROR and the log is off for the run: start never
stops here.

Durability: no fsync, by design (an fsync per poll would be a flash write per poll). A process
crash loses nothing received; a power cut loses what the kernel had not written back: the log
is truncated before that happens, so effectively everything since the last group commit that
reached the disk (docs/storage.md). ``buffer.intake_log: false`` turns the log off: then the
loss window of a kill -9 is ``commit_interval`` again.

Not thread-safe on its own: the writer calls it under its lock.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

__all__ = ["IntakeLog", "Found", "encode_rows", "decode_rows", "MAX_ENTRY", "log_paths"]

log = logging.getLogger("edge_agent.buffer")  # one logger for the whole buffer

MAGIC = b"\xe1\x6c"
_HEAD = struct.Struct("<2sII")  # magic, length of what follows, crc32 of what follows
_SEQ = struct.Struct("<QI")  # first row's seq, row count
MAX_ENTRY = 256 * 1024**2  # a length above this is damage, not an entry
_Q = struct.Struct("<q")
_D = struct.Struct("<d")
_L = struct.Struct("<I")


def log_paths(db_path: Path | str) -> tuple[Path, Path]:
    """The two files of the intake log of the buffer at ``db_path``."""
    return Path(f"{db_path}.intake-0"), Path(f"{db_path}.intake-1")


# -- rows <-> bytes ------------------------------------------------------------------------
def _encode_field(value: Any, out: list[bytes]) -> None:
    if value is None:
        out.append(b"n")
    elif isinstance(value, bool):  # before int: bool is an int
        out.append(b"t" if value else b"f")
    elif isinstance(value, int):
        out.append(b"q" + _Q.pack(value))
    elif isinstance(value, str):
        data = value.encode("utf-8")
        out.append(b"s" + _L.pack(len(data)) + data)
    elif isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        out.append(b"b" + _L.pack(len(data)) + data)
    elif isinstance(value, float):
        out.append(b"d" + _D.pack(value))
    else:
        raise TypeError(f"the intake log stores int, float, str, bytes or None, not {type(value).__name__}")


def encode_rows(rows: Sequence[Sequence[Any]]) -> bytes:
    """Rows (tuples of int, float, str, bytes, None) as the bytes of one entry's payload."""
    out: list[bytes] = []
    for row in rows:
        if len(row) > 255:
            raise TypeError("an intake log row has at most 255 fields")
        out.append(bytes((len(row),)))
        for value in row:
            _encode_field(value, out)
    return b"".join(out)


def decode_rows(data: bytes | memoryview, count: int) -> list[tuple]:
    """``count`` rows back from ``encode_rows``' bytes; ValueError when they do not parse exactly."""
    view = memoryview(data)
    rows: list[tuple] = []
    pos = 0
    try:
        for _ in range(count):
            n = view[pos]
            pos += 1
            fields: list[Any] = []
            for _ in range(n):
                tag = view[pos:pos + 1].tobytes()
                pos += 1
                if tag == b"q":
                    fields.append(_Q.unpack_from(view, pos)[0])
                    pos += 8
                elif tag == b"s" or tag == b"b":
                    size = _L.unpack_from(view, pos)[0]
                    pos += 4
                    if pos + size > len(view):
                        raise ValueError("a field runs past the entry")
                    raw = view[pos:pos + size].tobytes()
                    fields.append(raw.decode("utf-8") if tag == b"s" else raw)
                    pos += size
                elif tag == b"n":
                    fields.append(None)
                elif tag == b"t" or tag == b"f":
                    fields.append(tag == b"t")
                elif tag == b"d":
                    fields.append(_D.unpack_from(view, pos)[0])
                    pos += 8
                else:
                    raise ValueError(f"unknown field tag {tag!r}")
            rows.append(tuple(fields))
    except (IndexError, struct.error, UnicodeDecodeError) as exc:
        raise ValueError(f"rows do not parse ({exc})") from None
    if pos != len(view):
        raise ValueError(f"{len(view) - pos} bytes after the last row")
    return rows


def entry_bytes(seq: int, rows: Sequence[Sequence[Any]], payload: bytes | None = None) -> bytes:
    """One whole entry (header, seq, count, rows): what one ``os.write`` appends."""
    body = _SEQ.pack(seq, len(rows)) + (encode_rows(rows) if payload is None else payload)
    return _HEAD.pack(MAGIC, len(body), zlib.crc32(body)) + body


# -- reading -------------------------------------------------------------------------------
@dataclass
class Found:
    """What the log files held: rows with their seq, in seq order, and what was skipped."""

    rows: list[tuple[int, tuple]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # one line each, already logged

    @property
    def last_seq(self) -> int:
        return self.rows[-1][0] if self.rows else 0


def _parse(path: Path, data: bytes) -> tuple[list[tuple[int, tuple]], int, str | None]:
    """Sound entries from the start of ``data``: (rows with seqs, sound length, the problem that
    ended the reading or None)."""
    rows: list[tuple[int, tuple]] = []
    view = memoryview(data)
    pos = 0
    while pos < len(data):
        if len(data) - pos < _HEAD.size:
            return rows, pos, f"a torn entry ({len(data) - pos} bytes, shorter than a header)"
        magic, length, crc = _HEAD.unpack_from(view, pos)
        if magic != MAGIC or length < _SEQ.size or length > MAX_ENTRY:
            return rows, pos, "bytes that are not an entry header (damage, or a torn write's filler)"
        end = pos + _HEAD.size + length
        if end > len(data):
            return rows, pos, f"a torn entry ({len(data) - pos - _HEAD.size} of its {length} bytes written)"
        body = view[pos + _HEAD.size:end]
        if zlib.crc32(body) != crc:
            return rows, pos, "an entry whose checksum does not match (damaged)"
        seq, count = _SEQ.unpack_from(body, 0)
        try:
            decoded = decode_rows(body[_SEQ.size:], count)
        except ValueError as exc:
            return rows, pos, f"an entry whose rows do not parse ({exc})"
        rows.extend((seq + i, row) for i, row in enumerate(decoded))
        pos = end
    return rows, pos, None


class IntakeLog:
    """The two log files of the buffer at ``db_path``. ``open()`` reads them (and cuts off a
    damaged tail), then ``append`` and ``committed``; ``close(remove=True)`` after a clean stop.

    ``enabled=False`` only reads what an earlier run left (``open``) and then removes the files
    once that is committed (``committed``): turning the log off never loses its rows."""

    def __init__(self, db_path: Path | str, *, enabled: bool = True) -> None:
        self.paths = log_paths(db_path)
        self.enabled = enabled
        self._fds: list[int | None] = [None, None]
        self._size = [0, 0]  # bytes in each file
        self._last = [0, 0]  # highest seq in each file (0: none)
        self._active = 0
        self._failing = False  # an append failed; logged once until one succeeds

    @property
    def appending(self) -> bool:
        """Whether ``append`` writes (enabled and the files are open)."""
        return self.enabled and self._fds[self._active] is not None

    def open(self) -> Found:
        """Read both files (rows in seq order; damage logged and cut off) and, when enabled, keep
        them open for appending. Never raises: a file that cannot be read or opened is an ERROR
        and the log is off for this run."""
        found = Found()
        for i, path in enumerate(self.paths):
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                data = b""
            except OSError as exc:
                line = f"intake log {path}: cannot read it ({exc.strerror or exc}); its rows, if any, stay there"
                log.error("%s; the intake log is off for this run (a kill -9 loses up to buffer.commit_interval "
                          "of polls)", line)
                found.problems.append(line)
                self.enabled = False
                continue
            if not data and not self.enabled:
                try:
                    path.unlink(missing_ok=True)  # an empty leftover of a run that had the log on
                except OSError:
                    pass
                continue
            rows, sound, problem = _parse(path, data)
            found.rows.extend(rows)
            self._size[i], self._last[i] = sound, (rows[-1][0] if rows else 0)
            if problem is not None:
                line = (f"intake log {path}: {problem} at byte {sound}; skipped it and the {len(data) - sound} "
                        f"bytes from there (a poll cut off by a crash or power cut; the {len(rows)} rows before "
                        "it are kept)")
                log.warning("%s", line)
                found.problems.append(line)
                self._cut(path, sound)
        found.rows.sort(key=lambda pair: pair[0])
        unique: list[tuple[int, tuple]] = []
        for seq, row in found.rows:
            if not unique or seq != unique[-1][0]:
                unique.append((seq, row))
        found.rows = unique
        if self.enabled:
            self._open_fds()
        self._active = 0 if self._size[0] <= self._size[1] else 1
        return found

    def _cut(self, path: Path, sound: int) -> None:
        try:
            os.truncate(path, sound)
        except OSError as exc:
            log.error("intake log %s: cannot cut off the damaged tail (%s); the log is off for this run", path,
                      exc.strerror or exc)
            self.enabled = False

    def _open_fds(self) -> None:
        try:
            for i, path in enumerate(self.paths):
                self._fds[i] = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            log.error("intake log %s: cannot open it for writing (%s); the log is off for this run (a kill -9 "
                      "loses up to buffer.commit_interval of polls)", path, exc.strerror or exc)
            self._close_fds()
            self.enabled = False

    def append(self, seq: int, rows: Sequence[Sequence[Any]], payload: bytes | None = None) -> bool:
        """Append one entry (rows numbered from ``seq``) with one ``os.write``; ``payload`` is
        ``encode_rows(rows)`` when the caller made it already. False when not written (the log is
        off, or the write failed: logged once until one succeeds; the rows are still queued)."""
        if not rows or not self.appending:
            return False
        data = entry_bytes(seq, rows, payload)
        fd = self._fds[self._active]
        try:
            written = os.write(fd, data)  # type: ignore[arg-type]
            if written != len(data):
                raise OSError(f"short write ({written} of {len(data)} bytes)")
        except OSError as exc:
            if not self._failing:
                log.error("intake log %s: cannot append (%s); until it can, a kill -9 loses up to "
                          "buffer.commit_interval of polls", self.paths[self._active],
                          getattr(exc, "strerror", None) or exc)
            self._failing = True
            self._resync(self._active)
            return False
        if self._failing:
            self._failing = False
            log.info("intake log %s: appending again", self.paths[self._active])
        self._size[self._active] += len(data)
        self._last[self._active] = seq + len(rows) - 1
        return True

    def _resync(self, i: int) -> None:
        """After a failed or short write: cut the file back to its last whole entry."""
        try:
            os.ftruncate(self._fds[i], self._size[i])  # type: ignore[arg-type]
        except OSError:
            pass

    def committed(self, seq: int) -> None:
        """Every row up to ``seq`` is in the buffer: truncate the files that hold nothing newer,
        then append to the other file if this one still holds rows and that one is empty."""
        for i in (0, 1):
            if self._size[i] and self._last[i] <= seq:
                self._truncate(i)
        a = self._active
        if self._size[a] and not self._size[1 - a]:
            self._active = 1 - a

    def _truncate(self, i: int) -> None:
        try:
            if self._fds[i] is not None:
                os.ftruncate(self._fds[i], 0)  # type: ignore[arg-type]
            elif not self.enabled:
                self.paths[i].unlink(missing_ok=True)  # the log is off: its leftovers are committed
            else:
                os.truncate(self.paths[i], 0)
        except OSError as exc:
            log.warning("intake log %s: cannot truncate it (%s); its rows are committed and a restart skips them",
                        self.paths[i], exc.strerror or exc)
            return
        self._size[i] = self._last[i] = 0

    def pending_bytes(self) -> int:
        """Bytes in both files (entries not yet known to be committed, plus those of the last commit)."""
        return sum(self._size)

    def close(self, *, remove: bool = False) -> None:
        """Close the files; ``remove`` (a clean stop, everything committed) deletes them when empty."""
        self._close_fds()
        if remove:
            for i, path in enumerate(self.paths):
                if not self._size[i]:
                    try:
                        path.unlink(missing_ok=True)
                    except OSError:
                        pass

    def _close_fds(self) -> None:
        for i, fd in enumerate(self._fds):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
                self._fds[i] = None
