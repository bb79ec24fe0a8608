"""A virtual null-modem cable: two pseudo-terminals whose bytes are copied across.

A single pty has a path on one side only; a serial client and a simulated device each want a
path to open, as they would ``/dev/ttyUSB0``. Like ``socat pty,raw pty,raw`` this bridges two
ptys. Optionally it paces each byte at a baud rate, because a pty ignores baud and a bench of
bus timing would otherwise measure nothing real.
"""

from __future__ import annotations

import os
import pty
import select
import threading
import time
import tty

__all__ = ["PtyPair"]


def _raw_pty() -> tuple[int, int, str]:
    """A raw pty whose slave side we keep open, so the master never sees EIO when the user
    closes and reopens the path (a real cable does not vanish either)."""
    master, slave = pty.openpty()
    tty.setraw(slave)
    os.set_blocking(master, False)
    return master, slave, os.ttyname(slave)


class PtyPair:
    """``a`` and ``b`` are device paths; what is written to one is read from the other.

    ``bits_per_byte`` is 10 for 8N1 and 11 for 8E1; with ``baud`` set, each direction is
    delayed as a real line would be.
    """

    def __init__(self, baud: int | None = None, bits_per_byte: int = 10) -> None:
        self._ma, self._sa, self.a = _raw_pty()
        self._mb, self._sb, self.b = _raw_pty()
        self._byte_time = bits_per_byte / baud if baud else 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._pump, name="ptypair", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        pairs = {self._ma: self._mb, self._mb: self._ma}
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select(list(pairs), [], [], 0.05)
            except (OSError, ValueError):
                return
            for src in ready:
                try:
                    data = os.read(src, 4096)
                except (BlockingIOError, InterruptedError):
                    continue
                if self._byte_time:
                    time.sleep(len(data) * self._byte_time)
                try:
                    os.write(pairs[src], data)
                except BlockingIOError:
                    pass  # nobody reads that side: the bytes fall on the floor, as on a real line
                except OSError:
                    return

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1)
        for fd in (self._ma, self._mb, self._sa, self._sb):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> "PtyPair":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
