"""Where the agent's log goes: stderr (journald under systemd), and optionally a rotated file.

- **stderr**. Under systemd the stream is journald's, which stamps each line itself and reads a
  ``<N>`` prefix as the line's syslog priority (``SyslogLevelPrefix=``, on by default), so
  ``journalctl -p warning`` works. We are under journald when ``$JOURNAL_STREAM``
  (``DEVICE:INODE``) names the very stream stderr is, as sd_journal_stream_fd(3) advises: an
  inherited variable with stderr redirected elsewhere does not count. Then lines are
  ``<3>edge_agent.poll: device ...``, every line of a traceback prefixed too, and no
  timestamp of ours. Otherwise ``2026-11-23 10:00:00,123 ERROR edge_agent.poll: device ...``.
- **a file** (``run --log-file PATH``): ``RotatingFileHandler`` capped at ``max_bytes``
  (default 10 MiB) with ``keep`` rotated copies (``PATH.1`` ... ``PATH.N``, default 3), so the
  log never takes more than (keep + 1) x max_bytes. Created mode 0640 (the service group may
  read it; others not) and tightened to 0640 when it exists looser. Lines carry timestamps.

Every handler gets the ``ScrubFilter`` (no personal value reaches any log) and then one shared
``RepeatFilter`` (identical warnings and errors: the first, then a count a minute).
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from pathlib import Path
from typing import IO, Mapping

from ..privacy.logfilter import RepeatFilter, ScrubFilter, install

__all__ = ["setup", "under_journald", "JournalFormatter", "PRIORITY", "DEFAULT_MAX_BYTES", "DEFAULT_KEEP"]

DEFAULT_MAX_BYTES = 10 * 1024**2
DEFAULT_KEEP = 3
FILE_MODE = 0o640
_OURS = "_edge_agent_handler"
PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JOURNAL_FORMAT = "%(name)s: %(message)s"
QUIET_LOGGERS = {"pymodbus": logging.CRITICAL}  # its per-timeout noise; our bus layer reports

# syslog priorities (sd-daemon.h: SD_ERR "<3>" ...)
PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}


def _priority(levelno: int) -> int:
    for level in (logging.CRITICAL, logging.ERROR, logging.WARNING, logging.INFO):
        if levelno >= level:
            return PRIORITY[level]
    return PRIORITY[logging.DEBUG]


class JournalFormatter(logging.Formatter):
    """``<N>`` before every line of a record (journald reads the prefix per line), no time."""

    def __init__(self) -> None:
        super().__init__(JOURNAL_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).split("\n"))


def under_journald(stream: IO | None = None, env: Mapping[str, str] | None = None) -> bool:
    """True when ``stream`` (default stderr) is the journal stream ``$JOURNAL_STREAM`` names."""
    value = (os.environ if env is None else env).get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        st = os.fstat((stream or sys.stderr).fileno())
    except (AttributeError, OSError, ValueError):  # no descriptor (a test's capture), or closed
        return False
    return (st.st_dev, st.st_ino) == (int(device), int(inode))


class _RotatingFile(logging.handlers.RotatingFileHandler):
    """A rotating file opened mode 0640 whatever the umask (each new file after a rollover too)."""

    def _open(self):  # type: ignore[override]
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        try:
            if os.fstat(fd).st_mode & 0o777 & ~FILE_MODE:
                os.fchmod(fd, FILE_MODE)  # an older, looser file: others never read the log
        except OSError:
            pass  # not ours to change (another owner): it is used as it is
        return open(fd, "a", encoding=self.encoding, errors=self.errors)


def setup(level: str | int = "info", *, log_file: str | Path | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
          keep: int = DEFAULT_KEEP, stream: IO | None = None, env: Mapping[str, str] | None = None,
          repeat_window_s: float = 60.0) -> list[logging.Handler]:
    """Put our handlers (stderr, and the file when given) on the root logger in place of those
    of an earlier call; returns them. OSError when the file cannot be opened (nothing changed)."""
    stream = stream or sys.stderr
    handlers: list[logging.Handler] = []
    if log_file is not None:
        path = Path(log_file)
        file_handler = _RotatingFile(path, maxBytes=max(0, int(max_bytes)), backupCount=max(0, int(keep)),
                                     encoding="utf-8")
        file_handler.setFormatter(logging.Formatter(PLAIN_FORMAT))
        handlers.append(file_handler)
    console = logging.StreamHandler(stream)
    console.setFormatter(JournalFormatter() if under_journald(stream, env) else logging.Formatter(PLAIN_FORMAT))
    handlers.insert(0, console)
    repeats = RepeatFilter(repeat_window_s)
    for handler in handlers:
        handler.addFilter(ScrubFilter())  # first: what follows, the repeat count too, sees scrubbed text
        handler.addFilter(repeats)
        setattr(handler, _OURS, True)
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, _OURS, False):  # a previous setup's; anyone else's stays (and is scrubbed)
            root.removeHandler(old)
            old.close()
    for handler in handlers:
        root.addHandler(handler)
    install()  # a handler someone else put on the root is scrubbed too
    root.setLevel(level.upper() if isinstance(level, str) else level)
    for name, quiet in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(quiet)
    return handlers
