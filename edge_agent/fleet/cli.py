"""``edge-agent platform watch`` and ``platform send``: a fleet followed and commanded through the
contract from any broker (docs/platform.md; the verbs' table in docs/cli.md)::

    edge-agent platform watch --broker HOST[:PORT] [--site S] [--json] [--once SECONDS] [--share GROUP]
    edge-agent platform send --broker HOST[:PORT] --key FILE (--to SITE/GW[,...] | --site S) OP [KEY=VALUE ...]

Exit codes (CONTRACT section 1): 0 ok; 1 a problem found (``watch --once``: a loss or a
conflicting duplicate, losses
not counted with ``--share``; ``send``: a gateway answered with an error or not in time) or the broker
cannot be used (one line, no traceback); 2 bad usage.

Every import beyond the standard library is inside the verbs: ``edge_agent.cli`` registers these
verbs for every command, ``run`` included, and the platform's API loads ``cryptography`` (~7 MiB
of a gateway's RSS; tests/system/test_lean_daemon.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from typing import Any

__all__ = ["register", "cmd_watch", "cmd_send", "watch_line"]

REFRESH_S = 1.0
STATE_SETTLE_S = 0.5  # --site: retained states arrive at once; this long without one ends the wait


def _now_ms() -> int:
    return int(time.time() * 1000)


def _link(args: argparse.Namespace, on_message: Any, role: str) -> Any:
    from .broker import Link

    return Link(args.broker, on_message=on_message, username=args.username, password_file=args.password_file,
                tls_ca=args.tls_ca, role=role).connect()


def _fail(message: str) -> int:
    print(f"edge-agent: {message}", file=sys.stderr)
    return 1


# -- watch --------------------------------------------------------------------------------------------
def _age(ms: int | None, now_ms: int) -> str:
    if ms is None:
        return "-"
    seconds = max(0, now_ms - ms) // 1000
    return f"{seconds}s ago" if seconds < 120 else f"{seconds // 60}m ago"


def watch_line(snap: dict[str, Any], now_ms: int) -> str:
    """One gateway's figures as one line for a person."""
    online = {True: "online", False: "OFFLINE", None: "no-state"}[snap["online"]]
    devices = snap["devices"] or {}
    evicted = sum((snap["evicted"] or {}).values())
    dev = "/".join(str(devices.get(k, "-")) for k in ("online", "offline", "unknown"))
    lost = f"MISSING {snap['missing']}" if snap["missing"] else "missing 0"
    extra = "".join(f"  {name} {snap[key]}" for key, name in (("conflicts", "CONFLICTS"), ("bad", "bad"))
                    if snap[key])
    return (f"{snap['site']}/{snap['gw']}  {online}  v{snap['version'] or '?'}  backlog {_dash(snap['backlog'])}"
            f"  evicted {evicted}  devices {dev} (on/off/unknown)  clock {snap['clock'] or '-'}"
            f"  recs {snap['records']}  {lost} (+{snap['missing_explained']} evicted)  dup {snap['duplicates']}"
            f"{extra}  seen {_age(snap['last_seen_ms'], now_ms)}  node {snap.get('broker') or '-'}")


def _dash(value: Any) -> str:
    return "-" if value is None else str(value)


def cmd_watch(args: argparse.Namespace) -> int:
    from .broker import share

    from ..platform.track import Tracker

    tracker, lock = Tracker(args.prefix), threading.Lock()

    def on_message(topic: str, payload: bytes) -> None:
        with lock:
            tracker.feed(topic, payload, _now_ms())

    base = f"{args.prefix.rstrip('/')}/{args.site or '+'}/+"
    if args.share:  # the data split between the group's consumers; every consumer needs every state
        filters = [share(args.share, f"{base}/telemetry"), share(args.share, f"{base}/events"), f"{base}/state"]
    else:
        filters = [f"{base}/#"]
    try:
        link = _link(args, on_message, "watch")
    except (ConnectionError, ValueError) as exc:
        return _fail(str(exc))
    try:
        link.subscribe(filters)
        if args.once is not None:
            time.sleep(args.once)
            with lock:
                snaps = tracker.snapshot()
            _show(snaps, args.json, tty=False)
            # a share group splits each gateway's ids between its consumers: their gaps are the others' records
            return 1 if any((s["missing"] and not args.share) or s["conflicts"] for s in snaps) else 0
        tty = sys.stdout.isatty() and not args.json
        while True:
            with lock:
                snaps = tracker.snapshot()
            _show(snaps, args.json, tty)
            time.sleep(REFRESH_S)
    except ConnectionError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:  # the way a person ends a watch: not a failure
        return 0
    finally:
        link.close()


def _show(snaps: list[dict[str, Any]], as_json: bool, tty: bool) -> None:
    now = _now_ms()
    if as_json:
        print(json.dumps({"ts": now, "gateways": snaps}, separators=(",", ":")), flush=True)
        return
    lines = [watch_line(s, now) for s in snaps] or ["(no gateway seen yet)"]
    if tty:
        sys.stdout.write("\x1b[H\x1b[2J")  # home, clear: the lines refreshed in place
    else:
        lines.append("")
    print("\n".join(lines), flush=True)


# -- send ---------------------------------------------------------------------------------------------
def _targets(text: str) -> list[tuple[str, str]]:
    out = []
    for item in text.split(","):
        site, sep, gw = item.strip().partition("/")
        if not sep or not site or not gw or "/" in gw or any(c in item for c in "+#"):
            raise argparse.ArgumentTypeError(f"{item!r}: expected SITE/GW (comma-separated for several)")
        out.append((site, gw))
    return out


def _kv(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r}: an argument is KEY=VALUE (VALUE as JSON, else a string)")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("--args must be a JSON object")
    return value


def _site_gateways(args: argparse.Namespace) -> dict[tuple[str, str], dict[str, Any]]:
    """The site's gateways, from their retained ``R/state``: ``(site, gw) -> state``."""
    from ..platform.track import Tracker

    tracker, lock, last = Tracker(args.prefix), threading.Lock(), [time.monotonic()]

    def on_message(topic: str, payload: bytes) -> None:
        with lock:
            tracker.feed(topic, payload)
            last[0] = time.monotonic()

    link = _link(args, on_message, "send-states")
    try:
        link.subscribe([f"{args.prefix.rstrip('/')}/{args.site}/+/state"])
        while time.monotonic() - last[0] < STATE_SETTLE_S:
            time.sleep(0.05)
    finally:
        link.close()
    with lock:
        return {(t.site, t.gw): t.state or {} for t in tracker.gateways.values() if t.state}


def cmd_send(args: argparse.Namespace) -> int:
    from ..commands.signing import load_private_key
    from ..platform.result import new_command, verify_result
    from ..platform import PayloadError

    key = load_private_key(args.key)  # SigningKeyError: the CLI's one line, exit 1
    cmd_args = {**args.args, **dict(args.kv)}
    prefix = args.prefix.rstrip("/")
    try:
        states = _site_gateways(args) if args.site else {}
    except (ConnectionError, ValueError) as exc:
        return _fail(str(exc))
    targets = sorted(states) if args.site else list(dict.fromkeys(args.to))
    if not targets:
        return _fail(f"no gateway of site {args.site!r} has a retained state under {prefix}/{args.site}/+/state")
    commands = {t: new_command(args.op, key, target=args.target, args=cmd_args, kid=args.kid,
                               ttl_ms=int(max(args.timeout, 1) * 1000) + 60_000) for t in targets}
    by_topic = {f"{prefix}/{site}/{gw}/cmd/result": (site, gw) for site, gw in targets}
    outcomes: dict[tuple[str, str], dict[str, Any]] = {}
    done, lock = threading.Event(), threading.Lock()

    def on_message(topic: str, payload: bytes) -> None:
        where = by_topic.get(topic)
        if where is None:
            return
        try:
            result = json.loads(payload)
            outcome = verify_result(result, commands[where])
        except (ValueError, PayloadError):
            return  # another command's result (matched by id), or not a result: keep waiting
        with lock:
            if where not in outcomes:
                outcomes[where] = {"status": "ok" if outcome.ok else "error", "code": outcome.code,
                                   "message": outcome.message, "data": outcome.data}
            if len(outcomes) == len(targets):
                done.set()

    try:
        link = _link(args, on_message, "send")
    except (ConnectionError, ValueError) as exc:
        return _fail(str(exc))
    try:
        link.subscribe(list(by_topic))  # before publishing: a fast result is not missed
        for (site, gw), command in commands.items():
            link.publish(f"{prefix}/{site}/{gw}/cmd", json.dumps(command).encode("utf-8"))
        done.wait(args.timeout)
    except ConnectionError as exc:
        return _fail(str(exc))
    finally:
        link.close()
    rows = []
    with lock:
        for site, gw in targets:
            row = {"site": site, "gw": gw, "id": commands[(site, gw)]["id"], "status": "timeout", "code": None,
                   "message": None, "data": None, **outcomes.get((site, gw), {})}
            if row["status"] == "timeout" and states.get((site, gw), {}).get("online") is False:
                row["message"] = "the gateway is offline (its R/state is the Last Will)"
            rows.append(row)
    if args.json:
        print(json.dumps({"op": args.op, "results": rows}, ensure_ascii=False, separators=(",", ":")))
    else:
        for row in rows:
            print(_send_line(row, args.timeout))
    return 0 if all(r["status"] == "ok" for r in rows) else 1


def _send_line(row: dict[str, Any], timeout: float) -> str:
    head = f"{row['site']}/{row['gw']}  {row['id']}  "
    if row["status"] == "ok":
        data = "" if row["data"] is None else "  " + json.dumps(row["data"], ensure_ascii=False,
                                                                  separators=(",", ":"))
        return f"{head}ok{data}"
    if row["status"] == "error":
        return f"{head}error {row['code']}: {row['message']}"
    return f"{head}timeout: no result within {timeout:g} s" + (f" ({row['message']})" if row["message"] else "")


# -- the parser ---------------------------------------------------------------------------------------
def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a number of seconds, more than 0")
    return value


def _broker_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--broker", required=True, metavar="HOST[:PORT]", help="the broker (port 1883, 8883 with TLS)")
    p.add_argument("--prefix", default="edge/v1", help="the gateways' mqtt.topic_prefix (default edge/v1)")
    p.add_argument("--username", metavar="U", help="MQTT user name")
    p.add_argument("--password-file", metavar="F", help="a file whose first line is the MQTT password")
    p.add_argument("--tls-ca", metavar="FILE", help="connect with TLS, trusting this CA (PEM)")


def register(platform_sub: Any) -> None:
    """Add ``platform watch`` and ``platform send`` to the CLI's ``platform`` verbs."""
    text = "follow a fleet's gateways: state, backlog, evictions, devices, records, ids missing, duplicates"
    p = platform_sub.add_parser("watch", help=text, description=text)
    _broker_options(p)
    p.add_argument("--site", metavar="S", help="only this site (default: every site)")
    p.add_argument("--json", action="store_true", help="one JSON object a refresh, one line each")
    p.add_argument("--once", type=_seconds, metavar="SECONDS",
                   help="follow this long, print once and exit (1 when a loss or a conflict was seen)")
    p.add_argument("--share", metavar="GROUP", help="share telemetry and events with the group's other "
                   "consumers ($share/GROUP/...); states are followed whole by each")
    p.set_defaults(func=cmd_watch)

    text = "sign one command per gateway, publish it and print each gateway's result"
    p = platform_sub.add_parser("send", help=text, description=text)
    _broker_options(p)
    p.add_argument("--key", required=True, metavar="FILE", help="the platform's command signing key (PEM)")
    p.add_argument("--kid", metavar="ID", help="the key's id as the gateways' commands.keys name it")
    to = p.add_mutually_exclusive_group(required=True)
    to.add_argument("--to", type=_targets, metavar="SITE/GW[,SITE/GW...]", help="these gateways")
    to.add_argument("--site", metavar="S", help="every gateway of the site that has a retained R/state")
    p.add_argument("--gateways-from-state", action="store_true",
                   help="with --site: the gateways are those with a retained R/state (the default; for scripts)")
    p.add_argument("op", metavar="OP", help="agent.ping, device.poll, device.write, config.apply, buffer.replay")
    p.add_argument("kv", nargs="*", type=_kv, metavar="KEY=VALUE", help="the op's arguments (VALUE as JSON, "
                   "else a string)")
    p.add_argument("--args", type=_json_object, default={}, metavar="JSON", help="the op's arguments, a JSON object")
    p.add_argument("--target", metavar="DEVICE", help="the device (device ops)")
    p.add_argument("--timeout", type=_seconds, default=10.0, metavar="SECONDS",
                   help="how long to wait for the results (default 10)")
    p.add_argument("--json", action="store_true", help="one JSON object with every gateway's result")
    p.set_defaults(func=cmd_send)
