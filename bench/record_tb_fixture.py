"""Record what thingsboard-gateway 3.8.5 publishes, for tests/uplink/test_thingsboard.py (issue 14):
the topics and payload shapes our ``thingsboard`` dialect must match.

    .venv/bin/python bench/record_tb_fixture.py [--seconds 20] [--out tests/uplink/fixtures/thingsboard-3.8.5.json]

Runs, on loopback only, a fresh mosquitto, the side-by-side bench's Modbus TCP simulator
(``_cmp_sim.py``: 20 units of 20 holding registers) and ThingsBoard's gateway from its own venv
(``_cmp_gateways.ensure_tb_venv``, installed on first use; ``tb_gateway(style="range")``, a poll a
second) with its statistics on (as shipped: the gateway device's own telemetry), and a paho client
on ``#`` standing in for ThingsBoard: it answers the gateway's ``getSessionLimits`` request, sends
it three RPCs once data flows (``get`` of a register and our ``device.poll`` to device ``dev01`` on
``v1/gateway/rpc``, ``gateway_ping`` to the gateway device on ``v1/devices/me/rpc/request/{n}``),
and stops it with SIGINT, as its service stops, to catch what it sends at a clean stop.

The fixture holds every distinct topic the gateway published, in order of first appearance, with
its first two distinct payloads JSON-decoded (non-JSON as ``{"_text": ...}``), and the RPCs sent.
What we published ourselves is not recorded.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _common import ROOT, Mosquitto
from _cmp_gateways import TB_VERSION, ensure_tb_venv, tb_gateway
from compare_thingsboard import SESSION_LIMITS, Simulator

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

OUT = ROOT / "tests" / "uplink" / "fixtures" / f"thingsboard-{TB_VERSION}.json"
RPC_REQUEST, RPC_RESPONSE = "v1/devices/me/rpc/request/", "v1/devices/me/rpc/response/"
SAMPLES = 2  # distinct payloads kept per topic
STATS_PERIOD_S = 10  # its minimum
RPCS = (  # (topic, payload) sent once data flows
    ("v1/gateway/rpc", {"device": "dev01", "data": {"id": 1, "method": "get",
                                                    "params": "type=16uint;functionCode=3;objectsCount=1;address=0;"}}),
    ("v1/gateway/rpc", {"device": "dev01", "data": {"id": 2, "method": "device.poll", "params": {}}}),
    (RPC_REQUEST + "7", {"method": "gateway_ping", "params": {}}),
)


class Recorder:
    """A paho client on ``#``: keeps what the gateway publishes, answers its session-limits request."""

    def __init__(self, broker: Mosquitto) -> None:
        self._lock = threading.Lock()
        self.order: list[str] = []
        self.samples: dict[str, list[Any]] = {}
        self.counts: dict[str, int] = {}
        self._ours: set[bytes] = set()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="tb-fixture-recorder")
        self.client.on_connect = lambda c, *a: c.subscribe("#", qos=1)
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port, keepalive=30)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("the recorder got no SUBACK")

    def send(self, topic: str, payload: Any) -> None:
        data = json.dumps(payload).encode()
        with self._lock:
            self._ours.add(data)
        self.client.publish(topic, data, qos=1)

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        payload = bytes(msg.payload)
        with self._lock:
            if payload in self._ours:
                return
        try:
            body: Any = json.loads(payload)
        except ValueError:
            body = {"_text": payload.decode(errors="replace")}
        if msg.topic.startswith(RPC_REQUEST) and isinstance(body, dict) and body.get("method") == "getSessionLimits":
            self.send(RPC_RESPONSE + msg.topic[len(RPC_REQUEST):], SESSION_LIMITS)
        with self._lock:
            if msg.topic not in self.samples:
                self.order.append(msg.topic)
                self.samples[msg.topic] = []
            self.counts[msg.topic] = self.counts.get(msg.topic, 0) + 1
            kept = self.samples[msg.topic]
            if len(kept) < SAMPLES and body not in kept:
                kept.append(body)

    def data_seen(self) -> bool:
        with self._lock:
            return "v1/gateway/telemetry" in self.samples

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def record(seconds: float, tb_venv: Path, out: Path) -> int:
    python = ensure_tb_venv(tb_venv)
    with tempfile.TemporaryDirectory(prefix="tb-fixture-") as tmp:
        root = Path(tmp)
        broker = Mosquitto(root).start()
        sim = Simulator(root)
        recorder = Recorder(broker)
        gw = tb_gateway(python, root / "gateway", broker_port=broker.port, sim_port=sim.port, interval_ms=1000)
        conf = root / "gateway" / "config" / "tb_gateway.json"
        main = json.loads(conf.read_text())
        main["thingsboard"]["statistics"].update(enable=True, statsSendPeriodInSeconds=STATS_PERIOD_S)
        conf.write_text(json.dumps(main, indent=2))
        try:
            gw.start()
            deadline = time.monotonic() + 120
            while not recorder.data_seen():
                if not gw.alive() or time.monotonic() > deadline:
                    raise RuntimeError(f"ThingsBoard's gateway sent no telemetry:\n{gw.log_tail()}")
                time.sleep(0.2)
            time.sleep(seconds / 2)
            for topic, payload in RPCS:
                recorder.send(topic, payload)
            time.sleep(seconds / 2)
            gw.stop()  # SIGINT: its clean stop
            time.sleep(2)
        finally:
            gw.stop()
            recorder.stop()
            sim.stop()
            broker.stop()
    fixture = {
        "recorded_with": {"thingsboard-gateway": TB_VERSION, "by": "bench/record_tb_fixture.py",
                          "devices": "20 Modbus TCP units dev01..dev20, 20 uint16 holding registers, one range tag",
                          "seconds": seconds, "statistics": True},
        "rpcs_sent": [{"topic": t, "payload": p} for t, p in RPCS],
        "topics": [{"topic": t, "count": recorder.counts[t], "samples": recorder.samples[t]} for t in recorder.order],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(fixture, indent=1, ensure_ascii=False) + "\n")
    print(f"{out}: {len(recorder.order)} topics: " + ", ".join(f"{t} ({recorder.counts[t]})" for t in recorder.order))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="how long to record once data flows")
    parser.add_argument("--tb-venv", type=Path, default=ROOT / "bench" / ".tb-venv")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    return record(args.seconds, args.tb_venv, args.out)


if __name__ == "__main__":
    sys.exit(main())
