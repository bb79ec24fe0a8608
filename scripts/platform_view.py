"""What the platform sees: subscribes to a gateway's topics and prints what arrives.

Used by scripts/demo.sh. Prints each telemetry/event message as a short table and, at the
end, a summary: messages, readings, the id range and any gap in it, readings per second.
"""

import argparse
import json
import sys
import threading
import time

import paho.mqtt.client as mqtt


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--topic", default="edge/v1/#")
    ap.add_argument("--seconds", type=float, default=30)
    args = ap.parse_args()

    ids: set[int] = set()
    counts = {"messages": 0, "readings": 0, "events": 0}
    first_at: list[float] = []
    lock = threading.Lock()

    def on_message(client, userdata, msg):
        text = msg.payload.decode("utf-8", "replace")
        kind = msg.topic.rsplit("/", 1)[-1]
        with lock:
            counts["messages"] += 1
            if kind in ("telemetry", "events"):
                body = json.loads(text)
                items = body.get("readings") or body.get("events") or []
                if not first_at:
                    first_at.append(time.monotonic())
                counts["readings" if kind == "telemetry" else "events"] += len(items)
                ids.update(i["id"] for i in items)
                print(f"[{msg.topic}] {len(items)} item(s)")
                for i in items[:6]:
                    value = i.get("val", i.get("data"))
                    print(f"    id {i['id']:>6}  {i.get('dev', ''):<10} {i.get('pt', i.get('type', '')):<20} "
                          f"{value!s:>12}  {i.get('q', i.get('prio', ''))}")
                if len(items) > 6:
                    print(f"    ... {len(items) - 6} more")
            else:
                print(f"[{msg.topic}]{' (retained)' if msg.retain else ''} {text}")
        sys.stdout.flush()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="platform-view")
    client.on_message = on_message
    client.on_connect = lambda c, u, f, rc, p: c.subscribe(args.topic, qos=1)
    client.connect(args.host, args.port)
    client.loop_start()
    time.sleep(args.seconds)
    client.loop_stop()
    with lock:
        span = time.monotonic() - first_at[0] if first_at else 0.0
        print("\n=== platform summary ===")
        print(f"messages {counts['messages']}, readings {counts['readings']}, events {counts['events']}")
        if ids:
            lo, hi = min(ids), max(ids)
            gaps = (hi - lo + 1) - len(ids)
            print(f"ids {lo}..{hi}, {len(ids)} distinct, {gaps} missing in between")
        if span > 0:
            print(f"readings/s over {span:.1f}s: {counts['readings'] / span:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
