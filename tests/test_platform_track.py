"""The fleet tracker on streams made here: de-duplication on (gw, id), gaps, the eviction rule
(docs/platform.md, "What counts as a loss"), state, and payloads that do not decode."""

from __future__ import annotations

import json
import lzma

import pytest

from edge_agent.platform.track import IdSet, Tracker, parse_topic

ROOT = "edge/v1/site-a/gw-1"


def telemetry(*ids: int, gw: str = "gw-1", level: float = 1.0) -> bytes:
    recs = [{"id": i, "dev": "river-1", "ts": 1732380000000 + i, "vals": {"level_m": level}} for i in ids]
    return json.dumps({"v": 2, "gw": gw, "sent": 1732380000123, "recs": recs}).encode()


def events(*ids: int) -> bytes:
    evs = [{"id": i, "dev": "hub-1", "type": "sos", "prio": "critical", "ts": 1, "data": {}} for i in ids]
    return json.dumps({"v": 2, "gw": "gw-1", "sent": 1, "events": evs}).encode()


def state(online: bool = True, evicted: int | None = 0, **extra) -> bytes:
    body = {"online": online, "gw": "gw-1", **extra}
    if online:
        body.update(version="0.9.0", backlog={"count": 3, "by_prio": {"critical": 0, "high": 0, "normal": 3}},
                    devices={"online": 2, "offline": 1, "unknown": 0}, clock="synced",
                    evicted=None if evicted is None else {"critical": 0, "high": 0, "normal": evicted})
    return json.dumps(body).encode()


def only(tracker: Tracker) -> dict:
    (snap,) = tracker.snapshot()
    return snap


def stream(last_id: int, batch: int = 5) -> list[tuple[str, bytes]]:
    """A captured stream: ids 1..last_id in batches, the birth first."""
    out = [(f"{ROOT}/state", state())]
    for first in range(1, last_id + 1, batch):
        out.append((f"{ROOT}/telemetry", telemetry(*range(first, min(first + batch, last_id + 1)))))
    return out


def test_a_clean_stream_has_no_gap_and_no_duplicate():
    tracker = Tracker()
    tracker.feed_all(stream(40))
    snap = only(tracker)
    assert (snap["records"], snap["first_id"], snap["last_id"]) == (40, 1, 40)
    assert (snap["missing"], snap["missing_explained"], snap["duplicates"], snap["conflicts"]) == (0, 0, 0, 0)
    assert snap["gaps"] == []


def test_one_record_deleted_from_a_captured_stream_is_one_missing_id_unexplained():
    captured = stream(40)
    body = json.loads(captured[3][1])  # ids 11..15
    body["recs"] = [r for r in body["recs"] if r["id"] != 13]
    captured[3] = (captured[3][0], json.dumps(body).encode())
    tracker = Tracker()
    tracker.feed_all(captured)
    snap = only(tracker)
    assert snap["records"] == 39
    assert snap["missing"] == 1 and snap["gaps"] == [[13, 13, False]]


def test_a_gap_the_evicted_counts_grew_by_is_explained_and_a_larger_one_is_not():
    tracker = Tracker()
    tracker.feed(f"{ROOT}/state", state(evicted=7))  # the baseline: evictions before we watched explain nothing
    tracker.feed(f"{ROOT}/telemetry", telemetry(1, 2, 3))
    tracker.feed(f"{ROOT}/telemetry", telemetry(6, 7))  # 4..5 missing
    assert only(tracker)["missing"] == 2
    tracker.feed(f"{ROOT}/state", state(evicted=9))  # grew by 2: the gap is explained
    snap = only(tracker)
    assert (snap["missing"], snap["missing_explained"], snap["gaps"]) == (0, 2, [[4, 5, True]])
    tracker.feed(f"{ROOT}/telemetry", telemetry(11))  # 8..10 missing, the budget is spent
    snap = only(tracker)
    assert snap["gaps"] == [[4, 5, True], [8, 10, False]]
    assert (snap["missing"], snap["missing_explained"]) == (3, 2)


def test_gaps_are_charged_oldest_first_and_a_gap_the_budget_covers_only_in_part_is_a_loss():
    tracker = Tracker()
    tracker.feed(f"{ROOT}/state", state(evicted=0))
    tracker.feed_all([(f"{ROOT}/telemetry", telemetry(1, 5, 7))])  # gaps 2..4 (3 ids), 6 (1 id)
    tracker.feed(f"{ROOT}/state", state(evicted=2))
    assert only(tracker)["gaps"] == [[2, 4, False], [6, 6, True]]


def test_a_count_that_goes_down_keeps_its_growth_and_counts_again_from_the_new_value():
    tracker = Tracker()
    for evicted in (5, 6, 1, 3):  # +1, rebuilt buffer (1 counted), +2
        tracker.feed(f"{ROOT}/state", state(evicted=evicted))
    assert tracker.gateway("site-a", "gw-1").evicted_growth == 4


def test_a_gap_closed_later_is_no_longer_missing():
    tracker = Tracker()
    tracker.feed(f"{ROOT}/telemetry", telemetry(1, 2, 4))
    tracker.feed(f"{ROOT}/events", events(3))  # events share the id sequence; a late one closes the gap
    snap = only(tracker)
    assert (snap["records"], snap["missing"], snap["gaps"]) == (4, 0, [])


def test_duplicates_identical_and_different_are_counted_apart_and_only_first_copies_are_returned():
    tracker = Tracker()
    assert [r["id"] for r in tracker.feed(f"{ROOT}/telemetry", telemetry(1, 2, 3))] == [1, 2, 3]
    assert tracker.feed(f"{ROOT}/telemetry", telemetry(2, 3)) == []  # resent after a lost PUBACK
    fresh = tracker.feed(f"{ROOT}/telemetry", telemetry(3, 4, level=2.5))  # 3 again, other content
    assert [r["id"] for r in fresh] == [4]
    snap = only(tracker)
    assert (snap["records"], snap["duplicates"], snap["conflicts"]) == (4, 2, 1)


def test_dedupe_is_per_gateway():
    tracker = Tracker()
    tracker.feed(f"{ROOT}/telemetry", telemetry(1, 2))
    tracker.feed("edge/v1/site-a/gw-2/telemetry", telemetry(1, 2, gw="gw-2"))
    assert [(s["gw"], s["records"], s["duplicates"]) for s in tracker.snapshot()] == [("gw-1", 2, 0), ("gw-2", 2, 0)]


def test_state_birth_and_last_will():
    tracker = Tracker()
    tracker.feed(f"{ROOT}/state", state(), now_ms=1000)
    snap = only(tracker)
    assert (snap["online"], snap["version"], snap["backlog"], snap["clock"]) == (True, "0.9.0", 3, "synced")
    assert snap["devices"] == {"online": 2, "offline": 1, "unknown": 0} and snap["last_seen_ms"] == 1000
    assert snap["backlog_by_prio"]["normal"] == 3 and snap["evicted"]["normal"] == 0
    tracker.feed(f"{ROOT}/state", state(online=False), now_ms=2000)
    assert only(tracker)["online"] is False


def test_compressed_payloads_decode():
    tracker = Tracker()
    tracker.feed(f"{ROOT}/telemetry", lzma.compress(telemetry(1, 2), format=lzma.FORMAT_XZ))
    assert only(tracker)["records"] == 2


@pytest.mark.parametrize("payload", [b"", b"not json", b"[1]", b'{"v": 2, "recs": 5}',
                                     b'{"v": 2, "recs": [{"id": "7"}]}', b'{"v": 2, "recs": [{"id": true}]}'])
def test_a_payload_that_does_not_decode_is_counted_never_raised(payload):
    tracker = Tracker()
    assert tracker.feed(f"{ROOT}/telemetry", payload) == []
    assert only(tracker)["bad"] == 1 and only(tracker)["records"] == 0


def test_topics_outside_the_prefix_are_ignored_and_commands_are_activity_only():
    tracker = Tracker("edge/v1")
    tracker.feed("other/x/y/telemetry", telemetry(1))
    tracker.feed("edge/v1/site-a", b"{}")
    assert tracker.snapshot() == [] and tracker.ignored == 2
    tracker.feed(f"{ROOT}/cmd/result", b'{"v": 1}', now_ms=5)
    assert only(tracker)["records"] == 0 and only(tracker)["last_seen_ms"] == 5
    assert parse_topic(f"{ROOT}/cmd/result", "edge/v1/") == ("site-a", "gw-1", "cmd/result")


def test_idset_merges_ranges_and_lists_holes():
    ids = IdSet()
    for value in (5, 1, 3, 2, 9, 4, 10):
        assert ids.add(value)
    assert not ids.add(3)
    assert len(ids) == 7 and 4 in ids and 6 not in ids
    assert (ids.first, ids.last, ids.holes()) == (1, 10, [(6, 8)])
    ids.add(7)
    assert ids.holes() == [(6, 6), (8, 8)]
