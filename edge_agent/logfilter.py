"""The last guard on log output: every record is scrubbed before a handler writes it.

The code logs counts, ids, names of devices and points, never values (see ``poll``). This
filter is for the day a bug breaks that rule: a driver that puts a frame in its exception
message, a debug line that prints a reading. Installed on the root logger's handlers by
``cli.setup_logging``, it rewrites each record's message (arguments merged in), exception text
and stack with ``pii_scan.scrub``: resident ID numbers, mobiles and plates become
``<id>``/``<phone>``/``<plate>`` and runs of more than 8 bytes (hex, ``\\x..``, ``b'...'``)
become ``<bytes>``, at every level. It needs no key, so it works before the keys are loaded.

Names cannot be recognised in free text; they are kept out of logs by never logging values.
"""

from __future__ import annotations

import logging

from .pii_scan import scrub

__all__ = ["ScrubFilter", "install"]


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
