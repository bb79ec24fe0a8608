"""Delivery and state of a fleet, from what the broker hands a platform: feed ``Tracker`` each
message (topic, payload bytes) and read its ``snapshot``. Pure: no MQTT, no clock of its own.

Why a tracker: delivery is at least once (CONTRACT section 4), so a platform must de-duplicate
on ``(gw, id)``; ids are strictly increasing per gateway, so a hole in them is data that did not
arrive, and the gateway's retained ``R/state`` says how much it evicted. This module turns the
two into the one figure an operator needs: records lost.

Per gateway (keyed ``site/gw`` from the topic ``{prefix}/{site}/{gw}/...``):

- ``records``: distinct ids received (telemetry records and events share one id sequence);
  ``duplicates``: further copies identical to the first; ``conflicts``: copies of an id whose
  content differs (the contract forbids it: a gateway bug or an impostor);
- ``gaps``: id ranges missing between the lowest and the highest id received. A gap can close
  later (critical events overtake a backlog; a batch in flight arrives after the next one);
- **the loss rule**: the evicted counts of ``R/state`` (summed over priorities) are followed from
  the first state seen; their growth since then is the eviction budget. Gaps are charged against
  it oldest first (the buffer evicts its oldest unsent rows); a gap the remaining budget covers
  whole is *explained* (the gateway said it dropped that many), any other is *unexplained*: a
  loss. A count that goes down (a rebuilt buffer) starts again from the new value, its growth
  kept. Evictions before the first state seen explain nothing;
- the last ``R/state`` (online from the birth or the Last Will, version, backlog, evicted,
  devices, clock, and whatever else the gateway adds) and when any message was last seen.

Payloads that do not decode (``decode_payload``) or records without an integer ``id`` are
counted in ``bad``, never raised: one broken gateway must not stop a platform's consumer.
"""

from __future__ import annotations

import bisect
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Iterable

from .unseal import PayloadError, decode_payload

__all__ = ["Tracker", "GatewayTrack", "IdSet", "Gap", "parse_topic", "DATA_KINDS"]

DATA_KINDS = {"telemetry": "recs", "events": "events"}  # topic kind -> the payload key of its list
MAX_GAPS_SHOWN = 20  # in a snapshot: the oldest ones; the counts cover them all


@dataclass(frozen=True)
class Gap:
    """Ids ``first..last`` (inclusive) not received; ``explained`` by evictions or not (a loss)."""

    first: int
    last: int
    explained: bool

    @property
    def size(self) -> int:
        return self.last - self.first + 1


class IdSet:
    """A set of integers kept as sorted, merged ranges: a gateway's million ids cost a few ranges."""

    def __init__(self) -> None:
        self._lo: list[int] = []
        self._hi: list[int] = []  # inclusive; ranges never touch (merged)

    def __len__(self) -> int:
        return sum(h - lo + 1 for lo, h in zip(self._lo, self._hi))

    def __contains__(self, value: int) -> bool:
        i = bisect.bisect_right(self._lo, value) - 1
        return i >= 0 and value <= self._hi[i]

    def add(self, value: int) -> bool:
        """Add ``value``; False when it was already there."""
        i = bisect.bisect_right(self._lo, value) - 1
        if i >= 0 and value <= self._hi[i]:
            return False
        joins_left = i >= 0 and self._hi[i] == value - 1
        joins_right = i + 1 < len(self._lo) and self._lo[i + 1] == value + 1
        if joins_left and joins_right:
            self._hi[i] = self._hi[i + 1]
            del self._lo[i + 1], self._hi[i + 1]
        elif joins_left:
            self._hi[i] = value
        elif joins_right:
            self._lo[i + 1] = value
        else:
            self._lo.insert(i + 1, value)
            self._hi.insert(i + 1, value)
        return True

    @property
    def first(self) -> int | None:
        return self._lo[0] if self._lo else None

    @property
    def last(self) -> int | None:
        return self._hi[-1] if self._hi else None

    def holes(self) -> list[tuple[int, int]]:
        """The missing ranges between the lowest and the highest member, oldest first."""
        return [(self._hi[i] + 1, self._lo[i + 1] - 1) for i in range(len(self._lo) - 1)]


def _digest(item: dict[str, Any]) -> bytes:
    return hashlib.sha256(json.dumps(item, sort_keys=True, separators=(",", ":")).encode("utf-8")).digest()[:16]


def parse_topic(topic: str, prefix: str) -> tuple[str, str, str] | None:
    """``(site, gw, kind)`` of ``{prefix}/{site}/{gw}/{kind}`` (kind may hold a slash: ``cmd/result``)."""
    head = prefix.rstrip("/") + "/"
    if not topic.startswith(head):
        return None
    parts = topic[len(head):].split("/")
    if len(parts) < 3 or not parts[0] or not parts[1]:
        return None
    return parts[0], parts[1], "/".join(parts[2:])


@dataclass
class GatewayTrack:
    """What the tracker knows of one gateway (see the module docstring for each figure)."""

    site: str
    gw: str
    records: int = 0
    duplicates: int = 0
    conflicts: int = 0
    bad: int = 0
    state: dict[str, Any] | None = None
    last_seen_ms: int | None = None
    evicted_growth: int = 0
    ids: IdSet = field(default_factory=IdSet)
    _digests: dict[int, bytes] = field(default_factory=dict, repr=False)
    _evicted_total: int | None = field(default=None, repr=False)

    def take(self, item: Any) -> bool:
        """One record or event; True when it is the first copy of its id."""
        rid = item.get("id") if isinstance(item, dict) else None
        if not isinstance(rid, int) or isinstance(rid, bool):
            self.bad += 1
            return False
        digest = _digest(item)
        if self.ids.add(rid):
            self.records += 1
            self._digests[rid] = digest
            return True
        if self._digests.get(rid) == digest:
            self.duplicates += 1
        else:
            self.conflicts += 1
        return False

    def take_state(self, state: dict[str, Any]) -> None:
        self.state = state
        evicted = state.get("evicted")
        if not isinstance(evicted, dict):
            return  # the Last Will and an early birth carry none
        total = sum(v for v in evicted.values() if isinstance(v, int) and not isinstance(v, bool))
        if self._evicted_total is not None:
            self.evicted_growth += total - self._evicted_total if total >= self._evicted_total else total
        self._evicted_total = total

    def gaps(self) -> list[Gap]:
        """Every missing range, oldest first, each explained or not by the eviction budget."""
        budget, out = self.evicted_growth, []
        for first, last in self.ids.holes():
            size = last - first + 1
            explained = size <= budget
            if explained:
                budget -= size
            out.append(Gap(first, last, explained))
        return out

    def snapshot(self) -> dict[str, Any]:
        """One JSON-ready object: the figures ``platform watch --json`` prints for this gateway."""
        state = self.state or {}
        backlog = state.get("backlog") if isinstance(state.get("backlog"), dict) else {}
        gaps = self.gaps()
        lost = [g for g in gaps if not g.explained]
        return {
            "site": self.site, "gw": self.gw, "online": state.get("online"), "version": state.get("version"),
            "backlog": backlog.get("count"), "backlog_by_prio": backlog.get("by_prio"),
            "evicted": state.get("evicted"), "devices": state.get("devices"), "clock": state.get("clock"),
            "broker": state.get("broker"),  # the broker node the gateway is on (mqtt.hosts)
            "last_seen_ms": self.last_seen_ms, "records": self.records, "first_id": self.ids.first,
            "last_id": self.ids.last, "missing": sum(g.size for g in lost),
            "missing_explained": sum(g.size for g in gaps if g.explained), "duplicates": self.duplicates,
            "conflicts": self.conflicts, "bad": self.bad,
            "gaps": [[g.first, g.last, g.explained] for g in gaps[:MAX_GAPS_SHOWN]],
        }


class Tracker:
    """Every gateway under ``prefix``, fed message by message (``feed``); not thread-safe: one
    consumer thread feeds it, or the caller locks."""

    def __init__(self, prefix: str = "edge/v1") -> None:
        self.prefix = prefix.rstrip("/")
        self.gateways: dict[str, GatewayTrack] = {}
        self.ignored = 0  # messages outside ``prefix/site/gw/...``

    def gateway(self, site: str, gw: str) -> GatewayTrack:
        key = f"{site}/{gw}"
        track = self.gateways.get(key)
        if track is None:
            track = self.gateways[key] = GatewayTrack(site, gw)
        return track

    def feed(self, topic: str, payload: bytes, now_ms: int | None = None) -> list[dict[str, Any]]:
        """Take one message; return the records or events in it seen for the first time (a
        consumer stores these: duplicates are already gone). Commands and results are noted
        as activity only."""
        where = parse_topic(topic, self.prefix)
        if where is None:
            self.ignored += 1
            return []
        site, gw, kind = where
        track = self.gateway(site, gw)
        if now_ms is not None:
            track.last_seen_ms = now_ms
        if kind == "state":
            try:
                state = json.loads(bytes(payload))
            except (UnicodeDecodeError, ValueError):
                state = None
            if isinstance(state, dict):
                track.take_state(state)
            elif payload:  # an empty retained payload clears the topic: not an error
                track.bad += 1
            return []
        key = DATA_KINDS.get(kind)
        if key is None:
            return []
        try:
            items = decode_payload(payload).get(key)
        except PayloadError:
            items = None
        if not isinstance(items, list):
            track.bad += 1
            return []
        return [item for item in items if track.take(item)]

    def feed_all(self, messages: Iterable[tuple[str, bytes]]) -> None:
        for topic, payload in messages:
            self.feed(topic, payload)

    def snapshot(self) -> list[dict[str, Any]]:
        """Every gateway's figures, sorted by ``site/gw``."""
        return [self.gateways[key].snapshot() for key in sorted(self.gateways)]
