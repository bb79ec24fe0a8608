"""What the ops may use of the running agent (``AgentView``), and nothing more.

The daemon builds the view (``Agent.command_view``); the ops never see the agent, its buses or
its workers. Every device write goes through the device's own reader (``PointWriter``): the
gate controller's acknowledges, a Modbus reader's (``poll.DeviceReader``) encodes, writes and
reads back. The callables may be asked before the uplink exists or after it stopped: they answer
None (no uplink) or False (not published) then.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol, runtime_checkable

from ..settings import Settings
from .types import Command

__all__ = ["AgentView", "PointWriter", "UplinkState", "ApplyConfig"]

ApplyConfig = Callable[[Command], "dict[str, Any] | None"]  # config.apply: data now, or None (answered later)


@runtime_checkable
class PointWriter(Protocol):
    """A device reader that writes. ``write`` returns None when the device acknowledged (a gate),
    or what reading the point back showed: ``"match"``, or ``"not_readable"`` (a table that
    cannot be read back). It raises ``ValueError`` for a point, value or argument the device
    does not take (before anything is sent), ``PermissionError`` for a point that is not
    writable, ``NoResponse`` on silence, ``DeviceFault`` for a refusal or a read-back that
    differs, ``LinkError`` when the link is down. Messages carry no value read."""

    def write(self, point: str, value: Any, **extra: Any) -> str | None: ...


@dataclass(frozen=True)
class UplinkState:
    connected: bool
    reconnects: int  # successful connects after the first


@dataclass(frozen=True)
class AgentView:
    """The running agent as the ops see it (module docstring)."""

    settings: Settings
    version: str
    started_ms: int
    reader: Callable[[str], object | None]  # device -> its running reader (a PointWriter when it writes)
    request_poll: Callable[[str], bool]  # poll the device at its bus worker's next turn; False: not polled
    backlog: Callable[[], Any]  # the buffer's ``BufferStats`` (may raise: the file is unreadable)
    uplink: Callable[[], UplinkState | None]  # None: no uplink (yet)
    publish_replay: Callable[[str, list[dict[str, Any]], str], bool]  # kind, bodies, cmd id -> acked
    apply_config: ApplyConfig | None = None  # config.apply: the supervisor's hand-over (agent/handover.py)
