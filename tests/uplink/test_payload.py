"""``mqtt.compress``: telemetry, events and replays as xz streams of the same JSON, against a real
mosquitto and a real buffer; decoded on the platform's side (``platform.decode_payload``) they
are what an uncompressed gateway sends. A message xz would not shrink (a lone event) goes as
JSON; state and command results stay JSON; on MQTT 5 a compressed message carries the content
type ``application/x-xz``."""

from __future__ import annotations

import json
import lzma
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.buffer.outbox import Buffer
from edge_agent.model import Event, Priority, Record
from edge_agent.platform import XZ_MAGIC as PLATFORM_MAGIC, decode_payload
from edge_agent.settings import GatewaySettings, MqttSettings
from edge_agent.uplink.drain import Topics, Uplink
from edge_agent.uplink.payload import CONTENT_TYPE, XZ_MAGIC, Payloads, encode
from support.broker import Mosquitto, Subscriber
from support.waiting import wait_until

GW, SITE = "gw-z", "site-z"
T = Topics.of("edge/v1", SITE, GW)
SENT_S = 1732380000.123

RECORDS = [Record(f"meter-{k % 4}", 1732380000000 + k * 100,
                  {"energy_kWh": 1234.5 + k, "power_kW": None if k % 7 == 0 else round(k * 0.37, 2),
                   "v_V": 230 + k % 3},
                  q={"power_kW": "bad"} if k % 7 == 0 else {}, sub="B-0002" if k % 5 == 0 else None,
                  clk_synced=k % 11 != 0)
           for k in range(120)]
EVENTS = [Event("hub-1", "sos", Priority.CRITICAL, 1732380000050, {"wearer": "p1:6Q2W", "hr_bpm": 131}),
          Event("gate-1", "passage", Priority.NORMAL, 1732380000070, {"plate": "p1:ZZ9", "lane": 1})]


def test_plain_is_compact_json_and_compressed_an_xz_stream_of_the_same_bytes() -> None:
    doc = {"v": 2, "gw": GW, "sent": 1, "recs": [{"id": 1, **r.to_wire()} for r in RECORDS[:30]]}
    plain, none = Payloads().encode(doc)
    packed, also_none = Payloads(compress=True).encode(doc)
    assert plain == encode(doc) == json.dumps(doc, separators=(",", ":")).encode() and plain[:1] == b"{"
    assert packed.startswith(XZ_MAGIC) and lzma.decompress(packed) == plain
    assert Payloads(compress=True).encode(doc)[0] == packed  # deterministic: a re-send is the same bytes
    assert len(packed) * 3 < len(plain)
    assert XZ_MAGIC == PLATFORM_MAGIC  # the platform writes the magic again (it does not import the uplink)
    assert none == also_none == {} and Payloads(mqtt5=True).encode(doc)[1] == {}
    packed5, extra = Payloads(compress=True, mqtt5=True).encode(doc)
    assert packed5 == packed and extra["properties"].ContentType == CONTENT_TYPE == "application/x-xz"


def test_a_message_xz_would_not_shrink_goes_as_json_with_no_content_type() -> None:
    doc = {"v": 2, "gw": GW, "sent": 1, "events": [{"id": 1, **EVENTS[0].to_wire()}]}
    assert Payloads(compress=True, mqtt5=True).encode(doc) == (encode(doc), {})
    assert len(lzma.compress(encode(doc), format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32,
                             filters=[{"id": lzma.FILTER_LZMA2, "preset": 0, "dict_size": 1 << 16}])) > len(encode(doc))


class Platform:
    """A paho subscriber on ``R/#`` (MQTT 3.1.1 or 5) keeping (topic, payload, content type)."""

    def __init__(self, broker: Mosquitto, *, v5: bool = False) -> None:
        self.messages: list[tuple[str, bytes, str | None]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"platform-{id(self):x}",
                                  protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{T.root}/#", qos=1)
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port, keepalive=30)
        self.client.loop_start()
        assert self._subscribed.wait(10), "no SUBACK"

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload), getattr(msg.properties, "ContentType", None)))

    def on(self, topic: str) -> list[tuple[str, bytes, str | None]]:
        with self._lock:
            return [m for m in self.messages if m[0] == topic]

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def drain(tmp_path: Path, *, compress: bool, protocol: str = "3.1.1") -> Platform:
    """A fresh broker, buffer and uplink; RECORDS and EVENTS drained until every id arrived."""
    directory = tmp_path / f"{'xz' if compress else 'json'}-{protocol}"
    directory.mkdir()
    buf = Buffer(directory / "buffer.db").open()
    buf.append([*RECORDS[:60], *EVENTS, *RECORDS[60:]])
    with Mosquitto(directory) as broker:
        platform = Platform(broker, v5=protocol == "5")
        up = Uplink(MqttSettings(host=broker.host, port=broker.port, batch_max=25, protocol=protocol,
                                 compress=compress), GatewaySettings(id=GW, site=SITE, state_dir=directory),
                    buf, clock=lambda: SENT_S)
        try:
            up.start()
            want = len(RECORDS) + len(EVENTS)
            wait_until(lambda: sum(len(items(m)) for m in platform.on(T.telemetry) + platform.on(T.events)) >= want,
                       timeout=20, what="every record and event")
            wait_until(lambda: buf.stats().pending == 0, what="every row marked sent")
        finally:
            up.stop(timeout=2)
            platform.stop()
            buf.close()
    return platform


def items(message: tuple[str, bytes, str | None]) -> list[dict[str, Any]]:
    body = decode_payload(message[1])
    return body.get("recs") or body.get("events") or []


def test_compressed_telemetry_and_events_decode_to_what_an_uncompressed_gateway_sends(tmp_path: Path) -> None:
    plain, packed = drain(tmp_path, compress=False), drain(tmp_path, compress=True)
    for topic in (T.telemetry, T.events):
        p, z = plain.on(topic), packed.on(topic)
        assert [decode_payload(m[1]) for m in z] == [decode_payload(m[1]) for m in p]  # envelopes too
        assert all(m[1][:1] == b"{" for m in p)
    p, z = plain.on(T.telemetry), packed.on(T.telemetry)
    assert all(m[1].startswith(XZ_MAGIC) for m in z) and sum(len(m[1]) for m in z) * 2 < sum(len(m[1]) for m in p)
    assert {len(items(m)): m[1][:1] for m in packed.on(T.events)} == {1: b"{"}  # each event alone: JSON is smaller
    recs = [r for m in packed.on(T.telemetry) for r in items(m)]
    assert [r["id"] for r in recs] == sorted(r["id"] for r in recs) and len(recs) == len(RECORDS)
    assert [{k: v for k, v in r.items() if k != "id"} for r in recs] == [r.to_wire() for r in RECORDS]
    assert {e["type"] for m in packed.on(T.events) for e in items(m)} == {"sos", "passage"}
    (state, *_) = packed.on(T.state)  # the birth: plain JSON, as R/cmd/result and the Last Will
    assert json.loads(state[1])["online"] is True and all(m[2] is None for m in packed.messages)


def test_on_mqtt5_a_compressed_message_says_its_content_type(tmp_path: Path) -> None:
    packed = drain(tmp_path, compress=True, protocol="5")
    data = packed.on(T.telemetry)
    assert data and all(m[2] == CONTENT_TYPE and m[1].startswith(XZ_MAGIC) for m in data)
    assert all(m[2] is None and m[1][:1] == b"{" for m in packed.on(T.events))  # lone events: JSON
    assert all(m[2] is None and m[1][:1] == b"{" for m in packed.on(T.state))
    plain = drain(tmp_path, compress=False, protocol="5")
    assert all(m[2] is None for m in plain.messages)  # JSON, the contract's default, carries no property


def test_a_replay_is_compressed_as_the_drain_is_and_a_command_result_is_not(tmp_path: Path) -> None:
    class Empty:
        def pending(self, limit: int, **kw: Any) -> list[Any]:
            return []

        def max_id(self) -> int:
            return 0

        def mark_sent(self, ids: Any) -> None:
            pass

        def stats(self) -> Any:
            return Buffer(tmp_path / "stats.db").open().stats()

    with Mosquitto(tmp_path) as broker, Subscriber(broker, f"{T.root}/#") as sub:
        up = Uplink(MqttSettings(host=broker.host, port=broker.port, compress=True),
                    GatewaySettings(id=GW, site=SITE, state_dir=tmp_path), Empty(), clock=lambda: SENT_S)
        try:
            up.start()
            wait_until(lambda: up.connected, what="connect")
            bodies = [{"id": 3 + i, **r.to_wire()} for i, r in enumerate(RECORDS[:40])]
            assert up.publish_replay("record", bodies, "c-7") is True
            up.publish_result({"id": "c-7", "ok": True})
            sub.wait_for(lambda ms: any(m.topic == T.cmd_result for m in ms), 5, "the result")
        finally:
            up.stop(timeout=2)
    (replay,) = sub.on(T.telemetry)
    assert replay.payload.startswith(XZ_MAGIC)
    assert decode_payload(replay.payload) == {"v": 2, "gw": GW, "sent": 1732380000123, "replay": "c-7", "recs": bodies}
    (result,) = sub.on(T.cmd_result)
    assert json.loads(result.payload) == {"id": "c-7", "ok": True}
