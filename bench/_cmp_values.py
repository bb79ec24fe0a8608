"""Pure helpers of the side-by-side bench (compare_thingsboard.py): which value is which, and
what a gateway delivered of what the simulator served. No I/O here, so a unit test can hold
them (tests/test_bench_compare_values.py).

Values: the simulator answers read number ``seq`` (1, 2, ...) of register ``reg`` of unit
``unit`` with ``value_of(unit, reg, seq)``, a uint16 spread over 0..65535 like a real reading
(so JSON costs what real values cost, 4.8 digits on average) from which ``seq_of`` gets the
read back: seq is multiplied by an odd constant modulo 2^16, a bijection. One run must stay
under 65,536 reads of one register (22 minutes at 20 ms); the bench starts a fresh simulator
per run.

Names: both gateways call unit ``u`` device ``dev{u:02d}`` and register ``r`` point ``r{r}``.

Payloads, counted generically while the agent's wire format moves from v1 to v2:
- edge-agent telemetry (topic ending ``/telemetry``): v2 ``{"recs": [{"id", "dev", "ts",
  "vals": {point: value}}]}`` (contract section 4), else v1 ``{"readings": [{"id", "dev",
  "pt", "val", "ts"}]}``; either as an xz stream when ``mqtt.compress`` is on (the bytes on
  the wire are then the compressed ones);
- ThingsBoard gateway, topic ``v1/gateway/telemetry``: ``{"dev01": [{"ts": ..., "values":
  {"r0": 3, ...}}, ...]}`` (a bare ``{"r0": 3}`` in place of the list item is read as well); our
  agent in its ``thingsboard`` dialect publishes the same;
- our agent in its ``sparkplug`` dialect: ``spBv1.0/{group}/DDATA/{node}/{device}`` protobuf, metrics
  by alias, resolved from the device's last DBIRTH (decoded with the project's ``sparkplug_b_pb2``);
  only DDATA counts as data (births are counted like ThingsBoard's connect messages: not).
Each value comes with a "context" (its record's id and ts): a value received twice is an
identical duplicate when both contexts are equal.
"""

from __future__ import annotations

import json
import lzma
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

__all__ = ["value_of", "seq_of", "dev_name", "point_name", "unit_of", "reg_of", "is_data_topic",
           "values_in", "Value", "Served", "parse_served", "Delivery", "match", "Outcome", "outcome"]

_MUL = 40503  # odd: multiplication modulo 2^16 is a bijection
_INV = pow(_MUL, -1, 1 << 16)
TB_TELEMETRY = "v1/gateway/telemetry"
XZ_MAGIC = b"\xfd7zXZ\x00"


def _offset(unit: int, reg: int) -> int:
    return (unit * 4099 + reg * 257) & 0xFFFF


def value_of(unit: int, reg: int, seq: int) -> int:
    return ((seq & 0xFFFF) * _MUL + _offset(unit, reg)) & 0xFFFF


def seq_of(unit: int, reg: int, value: int) -> int:
    """The read that answered ``value`` (1..65536: the run stays under 2^16 reads a register)."""
    return (((value - _offset(unit, reg)) * _INV) & 0xFFFF) or 0x10000


def dev_name(unit: int) -> str:
    return f"dev{unit:02d}"


def point_name(reg: int) -> str:
    return f"r{reg}"


def unit_of(dev: str) -> int | None:
    return int(dev[3:]) if dev.startswith("dev") and dev[3:].isdigit() else None


def reg_of(point: str) -> int | None:
    return int(point[1:]) if point.startswith("r") and point[1:].isdigit() else None


def is_data_topic(topic: str) -> bool:
    """Telemetry of either gateway (not state, events, RPC, attributes or connect messages)."""
    return (topic == TB_TELEMETRY or (topic.endswith("/telemetry") and not topic.startswith("v1/"))
            or _spb_kind(topic) == "DDATA")


def _spb_kind(topic: str) -> str | None:
    parts = topic.split("/")
    return parts[2] if len(parts) == 5 and parts[0] == "spBv1.0" else None


class SparkplugAliases:
    """Device -> alias -> metric name, from the DBIRTHs seen (a host's view)."""

    def __init__(self) -> None:
        self.names: dict[str, dict[int, str]] = {}

    def values(self, topic: str, payload: bytes) -> list[Value]:
        from edge_agent.uplink import sparkplug_b_pb2 as pb

        kind, device = _spb_kind(topic), topic.split("/")[-1]
        msg = pb.Payload()
        msg.ParseFromString(payload)
        if kind == "DBIRTH":
            self.names[device] = {m.alias: m.name for m in msg.metrics if m.HasField("alias")}
            return []
        if kind != "DDATA":
            return []
        names = self.names.get(device, {})
        out = []
        for m in msg.metrics:
            name = m.name or names.get(m.alias, "")
            field = m.WhichOneof("value")
            out.append(Value(device, name, getattr(m, field) if field else None, (m.timestamp,)))
        return out


@dataclass(frozen=True)
class Value:
    dev: str
    point: str
    value: Any
    context: tuple[Any, ...]  # (id, ts) for edge-agent, (ts,) for ThingsBoard


def values_in(topic: str, payload: bytes | str) -> list[Value]:
    """Every value a data message carries; [] for any other topic."""
    if not is_data_topic(topic):
        return []
    if isinstance(payload, bytes) and payload.startswith(XZ_MAGIC):  # our mqtt.compress
        payload = lzma.decompress(payload, format=lzma.FORMAT_XZ)
    doc = json.loads(payload)
    if topic == TB_TELEMETRY:
        return list(_tb_values(doc))
    return list(_edge_values(doc))


def _edge_values(doc: dict[str, Any]) -> Iterator[Value]:
    if "recs" in doc:
        for rec in doc["recs"]:
            ctx = (rec.get("id"), rec.get("ts"), rec.get("sub"))
            for point, value in (rec.get("vals") or {}).items():
                yield Value(rec.get("dev", ""), point, value, ctx)
        return
    for item in doc.get("readings", ()):
        yield Value(item.get("dev", ""), item.get("pt", ""), item.get("val"), (item.get("id"), item.get("ts")))


def _tb_values(doc: dict[str, Any]) -> Iterator[Value]:
    for dev, entries in doc.items():
        for entry in entries if isinstance(entries, list) else [entries]:
            if isinstance(entry, dict) and isinstance(entry.get("values"), dict):
                values, ctx = entry["values"], (entry.get("ts"),)
            else:
                values, ctx = entry, (None,)
            for point, value in values.items():
                yield Value(dev, point, value, ctx)


# -- what the simulator served -----------------------------------------------------------
@dataclass
class Served:
    """Per (unit, reg), the time of each read: ``times[(unit, reg)][seq - 1]``; ``requests``
    the requests served with their time, for counting them in a window."""

    times: dict[tuple[int, int], list[float]] = field(default_factory=dict)
    request_times: list[float] = field(default_factory=list)

    def when(self, unit: int, reg: int, seq: int) -> float | None:
        series = self.times.get((unit, reg))
        return series[seq - 1] if series is not None and 0 < seq <= len(series) else None

    def between(self, t0: float, t1: float) -> Iterator[tuple[int, int, int, float]]:
        """(unit, reg, seq, t) of every value served at t0 <= t < t1."""
        for (unit, reg), series in self.times.items():
            for i, t in enumerate(series):
                if t0 <= t < t1:
                    yield unit, reg, i + 1, t

    def requests_between(self, t0: float, t1: float) -> int:
        return sum(1 for t in self.request_times if t0 <= t < t1)


def parse_served(lines: Iterable[str]) -> Served:
    """The simulator's log (``t unit first count seq[,seq...]``, see _cmp_sim.py)."""
    served = Served()
    for line in lines:
        parts = line.split()
        if len(parts) != 5:
            continue  # a line cut by a kill of the simulator (never happens in the bench)
        t, unit, first, count = float(parts[0]), int(parts[1]), int(parts[2]), int(parts[3])
        seqs = [int(s) for s in parts[4].split(",")]
        if len(seqs) == 1:
            seqs *= count
        served.request_times.append(t)
        for i, seq in enumerate(seqs):
            series = served.times.setdefault((unit, first + i), [])
            if seq != len(series) + 1:  # the log is in serving order per register
                raise ValueError(f"unit {unit} register {first + i}: read {seq} after {len(series)}")
            series.append(t)
    return served


# -- what the subscriber got -------------------------------------------------------------
@dataclass
class Delivery:
    """What arrived of the values served, keyed by (unit, reg, seq)."""

    first_arrival: dict[tuple[int, int, int], float] = field(default_factory=dict)
    duplicates: int = 0  # values received more than once
    different_duplicates: int = 0  # ... with a different context (id/ts) the second time
    foreign: int = 0  # values that name no served read (not ours, or past the 2^16 bound)
    values: int = 0  # every value received, duplicates included
    payload_bytes: int = 0  # MQTT payload bytes of the data messages
    messages: int = 0


def match(messages: Iterable[tuple[float, str, bytes]], served: Served) -> Delivery:
    """Match ``(arrival, topic, payload)`` messages to the reads the simulator logged."""
    out = Delivery()
    contexts: dict[tuple[int, int, int], tuple[Any, ...]] = {}
    spb = SparkplugAliases()
    for arrival, topic, payload in messages:
        values = spb.values(topic, payload) if _spb_kind(topic) else values_in(topic, payload)
        if not values and not is_data_topic(topic):
            continue
        out.messages += 1
        out.payload_bytes += len(payload)
        for v in values:
            out.values += 1
            unit, reg = unit_of(v.dev), reg_of(v.point)
            value = v.value
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if unit is None or reg is None or isinstance(value, bool) or not isinstance(value, int):
                out.foreign += 1
                continue
            key = (unit, reg, seq_of(unit, reg, value))
            if served.when(*key) is None:
                out.foreign += 1
                continue
            if key in out.first_arrival:
                out.duplicates += 1
                if contexts[key] != v.context:
                    out.different_duplicates += 1
                continue
            out.first_arrival[key] = arrival
            contexts[key] = v.context
    return out


@dataclass
class Outcome:
    """What became of the values served in a window."""

    latencies: list[float] = field(default_factory=list)  # first arrival - served, per delivered value
    lost: int = 0  # not delivered, and not served in the last ``margin`` s before a kill
    lost_near_kill: int = 0  # not delivered, served in the last ``margin`` s before a kill (or just after it)
    kills_losing: int = 0  # kills that a value of ``lost`` was served before (the first such kill)
    lost_ages: list[float] = field(default_factory=list)  # per value of ``lost``: that kill's time - served


def outcome(window: Iterable[tuple[int, int, int, float]], delivery: Delivery, kills: Iterable[float] = (),
            margin: float = 0.020, after: float = 0.1) -> Outcome:
    """Sort each served ``(unit, reg, seq, t)`` into delivered (with its latency) or lost.

    A value lost to a kill at ``k`` is excused when served at ``k - margin < t <= k + after``
    (a request the dying gateway had just sent may be served a little after the kill);
    any other lost value counts, charged to the first kill at or after it."""
    out, ks, losing = Outcome(), sorted(kills), set()
    for unit, reg, seq, t in window:
        arrival = delivery.first_arrival.get((unit, reg, seq))
        if arrival is not None:
            out.latencies.append(arrival - t)
        elif any(k - margin < t <= k + after for k in ks):
            out.lost_near_kill += 1
        else:
            out.lost += 1
            following = next((i for i, k in enumerate(ks) if t <= k), None)
            if following is not None:
                losing.add(following)
                out.lost_ages.append(ks[following] - t)
    out.kills_losing = len(losing)
    return out
