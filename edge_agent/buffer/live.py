"""The uplink's outbox: committed rows and the writer's numbered rows not yet committed, as one.

Why: with the intake log on, a row is durable with its id when ``BufferWriter.put`` returns
(``writer.py``), so the uplink need not wait up to ``buffer.commit_interval`` for the group commit
before publishing it. ``pending`` here answers what ``Buffer.pending`` answers, over both places:

- the writer's queue is read first (``BufferWriter.queued``), then the database; a row committed
  in between is in both and counted once (same id, same body), a row put in between is in
  neither, and no row above it can be in the database (commits go in id order);
- a queued row that may not be shown before its commit (its intake log write failed) stops what
  is returned below it, unless the database has it by then: the uplink's cursors never pass a
  row they have not seen;
- ids acked before their commit are left out (``Buffer.unsent``).

Everything else (``mark_sent``, ``max_id``, ``stats``) is the buffer's. Thread-safe as its parts.
"""

from __future__ import annotations

from typing import Any, Iterable

from ..model import Priority
from .outbox import Buffer, OutRow
from .writer import BufferWriter

__all__ = ["LiveOutbox"]


class LiveOutbox:
    def __init__(self, buffer: Buffer, writer: BufferWriter) -> None:
        self.buffer = buffer
        self._writer = writer

    def pending(self, limit: int, *, prio: Priority | None = None, after_id: int = 0,
                until_id: int | None = None) -> list[OutRow]:
        queued, stop = self._writer.queued(limit, prio=prio, after_id=after_id, until_id=until_id)
        stored = self.buffer.pending(limit, prio=prio, after_id=after_id, until_id=until_id)
        if not queued and stop is None:
            return stored
        have = {r.id for r in stored}
        keep = set(self.buffer.unsent([r.id for r in queued if r.id not in have]))
        rows = sorted(stored + [r for r in queued if r.id in keep], key=lambda r: r.id)
        if stop is not None and stop not in have:
            rows = [r for r in rows if r.id < stop]
        return rows[:limit]

    def max_id(self) -> int:
        return self.buffer.max_id()

    def mark_sent(self, ids: Iterable[int]) -> None:
        self.buffer.mark_sent(ids)

    def stats(self) -> Any:
        return self.buffer.stats()
