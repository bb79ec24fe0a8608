"""The intake: where polled readings and events enter the pipeline, on their bus worker's thread.

Why a stage of its own: what every item needs before it may be stored (the clock mark, then
privacy) is the same for every bus, so the bus workers feed it directly (``accept_readings``
and ``accept_events`` are their sinks) and it hands the result to the buffer writer; the
daemon only wires the three together.

- Clock mark: while ``clock`` (a cached ``ClockWatch``, asked once per batch) says the system
  clock is not synchronised, items are marked ``clk_synced=False`` (``clk: "unsynced"`` on the
  wire; readings once grouped into records, events each) and counted in ``unsynced_items``
  (readings and events). Ids are still assigned by the buffer in buffering
  order, whatever the stamps say.
- Privacy: every reading and event passes ``Privacy`` before it is queued. A bus worker's
  readings (one poll's) leave it as records (``Privacy.apply_records``: one per device, unit
  and time, the unit of the buffer and the wire); a value privacy drops is absent, and a
  record left empty is not queued at all.
- Hand-over: ``put`` (the writer's), which blocks while the writer's queue is full: that is the
  backpressure on a bus worker, and no item is ever dropped here.

No copy beyond one list per batch (and one more only while the clock is unsynchronised).
Thread-safe: one instance serves every bus worker (``Privacy`` holds no changing state; the
counter is locked).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from typing import Callable, Iterable, Sequence, TypeVar

from ..clock import ClockWatch
from ..model import Event, Reading, Record
from ..privacy.stage import Privacy

log = logging.getLogger(__name__)

__all__ = ["Intake"]

_Item = TypeVar("_Item", Reading, Event)


class Intake:
    """Clock mark, privacy, then ``put``: the way into the buffer for everything polled."""

    def __init__(self, privacy: Privacy, clock: ClockWatch,
                 put: Callable[[Sequence[Record | Event]], None],
                 observe: Callable[[Sequence[Record | Event]], None] | None = None) -> None:
        self._privacy = privacy
        self._clock = clock
        self._put = put
        self._observe = observe  # the technician's page (agent/webview.py): what was buffered, after privacy
        self._observe_failed = False
        self.unsynced_items = 0  # readings and events marked clk "unsynced" since start
        self._unsynced_lock = threading.Lock()

    def _marked(self, items: list[_Item]) -> list[_Item]:
        """Items taken while the system clock is not synchronised, marked so."""
        if not items or self._clock.synced:
            return items
        with self._unsynced_lock:
            self.unsynced_items += len(items)
        return [item if not item.clk_synced else replace(item, clk_synced=False) for item in items]

    def accept_readings(self, readings: Iterable[Reading]) -> None:
        """A bus worker's readings (one poll's): privacy into records, the clock mark (on the records:
        a poll's readings share one time, so one mark a record, not one a reading), then the
        buffer writer."""
        batch = list(readings)
        protected = self._privacy.apply_records(batch)
        if batch and not self._clock.synced:
            with self._unsynced_lock:
                self.unsynced_items += len(batch)
            protected = [rec if not rec.clk_synced else replace(rec, clk_synced=False) for rec in protected]
        if protected:
            self._put(protected)
            self._show(protected)

    def accept_events(self, events: Iterable[Event]) -> None:
        """A bus worker's events (alarms, SOS, passages): clock mark, privacy, then the buffer writer."""
        protected = [self._privacy.apply_event(e) for e in self._marked(list(events))]
        if protected:
            self._put(protected)
            self._show(protected)

    def _show(self, items: Sequence[Record | Event]) -> None:
        """Hand what was just buffered to the page; a page bug never reaches the bus worker."""
        if self._observe is None:
            return
        try:
            self._observe(items)
        except Exception:
            if not self._observe_failed:
                log.exception("intake: the technician's page could not take a batch; it is left out")
            self._observe_failed = True
