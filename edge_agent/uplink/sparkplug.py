"""The ``sparkplug`` dialect: Eclipse Sparkplug B 3.0 (CONTRACT section 8; docs/dialects.md,
"Sparkplug B", has the whole mapping). Pure: no paho, no I/O but the bdSeq file.

Topics ``spBv1.0/{group}/{NBIRTH|NDEATH|NDATA|NCMD|DBIRTH|DDEATH|DDATA|DCMD}/{node}[/{device}]``:
group = ``mqtt.sparkplug.group_id`` (default the site), node = the gateway id, device = the
device name; the primary host's ``spBv1.0/STATE/{host}`` (3.0: JSON ``{"online", "timestamp"}``).

Session: the Last Will is an NDEATH carrying ``bdSeq`` (0-255, one more on every connection and
on every start, kept in ``bdseq_path`` by ``sparkplug_bdseq``, so a kill -9 or a power cut never
reuses one). On connect, when no primary host is configured or its STATE says online:
NBIRTH (seq 0, the will's bdSeq, ``Node Control/Rebirth`` false and the node metrics of the state)
then a DBIRTH per enabled device, then data; ``seq`` goes 0-255 over every message but NDEATH.
An NCMD Rebirth births everything again with the same bdSeq (the will cannot change in a session).
A host going offline stops data (``ready`` is False: rows wait in the buffer); its return births
again, and what waited goes out with ``is_historical``.

Data: a batch of records becomes one DDATA per device, metrics by alias (aliases are unique across
the edge node and kept for the run), each with its record's ``ts``; an event becomes one DDATA of
its device with ``Event/type``, ``Event/prio``, ``Event/id`` and ``Event/data`` (JSON), and an
``offline`` event a DDEATH after it (and after each of its units). A unit inside a device (a band
on a hub, a lane of a gate) is a Sparkplug device of its own, ``hub-1_B-00023``
(``sparkplug_device`` says why). A metric the last DBIRTH did not declare, or a value that does
not fit its datatype (``sparkplug_metric``), first births that device again, then the DDATA.
``is_historical``: rows of the backlog lane, and rows measured before the current NBIRTH (buffered
while disconnected or while the host was offline; an old critical event too).

Commands (``sparkplug_command``): a DCMD metric is a ``device.write`` (unsigned) or, a String
holding our signed JSON, a signed command; ``inbounds`` gives one ``Inbound`` per metric written,
``inbound`` (the ``Dialect`` method) the first. Nothing answers: Sparkplug has no results.

QoS: every message at QoS 1, where Sparkplug 3.0 asks QoS 0 for births and data. A deliberate
choice: the outbox marks a row sent only once the broker has it (store-and-forward is the same in
every dialect); the broker delivers to each host at that host's subscription QoS, so hosts see no
difference. ``QOS`` changes it in one place.

Threads (``dialect.py``): one lock for seq, bdSeq, aliases and births; link calls are never made
holding it (``publish_ordered`` takes the uplink's publish lock, then ours: always that order).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..model import Driver
from ..settings import Settings
from . import sparkplug_b_pb2 as pb
from .dialect import Inbound, Link, Message
from .sparkplug_bdseq import BdSeq
from .sparkplug_command import device_commands, written
from .sparkplug_device import EVENT_METRICS, SEALED, Device, Devices
from .sparkplug_metric import BOOLEAN, DATETIME, INT64, STRING, Slot, fits, set_value

__all__ = ["SparkplugDialect", "NAMESPACE", "EVENT_METRICS", "NODE_METRICS", "QOS"]

log = logging.getLogger("edge_agent.uplink")

NAMESPACE = "spBv1.0"
QOS = 1  # the module docstring says why not Sparkplug's 0
BDSEQ, REBIRTH, COMMAND = "bdSeq", "Node Control/Rebirth", "Node Control/Command"
# node metric, datatype, where in the uplink's state dict (uplink/state.py)
NODE_METRICS = (
    ("Properties/version", STRING, ("version",)), ("Properties/started", DATETIME, ("started",)),
    ("Backlog/count", INT64, ("backlog", "count")), ("Backlog/bytes", INT64, ("backlog", "bytes")),
    ("Backlog/oldest", DATETIME, ("backlog", "oldest_ts")), ("Evicted/critical", INT64, ("evicted", "critical")),
    ("Evicted/high", INT64, ("evicted", "high")), ("Evicted/normal", INT64, ("evicted", "normal")),
    ("Devices/online", INT64, ("devices", "online")), ("Devices/offline", INT64, ("devices", "offline")),
    ("Clock", STRING, ("clock",)),
)
QUALITY = {"bad": 0, "stale": 500}  # the "Quality" property's codes (Ignition's; 192 is good)
_INT32 = 3


def _wall_ms() -> int:
    return int(time.time() * 1000)


def _dig(state: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = state
    for key in path:
        value = value.get(key) if isinstance(value, Mapping) else None
    return value


class SparkplugDialect:
    name = "sparkplug"

    def __init__(self, settings: Settings, *, bdseq_path: Path, now_ms: Callable[[], int] = _wall_ms,
                 drivers: Mapping[str, Driver] | None = None) -> None:
        """``drivers``: driver id -> ``Driver`` (``field.registry.drivers()``, which the uplink may
        not import), for each device's declared datatypes; without it they are learned from values."""
        sp = settings.mqtt.sparkplug
        self.group, self.node, self.host = sp.group_id or settings.gateway.site, settings.gateway.id, sp.primary_host
        for what, ident in (("group id", self.group), ("edge node id", self.node), ("primary host id", self.host)):
            if ident is not None and (not ident or any(c in ident for c in "/+#")):
                raise ValueError(f"sparkplug {what} {ident!r} must be non-empty without '/', '+' or '#'")
        self._bdseq, self._now = BdSeq(bdseq_path), now_ms
        self._lock = threading.Lock()
        self._devices = Devices(settings, drivers)
        node = ((BDSEQ, INT64), (REBIRTH, BOOLEAN), (COMMAND, STRING), *((n, t) for n, t, _ in NODE_METRICS))
        self._node_slots = {name: self._devices.slot(name, dt) for name, dt in node}
        self._seq = 0
        self._born, self._born_ms = False, 0
        self._host_online: bool | None = None  # None: no STATE seen on this connection yet
        self._host_ts = -1
        self._state: dict[str, Any] = {}
        self._node_sent: dict[str, Any] = {}

    # -- the Dialect protocol -------------------------------------------------------------------
    def will(self) -> Message | None:
        with self._lock:
            bdseq = self._bdseq.current()
        return Message(self._topic("NDEATH"), self._ndeath(bdseq, self._now()), retain=False, qos=1)

    def subscriptions(self) -> Sequence[str]:
        subs = [self._topic("NCMD"), self._topic("DCMD", "+")]
        if self.host is not None:
            subs.append(self._state_topic())
        return tuple(subs)

    def births(self, link: Link, state: Mapping[str, Any]) -> None:
        with self._lock:
            self._state = dict(state)
            self._unborn_locked()
            go = self.host is None or self._host_online is True
        if go:
            self._publish_births(link)

    def ready(self) -> bool:
        with self._lock:
            return self._born

    def data(self, batch: Any, sent_ms: int) -> Sequence[Message]:
        out: list[Message] = []
        with self._lock:
            if not self._born:
                # the host went offline after ready(): the uplink keeps the rows (a dialect failure)
                raise RuntimeError("sparkplug: data before the births (the primary host is offline)")
            if batch.kind == "event":
                for row in batch.rows:
                    self._event_locked(row.body, self._historical(batch.lane, row.body), sent_ms, out)
                return out
            by_dev: dict[tuple[str, str | None], list[Any]] = {}
            for row in batch.rows:
                sub = row.body.get("sub")
                by_dev.setdefault((str(row.body.get("dev")), None if sub is None else str(sub)), []).append(row.body)
            for (name, sub), bodies in by_dev.items():
                dev = self._devices.known(name) if sub is None else self._devices.unit(name, sub)
                self._records_locked(dev, bodies, batch.lane, sent_ms, out)
        return out

    def state(self, state: Mapping[str, Any]) -> Sequence[Message]:
        """NDATA with the node metrics that changed since the last NBIRTH or NDATA (nothing if none)."""
        with self._lock:
            self._state = dict(state)
            if not self._born:
                return ()
            changed = [(name, _dig(state, path)) for name, _, path in NODE_METRICS]
            changed = [(name, value) for name, value in changed if self._node_sent.get(name) != value]
            if not changed:
                return ()
            now = self._now()
            payload = self._payload(now, self._next_seq())
            for name, value in changed:
                self._metric(payload, self._node_slots[name], value, now)
                self._node_sent[name] = value
            return (self._message("NDATA", payload),)

    def offline(self, stopped_ms: int) -> Sequence[Message]:
        with self._lock:
            self._unborn_locked()
            bdseq = self._bdseq.current()
        return (Message(self._topic("NDEATH"), self._ndeath(bdseq, stopped_ms), retain=False, qos=1),)

    def inbound(self, topic: str, payload: bytes, link: Link) -> Inbound | None:
        """The command in an NCMD or DCMD (the first, when a DCMD writes several metrics: the uplink
        should call ``inbounds``); a STATE or a Rebirth is dealt with here (None)."""
        found = self.inbounds(topic, payload, link)
        if len(found) > 1:
            log.warning("sparkplug: a DCMD wrote %d metrics; only the first is carried out", len(found))
        return found[0] if found else None

    def inbounds(self, topic: str, payload: bytes, link: Link) -> list[Inbound]:
        """Every command in an NCMD or DCMD: one ``Inbound`` per metric written, in payload order."""
        if self.host is not None and topic == self._state_topic():
            self._on_state(payload, link)
            return []
        parts = topic.split("/")
        if len(parts) < 4 or parts[0] != NAMESPACE or parts[1] != self.group or parts[3] != self.node:
            return []
        try:
            message = pb.Payload.FromString(payload)
        except Exception:  # not a Sparkplug payload: nothing to act on
            log.debug("sparkplug: ignored an undecodable message on %s", topic)
            return []
        if parts[2] == "NCMD" and len(parts) == 4:
            return self._ncmd(message, link)
        if parts[2] == "DCMD" and len(parts) == 5:
            return self._dcmd(parts[4], message)
        return []

    def reply(self, inbound: Inbound, result: Mapping[str, Any]) -> Message | None:
        """None: Sparkplug has no command results; a write shows as the point's next DDATA, and every
        command, refused or done, is in the audit log."""
        return None

    def on_disconnect(self) -> None:
        with self._lock:
            self._unborn_locked()
            self._host_online = None
            self._bdseq.advance()

    # -- births ---------------------------------------------------------------------------------
    def _publish_births(self, link: Link) -> None:
        def build() -> Sequence[Message]:
            with self._lock:
                if self.host is not None and self._host_online is not True:
                    return ()  # the host went offline meanwhile
                return self._births_locked()
        if link.publish_ordered(build):
            link.wake()

    def _births_locked(self) -> list[Message]:
        now = self._now()
        self._seq = 0
        payload = self._payload(now, 0)
        self._metric(payload, self._node_slots[BDSEQ], self._bdseq.current(), now, birth=True)
        self._metric(payload, self._node_slots[REBIRTH], False, now, birth=True)
        self._metric(payload, self._node_slots[COMMAND], None, now, birth=True)
        self._node_sent = {}
        for name, _, path in NODE_METRICS:
            self._node_sent[name] = value = _dig(self._state, path)
            self._metric(payload, self._node_slots[name], value, now, birth=True)
        out = [self._message("NBIRTH", payload)]
        for dev in self._devices:  # configured devices, then the units met so far
            if dev.configured:
                dev.dead = False
                out.append(self._dbirth_locked(dev, now))
        self._born, self._born_ms = True, now
        return out

    def _dbirth_locked(self, dev: Device, now: int) -> Message:
        payload = self._payload(now, self._next_seq())
        for name, slot in dev.slots.items():
            ts, value = dev.last.get(name, (now, None))
            self._metric(payload, slot, value, ts, birth=True)
        dev.born = True
        return self._message("DBIRTH", payload, dev.name)

    def _unborn_locked(self) -> None:
        self._born = False
        for dev in self._devices:
            dev.born = False

    def _on_state(self, raw: bytes, link: Link) -> None:
        try:
            obj = json.loads(raw)
        except ValueError:
            obj = {"online": bytes(raw).strip() == b"ONLINE"}  # Sparkplug 2.2 hosts send ONLINE/OFFLINE
        if not isinstance(obj, dict):
            return
        online, ts = obj.get("online") is True, obj.get("timestamp")
        with self._lock:
            if isinstance(ts, int) and ts < self._host_ts:
                return  # an older STATE than one already seen (3.0: compare timestamps)
            if isinstance(ts, int):
                self._host_ts = ts
            self._host_online = online
            if not online:
                self._unborn_locked()  # data waits in the buffer until the host is back
            go = online and not self._born
        if go:
            self._publish_births(link)

    # -- data -----------------------------------------------------------------------------------
    def _historical(self, lane: str, body: Mapping[str, Any]) -> bool:
        ts = body.get("ts")
        return lane == "backlog" or (isinstance(ts, int) and ts < self._born_ms)

    def _records_locked(self, dev: Device, bodies: list[Any], lane: str, sent_ms: int, out: list[Message]) -> None:
        values: list[tuple[Slot, Any, int, bool, str | None]] = []
        changed = False
        for body in bodies:
            ts, hist = int(body["ts"]), self._historical(lane, body)
            q = body.get("q") or {}
            items = list((body.get("vals") or {}).items())
            if body.get("sealed") is not None:
                items.append((SEALED, json.dumps(body["sealed"], separators=(",", ":"))))
            for point, value in items:
                slot, new = self._devices.slot_of(dev, point, value)
                changed = slot.settle(value) or new or changed
                values.append((slot, value, ts, hist, q.get(point)))
        self._send_locked(dev, values, sent_ms, out, changed)

    def _event_locked(self, body: Mapping[str, Any], hist: bool, sent_ms: int, out: list[Message]) -> None:
        dev = self._devices.known(str(body.get("dev")))
        ts = int(body["ts"])
        data = json.dumps(body.get("data") or {}, ensure_ascii=False, separators=(",", ":"))
        values = [(dev.slots[name], value, ts, hist, None) for (name, _), value in
                  zip(EVENT_METRICS, (body.get("type"), body.get("prio"), body.get("id"), data))]
        self._send_locked(dev, values, sent_ms, out, False)
        if body.get("type") == "offline":  # the device and every unit inside it
            for gone in [dev, *(self._devices.known(u) for u in dev.units)]:
                if gone.born and not gone.dead:
                    out.append(self._message("DDEATH", self._payload(sent_ms, self._next_seq()), gone.name))
                gone.dead, gone.dead_ts = True, ts

    def _send_locked(self, dev: Device, values: list[tuple[Slot, Any, int, bool, str | None]], sent_ms: int,
                     out: list[Message], changed: bool) -> None:
        """DDATA of ``values`` (after a DBIRTH when the device needs one); a device that an
        ``offline`` event killed and that sends only older rows is born for them and dies again."""
        was_dead = dev.dead
        if changed or not dev.born or dev.dead:
            out.append(self._dbirth_locked(dev, sent_ms))
            dev.dead = False
        payload = self._payload(sent_ms, self._next_seq())
        for slot, value, ts, hist, quality in values:
            metric = self._metric(payload, slot, value, ts, historical=hist)
            if quality in QUALITY and value is not None:
                metric.properties.keys.append("Quality")
                metric.properties.values.add(type=_INT32, int_value=QUALITY[quality])
            if ts >= dev.last.get(slot.name, (-1, None))[0]:
                dev.last[slot.name] = (ts, value)
        out.append(self._message("DDATA", payload, dev.name))
        if was_dead and all(ts <= dev.dead_ts for _, _, ts, _, _ in values):
            out.append(self._message("DDEATH", self._payload(sent_ms, self._next_seq()), dev.name))
            dev.dead = True

    # -- commands -------------------------------------------------------------------------------
    def _ncmd(self, message: Any, link: Link) -> list[Inbound]:
        found: list[Inbound] = []
        rebirth = False
        for name, _, value in written(message, self._node_slots, self.node):
            if name == REBIRTH and value is True:
                rebirth = True
            elif name == COMMAND and isinstance(value, str):
                found.append(Inbound("sparkplug", signed=value.encode("utf-8")))
        if rebirth:
            with self._lock:
                allowed = self.host is None or self._host_online is True
            if allowed:
                self._publish_births(link)
        return found

    def _dcmd(self, device: str, message: Any) -> list[Inbound]:
        with self._lock:
            dev = self._devices.get(device)
            slots = dict(dev.slots) if dev is not None else {}
            target, sub = (dev.parent, dev.sub) if dev is not None and dev.parent is not None else (device, None)
        return device_commands(device, target, sub, message, slots)

    # -- helpers (the lock held where it matters) -----------------------------------------------
    def _metric(self, payload: Any, slot: Slot, value: Any, ts: int, *, birth: bool = False,
                historical: bool = False) -> Any:
        metric = payload.metrics.add(alias=slot.alias, timestamp=ts)
        if birth:
            metric.name, metric.datatype = slot.name, slot.datatype
        if historical:
            metric.is_historical = True
        if value is None or not fits(value, slot.datatype, loose=slot.loose):
            metric.is_null = True
        else:
            set_value(metric, slot.datatype, value)
        return metric

    def _payload(self, ts: int, seq: int | None) -> Any:
        payload = pb.Payload(timestamp=ts)
        if seq is not None:
            payload.seq = seq
        return payload

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) % 256
        return self._seq

    def _message(self, kind: str, payload: Any, device: str | None = None) -> Message:
        return Message(self._topic(kind, device), payload.SerializeToString(), retain=False, qos=QOS)

    def _topic(self, kind: str, device: str | None = None) -> str:
        base = f"{NAMESPACE}/{self.group}/{kind}/{self.node}"
        return base if device is None else f"{base}/{device}"

    def _state_topic(self) -> str:
        return f"{NAMESPACE}/STATE/{self.host}"

    def _ndeath(self, bdseq: int, ts: int) -> bytes:
        payload = self._payload(ts, None)  # NDEATH carries no seq
        self._metric(payload, self._node_slots[BDSEQ], bdseq, ts, birth=True)
        return payload.SerializeToString()
