"""The running agent as the technician's page sees it: the ``WebView`` (``web/view.py``) of an ``Agent``.

Why a copy of what the intake hands the writer, and not reads of the buffer: the last record of
each device and the newest events are what a page shows most, at every refresh; keeping them
here costs a dict update per record, where a buffer query would cost the SQLite reader a scan
per page. What is kept are wire bodies after privacy (``Record.to_wire()``/``Event.to_wire()``),
so the page can show nothing the wire does not carry.

Wiring (the daemon's, once ``web`` is configured):

- ``record(items)``: the intake calls it with each batch it hands the writer (records and
  events after privacy, or their wire bodies), on the bus worker's thread. It keeps the last
  record per (device, unit ``sub``) (at most ``MAX_UNITS`` units a device), the newest
  ``MAX_EVENTS`` events, and feeds the plots' ``History``. Cheap and never blocks for long.
- ``sample()``: every few seconds from a timer (the control socket's tick): the backlog for
  its plot (``buffer.stats()``); it samples at most every ``SAMPLE_EVERY_S`` whatever the caller.

The rest answers pages: ``status`` is ``status.live``; ``thresholds`` come from the device's
alarm rules; ``audit`` reads the command ledger read-only, as ``edge-agent audit --verify`` does.
"""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict, deque
from typing import Any, Callable, Iterable, Mapping, Sequence

from ..rules import Threshold
from ..web.history import History
from ..web.plots import number
from . import status as status_view

__all__ = ["AgentWebView", "MAX_EVENTS", "MAX_UNITS", "SAMPLE_EVERY_S"]

MAX_EVENTS = 200
MAX_UNITS = 200  # last records kept per device: one per unit (band, lane), the newest
SAMPLE_EVERY_S = 5.0
_ROW = re.compile(r"row (\d+):")


class AgentWebView:
    """A ``WebView`` of ``agent`` (an ``agent.daemon.Agent``, started or not)."""

    def __init__(self, agent: Any, *, history: History | None = None, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._agent = agent
        self.history_store = history or History(clock=clock)  # the plots' memory
        self._clock, self._monotonic = clock, monotonic
        self._lock = threading.Lock()
        self._last: dict[str, OrderedDict[str | None, Mapping[str, Any]]] = {}  # device -> sub -> record body
        self._events: deque[Mapping[str, Any]] = deque(maxlen=MAX_EVENTS)
        self._sampled_at: float | None = None

    # -- fed by the pipeline -------------------------------------------------------------------------
    def record(self, items: Iterable[Any]) -> None:
        """A batch the intake hands the writer: ``Record``/``Event`` objects or their wire bodies."""
        bodies = [item.to_wire() if hasattr(item, "to_wire") else item for item in items]
        records = [b for b in bodies if isinstance(b, Mapping) and "vals" in b and isinstance(b.get("dev"), str)]
        events = [b for b in bodies if isinstance(b, Mapping) and "type" in b and "vals" not in b]
        with self._lock:
            for body in records:
                units = self._last.setdefault(body["dev"], OrderedDict())
                units[body.get("sub")] = body
                units.move_to_end(body.get("sub"))
                if len(units) > MAX_UNITS:
                    units.popitem(last=False)
            self._events.extend(events)
        for body in records:
            self.history_store.add_record(body)
        for body in events:
            self.history_store.add_event(body)

    def sample(self) -> None:
        """The backlog now, for its plot; at most once per ``SAMPLE_EVERY_S``. Never raises: a
        failed read of the buffer leaves a gap in the plot, not a stopped timer."""
        now = self._monotonic()
        if self._sampled_at is not None and now - self._sampled_at < SAMPLE_EVERY_S * 0.9:
            return
        self._sampled_at = now
        try:
            pending = self._agent.buffer.stats().pending
        except Exception:  # the buffer closing or unreadable: no sample this time
            return
        self.history_store.add_backlog(int(self._clock() * 1000), pending)

    # -- WebView -------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return status_view.live(self._agent)

    def last_records(self, device: str) -> Sequence[Mapping[str, Any]]:
        """One record per unit, the device's own (no ``sub``) first, then its units by name."""
        with self._lock:
            units = list((self._last.get(device) or {}).items())
        return [body for _, body in sorted(units, key=lambda kv: (kv[0] is not None, str(kv[0])))]

    def history(self, device: str, point: str, seconds: float) -> Sequence[tuple[int, float]]:
        return self.history_store.read(device, point, seconds)

    def points(self, device: str) -> Sequence[str]:
        return self.history_store.points(device)

    def backlog_history(self, seconds: float) -> Sequence[tuple[int, int]]:
        return self.history_store.backlog(seconds)

    def thresholds(self, device: str, point: str) -> Sequence[tuple[str, float]]:
        """Each threshold rule's levels on ``point``: where the alarm is raised and where it clears."""
        found = [d for d in self._agent.settings.devices if d.name == device]
        lines: list[tuple[str, float]] = []
        for rule in (found[0].alarms if found else ()):
            if not isinstance(rule, Threshold) or rule.point != point:
                continue
            for side, limit, sign, back in (("above", rule.above, ">", -1), ("below", rule.below, "<", 1)):
                if limit is None:
                    continue
                name = rule.name or f"{point}_{side}"
                lines.append((f"{name} {sign} {number(limit)}", float(limit)))
                if rule.hysteresis:
                    clear = limit + back * rule.hysteresis
                    lines.append((f"{name} clears {'≤' if side == 'above' else '≥'} {number(clear)}", float(clear)))
        return lines

    def events(self, limit: int) -> Sequence[Mapping[str, Any]]:
        """The newest ``limit`` events, newest first."""
        with self._lock:
            newest = list(self._events)[-limit:] if limit > 0 else []
        return newest[::-1]

    def audit(self, limit: int) -> Sequence[Mapping[str, Any]]:
        """The last ``limit`` ledger rows, oldest first, each with ``verified`` (its hash and link
        hold), ``problem`` and ``chain`` (the whole log's verdict); ``[]`` without a ledger;
        ``[{"error": ...}]`` when it cannot be read."""
        from ..commands.ledger import Ledger, LedgerError, ledger_path  # when asked: most pages never need it

        path = ledger_path(self._agent.settings.gateway.state_dir)
        if not path.exists():
            return []
        try:
            with Ledger(path, readonly=True) as ledger:
                problems = ledger.verify_chain()
                rows = ledger.rows(limit=limit)
                count = ledger.count()
        except LedgerError as exc:
            return [{"error": str(exc)}]
        by_row: dict[int, str] = {}
        for problem in problems:
            found = _ROW.match(problem)
            if found:
                by_row.setdefault(int(found.group(1)), problem)
        chain = (f"intact ({count} rows)" if not problems
                 else f"BROKEN: {problems[0]}" + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
        return [dict(row, verified=row["seq"] not in by_row, problem=by_row.get(row["seq"]), chain=chain)
                for row in rows]
