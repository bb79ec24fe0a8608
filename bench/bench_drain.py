"""Uplink drain rate: a real Buffer full of records -> Uplink -> local mosquitto, QoS 1 (on demand, not a test).

    .venv/bin/python bench/bench_drain.py [--quick] [-n 100000] [--points 20] [--repeat 3]
        [--settings 500x20,1x20,10x20,100x20,500x1,500x5,500x100]

For each ``batch_max x inflight``: a fresh buffer with N values in records of ``--points``
values each (device ``devUU``, points ``r0``.., uint16 values, as the side-by-side bench's
simulator serves them: 20 registers a unit), a fresh mosquitto on a free loopback port, a
subscriber counting what arrives, and an Uplink draining until every row is acked (marked
sent). Values/s, records/s and messages/s are timed from the CONNACK to the last ack; the
subscriber must see every id; bytes/value is the telemetry payload bytes over the values they
carry. Baseline, in the same run: raw paho publishing the same payloads (pre-encoded, same
batch size) with the same window of unacked messages, to a fresh broker with the same
subscriber: the transport's ceiling. Medians of ``--repeat`` interleaved runs.
Goal (issue 13): >= 300,000 values/s at the default settings (500x20, the first pair); before
records, a row per reading: 95,400 readings/s (docs/benchmarks.md). ``--points 1`` measures
one-point records, the shape of a migrated v1 row.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import BASE_TS, Mosquitto, median, summary
from support.broker import Subscriber

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from edge_agent.buffer.outbox import Buffer
from edge_agent.model import Record
from edge_agent.settings import GatewaySettings, MqttSettings
from edge_agent.uplink.drain import Uplink

TOPIC = "edge/v1/bench/gw-bench/telemetry"
# mosquitto keeps at most 1000 QoS 1 messages queued per subscriber by default and drops the
# rest: at one record per message the subscriber falls behind, so lift the limit
BROKER_EXTRA = ("max_queued_messages 0",)
GOAL = 300_000  # values/s


class Counter(Subscriber):
    """Counts records, values and payload bytes without keeping every payload."""

    def __init__(self, broker: Mosquitto, expect: int) -> None:
        super().__init__(broker, TOPIC)
        self.ids: set[int] = set()
        self.values = self.bytes = 0
        self.done = threading.Event()
        self.expect = expect

    def _on_message(self, client, userdata, msg) -> None:  # type: ignore[no-untyped-def]
        recs = json.loads(msg.payload).get("recs", ())
        self.ids.update(r["id"] for r in recs)
        self.values += sum(len(r["vals"]) for r in recs)
        self.bytes += len(msg.payload)
        if len(self.ids) >= self.expect:
            self.done.set()


def items(n: int, points: int) -> list[Record]:
    """``n // points`` records of ``points`` uint16 values: 20 units polled in turn, 100 ms apart."""
    return [Record(f"dev{k % 20:02d}", BASE_TS + (k // 20) * 100,
                   {f"r{r}": (k * 40503 + r * 257) & 0xFFFF for r in range(points)}) for k in range(n // points)]


def uplink_run(directory: Path, n: int, points: int, batch_max: int, inflight: int
               ) -> tuple[float, int, bool, float]:
    path = directory / f"drain-{batch_max}-{inflight}.db"
    for suffix in ("", "-wal", "-shm", ".ids", ".lock"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    buf = Buffer(path).open()
    all_items = items(n, points)
    rows = len(all_items)
    for start in range(0, rows, 2000):
        buf.append(all_items[start:start + 2000])
    gw = GatewaySettings(id="gw-bench", site="bench", state_dir=directory)
    with Mosquitto(directory, extra=BROKER_EXTRA) as broker:
        counter = Counter(broker, rows).start()
        try:
            up = Uplink(MqttSettings(host=broker.host, port=broker.port, batch_max=batch_max, inflight=inflight), gw, buf)
            up.start()
            while not up.connected:  # time the drain, not the connect
                time.sleep(0.0005)
            t0 = time.perf_counter()
            while up.stats().acked_items < rows:
                time.sleep(0.005)
            elapsed = time.perf_counter() - t0
            messages = up.stats().published_messages
            up.stop()
            arrived = counter.done.wait(30)
        finally:
            counter.stop()
    pending = buf.stats().pending
    buf.close()
    return elapsed, messages, arrived and pending == 0 and counter.values == rows * points, counter.bytes / n


def raw_run(directory: Path, n: int, points: int, batch_max: int, inflight: int) -> tuple[float, int, bool]:
    """The same payloads, pre-encoded, published by plain paho with ``inflight`` unacked at most."""
    bodies = [{"id": i + 1, **r.to_wire()} for i, r in enumerate(items(n, points))]
    payloads = [json.dumps({"v": 2, "gw": "gw-bench", "sent": BASE_TS, "recs": bodies[i:i + batch_max]},
                           separators=(",", ":")).encode() for i in range(0, len(bodies), batch_max)]
    window = threading.Semaphore(inflight)
    acked = threading.Event()
    count = [0]

    def on_publish(client, userdata, mid, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        count[0] += 1
        window.release()
        if count[0] == len(payloads):
            acked.set()

    with Mosquitto(directory, extra=BROKER_EXTRA) as broker:
        counter = Counter(broker, len(bodies)).start()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-raw")
        client.max_inflight_messages_set(0)  # as the uplink: our window, not paho's
        client.on_publish = on_publish
        try:
            client.connect(broker.host, broker.port, keepalive=30)
            client.loop_start()
            t0 = time.perf_counter()
            for payload in payloads:
                window.acquire()
                if client.publish(TOPIC, payload, qos=1).rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    raise RuntimeError("raw publish failed")
            ok = acked.wait(120)
            elapsed = time.perf_counter() - t0
            arrived = counter.done.wait(30)
        finally:
            client.disconnect()
            client.loop_stop()
            counter.stop()
    return elapsed, len(payloads), ok and arrived


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="200,000 values, 500x20 and 100x20, one run each")
    ap.add_argument("-n", type=int, default=None, help="values per run (default 1,000,000; 100,000 at batch_max 1)")
    ap.add_argument("--points", type=int, default=20, help="values per record (default 20)")
    ap.add_argument("--repeat", type=int, default=None, help="runs per pair, median shown (default 3)")
    ap.add_argument("--settings", default=None,
                    help="comma-separated batch_max x inflight pairs; the first is held to the goal")
    args = ap.parse_args()
    n = args.n or (200_000 if args.quick else 1_000_000)
    repeat = args.repeat or (1 if args.quick else 3)
    settings = args.settings or ("500x20,100x20" if args.quick else "500x20,1x20,10x20,100x20,500x1,500x5,500x100")
    pairs = [tuple(int(x) for x in item.split("x")) for item in settings.split(",")]
    print(f"drain to a local mosquitto at QoS 1, records of {args.points} values, median of {repeat}; "
          "raw = plain paho, same payloads and window")
    print(f"{'batch_max':>9} {'inflight':>8} {'values':>9} {'values/s':>10} {'records/s':>10} {'messages/s':>10} "
          f"{'B/value':>7} {'raw val/s':>10} {'uplink/raw':>10}  all arrived", flush=True)
    first = None
    with tempfile.TemporaryDirectory(prefix="bench-drain-") as tmp:
        for batch_max, inflight in pairs:
            m = min(n, 5000 * args.points) if batch_max == 1 else n  # one record per message is slow
            m -= m % args.points
            up, raw = [], []
            for _ in range(repeat):  # interleaved, so drift on a shared machine hits both
                up.append(uplink_run(Path(tmp), m, args.points, batch_max, inflight))
                raw.append(raw_run(Path(tmp), m, args.points, batch_max, inflight))
            rate = median(m / e for e, _, _, _ in up)
            msgs = median(k / e for e, k, _, _ in up)
            per_value = median(b for _, _, _, b in up)
            raw_rate = median(m / e for e, _, _ in raw)
            ok = all(a for _, _, a, _ in up) and all(a for _, _, a in raw)
            arrived = "yes" if ok else f"NO (uplink {all(a for _, _, a, _ in up)}, raw {all(a for _, _, a in raw)})"
            print(f"{batch_max:>9} {inflight:>8} {m:>9,} {rate:>10,.0f} {rate / args.points:>10,.0f} {msgs:>10,.0f} "
                  f"{per_value:>7.1f} {raw_rate:>10,.0f} {rate / raw_rate:>10.0%}  {arrived}", flush=True)
            first = first or (batch_max, inflight, rate, raw_rate, ok)
    batch_max, inflight, rate, raw_rate, ok = first
    summary(f"{rate:,.0f} values/s ({rate / args.points:,.0f} records of {args.points}) drained by the uplink at "
            f"batch_max {batch_max}, inflight {inflight}",
            f"{raw_rate:,.0f} values/s: raw paho, same payloads and window", f"{rate / raw_rate:.0%} of raw paho",
            f">= {GOAL:,} values/s (every id arrived; before records: 95,400 readings/s)", rate >= GOAL and ok)
    return 0


if __name__ == "__main__":
    sys.exit(main())
