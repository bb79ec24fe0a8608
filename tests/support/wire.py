"""What the platform reads off the wire (CONTRACT section 4, v2), for the tests that subscribe.

Telemetry carries **records** (one poll of one device or unit, one id each); events keep one
item each. ``records`` and ``events`` take a subscriber's messages and return the items of every
payload on one topic, after checking each envelope and item against the contract, so every test
that reads the wire also checks its shape. ``values`` spreads records into one ``Value`` per
point, for the tests whose promise is about values (every served value arrives, scaled, good)::

    recs = records(platform.messages, f"{ROOT}/telemetry", gw="gw-1")
    ids = [r["id"] for r in recs]                        # ids are per record
    assert all(v.q == "good" for v in values(recs))      # a point is good unless q names it
"""

from __future__ import annotations

import json
from typing import Any, Iterable, NamedTuple

__all__ = ["records", "events", "values", "check_envelope", "check_record", "Value", "RECORD_KEYS"]

RECORD_KEYS = ("id", "dev", "sub", "ts", "vals", "q", "sealed", "clk")  # the contract's order
EVENT_KEYS = {"id", "dev", "type", "prio", "ts", "data", "clk"}


class Value(NamedTuple):
    """One point of one record as the platform reads it (a sealed point is not among them)."""

    id: int
    dev: str
    sub: str | None
    ts: int
    pt: str
    val: Any
    q: str
    clk: str | None


def _payloads(messages: Iterable[Any], topic: str, key: str, gw: str | None) -> list[dict]:
    items: list[dict] = []
    for m in messages:
        if m.topic != topic:
            continue
        body = json.loads(m.payload)
        check_envelope(body, key, topic)
        assert gw is None or body["gw"] == gw, body["gw"]
        items.extend(body[key])
    return items


def check_envelope(body: dict, key: str, topic: str = "") -> dict:
    """``body`` if it is a v2 payload of ``key`` items ("recs" or "events"): v, gw, sent, the
    items, and ``replay`` (the command id) on a ``buffer.replay`` message only."""
    assert set(body) - {"replay"} == {"v", "gw", "sent", key}, f"{topic}: envelope keys {sorted(body)}"
    assert body["v"] == 2, f"{topic}: v {body['v']!r}, not 2"
    assert isinstance(body["gw"], str) and isinstance(body["sent"], int), body
    assert isinstance(body[key], list) and body[key], body
    assert isinstance(body.get("replay", ""), str), body
    return body


def check_record(rec: dict) -> dict:
    """``rec`` if it has the contract's shape: id, dev, ts, vals; q only for points in vals that
    are not good (a bad one null); one ``{kid, ct}`` seal; sub and clk as before; keys in order."""
    assert set(rec) <= set(RECORD_KEYS) and {"id", "dev", "ts", "vals"} <= set(rec), rec
    assert list(rec) == [k for k in RECORD_KEYS if k in rec], f"keys out of the contract's order: {list(rec)}"
    assert isinstance(rec["id"], int) and isinstance(rec["dev"], str) and isinstance(rec["ts"], int), rec
    assert isinstance(rec["vals"], dict) and (rec["vals"] or "sealed" in rec), f"an empty record: {rec}"
    if "q" in rec:
        assert rec["q"] and set(rec["q"]) <= set(rec["vals"]), f"q names a point not in vals: {rec}"
        assert set(rec["q"].values()) <= {"bad", "stale"}, rec
        assert all(rec["vals"][pt] is None for pt, q in rec["q"].items() if q == "bad"), rec
    if "sealed" in rec:
        assert isinstance(rec["sealed"], dict) and set(rec["sealed"]) == {"kid", "ct"}, rec
    if "sub" in rec:
        assert isinstance(rec["sub"], str) and rec["sub"], rec
    if "clk" in rec:
        assert rec["clk"] == "unsynced", rec
    return rec


def records(messages: Iterable[Any], topic: str, gw: str | None = None) -> list[dict]:
    """Every record of every v2 telemetry payload on ``topic``, in arrival order (a record
    published twice is here twice), each checked by ``check_record``."""
    return [check_record(rec) for rec in _payloads(messages, topic, "recs", gw)]


def events(messages: Iterable[Any], topic: str, gw: str | None = None) -> list[dict]:
    """Every event of every v2 events payload on ``topic``, in arrival order."""
    out = _payloads(messages, topic, "events", gw)
    for ev in out:
        assert set(ev) <= EVENT_KEYS and {"id", "dev", "type", "prio", "ts", "data"} <= set(ev), ev
    return out


def values(recs: Iterable[dict]) -> list[Value]:
    """One ``Value`` per point in each record's ``vals`` (quality ``good`` unless ``q`` says)."""
    return [Value(rec["id"], rec["dev"], rec.get("sub"), rec["ts"], pt, val, rec.get("q", {}).get(pt, "good"),
                  rec.get("clk"))
            for rec in recs for pt, val in rec["vals"].items()]
