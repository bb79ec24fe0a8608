"""The uplink's command channel against a real mosquitto: ``R/cmd`` subscribed on every connect
and handed on as bytes, results on ``R/cmd/result`` (QoS 1, not retained, kept while the broker
is away, oldest dropped past 100), replays marked and acknowledged. The buffer is an empty fake:
these tests are about commands, and the drain must not be disturbed by them."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.buffer.outbox import OutRow
from edge_agent.model import Priority
from edge_agent.settings import GatewaySettings, MqttSettings
from edge_agent.uplink.drain import Topics, Uplink
from support.waiting import wait_until
from support.broker import Mosquitto, Subscriber

GW, SITE = "gw-cmd", "site-c"
T = Topics.of("edge/v1", SITE, GW)


@dataclass(frozen=True)
class Stats:
    pending: int = 0
    pending_bytes: int = 0
    oldest_pending_ts: int | None = None
    pending_by_prio: dict = field(default_factory=dict)
    evicted: dict = field(default_factory=dict)


class OneRowBuffer:
    """One reading to drain (proves the drain still works beside commands)."""

    def __init__(self) -> None:
        body = {"id": 1, "dev": "d", "ts": 1, "vals": {"level_m": 1.0}}
        self.rows = [OutRow(1, "record", Priority.NORMAL, 1, body)]
        self.sent: list[int] = []

    def pending(self, limit: int, *, prio: Priority | None = None, after_id: int = 0,
                until_id: int | None = None) -> list[OutRow]:
        return [r for r in self.rows if r.id > after_id and r.id not in self.sent
                and (prio is None or r.prio == prio) and (until_id is None or r.id <= until_id)][:limit]

    def max_id(self) -> int:
        return 0

    def mark_sent(self, ids: Iterable[int]) -> None:
        self.sent.extend(ids)

    def stats(self) -> Stats:
        return Stats()


def platform_publish(broker: Mosquitto, topic: str, payload: bytes, *, retain: bool = False) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"platform-{time.monotonic_ns()}")
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.fixture
def broker(tmp_path: Path):
    with Mosquitto(tmp_path) as b:
        yield b


@pytest.fixture
def make_uplink(tmp_path: Path):
    made: list[Uplink] = []

    def make(broker: Mosquitto, **kw: Any) -> Uplink:
        mqtt_settings = MqttSettings(host=broker.host, port=broker.port, keepalive_s=10, reconnect_min_s=0.1,
                                     reconnect_max_s=0.5)
        up = Uplink(mqtt_settings, GatewaySettings(GW, SITE, tmp_path), kw.pop("buffer", OneRowBuffer()), **kw)
        made.append(up)
        up.start()
        return up

    yield make
    for up in made:
        up.stop(timeout=2)


def test_commands_are_handed_on_as_bytes_and_the_subscription_survives_a_broker_restart(broker, make_uplink):
    got: list[bytes] = []
    buffer = OneRowBuffer()
    up = make_uplink(broker, on_command=got.append, buffer=buffer)
    wait_until(lambda: up.connected, what="connect")
    time.sleep(0.3)  # the SUBACK
    payload = '{"v":1,"id":"c-1","op":"agent.ping","note":"桂A"}'.encode()
    platform_publish(broker, T.cmd, payload)
    platform_publish(broker, T.cmd + "/result", b"not for us")
    platform_publish(broker, T.root + "/cmdx", b"not for us either")
    wait_until(lambda: got == [payload], what="the command")
    wait_until(lambda: buffer.sent == [1], what="the drain beside it")
    broker.restart()  # a clean session: the subscription is made again on the new connection
    wait_until(lambda: up.connected, what="reconnect")
    time.sleep(0.3)
    platform_publish(broker, T.cmd, b"second")
    wait_until(lambda: got == [payload, b"second"], what="the command after the restart")


def test_a_failing_command_handler_does_not_break_the_connection(broker, make_uplink):
    calls: list[bytes] = []

    def handler(payload: bytes) -> None:
        calls.append(payload)
        if payload == b"bad":
            raise RuntimeError("handler bug")
    up = make_uplink(broker, on_command=handler)
    wait_until(lambda: up.connected, what="connect")
    time.sleep(0.3)
    platform_publish(broker, T.cmd, b"bad")
    platform_publish(broker, T.cmd, b"good")
    wait_until(lambda: calls == [b"bad", b"good"], what="both commands")
    assert up.connected and up.stats().reconnects == 0


def test_results_are_qos1_not_retained_and_wait_for_the_broker(tmp_path, make_uplink):
    broker = Mosquitto(tmp_path, persistence=True).start()
    try:
        platform = Subscriber(broker, T.cmd_result, client_id="platform-results", clean_session=False).start()
        up = make_uplink(broker, on_command=lambda p: None)
        wait_until(lambda: up.connected, what="connect")
        up.publish_result({"v": 1, "id": "c-0", "ok": True, "ts": 1})
        platform.wait_for(lambda ms: len(ms) == 1, 5, "the first result")
        broker.stop()
        wait_until(lambda: not up.connected, what="the disconnect")
        for i in range(1, 106):  # more than the 100 kept: the oldest five are dropped
            up.publish_result({"v": 1, "id": f"c-{i}", "ok": True, "ts": i})
        broker.start()
        msgs = platform.wait_for(lambda ms: len({json.loads(m.payload)["id"] for m in ms}) >= 101, 20,
                                 "the kept results")
        time.sleep(0.5)
        msgs = platform.messages
        platform.stop()
    finally:
        broker.stop()
    ids = [json.loads(m.payload)["id"] for m in msgs]
    assert list(dict.fromkeys(ids)) == ["c-0"] + [f"c-{i}" for i in range(6, 106)]  # in order
    assert not any(m.retain for m in msgs)


def test_replays_are_marked_and_acknowledged(broker, make_uplink):
    with Subscriber(broker, f"{T.root}/#") as platform:
        up = make_uplink(broker)
        wait_until(lambda: up.connected, what="connect")
        bodies = [{"id": 7, "dev": "hub-1", "type": "sos", "prio": "critical", "ts": 5, "data": {"wearer": "p1:X"}}]
        assert up.publish_replay("event", bodies, "c-r") is True
        msgs = platform.wait_for(lambda ms: any(m.topic == T.events for m in ms), 5, "the replay")
    (msg,) = [m for m in msgs if m.topic == T.events]
    body = json.loads(msg.payload)
    assert body["replay"] == "c-r" and body["events"] == bodies and body["gw"] == GW and body["v"] == 2
    broker.stop()
    wait_until(lambda: not up.connected, what="the disconnect")
    assert up.publish_replay("record", [{"id": 1}], "c-r") is False


def test_without_on_command_nothing_is_subscribed(broker, make_uplink):
    up = make_uplink(broker)
    wait_until(lambda: up.connected, what="connect")
    client = up._client
    assert client.on_message is None and client.on_subscribe is None
