"""Sparkplug's ``bdSeq``, kept across restarts (``sparkplug.py`` is the dialect).

The NDEATH that the broker holds as our Last Will and the NBIRTH of the same connection carry one
bdSeq (0-255); the next connection, and the next process, must use another, or a host would take
the old session's late NDEATH (the broker sends it up to 1.5 x keepalive after a kill -9) for the
end of the new one. So the number is allocated from the file (the last one used, plus one) by the
first ``current()``, moved on by ``advance()`` after each disconnect, and each new value is on
disk (temporary file, fsync, rename, fsync of the directory) before the will that carries it is
handed to paho. After a clean stop one value may be skipped: hosts match NBIRTH and NDEATH, they
do not count. A file that cannot be written is logged at ERROR and the number kept in memory.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

__all__ = ["BdSeq"]

log = logging.getLogger("edge_agent.uplink")


class BdSeq:
    """Not thread-safe: the dialect calls it under its own lock."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._value: int | None = None

    def current(self) -> int:
        if self._value is None:
            try:
                last = int(self.path.read_text().strip())
            except (OSError, ValueError):
                last = -1  # none yet (or unreadable): this connection is bdSeq 0
            self._set((last + 1) % 256)
        assert self._value is not None
        return self._value

    def advance(self) -> None:
        """The connection ended: the next will gets the next number (only once one was used)."""
        if self._value is not None:
            self._set((self._value + 1) % 256)

    def _set(self, value: int) -> None:
        self._value = value
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "w", encoding="ascii") as f:
                f.write(f"{value}\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            log.error("sparkplug: bdSeq %d could not be kept in %s (%s): after a restart a host may take "
                      "an old NDEATH for the new session", value, self.path, exc)
