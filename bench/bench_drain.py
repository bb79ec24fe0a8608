"""Uplink drain rate: a real Buffer full of readings -> Uplink -> local mosquitto, QoS 1 (on demand, not a test).

    .venv/bin/python bench/bench_drain.py [-n 20000] [--settings 1x20,10x20,100x20,500x20,500x1,500x5,500x100]

For each ``batch_max x inflight``: a fresh buffer with N readings, a fresh mosquitto on a free
loopback port, a subscriber counting what arrives, and an Uplink draining until every row is
acked (marked sent). Prints readings/s and messages/s from the CONNACK to the last ack,
and checks that the subscriber saw every id. Noisy shared machine: compare ratios in one run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from edge_agent.model import Reading  # noqa: E402
from edge_agent.settings import GatewaySettings, MqttSettings  # noqa: E402
from edge_agent.uplink import Uplink  # noqa: E402
from support.broker import Mosquitto, Subscriber  # noqa: E402

try:
    from edge_agent.buffer import Buffer  # noqa: E402
except ImportError:
    Buffer = None  # type: ignore[assignment,misc]


class Counter(Subscriber):
    """Counts readings without keeping every payload."""

    def __init__(self, broker: Mosquitto, topic: str) -> None:
        super().__init__(broker, topic)
        self.ids: set[int] = set()
        self.count_messages = 0
        self.done = threading.Event()
        self.expect = 0

    def _on_message(self, client, userdata, msg) -> None:  # type: ignore[no-untyped-def]
        payload = json.loads(msg.payload)
        self.count_messages += 1
        self.ids.update(r["id"] for r in payload.get("readings", ()))
        if len(self.ids) >= self.expect:
            self.done.set()


def one_run(directory: Path, n: int, batch_max: int, inflight: int) -> tuple[float, int, bool]:
    path = directory / f"drain-{batch_max}-{inflight}.db"
    buf = Buffer(path).open()
    base = 1732380000000
    for start in range(0, n, 2000):
        buf.append([Reading(f"river-{i % 7}", "level_m", round(1 + (i % 1000) / 1000, 3), base + i)
                    for i in range(start, min(n, start + 2000))])
    gw = GatewaySettings(id="gw-bench", site="bench", state_dir=directory)
    with Mosquitto(directory) as broker:
        counter = Counter(broker, "edge/v1/bench/gw-bench/telemetry")
        counter.expect = n
        counter.start()
        try:
            mqtt = MqttSettings(host=broker.host, port=broker.port, batch_max=batch_max, inflight=inflight)
            up = Uplink(mqtt, gw, buf)
            up.start()
            while not up.connected:  # time the drain, not the connect
                time.sleep(0.0005)
            t0 = time.perf_counter()
            while up.stats().acked_items < n:
                time.sleep(0.005)
            elapsed = time.perf_counter() - t0
            messages = up.stats().published_messages
            up.stop()
            arrived = counter.done.wait(30)
        finally:
            counter.stop()
    pending = buf.stats().pending
    buf.close()
    return elapsed, messages, arrived and pending == 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=20000, help="readings per run (default 20000)")
    ap.add_argument("--settings", default="1x20,10x20,100x20,500x20,500x1,500x5,500x100",
                    help="comma-separated batch_max x inflight pairs")
    args = ap.parse_args()
    if Buffer is None:
        print("bench_drain: edge_agent/buffer.py does not exist yet; nothing to measure", file=sys.stderr)
        return 0
    pairs = [tuple(int(x) for x in item.split("x")) for item in args.settings.split(",")]
    print(f"{'batch_max':>9} {'inflight':>8} {'readings/s':>11} {'messages/s':>11} {'seconds':>8}  all arrived")
    with tempfile.TemporaryDirectory(prefix="bench-drain-") as tmp:
        for batch_max, inflight in pairs:
            n = min(args.n, 5000) if batch_max == 1 else args.n  # one reading per message is slow
            elapsed, messages, ok = one_run(Path(tmp), n, batch_max, inflight)
            print(f"{batch_max:>9} {inflight:>8} {n / elapsed:>11,.0f} {messages / elapsed:>11,.0f} "
                  f"{elapsed:>8.2f}  {'yes' if ok else 'NO'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
