"""A Sparkplug B host application built on another library than ours (pysparkplug, PyPI), for
tests that must not judge our Sparkplug dialect with our own decoder (issue 14).

Runs with the interpreter of ``tests/.spb-venv`` (``scripts/setup.sh`` makes it), never with the
project's: it imports pysparkplug and paho-mqtt 1.x from there and nothing of edge_agent.

    tests/.spb-venv/bin/python tests/support/spb_host.py --port 1883 [--host 127.0.0.1]
        [--host-id scada] [--group site-a]
    tests/.spb-venv/bin/python tests/support/spb_host.py --decode

Live mode: subscribes ``spBv1.0/#``; with ``--host-id`` it is a primary host: its Last Will is
``spBv1.0/STATE/{id}`` ``{"online": false, ...}`` (retained, QoS 1) and, once subscribed, it
publishes ``{"online": true, "timestamp": ms}`` there (retained, QoS 1). It prints one JSON line on
stdout per message it receives, and reads commands on stdin, one a line:

    rebirth [GROUP NODE]          NCMD Node Control/Rebirth = true (default: the last NBIRTH's node)
    dcmd DEVICE METRIC JSON       DCMD writing JSON's value to METRIC of DEVICE, by the alias and
                                  datatype of the device's last DBIRTH (by name if it had none)
    online | offline              publish its STATE (needs --host-id), retained
    quit                          disconnect cleanly and exit (so does the end of stdin)

Decode mode: reads ``{"topic": ..., "payload": base64}`` lines on stdin and prints the same lines as
live mode, resolving aliases from the births seen earlier in the stream, as a host does; a line
``{"command": "rebirth ..." | "dcmd ..."}`` prints ``{"type": "command", "command", "topic",
"payload": base64}``: the NCMD/DCMD this host would publish, encoded by pysparkplug.

Output lines (``flush`` after each):
    {"type": "ready"}                                 subscribed (and STATE online published)
    {"type": "NBIRTH"|"DBIRTH"|"NDATA"|"DDATA"|"NCMD"|"DCMD"|"DDEATH"|"NDEATH", "topic", "group",
     "node", "device", "seq", "timestamp", "bdSeq", "qos", "retain",
     "metrics": [{"name", "alias", "datatype", "value", "is_null", "is_historical", "timestamp"}]}
    {"type": "STATE", "topic", "host_id", "online", "timestamp", "retain"}
    {"type": "sent", "command": "...", "topic"}       after a stdin command was published
    {"type": <kind>, "topic", "error": "..."}          pysparkplug could not decode it (e.g. an alias
                                                       no birth declared); "error" with "command" for
                                                       a stdin command it could not send
``bdSeq`` is the value of the bdSeq metric (NBIRTH, NDEATH), else null; ``datatype`` is the
Sparkplug type name (``Int64``, ``Double``, ...); bytes values are base64.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from pysparkplug import DataType, DCmd, Metric, NCmd, Topic

NAMESPACE = "spBv1.0"
_out_lock = threading.Lock()


def emit(obj: dict[str, Any]) -> None:
    with _out_lock:
        sys.stdout.write(json.dumps(obj, default=str) + "\n")
        sys.stdout.flush()


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


class Births:
    """The last NBIRTH/DBIRTH per (group, node, device): what resolves aliases and datatypes."""

    def __init__(self) -> None:
        self.by_key: dict[tuple[Any, Any, Any], Any] = {}
        self.last_node: tuple[str, str] | None = None

    def decode(self, topic_str: str, raw: bytes, *, qos: int | None = None, retain: bool | None = None) -> dict:
        kind = topic_str.split("/")[2] if topic_str.count("/") >= 2 else "?"
        try:
            topic = Topic.from_str(topic_str)
            kind = str(topic.message_type)
            if kind == "STATE":
                state = topic.message_type.payload.decode(raw)
                return {"type": "STATE", "topic": topic_str, "host_id": topic.sparkplug_host_id,
                        "online": state.online, "timestamp": state.timestamp, "retain": retain}
            key = (topic.group_id, topic.edge_node_id, topic.device_id)
            if kind in ("NBIRTH", "NDEATH"):
                self.by_key = {k: v for k, v in self.by_key.items() if k[:2] != key[:2]}  # a new session
            payload = topic.message_type.payload.decode(raw, birth=self.by_key.get(key))
        except Exception as exc:  # noqa: BLE001 - reported, so a test sees what the library refused
            return {"type": kind, "topic": topic_str, "error": f"{type(exc).__name__}: {exc}"}
        if kind in ("NBIRTH", "DBIRTH"):
            self.by_key[key] = payload
            if kind == "NBIRTH":
                self.last_node = (topic.group_id, topic.edge_node_id)
        if kind == "NDEATH":
            metrics = [payload.bd_seq_metric]
        else:
            metrics = list(getattr(payload, "metrics", ()))
        out = {"type": kind, "topic": topic_str, "group": topic.group_id, "node": topic.edge_node_id,
               "device": topic.device_id, "seq": getattr(payload, "seq", None),
               "timestamp": getattr(payload, "timestamp", None), "qos": qos, "retain": retain,
               "metrics": [{"name": m.name, "alias": m.alias, "datatype": _type_name(m.datatype),
                            "value": _plain(m.value), "is_null": m.is_null, "is_historical": m.is_historical,
                            "timestamp": m.timestamp} for m in metrics]}
        bdseq = [m["value"] for m in out["metrics"] if m["name"] == "bdSeq"]
        out["bdSeq"] = bdseq[0] if kind in ("NBIRTH", "NDEATH") and bdseq else None
        return out


def _type_name(datatype: DataType) -> str:
    special = {"DATETIME": "DateTime", "UUID": "UUID", "DATASET": "DataSet"}
    return special.get(datatype.name) or datatype.name.title().replace("Uint", "UInt")


def _spb_type(name: str) -> DataType:
    return DataType[name.upper()]


def command_message(line: str, births: Births) -> tuple[str, bytes]:
    """The topic and payload of a stdin command (ValueError when it cannot be made)."""
    words = line.split(maxsplit=3)
    now = int(time.time() * 1000)
    if words[0] == "rebirth":
        group, node = (words[1], words[2]) if len(words) >= 3 else (births.last_node or (None, None))
        if node is None:
            raise ValueError("no NBIRTH seen yet: say rebirth GROUP NODE")
        metric = Metric(timestamp=now, name="Node Control/Rebirth", datatype=DataType.BOOLEAN, value=True)
        return f"{NAMESPACE}/{group}/NCMD/{node}", NCmd(timestamp=now, metrics=(metric,)).encode(include_dtypes=True)
    if words[0] == "dcmd" and len(words) == 4:
        device, name, value = words[1], words[2], json.loads(words[3])
        if births.last_node is None:
            raise ValueError("no NBIRTH seen yet")
        group, node = births.last_node
        birth = births.by_key.get((group, node, device))
        declared = {m.name: m for m in birth.metrics} if birth is not None else {}
        if name in declared and declared[name].alias is not None:
            d = declared[name]
            metric = Metric(timestamp=now, name=None, alias=d.alias, datatype=d.datatype, value=value)
            payload = DCmd(timestamp=now, metrics=(metric,)).encode(include_dtypes=False)
        else:
            dtype = d.datatype if (d := declared.get(name)) else _spb_type(
                "boolean" if isinstance(value, bool) else "int64" if isinstance(value, int)
                else "double" if isinstance(value, float) else "string")
            metric = Metric(timestamp=now, name=name, datatype=dtype, value=value)
            payload = DCmd(timestamp=now, metrics=(metric,)).encode(include_dtypes=True)
        return f"{NAMESPACE}/{group}/DCMD/{node}/{device}", payload
    raise ValueError(f"unknown command {line!r}")


def state_payload(online: bool, ts: int) -> bytes:
    return json.dumps({"online": online, "timestamp": ts}).encode()


def live(args: argparse.Namespace) -> int:
    births = Births()
    ready = threading.Event()
    state_ts = int(time.time() * 1000)
    state_topic = f"{NAMESPACE}/STATE/{args.host_id}" if args.host_id else None
    client = mqtt.Client(client_id=f"spb-host-{args.host_id or 'observer'}-{state_ts % 100000}", clean_session=True)
    if state_topic:
        client.will_set(state_topic, state_payload(False, state_ts), qos=1, retain=True)
    subscription = f"{NAMESPACE}/{args.group}/#" if args.group else f"{NAMESPACE}/#"

    def on_connect(c: mqtt.Client, userdata: Any, flags: Any, rc: int) -> None:
        if rc != 0:
            emit({"type": "error", "error": f"connect refused: rc {rc}"})
            return
        topics = [(subscription, 1)] + ([(f"{NAMESPACE}/STATE/#", 1)] if args.group else [])
        c.subscribe(topics)

    def on_subscribe(c: mqtt.Client, userdata: Any, mid: int, granted: Any) -> None:
        if state_topic:
            c.publish(state_topic, state_payload(True, state_ts), qos=1, retain=True)
        ready.set()
        emit({"type": "ready"})

    def on_message(c: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            emit(births.decode(msg.topic, msg.payload, qos=msg.qos, retain=bool(msg.retain)))
        except Exception as exc:  # noqa: BLE001 - the host must outlive any message
            emit({"type": "error", "topic": msg.topic, "error": f"{type(exc).__name__}: {exc}"})

    client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, on_message
    client.connect(args.host, args.port, keepalive=10)
    client.loop_start()
    try:
        for raw_line in sys.stdin:
            line = raw_line.strip()
            if not line:
                continue
            if line == "quit":
                break
            try:
                if line in ("online", "offline"):
                    if not state_topic:
                        raise ValueError("online/offline need --host-id")
                    topic, payload, retain = state_topic, state_payload(line == "online", int(time.time() * 1000)), True
                else:
                    topic, payload = command_message(line, births)
                    retain = False
                client.publish(topic, payload, qos=1 if retain else 0, retain=retain).wait_for_publish(5)
                emit({"type": "sent", "command": line, "topic": topic})
            except Exception as exc:  # noqa: BLE001 - say why and go on reading
                emit({"type": "error", "command": line, "error": f"{type(exc).__name__}: {exc}"})
    finally:
        client.disconnect()  # clean: the broker drops our will, the retained STATE stays as it was
        client.loop_stop()
    return 0


def decode_stream() -> int:
    births = Births()
    for line in sys.stdin:
        if not line.strip():
            continue
        item = json.loads(line)
        if "command" in item:
            try:
                topic, payload = command_message(item["command"], births)
                emit({"type": "command", "command": item["command"], "topic": topic,
                      "payload": base64.b64encode(payload).decode()})
            except Exception as exc:  # noqa: BLE001 - say why and go on reading
                emit({"type": "error", "command": item["command"], "error": f"{type(exc).__name__}: {exc}"})
        else:
            emit(births.decode(item["topic"], base64.b64decode(item["payload"])))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--decode", action="store_true", help="decode topic/payload lines from stdin")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--host-id", help="act as this primary host: publish its STATE")
    parser.add_argument("--group", help="subscribe to this group only (default spBv1.0/#)")
    args = parser.parse_args(argv)
    return decode_stream() if args.decode else live(args)


if __name__ == "__main__":
    sys.exit(main())
