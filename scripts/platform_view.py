"""What the platform sees: subscribes to a gateway's topics and prints what arrives.

Used by scripts/demo.sh. Prints each telemetry message (wire v2: a batch of records, one per
poll of a device or unit) as a short table and every event in full (its data as it arrived:
pseudonyms, geohashes), and at the end a summary: messages, records and the values they
carry, events by type, the id range and any gap in it, values per second, and the identities
the platform received (pseudonyms only: the raw values never leave the gateway). A record's
``sealed`` points are shown as sealed: only the platform's private key opens them
(``python -m edge_agent.platform unseal``). Telemetry and events are read with
``edge_agent.platform.decode_payload``, so a gateway with ``mqtt.compress: true`` (xz) shows the
same; its messages are marked ``xz`` with their size on the wire and as JSON.
"""

import argparse
import json
import sys
import threading
import time
from collections import Counter

import paho.mqtt.client as mqtt

from edge_agent.platform import PayloadError, decode_payload, payload_json

IDENTITY_KEYS = ("wearer", "wearer_phone", "plate", "card")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--topic", default="edge/v1/#")
    ap.add_argument("--seconds", type=float, default=30)
    args = ap.parse_args()

    ids: set[int] = set()
    counts = {"messages": 0, "records": 0, "values": 0, "events": 0, "wire_bytes": 0, "json_bytes": 0}
    first_at: list[float] = []
    types: Counter = Counter()
    identities: dict[str, set] = {}
    lock = threading.Lock()

    def on_message(client, userdata, msg):
        text = msg.payload.decode("utf-8", "replace")
        kind = msg.topic.rsplit("/", 1)[-1]
        with lock:
            counts["messages"] += 1
            if kind in ("telemetry", "events"):
                try:
                    body = decode_payload(msg.payload)
                except PayloadError as exc:
                    print(f"[{msg.topic}] unreadable payload of {len(msg.payload)} bytes: {exc}")
                    return
                items = body.get("recs") or body.get("events") or []
                if not first_at:
                    first_at.append(time.monotonic())
                counts["records" if kind == "telemetry" else "events"] += len(items)
                ids.update(i["id"] for i in items)
                plain = len(payload_json(msg.payload))
                counts["wire_bytes"] += len(msg.payload)
                counts["json_bytes"] += plain
                xz = f" (xz: {len(msg.payload):,} bytes, {plain:,} as JSON)" if len(msg.payload) != plain else ""
                print(f"[{msg.topic}] {len(items)} item(s){xz}")
                if kind == "events":
                    for e in items:
                        types[e["type"]] += 1
                        _note_identities(e.get("data", {}), identities)
                        print(f"    id {e['id']:>6}  {e['dev']:<10} {e['type']:<12} {e['prio']:<8} "
                              f"{json.dumps(e.get('data', {}), ensure_ascii=False)}")
                else:
                    for r in items:
                        counts["values"] += len(r.get("vals", {}))
                        _note_identities(r.get("vals", {}), identities)
                    for r in items[:6]:
                        print(f"    id {r['id']:>6}  {_record_line(r)}")
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
        print(f"messages {counts['messages']}, records {counts['records']} ({counts['values']} values), "
              f"events {counts['events']}")
        if counts["wire_bytes"] != counts["json_bytes"]:
            print(f"data payloads {counts['wire_bytes']:,} bytes on the wire, {counts['json_bytes']:,} as JSON "
                  f"({counts['json_bytes'] / max(1, counts['wire_bytes']):.1f}x)")
        if ids:
            lo, hi = min(ids), max(ids)
            gaps = (hi - lo + 1) - len(ids)
            print(f"ids {lo}..{hi}, {len(ids)} distinct, {gaps} missing in between")
        if span > 0:
            print(f"values/s over {span:.1f}s: {counts['values'] / span:.1f}")
        if types:
            print("events: " + ", ".join(f"{t} {n}" for t, n in sorted(types.items())))
        for key, values in sorted(identities.items()):
            sample = ", ".join(sorted(values)[:3])
            print(f"identities as received, {key}: {len(values)} distinct, e.g. {sample}")
    return 0


def _record_line(r: dict) -> str:
    """One record: device[unit], then point=value pairs (a point not good says its quality)."""
    where = r["dev"] + (f"[{r['sub']}]" if "sub" in r else "")
    quality = r.get("q", {})
    pairs = [f"{pt}={json.dumps(val, ensure_ascii=False)}" + (f" ({quality[pt]})" if pt in quality else "")
             for pt, val in r.get("vals", {}).items()]
    if "sealed" in r:
        pairs.append(f"<sealed for {r['sealed'].get('kid', '?')}>")
    clock = " clk=unsynced" if r.get("clk") else ""
    return f"{where:<18} " + " ".join(pairs) + clock


def _note_identities(data: dict, identities: dict[str, set]) -> None:
    for key in IDENTITY_KEYS:
        if isinstance(data.get(key), str):
            identities.setdefault(key, set()).add(data[key])


if __name__ == "__main__":
    sys.exit(main())
