"""The ``thingsboard`` dialect: the ThingsBoard gateway MQTT API (``mqtt.dialect: thingsboard``,
CONTRACT section 8, docs/dialects.md "ThingsBoard"), as thingsboard-gateway 3.8.5 publishes it
(``tests/uplink/fixtures/thingsboard-3.8.5.json``, recorded by ``bench/record_tb_fixture.py``).

ThingsBoard facts this relies on (its "MQTT Gateway API" and "MQTT Device API" pages, and its
server's ``JsonConverter``):
- the gateway is a device itself (``v1/devices/me/...``); the devices behind it are named in every
  ``v1/gateway/...`` payload; ``v1/gateway/connect`` ``{"device", "type"}`` creates the device with
  that profile (type) if it does not exist, and telemetry for an unconnected name connects it too;
- telemetry is keyed by (device, key, ts): the same values sent again overwrite themselves, so
  at-least-once duplicates after a reconnect are harmless;
- a value is a string, a boolean, a number or JSON; a ``null`` value makes the server reject the
  whole message ("Can't parse value"), so no value here is ever ``null``;
- server-side RPC arrives on ``v1/gateway/rpc`` ``{"device", "data": {"id", "method", "params"}}``
  and is answered on the same topic ``{"device", "id", "data"}``; RPC to the gateway device itself
  on ``v1/devices/me/rpc/request/{n}`` ``{"method", "params"}``, answered on ``.../response/{n}``;
- there is no Last Will: ThingsBoard sees the gateway's session end itself (the gateway
  device's ``active``), and thingsboard-gateway sets none. At a clean stop it publishes
  ``v1/gateway/disconnect`` ``{"device"}`` for every device (``__close_connectors``); so do we.

A unit inside a device (``sub``: a band on a wearables hub, a lane of a gate) is a ThingsBoard
device of its own, ``{dev}/{sub}`` (config names have no ``/``), of type ``{driver}.unit``,
connected the first time it reports in a session: each band gets its own history and dashboard.
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any, Mapping, Sequence

from ..settings import Settings
from .dialect import Inbound, Link, Message
from .payload import encode

__all__ = ["ThingsBoardDialect", "CONNECT", "DISCONNECT", "TELEMETRY", "ATTRIBUTES", "RPC",
           "ME_ATTRIBUTES", "ME_TELEMETRY", "ME_RPC_REQUEST", "ME_RPC_RESPONSE"]

CONNECT = "v1/gateway/connect"
DISCONNECT = "v1/gateway/disconnect"
TELEMETRY = "v1/gateway/telemetry"
ATTRIBUTES = "v1/gateway/attributes"
RPC = "v1/gateway/rpc"
ME_ATTRIBUTES = "v1/devices/me/attributes"
ME_TELEMETRY = "v1/devices/me/telemetry"
ME_RPC_REQUEST = "v1/devices/me/rpc/request/"
ME_RPC_RESPONSE = "v1/devices/me/rpc/response/"

DEVICE_OPS = ("device.poll", "device.write")  # ops whose target is a device (commands/optable.py; a test checks)
STATE_ATTRIBUTES = ("gw", "version", "started", "clock")  # R/state keys that describe: the rest are figures
UNIT_TYPE = "{driver}.unit"  # the ThingsBoard type (device profile) of a unit inside a device


def _value(value: Any) -> Any:
    """A value ThingsBoard keeps as it is: an object or array as its compact JSON string (every
    ThingsBoard version reads a string; JSON entries came later)."""
    return encode(value).decode("utf-8") if isinstance(value, (dict, list, tuple)) else value


def _flat(prefix: str, obj: Mapping[str, Any], out: dict[str, Any]) -> dict[str, Any]:
    """Nested figures as dotted keys (``backlog.by_prio.critical``); ``None`` left out."""
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            _flat(name + ".", value, out)
        elif value is not None:
            out[name] = _value(value)
    return out


def record_values(body: Mapping[str, Any]) -> dict[str, Any]:
    """A record's ``values``: its points (a bad one's ``null`` left out), ``{point}.q`` for each
    point not good, ``sealed`` (the ``{kid, ct}`` as one JSON string), ``clk: unsynced``."""
    values = {k: _value(v) for k, v in body["vals"].items() if v is not None}
    for point, quality in (body.get("q") or {}).items():
        values[f"{point}.q"] = quality
    if body.get("sealed") is not None:
        values["sealed"] = _value(body["sealed"])
    if "clk" in body:
        values["clk"] = body["clk"]
    return values


def event_values(body: Mapping[str, Any]) -> dict[str, Any]:
    """An event's ``values``: ``event`` (type), ``event_prio``, ``event_id``, its data as
    ``event_{key}`` (``None`` left out; objects as JSON strings), ``clk: unsynced``."""
    values: dict[str, Any] = {"event": body["type"], "event_prio": body["prio"], "event_id": body["id"]}
    for key, value in (body.get("data") or {}).items():
        if value is not None:
            values[f"event_{key}"] = _value(value)
    if "clk" in body:
        values["clk"] = body["clk"]
    return values


class ThingsBoardDialect:
    """The ThingsBoard gateway API (module docstring). ``previous_devices``: the names connected
    in the last run (``connected()`` at its stop); those no longer in the config are
    disconnected at the next birth."""

    name = "thingsboard"

    def __init__(self, settings: Settings, previous_devices: Sequence[str] = ()) -> None:
        self._gw, self._site = settings.gateway.id, settings.gateway.site
        enabled = [d for d in settings.devices if d.enabled]
        self._types = {d.name: d.driver for d in enabled}
        self._attributes = {d.name: self._describe(settings, d) for d in enabled}
        self._removed = tuple(p for p in previous_devices if p.split("/", 1)[0] not in self._types)
        self._lock = threading.Lock()  # births (network thread), data (drain), offline: the two sets below
        self._session: set[str] = set()  # connected in this MQTT session
        self._run: set[str] = set(self._types)  # connected at some time in this run

    @staticmethod
    def _describe(settings: Settings, device: Any) -> dict[str, Any]:
        bus = settings.bus(device.bus)
        port = bus.serial or (f"{bus.host}:{bus.port}" if bus.host else None)
        attrs = {"driver": device.driver, "bus": device.bus, "protocol": bus.protocol, "port": port,
                 "address": device.address}
        return {k: v for k, v in attrs.items() if v is not None}

    def connected(self) -> tuple[str, ...]:
        """Every device name this run connects (config devices, units seen in any session): what the
        next run's ``previous_devices`` should be."""
        with self._lock:
            return tuple(sorted(self._run))

    # -- announcing ----------------------------------------------------------------------------
    def will(self) -> Message | None:
        return None  # ThingsBoard sees the session end itself (module docstring)

    def subscriptions(self) -> Sequence[str]:
        return (RPC, ME_RPC_REQUEST + "+")

    def births(self, link: Link, state: Mapping[str, Any]) -> None:
        """Disconnect devices removed from the config, connect every enabled device (simpler than
        "when it first reports", and ThingsBoard then routes RPC to a device before its first
        reading), describe them, then the gateway's own state."""
        with self._lock:
            self._session = set(self._types)
        messages = [Message(DISCONNECT, encode({"device": name})) for name in self._removed]
        messages += [Message(CONNECT, encode({"device": name, "type": driver})) for name, driver in self._types.items()]
        if self._attributes:
            messages.append(Message(ATTRIBUTES, encode(self._attributes)))
        messages += self.state(state)
        link.publish(messages)

    def ready(self) -> bool:
        return True

    def state(self, state: Mapping[str, Any]) -> Sequence[Message]:
        """The gateway device's attributes (what describes it: ``gw``, ``site``, ``version``,
        ``started``, ``clock``) and telemetry (the figures, dotted: ``backlog.count``,
        ``evicted.critical``, ``devices.offline``, ``bad_frames.hub-1``, ``cpu_pct`` ...).
        ``online`` is left out: ThingsBoard's own ``active`` says it, even after a kill -9."""
        attrs = {"site": self._site, **{k: state[k] for k in STATE_ATTRIBUTES if state.get(k) is not None}}
        figures = _flat("", {k: v for k, v in state.items() if k not in STATE_ATTRIBUTES and k != "online"}, {})
        messages = [Message(ME_ATTRIBUTES, encode(attrs))]
        if figures:
            messages.append(Message(ME_TELEMETRY, encode(figures)))
        return messages

    def offline(self, stopped_ms: int) -> Sequence[Message]:
        """As thingsboard-gateway stops: a disconnect per device (``connected()``); plus ``stopped`` on the
        gateway device (a clean stop has ``stopped`` after ``started``; a crash has not)."""
        messages = [Message(DISCONNECT, encode({"device": name})) for name in self.connected()]
        return [*messages, Message(ME_ATTRIBUTES, encode({"stopped": stopped_ms}))]

    def on_disconnect(self) -> None:
        with self._lock:
            self._session.clear()  # the next session connects them again (births)

    # -- data ------------------------------------------------------------------------------------
    def data(self, batch: Any, sent_ms: int) -> Sequence[Message]:
        """One ``v1/gateway/telemetry`` message ``{device: [{"ts", "values"}, ...]}``, one entry per
        row in batch order (devices in order of first appearance), preceded by a connect for each
        unit not yet connected in this session. ``sent_ms`` has no place in ThingsBoard's format."""
        convert = event_values if batch.kind == "event" else record_values
        telemetry: dict[str, list[dict[str, Any]]] = {}
        units: dict[str, str] = {}
        for row in batch.rows:
            body = row.body
            device = body["dev"] if body.get("sub") is None else f"{body['dev']}/{body['sub']}"
            if device != body["dev"]:
                units[device] = UNIT_TYPE.format(driver=self._types.get(body["dev"], "unknown"))
            telemetry.setdefault(device, []).append({"ts": body["ts"], "values": convert(body)})
        messages = []
        if units:
            with self._lock:
                new = [u for u in units if u not in self._session]
                self._session.update(new)
                self._run.update(new)
            messages = [Message(CONNECT, encode({"device": u, "type": units[u]})) for u in new]
        return [*messages, Message(TELEMETRY, encode(telemetry))]

    # -- commands --------------------------------------------------------------------------------
    def inbound(self, topic: str, payload: bytes, link: Link) -> Inbound | None:
        """A server-side RPC as a command (docs/dialects.md). ``params`` holding our signed format
        (it has ``sig``) goes as ``signed``; else ``unsigned`` ``{"id": "tb-{device}-{n}", "op":
        method, "target", "args": params}``. A request that cannot be read has neither: the
        uplink answers it ``bad_request`` (when ``reply`` says where) and audits it."""
        if topic == RPC:
            return self._device_rpc(payload)
        if topic.startswith(ME_RPC_REQUEST):
            return self._gateway_rpc(topic[len(ME_RPC_REQUEST):], payload)
        return None

    def _device_rpc(self, payload: bytes) -> Inbound:
        msg = _json(payload)
        device = msg.get("device") if isinstance(msg, dict) else None
        data = msg.get("data") if isinstance(msg, dict) else None
        req_id = data.get("id") if isinstance(data, dict) else None
        if not isinstance(device, str) or not _is_id(req_id):
            return Inbound(self.name)  # nobody to answer: audited only
        assert isinstance(data, dict)
        return self._command(data.get("method"), data.get("params"), device, _cmd_id(device, req_id),
                             (device, req_id))

    def _gateway_rpc(self, number: str, payload: bytes) -> Inbound:
        if not number.isdigit():
            return Inbound(self.name)
        msg = _json(payload)
        if not isinstance(msg, dict):
            return Inbound(self.name, reply=(None, number))
        return self._command(msg.get("method"), msg.get("params"), None, _cmd_id(self._gw, number), (None, number))

    def _command(self, method: Any, params: Any, device: str | None, cmd_id: str, reply: Any) -> Inbound:
        if params is None:
            params = {}
        elif isinstance(params, str):  # ThingsBoard's widgets send "{}" or a JSON object as a string
            params = _json(params.encode("utf-8"))
        if not isinstance(method, str) or not isinstance(params, dict):
            return Inbound(self.name, reply=reply)
        if "sig" in params:
            return Inbound(self.name, signed=encode(params), reply=reply)
        # a unit's commands go to its device; the gateway device has no device ops
        target = device.split("/", 1)[0] if device is not None and method in DEVICE_OPS else None
        return Inbound(self.name, unsigned={"id": cmd_id, "op": method, "target": target, "args": params},
                       reply=reply)

    def reply(self, inbound: Inbound | None, result: Mapping[str, Any]) -> Message | None:
        """Our result (CONTRACT section 6) as the RPC's answer: ``{"device", "id", "data": result}``
        on ``v1/gateway/rpc``, or the result itself on ``v1/devices/me/rpc/response/{n}``."""
        if inbound is None or inbound.reply is None:
            return None
        device, req_id = inbound.reply
        if device is None:
            return Message(ME_RPC_RESPONSE + str(req_id), encode(dict(result)))
        return Message(RPC, encode({"device": device, "id": req_id, "data": dict(result)}))


def _json(payload: bytes) -> Any:
    try:
        return json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None


def _cmd_id(device: str, req_id: Any) -> str:
    """``tb-{device}-{n}`` within our command id's alphabet and 64 characters (a unit's ``/``
    becomes ``:``), the request number kept whole."""
    tail = "-" + re.sub(r"[^A-Za-z0-9._:-]", "_", str(req_id))[:40]
    return ("tb-" + re.sub(r"[^A-Za-z0-9._:-]", "_", device.replace("/", ":")))[:64 - len(tail)] + tail


def _is_id(value: Any) -> bool:
    """ThingsBoard's request ids are integers; a short string is taken too."""
    return (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, str) and 0 < len(value) <= 64)
