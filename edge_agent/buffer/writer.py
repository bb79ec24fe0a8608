"""Group commit: one thread turns many small ``put`` calls into few buffer transactions.

A transaction per reading costs ~10x one per thousand (FACTS.md: 22k vs 240k rows/s), so
producers (one per bus) hand items to ``put`` and this thread commits them together: it waits
up to ``commit_interval_s`` after the first item to gather more, and commits at most
``commit_max`` per transaction. ``commit_interval_s`` is thus the longest a reading waits to
become durable. A critical event (SOS, fall, flood alarm) is the exception: it is committed,
with whatever is queued, at once, because its latency to the platform matters more than one
more transaction.

The queue is bounded (``queue_max`` items) and ``put`` blocks when it is full: backpressure,
never a silent drop. Items are checked and serialised in ``put`` (TypeError to the caller), so
a bad value cannot poison a batch. A failed commit (disk full, a locked or closed buffer) keeps
its items at the head of the queue and is retried with backoff; the first failure is logged
at ERROR, repeats at DEBUG, the recovery once at INFO. The thread survives any exception.
Logs carry counts and ids only, never values.

Disk full (``BufferFull``: the OS, or SQLite's page limit) is counted as a failure and then
tried once more at once with ``make_room``: the buffer evicts old rows inside the insert's
transaction (``evict.py``), which sticks only if the batch then fits. If it does, the batch is
committed (the buffer logs the eviction at WARNING); if not, nothing was lost and the batch
waits for the next retry like any failed commit. Over-cap eviction after a commit also runs
here, in this thread, so it delays only later commits, never ``put`` (until the queue fills).

Crash safety (``intake_log``, ``intakelog.py``): ``put`` writes the batch's rows to the intake log
with one ``os.write`` before it queues them, each row numbered (its seq); a commit stores the seq
of its last row in the same transaction (``Buffer.intake_seq``) and then truncates what the log
holds up to it. ``start`` replays what a killed process left in the log, skipping every row the
buffer already has, and commits it before anything else: an item ``put`` returned for survives
kill -9, whatever ``commit_interval_s`` is. Turned off, the log is still read at ``start`` (rows an
earlier run left are committed, then the files removed).

Ids at intake (with the log on): ``put`` numbers the rows it queues (``Buffer.take_ids``, in
queue order, under the lock) and writes each row's id into its log entry, so a row is durable
*with its id* as soon as ``put`` returns. ``queued`` lets the uplink publish those rows before
their commit (``live.py``): latency no longer waits for the group commit, which can then be as
rare as the flash card wants. A replay after kill -9 commits each row under the id it was
published with. A row whose log write failed is not handed out before its commit (a kill could
lose it after the platform saw its id); nor is any row after it, so the uplink's cursors never
pass a row it has not seen. With the log off, ids are assigned at the commit, as before.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Sequence

from .intakelog import IntakeLog, encode_rows
from .outbox import Buffer, BufferError, BufferFull, EncodedRow, OutRow, encode_items
from ..model import Event, Priority, Reading, Record

__all__ = ["BufferWriter", "WriterStats"]

log = logging.getLogger(__name__)

RETRY_MIN_S = 0.2
RETRY_MAX_S = 5.0
REPLAY_WAIT_S = 30.0  # start waits this long at most for the replayed rows' commit
_ROW_FIELDS = 4  # EncodedRow: (prio, kind, ts, body); a numbered log row has its id in front
_PRIO = {int(p): p for p in Priority}


@dataclass(frozen=True)
class WriterStats:
    committed: int  # items committed since start
    transactions: int
    queued: int  # accepted, not yet committed
    failures: int  # failed commit attempts since start
    replayed: int = 0  # rows committed from the intake log at start (a killed run's last polls)


class BufferWriter:
    """The buffer's single writer thread. ``start()``, ``put()`` from any thread, ``stop()``."""

    def __init__(self, buffer: Buffer, *, commit_interval_s: float = 0.2, commit_max: int = 2000,
                 queue_max: int = 20000, on_commit: Callable[[list[int]], None] | None = None,
                 intake_log: bool = False, on_queued: Callable[[], None] | None = None) -> None:
        self._buffer = buffer
        self._log = IntakeLog(buffer.path, enabled=intake_log)
        self._seqs: deque[int] = deque()  # the intake log seq of each queued row
        self._ids: deque[int | None] = deque()  # each queued row's id (None: assigned at its commit)
        self._shown: deque[bool] = deque()  # whether the uplink may publish it before its commit
        self._numbered = False  # put takes ids (the log is on): module docstring
        self._on_queued = on_queued
        self._next_seq = 1
        self._replayed = 0
        self._interval = commit_interval_s
        self._commit_max = max(1, commit_max)
        self._queue_max = max(1, queue_max)
        self._on_commit = on_commit
        self._cond = threading.Condition()
        self._urgent = False  # a critical event is queued: commit now, not at the interval
        self._queue: deque[EncodedRow] = deque()
        self._first_at: float | None = None  # when the oldest uncommitted item was queued
        self._retry_at = 0.0
        self._accepted = self._committed = self._transactions = 0
        self._failures = self._streak = self._flushers = 0
        self._stopping = self._abandon = False
        self._thread: threading.Thread | None = None

    # -- producer side -----------------------------------------------------------------------
    def start(self) -> None:
        with self._cond:
            if self._thread is not None:
                raise RuntimeError("buffer writer already started")
            replay = self._open_log()
            span = (self._ids[0], self._ids[-1]) if replay and self._ids[0] is not None else None
            before = self._buffer.max_id() if replay else 0
            self._thread = threading.Thread(target=self._run, name="buffer-writer", daemon=True)
            self._thread.start()
        if replay:
            if self.flush(REPLAY_WAIT_S):
                first, last = span or (before + 1, self._buffer.max_id())
                log.info("intake log: committed %d rows a stopped run had received but not committed (ids %d-%d)",
                         replay, first, last)
            else:
                log.error("intake log: the %d rows a stopped run left are not committed yet (the buffer is failing); "
                          "they stay queued and in the log", replay)

    def _open_log(self) -> int:
        """Read the intake log, queue what the buffer does not have yet (first, urgent); how many.
        Call with the lock held, before the thread starts."""
        found = self._log.open()
        committed = self._buffer.intake_seq
        todo = [(seq, row) for seq, row in found.rows if seq > committed]
        self._next_seq = max(committed, found.last_seq) + 1
        self._numbered = self._log.appending
        if todo:
            numbered = all(len(row) == _ROW_FIELDS + 1 for _, row in todo)
            if numbered:  # each row under the id it was taken (and maybe published) with
                self._buffer.claim_ids(todo[-1][1][0])
                self._ids.extend(row[0] for _, row in todo)
                todo = [(seq, row[1:]) for seq, row in todo]
            else:  # a log of the version before ids at intake (or mixed, after two crashes): new ids
                todo = [(seq, row[-_ROW_FIELDS:]) for seq, row in todo]
                self._ids.extend(self._new_ids(len(todo)))
            self._shown.extend([numbered] * len(todo))
            self._seqs.extend(seq for seq, _ in todo)
            self._queue.extend(row for _, row in todo)  # type: ignore[misc]
            self._accepted += len(todo)
            self._first_at = time.monotonic()
            self._urgent = True
            self._replayed = len(todo)
        if found.rows and not todo:
            self._log.committed(committed)  # a crash between a commit and its truncation
        return len(todo)

    def put(self, items: Sequence[Record | Event | Reading]) -> None:
        """Queue items (a row each: records and events; readings are grouped into records,
        ``outbox.encode_items``) for the next commit; blocks while the queue is full.

        TypeError (nothing queued) when an item cannot be serialised; RuntimeError once
        ``stop`` has begun. A batch larger than ``queue_max`` is accepted in slices.
        """
        rows = encode_items(items)
        payload = (encode_rows(rows) if self._log.appending and not self._numbered and len(rows) <= self._queue_max
                   else None)
        done = 0
        with self._cond:
            while done < len(rows):
                if self._stopping:
                    raise RuntimeError(f"buffer writer is stopping; {done} of {len(rows)} items accepted")
                chunk = min(len(rows) - done, self._queue_max)
                if self._queue_max - len(self._queue) < chunk:
                    self._cond.wait()
                    continue
                part = rows[done:done + chunk]
                seq = self._next_seq
                ids = self._new_ids(chunk)
                if ids[0] is not None:
                    logged = self._log.append(seq, [(i, *row) for i, row in zip(ids, part)])
                else:
                    logged = self._log.append(seq, part, payload if chunk == len(rows) else None)
                self._next_seq += chunk
                self._seqs.extend(range(seq, seq + chunk))
                self._ids.extend(ids)
                self._shown.extend([logged and ids[0] is not None] * chunk)
                self._queue.extend(part)
                if any(row[0] >= Priority.CRITICAL for row in rows[done:done + chunk]):
                    self._urgent = True  # an SOS or a flood alarm does not wait for the group
                done += chunk
                self._accepted += chunk
                if self._first_at is None:
                    self._first_at = time.monotonic()
                self._cond.notify_all()
        if self._numbered and self._on_queued is not None:
            try:
                self._on_queued()
            except Exception:
                log.exception("buffer writer: on_queued callback failed")

    def _new_ids(self, count: int) -> list[int | None]:
        """Ids for ``count`` rows about to be queued (with the lock held), or Nones: the commit
        assigns them. If the sidecar cannot be raised, numbering stops for the run (an id taken
        later would be below one assigned at a commit before it): logged once."""
        if not self._numbered:
            return [None] * count
        try:
            first = self._buffer.take_ids(count)
        except BufferError as exc:
            self._numbered = False
            log.error("buffer writer: %s; rows get their ids at their commit from now on (published "
                      "only once committed)", exc)
            return [None] * count
        return list(range(first, first + count))

    def queued(self, limit: int, *, prio: Priority | None = None, after_id: int = 0,
               until_id: int | None = None) -> tuple[list[OutRow], int | None]:
        """Rows put and numbered but not committed yet, as ``Buffer.pending`` returns rows: id >
        ``after_id`` (and <= ``until_id``), of ``prio`` if given, in id order, at most ``limit``;
        and the id of the first queued row that may not be shown yet (None: none), above which
        nothing is returned. Acked ids are left out by the caller (``Buffer.unsent``)."""
        out: list[OutRow] = []
        with self._cond:
            for row_id, shown, row in zip(self._ids, self._shown, self._queue):
                if row_id is None or not shown:
                    return out, row_id
                if row_id <= after_id or (prio is not None and row[0] != prio):
                    continue
                if until_id is not None and row_id > until_id or len(out) >= limit:
                    break
                out.append(OutRow(id=row_id, kind=row[1], prio=_PRIO[row[0]], ts=row[2],
                                  body={"id": row_id, **json.loads(row[3])}))
        return out, None

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything put so far is committed; False if ``timeout`` ran out first."""
        with self._cond:
            target = self._accepted
            self._flushers += 1
            self._cond.notify_all()
            try:
                return self._cond.wait_for(lambda: self._committed >= target, timeout)
            finally:
                self._flushers -= 1

    def stop(self, timeout: float = 5.0) -> bool:
        """Commit what is queued, then end the thread. False (and an ERROR) if items were left."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                with self._cond:
                    self._abandon = True
                    self._cond.notify_all()
                thread.join(1.0)
        with self._cond:
            left = len(self._queue)
            self._log.close(remove=left == 0)
        if left and thread is None:
            log.error("buffer writer stopped before it started: %d items not committed", left)
        return left == 0

    @property
    def stats(self) -> WriterStats:
        with self._cond:
            return WriterStats(committed=self._committed, transactions=self._transactions,
                               queued=len(self._queue), failures=self._failures, replayed=self._replayed)

    # -- the thread --------------------------------------------------------------------------
    def _run(self) -> None:
        errors = 0
        while True:
            try:
                gathered = self._gather()
                if gathered is None:
                    return
                self._commit(*gathered)
                errors = 0
            except Exception:  # a bug, not a disk fault: say so once, keep going
                errors += 1
                log.log(logging.ERROR if errors == 1 else logging.DEBUG,
                        "buffer writer: unexpected error; continuing", exc_info=True)
                time.sleep(min(RETRY_MAX_S, RETRY_MIN_S * errors))

    def _gather(self) -> tuple[list[EncodedRow], int] | None:
        """The next batch (left at the head of the queue until committed) and its last row's
        intake log seq; None to end."""
        with self._cond:
            while True:
                now = time.monotonic()
                if self._stopping and not self._queue:
                    return None
                if self._abandon:
                    log.error("buffer writer stopped with %d items not committed", len(self._queue))
                    return None
                if not self._queue:
                    self._cond.wait()
                    continue
                if now < self._retry_at:
                    self._cond.wait(self._retry_at - now)
                    continue
                due = (self._first_at or now) + self._interval
                if (len(self._queue) >= self._commit_max or self._stopping or self._flushers
                        or self._urgent or now >= due):
                    self._urgent = False
                    batch = list(itertools.islice(self._queue, self._commit_max))
                    numbered = self._ids[0] is not None  # a batch is all numbered or none (_new_ids)
                    n = next((k for k, i in enumerate(itertools.islice(self._ids, len(batch)))
                              if (i is not None) != numbered), len(batch))
                    return batch[:n], self._seqs[n - 1]
                self._cond.wait(due - now)

    def _commit(self, batch: list[EncodedRow], last_seq: int) -> None:
        full = False  # one failure per attempt, made room for or not
        with self._cond:
            taken = list(itertools.islice(self._ids, len(batch)))
        given = taken if taken[0] is not None else None
        try:
            try:
                ids = self._buffer.append_encoded(batch, intake_seq=last_seq, ids=given)
            except BufferFull:
                full = True
                with self._cond:
                    self._failures += 1
                log.debug("buffer full: evicting old rows to make room for %d items", len(batch))
                ids = self._buffer.append_encoded(batch, make_room=True, intake_seq=last_seq, ids=given)
        except Exception as exc:
            with self._cond:
                self._failures += 0 if full else 1
                self._streak += 1
                delay = min(RETRY_MAX_S, RETRY_MIN_S * 2 ** (self._streak - 1))
                self._retry_at = time.monotonic() + delay
                first, queued = self._streak == 1, len(self._queue)
            log.log(logging.ERROR if first else logging.DEBUG,
                    "buffer commit failed (%s); keeping %d queued items, retrying every %.1f s at most",
                    exc, queued, RETRY_MAX_S)
            return
        with self._cond:
            for _ in batch:
                self._queue.popleft()
                self._seqs.popleft()
                self._ids.popleft()
                self._shown.popleft()
            self._log.committed(last_seq)
            self._committed += len(batch)
            self._transactions += 1
            recovered, self._streak, self._retry_at = self._streak, 0, 0.0
            self._first_at = time.monotonic() if self._queue else None
            self._cond.notify_all()
        if recovered:
            log.info("buffer commits recovered after %d failed attempts (ids %d-%d committed)",
                     recovered, ids[0], ids[-1])
        if self._on_commit is not None:
            try:
                self._on_commit(ids)
            except Exception:
                log.exception("buffer writer: on_commit callback failed (ids %d-%d are committed)",
                              ids[0], ids[-1])
