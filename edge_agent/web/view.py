"""What the technician's page may know of the agent, and what a page is (issue 15).

Why a seam: the page (``pages.py``, ``plots.py``, ``metrics.py``) and its server (``server.py``)
sit beside the pipeline and must never reach into it: the agent hands them a ``WebView``
(``agent/webview.py`` builds it), whose every method returns plain data already safe to show
(what the wire carries: pseudonyms, masks, seals; never a raw personal value) and never blocks
the pipeline for long (snapshots, copies under short locks).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, Sequence

__all__ = ["WebView", "Response"]


@dataclass(frozen=True)
class Response:
    """One page, plot or metrics text as the server sends it."""

    status: int
    content_type: str
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


class WebView(Protocol):
    def status(self) -> dict[str, Any]:
        """``agent.status.live``: uplink, backlog, drain, devices (health), clock, key, process."""
        ...

    def last_records(self, device: str) -> Sequence[Mapping[str, Any]]:
        """The device's latest records (one per unit ``sub``), as the wire carries them."""
        ...

    def history(self, device: str, point: str, seconds: float) -> Sequence[tuple[int, float]]:
        """(ts ms, value) of a numeric point over the last ``seconds`` (3,600 or 86,400)."""
        ...

    def points(self, device: str) -> Sequence[str]:
        """The numeric points of a device that have history."""
        ...

    def backlog_history(self, seconds: float) -> Sequence[tuple[int, int]]:
        """(ts ms, pending rows) over the last ``seconds``."""
        ...

    def thresholds(self, device: str, point: str) -> Sequence[tuple[str, float]]:
        """The alarm lines of a point (``(label, value)``: a threshold's set and clear levels)."""
        ...

    def events(self, limit: int) -> Sequence[Mapping[str, Any]]:
        """The newest events (alarms, SOS, passages, online/offline) as the wire carries them."""
        ...

    def audit(self, limit: int) -> Sequence[Mapping[str, Any]]:
        """The newest rows of the command audit log, with whether its hash chain verifies."""
        ...
