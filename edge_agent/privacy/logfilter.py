"""The last guard on log output: every record is scrubbed before a handler writes it.

The code logs counts, ids, names of devices and points, never values (see ``poll``). This
filter is for the day a bug breaks that rule: a driver that puts a frame in its exception
message, a debug line that prints a reading. Installed on the root logger's handlers by
``cli.setup_logging``, it rewrites each record's message (arguments merged in), exception text
and stack with ``pii_scan.scrub``: resident ID numbers, mobiles and plates become
``<id>``/``<phone>``/``<plate>`` and runs of more than 8 bytes (hex, ``\\x..``, ``b'...'``)
become ``<bytes>``, at every level. It needs no key, so it works before the keys are loaded.

Names cannot be recognised in free text; they are kept out of logs by never logging values.

``RepeatFilter`` is the second guard, for floods: a record identical to one passed less than
``window_s`` (60 s) ago (same logger, level and scrubbed message) is held back and counted;
when the window ends, one line says ``... (repeated N times in the last 60 s)`` at the same
level and a new window starts, so a steady repeat costs one line a minute. It goes after the
``ScrubFilter`` on a handler, so it compares and reports scrubbed text only, and its summary
passes through every handler's scrubber again. It limits WARNING and above (``FailureLog``
already sends repeated failures to DEBUG; a technician who turned DEBUG on wants every line).
One instance may serve several handlers: its decision is kept on the record.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from .pii_scan import scrub

__all__ = ["ScrubFilter", "RepeatFilter", "install"]


class ScrubFilter(logging.Filter):
    """Rewrites a record in place (message, exception text, stack); never rejects one."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: logging would print the raw arguments
            message = f"{record.msg!r} (unformattable arguments: {record.args!r})"
        record.msg, record.args = scrub(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        return True


def install(logger: logging.Logger | None = None) -> None:
    """Add a ``ScrubFilter`` to every handler of ``logger`` (default: the root), once each."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, ScrubFilter) for f in handler.filters):
            handler.addFilter(ScrubFilter())


_DECISION = "_edge_agent_repeat"  # on a record: this filter's verdict, shared by every handler
_SUMMARY = "_edge_agent_summary"  # on a summary record: never held back


class RepeatFilter(logging.Filter):
    """Passes the first of identical records, counts the rest of a ``window_s`` window, then
    logs the count (module docstring). ``flush()`` reports windows that ended; a daemon thread
    calls it when a window ends, so the count comes even if nothing else is logged."""

    def __init__(self, window_s: float = 60.0, *, min_level: int = logging.WARNING, max_keys: int = 1000,
                 clock: Callable[[], float] = time.monotonic, timer: bool = True) -> None:
        super().__init__()
        self.window_s = window_s
        self.min_level = min_level
        self.max_keys = max_keys
        self._clock = clock
        self._timer = timer
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        # key -> [window end, held back count, logger name, level, message]
        self._windows: dict[tuple[str, int, str], list] = {}
        self._thread: threading.Thread | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        decided = getattr(record, _DECISION, None)
        if decided is not None:
            return decided
        verdict = self._decide(record)
        setattr(record, _DECISION, verdict)
        return verdict

    def _decide(self, record: logging.LogRecord) -> bool:
        if record.levelno < self.min_level or getattr(record, _SUMMARY, False):
            return True
        key = (record.name, record.levelno, record.getMessage())
        now = self._clock()
        with self._lock:
            window = self._windows.get(key)
            if window is not None and now < window[0]:
                window[1] += 1
                return False
            due = self._expired_locked(now)
            if len(self._windows) < self.max_keys:
                self._windows[key] = [now + self.window_s, 0, record.name, record.levelno, key[2]]
                self._start_timer_locked()
        self._report(due)
        return True

    def flush(self) -> None:
        """Log the counts of windows that have ended (and forget those with nothing held)."""
        with self._lock:
            due = self._expired_locked(self._clock())
        self._report(due)

    def _expired_locked(self, now: float) -> list[tuple[str, int, str, int]]:
        due = []
        for key, window in list(self._windows.items()):
            if now < window[0]:
                continue
            if window[1]:
                due.append((window[2], window[3], window[4], window[1]))
                window[0], window[1] = now + self.window_s, 0  # a new window: the next count a minute on
            else:
                del self._windows[key]
        return due

    def _report(self, due: list[tuple[str, int, str, int]]) -> None:
        for name, level, message, count in due:
            logger = logging.getLogger(name)
            record = logger.makeRecord(name, level, "(repeats)", 0, "%s (repeated %d times in the last %s s)",
                                       (message, count, f"{self.window_s:g}"), None)
            setattr(record, _SUMMARY, True)
            logger.handle(record)

    def _start_timer_locked(self) -> None:
        if not self._timer:
            return
        self._wake.notify_all()
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="log-repeats", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._windows:
                    self._wake.wait()
                    continue
                wait = min(w[0] for w in self._windows.values()) - self._clock()
                if wait > 0:
                    self._wake.wait(min(wait, self.window_s) + 0.01)
                    continue
            try:
                self.flush()
            except Exception:  # logging must never kill the process; try again a window later
                time.sleep(self.window_s)
