"""The files beside the buffer database: the id floor, the writer lock, and quarantine.

Ids (contract section 4: unique, strictly increasing, never reused, even after a rebuilt or
quarantined buffer) come from a floor kept outside the database: the sidecar ``<db>.ids``
holds a reserved ceiling, every id handed out is below it, and it is raised a block at a time,
written atomically (tmp, fsync, rename, fsync dir) *before* any id above the old ceiling is
used. A database that is deleted, lost to a power cut or moved aside as corrupt cannot bring
its ids back, since the sidecar was fsynced first. A clean close lowers the ceiling to the
next id, so a clean restart continues without a gap.

After an unclean end the question is whether committed rows can have been lost. A process
crash (kill -9, OOM) loses none: SQLite's WAL is in the page cache, so the database's own
next id is exact and the restart continues without a gap. A power cut can lose the last
commits (synchronous=NORMAL), rows that may already have been published; then the unused
rest of the block is skipped, so none of their ids can return. The sidecar records the
kernel's boot id beside the ceiling: the same boot id means the machine did not restart and
the database is trusted; another (or none) means a reboot happened in between, and the
ceiling is used. The platform sees a gap in the ids exactly when data may have been lost.

The agent keeps a second copy of the sidecar outside the buffer's own names,
``{state_dir}/id-floor`` (``copy_path``): ``rm buffer.db*`` or a ``buffer.path`` moved to a new
file must not bring ids back either. Both are written alike; the higher ceiling counts. Only a
wiped state directory (which takes the pseudonym key with it: a new gateway) starts again at 1.

Only one process may write a buffer: ``acquire`` takes an exclusive ``flock`` on
``<db>.lock`` (released when the descriptor closes, so also when the process dies).

A database found corrupt is moved aside with ``move_aside``: the file and its -wal and -shm
become ``<db>.corrupt-<stamp>`` (``.N`` appended when taken) and the same name plus
``-wal``/``-shm``. Nothing there is ever overwritten or deleted by the agent. Because SQLite
deletes a WAL when it closes even a file it cannot read, ``open`` first hard-links the
journals (``keep_journals``), and drops the links once the database proved sound.

No SQLite here: ``buffer.py`` feeds in what the database remembers (``load``) and stores the
ceiling in its ``meta`` table as a second copy.
"""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path

__all__ = ["IdFloor", "ID_FLOOR_COPY", "boot_id", "drop_kept", "fsync_dir", "keep_journals", "move_aside"]

log = logging.getLogger(__name__)

ID_FLOOR_COPY = "id-floor"  # in state_dir: the agent's second copy of the sidecar


class IdFloor:
    """Next id, reserved ceiling, sidecar and lock for the database at ``db_path``.

    Not thread-safe on its own: the buffer calls it under its lock.
    """

    def __init__(self, db_path: Path, block: int = 10_000, copy_path: Path | None = None) -> None:
        self.ids_path = Path(f"{db_path}.ids")
        self.copy_path = Path(copy_path) if copy_path is not None and Path(copy_path) != self.ids_path else None
        self.lock_path = Path(f"{db_path}.lock")
        self.block = max(1, block)
        self.next_id = 1
        self.ceiling = 1  # ids below this are covered by the sidecar
        self.sidecar_boot = ""  # the boot id the sidecar was last written under
        self.own_value = self.copy_value = 0  # each file's ceiling as last read
        self._fd: int | None = None

    # -- the writer lock ---------------------------------------------------------------------
    def acquire(self) -> None:
        """Take the lock; BlockingIOError when another process holds it, OSError otherwise."""
        if self._fd is not None:
            return
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    # -- ids ---------------------------------------------------------------------------------
    def load(self, *floors: int, ceiling_copy: int = 0, trust_floors: bool = False) -> int:
        """Set the next id above every floor given and, unless the floors are trusted, the
        sidecar's ceiling; returns it.

        ``trust_floors``: the database is intact and complete (it closed cleanly, or ended in
        this same boot), so its own next id is exact and the rest of the block is used on.
        Otherwise what is left of the old block is skipped, not reused; ``ceiling_copy`` (the
        database's copy of the ceiling) stands in for a lost sidecar.
        """
        sidecar = self.read()
        if trust_floors and self.sidecar_boot == boot_id():
            # Both files are written together; a copy above this file's own sidecar was raised by
            # another buffer file (buffer.path changed and back): its ids are taken, start above them.
            foreign = self.copy_value if self.copy_value > self.own_value else 0
            self.next_id = max(1, self.next_id, *floors, foreign)
            self.ceiling = max(self.next_id, sidecar)  # that block is already reserved
        else:
            self.next_id = max(1, self.next_id, *floors, sidecar, ceiling_copy)
            self.ceiling = self.next_id
        return self.next_id

    def reserve(self, end: int) -> int | None:
        """Make ids below ``end`` usable: raise the sidecar a block past it when needed.

        Returns the new ceiling when the sidecar was written (the caller records it in
        ``meta``), None when the current block covers ``end``. OSError leaves state unchanged.
        """
        if end <= self.ceiling:
            return None
        reserved = end + self.block
        self.write(reserved)
        self.ceiling = reserved
        return reserved

    def lower(self) -> None:
        """At a clean close: the ceiling becomes the next id, so a restart leaves no gap."""
        self.write(self.next_id)

    @property
    def max_id(self) -> int:
        """Every id assigned so far is <= this, every later one > it; 0 before the first."""
        return self.next_id - 1

    # -- the sidecar -------------------------------------------------------------------------
    def read(self) -> int:
        """The higher ceiling of the sidecar and its copy (``sidecar_boot``: that file's boot id);
        0 when both are absent. An unreadable file is logged, not fatal."""
        best, self.sidecar_boot = 0, ""
        self.own_value = self.copy_value = 0
        for path in (self.ids_path, self.copy_path):
            if path is not None:
                value, boot = _read_floor(path)
                if path == self.ids_path:
                    self.own_value = value
                else:
                    self.copy_value = value
                if value > best:
                    best, self.sidecar_boot = value, boot
        return best

    def write(self, value: int) -> None:
        """Replace the sidecar and its copy, each atomically and durably."""
        for path in (self.ids_path, self.copy_path):
            if path is not None:
                _write_floor(path, value)


def _read_floor(path: Path) -> tuple[int, str]:
    """(ceiling, boot id) from one floor file; (0, "") when absent or unreadable (logged)."""
    try:
        fields = path.read_text(encoding="ascii").split()
        return int(fields[0]), (fields[1] if len(fields) > 1 else "")
    except FileNotFoundError:
        return 0, ""
    except (OSError, ValueError, IndexError) as exc:
        log.error("%s: unreadable id floor (%s); ids continue from the other copies", path, exc)
        return 0, ""


def _write_floor(path: Path, value: int) -> None:
    """tmp, fsync, rename, fsync the directory."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, f"{value} {boot_id()}\n".encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def boot_id() -> str:
    """The kernel's id of this boot; changes at every restart of the machine ("" if unknown,
    which is never trusted)."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
    except OSError:
        return ""


def fsync_dir(path: Path) -> None:
    """Make renames in ``path`` durable."""
    dfd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def keep_journals(db_path: Path) -> None:
    """Hard-link the -wal and -shm to ``<db>.keep-wal``/``-shm`` before SQLite opens the file.

    SQLite deletes them when it closes a connection, even to a file it found not to be a
    database; the links keep them (and the newest committed rows in the WAL) for ``move_aside``.
    A link left by a crash is put back when the journal itself is gone, else dropped.
    """
    for suffix in ("-wal", "-shm"):
        live, kept = f"{db_path}{suffix}", f"{db_path}.keep{suffix}"
        if os.path.lexists(kept):
            if os.path.lexists(live):
                os.unlink(kept)
            else:
                os.rename(kept, live)
        if os.path.lexists(live):
            try:
                os.link(live, kept)
            except OSError as exc:  # no hard links here (vfat): SQLite's own handling only
                log.debug("%s: cannot link %s aside: %s", db_path, suffix, exc)


def drop_kept(db_path: Path) -> None:
    """The database opened sound: forget the links ``keep_journals`` made."""
    for suffix in ("-wal", "-shm"):
        try:
            os.unlink(f"{db_path}.keep{suffix}")
        except FileNotFoundError:
            pass


def move_aside(db_path: Path, stamp: str) -> str:
    """Rename the database and its -wal/-shm to an unused ``<db>.corrupt-<stamp>[.N]``; the name.

    The journals go first (the copies ``keep_journals`` linked, if any), so that no WAL can be
    paired with a fresh database. OSError, the caller's to report, leaves the rest in place.
    """
    base, n = f"{db_path}.corrupt-{stamp}", 0
    while any(os.path.lexists(base + s) for s in ("", "-wal", "-shm", ".later-wal", ".later-shm")):
        n += 1
        base = f"{db_path}.corrupt-{stamp}.{n}"
    for suffix in ("-wal", "-shm"):
        live, kept = f"{db_path}{suffix}", f"{db_path}.keep{suffix}"
        if os.path.lexists(kept):
            _rename_no_clobber(kept, base + suffix)
            if os.path.lexists(live):
                if os.path.samefile(live, base + suffix):
                    os.unlink(live)  # a second name of the file just moved
                else:
                    _rename_no_clobber(live, f"{base}.later{suffix}")
        elif os.path.lexists(live):
            _rename_no_clobber(live, base + suffix)
    if os.path.lexists(db_path):
        _rename_no_clobber(str(db_path), base)
    fsync_dir(Path(db_path).parent)
    return base


def _rename_no_clobber(src: str, dst: str) -> None:
    """Rename without ever replacing ``dst``: link + unlink, or a checked rename where links fail."""
    try:
        os.link(src, dst)
    except FileExistsError:
        raise
    except OSError:  # a file system without hard links (vfat)
        if os.path.lexists(dst):
            raise FileExistsError(dst) from None
        os.rename(src, dst)
        return
    os.unlink(src)
