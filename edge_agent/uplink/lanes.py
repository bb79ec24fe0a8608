"""Lane selection: the one place that decides which buffered rows the uplink publishes next.

The order, for every message the in-flight window allows (``select`` is called once per free
slot and takes the first lane that has rows past its cursor):

1. ``critical``: rows of priority critical (SOS, fall, flood alarm), ascending id;
2. ``high``: rows of priority high, ascending id;
3. ``live``: rows of priority normal with id > ``floor``, ascending from the live cursor;
4. ``backlog``: rows of priority normal with id <= ``floor``, ascending from the backlog
   cursor: ONE window, then the order starts again at 1.

``floor`` is ``Buffer.max_id()`` read when the connection came up: what was buffered before
that is backlog, what is buffered while connected is live. So a drain round is "every
critical and high event there is, every live row there is, one backlog window": an event or
a record buffered now goes out within about one message time, however many old rows wait,
and the backlog drains, oldest first, in whatever capacity the live traffic leaves. Critical
and high lanes ignore the floor: an old alarm still overtakes every record.

Only events have priorities above normal (records are always normal), and the buffer indexes
rows by (priority, id), not by kind: normal events therefore travel with the records of their
lane in id order. One lane's window is at most ``batch_max`` rows; a message carries rows of
one kind (a window with both is split, its events message first), so a window is one or two
messages.

Cursors (the last id fetched per lane) keep rows in flight from being fetched twice. They are
forgotten on every (re)connect: the next window of each lane starts at its beginning again and
every unacknowledged row is published again, byte-identical (at least once).

No threads, no paho here: the uplink calls ``select`` from its drain thread with a snapshot of
the cursors and keeps the returned ones only if no reconnect happened meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Iterable, Protocol, Sequence

from ..model import Priority

__all__ = ["LANES", "KINDS", "WIRE_VERSION", "Cursors", "Batch", "Window", "Outbox", "OutRowLike", "select", "split"]

LANES = ("critical", "high", "live", "backlog")  # tried in this order for every message
KINDS = {"event": ("events", "events"), "record": ("telemetry", "recs")}  # kind -> (topic, key)
WIRE_VERSION = 2  # "v" of every telemetry and events message (CONTRACT section 4)


class OutRowLike(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def kind(self) -> str: ...  # 'record' | 'event'
    @property
    def prio(self) -> Priority: ...
    @property
    def body(self) -> dict[str, Any]: ...  # the wire dict, "id" included


class Outbox(Protocol):
    """What lane selection needs of the buffer (``Buffer`` has it)."""

    def pending(self, limit: int, *, prio: Priority | None = None, after_id: int = 0,
                until_id: int | None = None) -> Sequence[OutRowLike]: ...

    def max_id(self) -> int: ...


@dataclass(frozen=True)
class Cursors:
    """Where each lane stands: the last id fetched (ids are > 0, so 0 means "from the start")."""

    floor: int  # Buffer.max_id() at connect: ids above it are live, the rest backlog
    live: int  # starts at the floor
    critical: int = 0
    high: int = 0
    backlog: int = 0

    @classmethod
    def at_connect(cls, floor: int) -> "Cursors":
        return cls(floor=floor, live=floor)


@dataclass(frozen=True)
class Batch:
    """One message: rows of one kind from one lane."""

    lane: str
    kind: str  # 'event' | 'record'
    rows: tuple[OutRowLike, ...]

    @property
    def ids(self) -> list[int]:
        return [r.id for r in self.rows]


@dataclass(frozen=True)
class Window:
    """What ``select`` picked: one lane's rows as one or two batches, and the advanced cursors."""

    lane: str
    batches: tuple[Batch, ...]
    cursors: Cursors
    unknown_kinds: tuple[str, ...] = ()  # rows skipped because their kind has no topic


def _fetch(outbox: Outbox, lane: str, c: Cursors, limit: int) -> Sequence[OutRowLike]:
    if lane == "critical":
        return outbox.pending(limit, prio=Priority.CRITICAL, after_id=c.critical)
    if lane == "high":
        return outbox.pending(limit, prio=Priority.HIGH, after_id=c.high)
    if lane == "live":
        return outbox.pending(limit, prio=Priority.NORMAL, after_id=c.live)
    if c.backlog >= c.floor:
        return ()  # the backlog is drained (for this connection)
    return outbox.pending(limit, prio=Priority.NORMAL, after_id=c.backlog, until_id=c.floor)


def split(lane: str, rows: Iterable[OutRowLike]) -> tuple[tuple[Batch, ...], tuple[str, ...]]:
    """Rows as homogeneous batches, events first; plus the kinds that have no topic."""
    rows = list(rows)
    batches = tuple(Batch(lane, kind, tuple(r for r in rows if r.kind == kind)) for kind in KINDS)
    odd = tuple(sorted({str(r.kind) for r in rows} - set(KINDS)))
    return tuple(b for b in batches if b.rows), odd


def select(outbox: Outbox, cursors: Cursors, batch_max: int) -> Window | None:
    """The next window in lane order (module docstring), or None when every lane is empty."""
    for lane in LANES:
        rows = _fetch(outbox, lane, cursors, batch_max)
        if rows:
            batches, odd = split(lane, rows)
            return Window(lane, batches, replace(cursors, **{lane: rows[-1].id}), odd)
    return None
