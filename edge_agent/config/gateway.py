"""The ``gateway`` and ``buffer`` sections: who the gateway is and where it keeps its state.

Read first, because ``gateway.state_dir`` places the defaults of the others (the buffer file,
the pseudonym key). Called by ``schema``; problems go to the same ``Report``. No I/O.
"""

from __future__ import annotations

from pathlib import Path

from ..settings import BufferSettings, GatewaySettings
from .source import Section, boolean, duration, identifier, integer, path, size

__all__ = ["DEFAULT_STATE_DIR", "MAX_COMMIT_INTERVAL_S", "TOPIC_SAFE", "read_gateway", "read_buffer"]

DEFAULT_STATE_DIR = Path("/var/lib/edge-agent")
TOPIC_SAFE = "it becomes part of MQTT topics"
MAX_COMMIT_INTERVAL_S = 20
"""The intake log keeps a kill -9 from widening the loss with the commit interval; kept under the
kernel's writeback age (``vm.dirty_expire_centisecs``, 30 s) so the log is truncated before its
pages reach the disk (docs/storage.md)."""


def read_gateway(top: Section, base: Path) -> GatewaySettings | None:
    """``gateway:`` (required); None when it is missing or not a mapping."""
    s = top.section("gateway", ("id", "site", "state_dir"), required=True)
    if s is None:
        return None
    return GatewaySettings(id=s.get("id", identifier(TOPIC_SAFE)), site=s.get("site", identifier(TOPIC_SAFE)),
                           state_dir=s.get("state_dir", path(base), DEFAULT_STATE_DIR))


def read_buffer(top: Section, base: Path, state_dir: Path) -> BufferSettings:
    """``buffer:``; absent means every default, the file in ``state_dir``."""
    default_path = (state_dir or DEFAULT_STATE_DIR) / "buffer.db"
    s = top.section("buffer", ("path", "max_bytes", "retain_sent", "commit_interval", "commit_max", "intake_log"))
    if s is None:
        return BufferSettings(path=default_path)
    return BufferSettings(path=s.get("path", path(base), default_path),
                          max_bytes=s.get("max_bytes", size(1024**2), 512 * 1024**2),
                          retain_sent_s=s.get("retain_sent", duration(0, 366 * 86400), 0.0),
                          commit_interval_s=s.get("commit_interval", duration(0.001, MAX_COMMIT_INTERVAL_S), 0.2),
                          commit_max=s.get("commit_max", integer(1, 100000), 2000),
                          intake_log=s.get("intake_log", boolean, True))
