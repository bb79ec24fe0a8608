"""The ``thingsboard`` dialect (``uplink/thingsboard.py``) with a fake link and fake rows, and its
messages against what thingsboard-gateway 3.8.5 published for simulated Modbus devices: the same
topics and the same shapes (``fixtures/thingsboard-3.8.5.json``; no network, no TB venv needed).

Re-record the fixture (installs thingsboard-gateway 3.8.5 into bench/.tb-venv on first use)::

    .venv/bin/python bench/record_tb_fixture.py
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import pytest

from edge_agent.commands.optable import OP_TABLE
from edge_agent.model import Event, Priority, Record
from edge_agent.settings import (BufferSettings, BusSettings, CommandSettings, DeviceSettings, GatewaySettings,
                                 MqttSettings, PrivacySettings, Settings)
from edge_agent.uplink import thingsboard as tb
from support.dialects import FakeLink
from edge_agent.uplink.dialect import Inbound, Message
from edge_agent.uplink.lanes import Batch
from edge_agent.uplink.thingsboard import ThingsBoardDialect

FIXTURE = Path(__file__).parent / "fixtures" / "thingsboard-3.8.5.json"
GW, SITE, TS = "gw-tb", "site-tb", 1732380000000
STATE = {"online": True, "gw": GW, "version": "0.1.0", "started": TS - 3600_000,
         "backlog": {"count": 12, "bytes": 960, "oldest_ts": None, "by_prio": {"critical": 0, "high": 0, "normal": 12}},
         "evicted": {"critical": 0, "high": 0, "normal": 0}, "uptime_s": 3600.2, "write_errors": 0,
         "devices": {"online": 3, "offline": 1, "unknown": 0}, "bad_frames": {"hub-1": 46}, "cpu_pct": 1.2,
         "clock": "synced"}


def settings(unsigned: Sequence[str] = ()) -> Settings:
    buses = (BusSettings("field", "modbus-tcp", host="192.0.2.10", port=502),
             BusSettings("rs485", "modbus-rtu", serial="/dev/ttyUSB0"),
             BusSettings("bands", "json-lines", serial="/dev/ttyUSB1", baud=115200))
    devices = (DeviceSettings("river-1", "rs485", "qdy_level", 3, 5.0),
               DeviceSettings("meter-7", "field", "eastron_meter", 7, 1.0),
               DeviceSettings("hub-1", "bands", "wearables_hub", None, 10.0),
               DeviceSettings("spare-1", "rs485", "qdy_level", 9, 5.0, enabled=False))
    mqtt = MqttSettings("127.0.0.1", dialect="thingsboard")
    return Settings(gateway=GatewaySettings(GW, SITE, Path("/tmp")), mqtt=mqtt,
                    buffer=BufferSettings(Path("/tmp/buffer.db")), privacy=PrivacySettings(), buses=buses,
                    devices=devices, commands=CommandSettings(unsigned={"thingsboard": tuple(unsigned)}))


@dataclass(frozen=True)
class Row:
    id: int
    prio: Priority
    body: dict[str, Any]
    kind: str


def records(*recs: Record, first_id: int = 100) -> Batch:
    rows = (Row(first_id + i, Priority.NORMAL, {"id": first_id + i, **r.to_wire()}, "record")
            for i, r in enumerate(recs))
    return Batch("live", "record", tuple(rows))


def events(*evs: Event, first_id: int = 200) -> Batch:
    return Batch("critical", "event", tuple(Row(first_id + i, e.prio, {"id": first_id + i, **e.to_wire()}, "event")
                                            for i, e in enumerate(evs)))


def decoded(messages: Sequence[Message]) -> list[tuple[str, Any]]:
    return [(m.topic, json.loads(m.payload)) for m in messages]


# -- births, state, offline ------------------------------------------------------------------------
def test_births_connect_every_enabled_device_describe_them_and_the_gateway() -> None:
    link = FakeLink()
    d = ThingsBoardDialect(settings())
    d.births(link, STATE)
    msgs = decoded(link.published)
    assert msgs[:3] == [(tb.CONNECT, {"device": "river-1", "type": "qdy_level"}),
                        (tb.CONNECT, {"device": "meter-7", "type": "eastron_meter"}),
                        (tb.CONNECT, {"device": "hub-1", "type": "wearables_hub"})]
    assert msgs[3] == (tb.ATTRIBUTES, {
        "river-1": {"driver": "qdy_level", "bus": "rs485", "protocol": "modbus-rtu", "port": "/dev/ttyUSB0",
                    "address": 3},
        "meter-7": {"driver": "eastron_meter", "bus": "field", "protocol": "modbus-tcp", "port": "192.0.2.10:502",
                    "address": 7},
        "hub-1": {"driver": "wearables_hub", "bus": "bands", "protocol": "json-lines", "port": "/dev/ttyUSB1"}})
    assert msgs[4:] == decoded(d.state(STATE))
    assert d.will() is None and d.ready()
    assert d.subscriptions() == ("v1/gateway/rpc", "v1/devices/me/rpc/request/+")
    assert d.connected() == ("hub-1", "meter-7", "river-1")
    assert all(m.qos == 1 and not m.retain for m in link.published)


def test_state_is_the_gateway_devices_attributes_and_dotted_figures_without_nulls_or_online() -> None:
    (t1, attrs), (t2, figures) = decoded(ThingsBoardDialect(settings()).state(STATE))
    assert (t1, t2) == (tb.ME_ATTRIBUTES, tb.ME_TELEMETRY)
    assert attrs == {"site": SITE, "gw": GW, "version": "0.1.0", "started": TS - 3600_000, "clock": "synced"}
    assert figures == {"backlog.count": 12, "backlog.bytes": 960, "backlog.by_prio.critical": 0,
                       "backlog.by_prio.high": 0, "backlog.by_prio.normal": 12, "evicted.critical": 0,
                       "evicted.high": 0, "evicted.normal": 0, "uptime_s": 3600.2, "write_errors": 0,
                       "devices.online": 3, "devices.offline": 1, "devices.unknown": 0, "bad_frames.hub-1": 46,
                       "cpu_pct": 1.2}


def test_devices_removed_from_the_config_are_disconnected_at_birth_units_of_kept_ones_not() -> None:
    link = FakeLink()
    ThingsBoardDialect(settings(), previous_devices=("river-1", "old-2", "hub-1/B-00023", "gone-3/4",
                                                     "spare-1")).births(link, {})
    assert [p for t, p in decoded(link.published) if t == tb.DISCONNECT] == [
        {"device": "old-2"}, {"device": "gone-3/4"}, {"device": "spare-1"}]
    assert link.published[0].topic == tb.DISCONNECT  # before the connects


def test_a_clean_stop_disconnects_every_connected_device_and_marks_stopped() -> None:
    d = ThingsBoardDialect(settings())
    d.births(FakeLink(), STATE)
    d.data(records(Record("hub-1", TS, {"battery_pct": 64}, sub="B-00023")), TS)
    assert decoded(d.offline(TS + 5)) == [(tb.DISCONNECT, {"device": n}) for n in
                                          ("hub-1", "hub-1/B-00023", "meter-7", "river-1")] + [
        (tb.ME_ATTRIBUTES, {"stopped": TS + 5})]


# -- data ----------------------------------------------------------------------------------------------
def test_records_are_one_telemetry_message_grouped_by_device_in_order() -> None:
    d = ThingsBoardDialect(settings())
    batch = records(Record("river-1", TS, {"level_m": 1.23, "temp_C": 21.4}),
                    Record("meter-7", TS + 90, {"energy_kWh": 1234.56, "power_kW": None}, q={"power_kW": "bad"}),
                    Record("river-1", TS + 5000, {"level_m": 1.25, "temp_C": 21.5}, q={"temp_C": "stale"}),
                    Record("meter-7", TS + 1090, {"energy_kWh": 1234.6}, clk_synced=False,
                           sealed={"kid": "97d5", "ct": "Y2lwaGVy"}))
    [msg] = d.data(batch, TS + 9000)
    assert msg.topic == tb.TELEMETRY and msg.qos == 1 and not msg.retain
    assert json.loads(msg.payload) == {
        "river-1": [{"ts": TS, "values": {"level_m": 1.23, "temp_C": 21.4}},
                    {"ts": TS + 5000, "values": {"level_m": 1.25, "temp_C": 21.5, "temp_C.q": "stale"}}],
        "meter-7": [{"ts": TS + 90, "values": {"energy_kWh": 1234.56, "power_kW.q": "bad"}},
                    {"ts": TS + 1090, "values": {"energy_kWh": 1234.6, "sealed": '{"kid":"97d5","ct":"Y2lwaGVy"}',
                                                 "clk": "unsynced"}}]}
    assert b" " not in msg.payload  # compact, as payload.encode


def test_a_unit_is_a_device_of_its_own_connected_once_a_session() -> None:
    d = ThingsBoardDialect(settings())
    d.births(FakeLink(), {})
    batch = records(Record("hub-1", TS, {"hr_bpm": 72, "battery_pct": 64}, sub="B-00023"),
                    Record("hub-1", TS + 1, {"hr_bpm": 75}, sub="B-00024"),
                    Record("hub-1", TS + 2, {"hr_bpm": 73}, sub="B-00023"))
    first = decoded(d.data(batch, TS))
    assert first[:2] == [(tb.CONNECT, {"device": "hub-1/B-00023", "type": "wearables_hub.unit"}),
                         (tb.CONNECT, {"device": "hub-1/B-00024", "type": "wearables_hub.unit"})]
    assert first[2] == (tb.TELEMETRY, {"hub-1/B-00023": [{"ts": TS, "values": {"hr_bpm": 72, "battery_pct": 64}},
                                                         {"ts": TS + 2, "values": {"hr_bpm": 73}}],
                                       "hub-1/B-00024": [{"ts": TS + 1, "values": {"hr_bpm": 75}}]})
    assert [t for t, _ in decoded(d.data(batch, TS))] == [tb.TELEMETRY]  # connected already
    d.on_disconnect()
    assert d.connected() == ("hub-1", "hub-1/B-00023", "hub-1/B-00024", "meter-7", "river-1")  # for the next run
    d.births(FakeLink(), {})
    assert len(d.data(batch, TS)) == 3  # a new session connects them again


def test_events_are_telemetry_of_their_device_in_batch_order() -> None:
    d = ThingsBoardDialect(settings())
    sos = {"band": "B-00023", "wearer": "p1:6Q2W", "hr_bpm": 131, "lat": None,
           "sealed": {"sealed": "Y3Q=", "kid": "97d5"}}
    batch = events(Event("hub-1", "sos", Priority.CRITICAL, TS, sos),
                   Event("river-1", "offline", Priority.CRITICAL, TS + 1, {}, clk_synced=False),
                   Event("hub-1", "fall", Priority.CRITICAL, TS + 2, {"band": "B-00024"}))
    [msg] = d.data(batch, TS)
    assert json.loads(msg.payload) == {
        "hub-1": [{"ts": TS, "values": {"event": "sos", "event_prio": "critical", "event_id": 200,
                                        "event_band": "B-00023", "event_wearer": "p1:6Q2W", "event_hr_bpm": 131,
                                        "event_sealed": '{"sealed":"Y3Q=","kid":"97d5"}'}},
                  {"ts": TS + 2, "values": {"event": "fall", "event_prio": "critical", "event_id": 202,
                                            "event_band": "B-00024"}}],
        "river-1": [{"ts": TS + 1, "values": {"event": "offline", "event_prio": "critical", "event_id": 201,
                                              "clk": "unsynced"}}]}


def test_no_value_is_ever_null_thingsboard_would_refuse_the_whole_message() -> None:
    d = ThingsBoardDialect(settings())
    [msg] = d.data(records(Record("meter-7", TS, {"a_V": None, "b_V": None}, q={"a_V": "bad", "b_V": "bad"})), TS)
    assert b"null" not in msg.payload
    assert json.loads(msg.payload) == {"meter-7": [{"ts": TS, "values": {"a_V.q": "bad", "b_V.q": "bad"}}]}


# -- commands --------------------------------------------------------------------------------------------
def rpc(device: Any, req_id: Any, method: Any, params: Any = None, **extra: Any) -> bytes:
    data = {"id": req_id, "method": method, **({} if params is None else {"params": params}), **extra}
    return json.dumps({"device": device, "data": data}).encode()


def test_device_ops_are_those_of_the_op_table() -> None:
    assert set(tb.DEVICE_OPS) == {op.name for op in OP_TABLE.values() if op.device}


def test_an_rpc_without_signature_is_an_unsigned_command() -> None:
    d = ThingsBoardDialect(settings(unsigned=["device.poll"]))
    got = d.inbound(tb.RPC, rpc("river-1", 17, "device.poll", {}), FakeLink())
    assert got == Inbound("thingsboard", unsigned={"id": "tb-river-1-17", "op": "device.poll", "target": "river-1",
                                                   "args": {}}, reply=("river-1", 17))
    write = d.inbound(tb.RPC, rpc("meter-7", 3, "device.write", {"point": "relay", "value": "open"}), FakeLink())
    assert write is not None and write.unsigned == {"id": "tb-meter-7-3", "op": "device.write", "target": "meter-7",
                                                    "args": {"point": "relay", "value": "open"}}
    ping = d.inbound(tb.RPC, rpc("river-1", 4, "agent.ping"), FakeLink())  # no params at all
    assert ping is not None and ping.unsigned == {"id": "tb-river-1-4", "op": "agent.ping", "target": None, "args": {}}
    as_text = d.inbound(tb.RPC, rpc("river-1", 5, "buffer.replay", '{"from_id": 1}'), FakeLink())
    assert as_text is not None and as_text.unsigned is not None and as_text.unsigned["args"] == {"from_id": 1}


def test_a_units_command_goes_to_its_device_with_an_id_in_our_alphabet() -> None:
    got = ThingsBoardDialect(settings()).inbound(tb.RPC, rpc("hub-1/B-00023", 9, "device.poll"), FakeLink())
    assert got is not None and got.unsigned is not None and got.reply == ("hub-1/B-00023", 9)
    assert got.unsigned["target"] == "hub-1" and got.unsigned["id"] == "tb-hub-1:B-00023-9"
    long_name = ThingsBoardDialect(settings()).inbound(tb.RPC, rpc("x" * 80, 123456, "device.poll"), FakeLink())
    assert long_name is not None and long_name.unsigned is not None
    assert len(long_name.unsigned["id"]) == 64 and long_name.unsigned["id"].endswith("x-123456")


def test_params_in_our_signed_format_are_verified_as_signed() -> None:
    signed = {"v": 1, "id": "c-7d1e", "op": "device.write", "target": "meter-7", "args": {"point": "relay",
              "value": "open"}, "iat": TS, "exp": TS + 60_000, "sig": "c2ln"}
    got = ThingsBoardDialect(settings()).inbound(tb.RPC, rpc("meter-7", 8, "device.write", signed), FakeLink())
    assert got is not None and got.unsigned is None and got.reply == ("meter-7", 8)
    assert got.signed is not None and json.loads(got.signed) == signed


@pytest.mark.parametrize("payload, reply", [
    (b"{not json", None),
    (b"[1, 2]", None),
    (json.dumps({"device": "river-1", "data": {"method": "device.poll"}}).encode(), None),  # no id
    (json.dumps({"device": 5, "data": {"id": 1, "method": "device.poll"}}).encode(), None),
    (rpc("river-1", 6, None), ("river-1", 6)),  # no method
    (rpc("river-1", 7, "device.poll", [1, 2]), ("river-1", 7)),  # params not an object
    (rpc("river-1", 8, "device.poll", "{bad"), ("river-1", 8)),
])
def test_a_malformed_rpc_has_neither_command_and_a_reply_when_one_is_possible(payload: bytes, reply: Any) -> None:
    d = ThingsBoardDialect(settings())
    got = d.inbound(tb.RPC, payload, FakeLink())
    assert got == Inbound("thingsboard", reply=reply)
    answer = d.reply(got, {"v": 1, "id": None, "ok": False, "ts": TS, "error": {"code": "bad_request", "message": "x"}})
    assert (answer is None) == (reply is None)


def test_replies_go_where_the_request_came_from() -> None:
    d = ThingsBoardDialect(settings())
    result = {"v": 1, "id": "tb-river-1-17", "ok": False, "ts": TS,
              "error": {"code": "not_allowed", "message": "device.poll is not allowed unsigned"}}
    got = d.inbound(tb.RPC, rpc("river-1", 17, "device.poll"), FakeLink())
    assert got is not None
    answer = d.reply(got, result)
    assert answer is not None and decoded([answer]) == [(tb.RPC, {"device": "river-1", "id": 17, "data": result})]
    me = d.inbound(tb.ME_RPC_REQUEST + "42", json.dumps({"method": "agent.ping", "params": {}}).encode(), FakeLink())
    assert me == Inbound("thingsboard", unsigned={"id": f"tb-{GW}-42", "op": "agent.ping", "target": None, "args": {}},
                         reply=(None, "42"))
    answer = d.reply(me, result)
    assert answer is not None and decoded([answer]) == [("v1/devices/me/rpc/response/42", result)]
    assert d.inbound(tb.ME_RPC_REQUEST + "43", b"\xff", FakeLink()) == Inbound("thingsboard", reply=(None, "43"))
    assert d.inbound("v1/gateway/attributes", b"{}", FakeLink()) is None
    assert d.reply(None, result) is None


# -- against thingsboard-gateway 3.8.5's own messages (the recorded fixture) --------------------------------
Scalar = (str, int, float, bool)


def is_connect(p: Any) -> bool:
    return isinstance(p, dict) and set(p) == {"device", "type"} and all(isinstance(v, str) for v in p.values())


def is_disconnect(p: Any) -> bool:
    return isinstance(p, dict) and set(p) == {"device"} and isinstance(p["device"], str)


def is_telemetry(p: Any) -> bool:
    """``{device: [{"ts": int, "values": {key: scalar}}, ...]}``."""
    return isinstance(p, dict) and bool(p) and all(
        isinstance(dev, str) and isinstance(entries, list) and bool(entries) and all(
            isinstance(e, dict) and set(e) == {"ts", "values"} and isinstance(e["ts"], int)
            and not isinstance(e["ts"], bool) and isinstance(e["values"], dict)
            and all(isinstance(k, str) and isinstance(v, Scalar) for k, v in e["values"].items())
            for e in entries)
        for dev, entries in p.items())


def is_device_attributes(p: Any) -> bool:
    """``{device: {key: scalar}}``."""
    return isinstance(p, dict) and bool(p) and all(
        isinstance(dev, str) and isinstance(attrs, dict) and bool(attrs)
        and all(isinstance(k, str) and isinstance(v, Scalar) for k, v in attrs.items())
        for dev, attrs in p.items())


def is_own_keys(p: Any) -> bool:
    """The gateway device's attributes or telemetry (the MQTT device API): ``{key: value}``, or
    ``{"ts", "values"}``, or a list of either (thingsboard-gateway's statistics: ``[{key: value}]``,
    some values objects, which ThingsBoard stores as JSON; ours are one object of flat scalars)."""
    if isinstance(p, list):
        return bool(p) and all(is_own_keys(item) for item in p)
    if isinstance(p, dict) and set(p) == {"ts", "values"}:
        p = p["values"]
    return isinstance(p, dict) and bool(p) and all(isinstance(k, str) and v is not None for k, v in p.items())


def is_rpc_reply(p: Any) -> bool:
    return (isinstance(p, dict) and set(p) == {"device", "id", "data"} and isinstance(p["device"], str)
            and isinstance(p["id"], int) and isinstance(p["data"], dict))


def is_own_rpc_reply(p: Any) -> bool:
    return isinstance(p, dict) and bool(p)


SHAPES: dict[str, Callable[[Any], bool]] = {
    tb.CONNECT: is_connect, tb.DISCONNECT: is_disconnect, tb.TELEMETRY: is_telemetry,
    tb.ATTRIBUTES: is_device_attributes, tb.ME_ATTRIBUTES: is_own_keys, tb.ME_TELEMETRY: is_own_keys,
    tb.RPC: is_rpc_reply, tb.ME_RPC_RESPONSE + "+": is_own_rpc_reply,
}


def topic_class(topic: str) -> str:
    """A topic with its request number as ``+``."""
    for prefix in (tb.ME_RPC_RESPONSE, tb.ME_RPC_REQUEST):
        if topic.startswith(prefix):
            return prefix + "+"
    return topic


def recorded() -> dict[str, list[Any]]:
    """Topic class -> the payloads thingsboard-gateway published on it (module docstring: re-record)."""
    fixture = json.loads(FIXTURE.read_text())
    assert fixture["recorded_with"]["thingsboard-gateway"] == "3.8.5"
    out: dict[str, list[Any]] = {}
    for entry in fixture["topics"]:
        out.setdefault(topic_class(entry["topic"]), []).extend(entry["samples"])
    return out


def ours() -> list[Message]:
    """Every kind of message the dialect publishes, from a birth to a clean stop."""
    d, link = ThingsBoardDialect(settings(), previous_devices=("old-2",)), FakeLink()
    d.births(link, STATE)
    msgs = list(link.published)
    msgs += d.data(records(Record("river-1", TS, {"level_m": 1.23}), Record("meter-7", TS, {"power_kW": None},
                                                                              q={"power_kW": "bad"}),
                           Record("hub-1", TS, {"battery_pct": 64}, sub="B-00023", clk_synced=False,
                                  sealed={"kid": "97d5", "ct": "Y3Q="})), TS)
    msgs += d.data(events(Event("hub-1", "sos", Priority.CRITICAL, TS, {"band": "B-00023", "hr_bpm": 131})), TS)
    result = {"v": 1, "id": "tb-river-1-1", "ok": True, "ts": TS}
    for topic, payload in ((tb.RPC, rpc("river-1", 1, "device.poll")),
                           (tb.ME_RPC_REQUEST + "7", b'{"method": "agent.ping", "params": {}}')):
        inbound = d.inbound(topic, payload, link)
        assert inbound is not None
        answer = d.reply(inbound, result)
        assert answer is not None
        msgs.append(answer)
    return [*msgs, *d.offline(TS + 1)]


def test_the_recorded_messages_have_the_shapes_the_fixture_test_checks() -> None:
    """The checkers describe the real thing: every payload thingsboard-gateway published on a topic
    we publish on passes its topic's checker."""
    tb_msgs = recorded()
    for topic, check in SHAPES.items():
        for payload in tb_msgs.get(topic, ()):
            assert check(payload), f"thingsboard-gateway on {topic}: {payload!r}"


def test_every_topic_we_publish_thingsboard_gateway_publishes_too_with_the_same_shape() -> None:
    tb_msgs = recorded()
    mine = ours()
    assert {topic_class(m.topic) for m in mine} == set(SHAPES)  # ours() covers every kind
    for m in mine:
        topic = topic_class(m.topic)
        assert topic in tb_msgs, f"thingsboard-gateway 3.8.5 never published on {topic}"
        assert SHAPES[topic](json.loads(m.payload)), f"ours on {m.topic}: {m.payload!r}"


def test_what_thingsboard_gateway_sends_at_connect_and_at_a_clean_stop_we_send_too() -> None:
    """It connects each device before that device's telemetry and disconnects each at a clean stop."""
    fixture = json.loads(FIXTURE.read_text())
    order = [topic_class(e["topic"]) for e in fixture["topics"]]
    assert order.index(tb.CONNECT) < order.index(tb.TELEMETRY)
    assert tb.DISCONNECT in order
    assert {s["device"] for e in fixture["topics"] if e["topic"] == tb.CONNECT for s in e["samples"]} <= {
        f"dev{u:02d}" for u in range(1, 21)}
