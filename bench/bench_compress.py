"""Should the uplink compress its payloads (``mqtt.compress``)? Bytes saved against CPU spent (on demand, not a test).

    .venv/bin/python bench/bench_compress.py [--quick] [--sizes 1,10,20,31,100,500]
        [--values random|slow] [--drain] [--agent] [--seconds 30] [--repeat 3]

Issue 13 sets the bar: a compressed payload is worth offering only if it saves >= 3x the bytes
for <= 10% more CPU at W2 (20 devices x 20 uint16 points every 100 ms, 4,000 values/s).

1. Payloads (always; no broker): real v2 telemetry messages, built as the drain builds them
   (``Record.to_wire`` bodies with their ids in ``{"v", "gw", "sent", "recs"}``, compact JSON),
   from W2's polls: 20 units ``devUU`` polled in turn every 100 ms (a few ms apart), registers
   ``r0``..``r19``, values as the side-by-side simulator serves them (``--values random``:
   ``_cmp_values.value_of``, uint16 over 0..65535, 4.8 digits on average, the hard case for a
   compressor) or a slowly moving process value (``--values slow``: a random walk of a few
   counts a read, what meters and level sensors give). Messages of ``--sizes`` records: at W2
   the agent publishes ~31 records a message (what a group commit wakes; measured by part 3),
   a backlog drains in ``batch_max`` (500). Codecs: zlib (RFC 1950) levels 1 and 6, raw deflate
   (RFC 1951) levels 1 and 6, each without and with a preset dictionary ("contract": only the
   v2 keys, fixed by the protocol so a platform could hold the same bytes; "site": also the
   gateway id and the config's device and point names, an upper bound, since a platform would
   need each gateway's dictionary); then xz (LZMA2 preset 0 with a 64 KiB dictionary, CRC32:
   what ``mqtt.compress`` sends, ``uplink/payload.py``) and bz2 level 9, both in Python's
   standard library. Figures:
   wire bytes a value and the ratio to JSON, CPU (this thread's) a value to compress and, for
   the platform, to decompress; JSON encoding of the same message a value, for scale.
2. Uplink (``--drain``): the real ``Uplink`` draining a real ``Buffer`` of the same records to
   a fresh local mosquitto (QoS 1, ``batch_max`` = the message size, no subscriber in this
   process), the process's CPU (drain, paho and SQLite threads) a value and the payload bytes a
   value, ``mqtt.compress`` off and on, interleaved: what compression adds to the uplink's own
   CPU.
3. Agent (``--agent``): the real agent (``edge-agent run``, every other setting default) on
   W2 against the side-by-side bench's simulator (``_cmp_sim.py``) and a fresh mosquitto, off
   and on in turn, ``--seconds`` measured after a warm-up: its CPU-s (utime + stime) per 1,000
   values delivered, telemetry bytes a value at a subscriber that decodes every payload
   (``platform.decode_payload``), records a message. The bar is held to this part when it
   runs, else to part 1 at 31 records a message against the agent's W2 CPU measured by
   compare_thingsboard.py at 44dd774 (34 us a value).
"""

from __future__ import annotations

import argparse
import bz2
import lzma
import random
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path
from typing import Any, Callable

from _common import BASE_TS, Mosquitto, median, summary
from _cmp_values import dev_name, point_name, value_of

from edge_agent.model import Record
from edge_agent.settings import GatewaySettings, MqttSettings
from edge_agent.uplink.payload import Payloads, encode

UNITS, REGISTERS, PERIOD_MS = 20, 20, 100
GW = "gw-bench"
W2_RECORDS = 31  # records a message the agent publishes at W2 (part 3 measures it: 628 values a message)
AGENT_US_PER_VALUE_W2 = 34.0  # the agent's CPU a value at W2 before compression (compare_thingsboard, 44dd774)
RATIO_GOAL, CPU_GOAL = 3.0, 0.10
CHOSEN = "xz-0"  # what mqtt.compress sends


# -- part 1: the payloads ---------------------------------------------------------------------------
def w2_records(cycles: int, values: str, seed: int = 13) -> list[Record]:
    """``cycles`` polls of the 20 units, in poll order; ts as a bus worker stamps them."""
    rng = random.Random(seed)
    level = {(u, r): rng.randrange(1000, 60000) for u in range(1, UNITS + 1) for r in range(REGISTERS)}
    out = []
    for c in range(cycles):
        t = BASE_TS + c * PERIOD_MS
        for u in range(1, UNITS + 1):
            t += rng.randint(1, 4)  # one request a unit, answered a few ms after the previous one
            if values == "random":
                vals = {point_name(r): value_of(u, r, c + 1) for r in range(REGISTERS)}
            else:
                for r in range(REGISTERS):
                    level[u, r] = min(65535, max(0, level[u, r] + rng.randint(-3, 3)))
                vals = {point_name(r): level[u, r] for r in range(REGISTERS)}
            out.append(Record(dev_name(u), t, vals))
    return out


def messages(records: list[Record], size: int) -> list[tuple[bytes, int]]:
    """(payload, values) a message of ``size`` records, as ``Uplink._publish`` encodes it."""
    bodies = [{"id": i + 1, **r.to_wire()} for i, r in enumerate(records)]
    out = []
    for start in range(0, len(bodies) - size + 1, size):
        chunk = bodies[start:start + size]
        out.append((encode({"v": 2, "gw": GW, "sent": chunk[-1]["ts"] + 5, "recs": chunk}),
                    sum(len(b["vals"]) for b in chunk)))
    return out


# keys in the order a message repeats them least .. most (zlib finds the dictionary's end cheapest)
CONTRACT_DICT = (b'"events":[{"id":"type":"prio":"normal","data":{"sealed":{"kid":"ct":"'
                 b'"clk":"unsynced"},"q":{"bad","stale"{"v":2,"gw":"","sent":,"recs":[{"id":,"dev":"","ts":,"vals":{"')


def site_dict() -> bytes:
    names = "".join(f'{{"id":,"dev":"{dev_name(u)}","ts":,"vals":{{' for u in range(UNITS, 0, -1))
    points = "".join(f'"{point_name(r)}":' for r in range(REGISTERS))
    return CONTRACT_DICT + f'"gw":"{GW}"'.encode() + names.encode() + points.encode()


Codec = tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]


def deflate(wbits: int, level: int, zdict: bytes | None) -> Codec:
    extra = {"zdict": zdict} if zdict else {}

    def compress(data: bytes) -> bytes:
        c = zlib.compressobj(level, zlib.DEFLATED, wbits, 9, zlib.Z_DEFAULT_STRATEGY, **extra)
        return c.compress(data) + c.flush()

    def decompress(data: bytes) -> bytes:
        d = zlib.decompressobj(wbits, **extra)
        return d.decompress(data) + d.flush()
    return compress, decompress


def codecs() -> dict[str, Codec]:
    out: dict[str, Codec] = {}
    for dname, zdict in (("", None), ("+contract", CONTRACT_DICT), ("+site", site_dict())):
        for fmt, wbits in (("zlib", 15), ("deflate", -15)):
            for level in (1, 6):
                out[f"{fmt}-{level}{dname}"] = deflate(wbits, level, zdict)
    out[CHOSEN] = (_xz, lzma.decompress)
    out["bz2-9"] = (lambda p: bz2.compress(p, 9), bz2.decompress)
    return out


def _xz(data: bytes) -> bytes:
    """What ``Payloads(compress=True)`` does to the JSON (held together by ``check_xz_is_the_uplinks``)."""
    return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32,
                         filters=[{"id": lzma.FILTER_LZMA2, "preset": 0, "dict_size": 64 * 1024}])


def check_xz_is_the_uplinks(records: list[Record]) -> None:
    doc = {"v": 2, "gw": GW, "sent": 0, "recs": [{"id": 1, **r.to_wire()} for r in records[:31]]}
    if Payloads(compress=True).encode(doc)[0] != _xz(encode(doc)):
        raise SystemExit("bench_compress: _xz no longer makes what uplink/payload.py sends; update it")


def thread_us(fn: Callable[[], object], values: int, repeat: int) -> float:
    """Median CPU (this thread's) a value of ``fn``, in microseconds."""
    runs = []
    for _ in range(repeat):
        t0 = time.thread_time()
        fn()
        runs.append((time.thread_time() - t0) / values * 1e6)
    return median(runs)


def payload_part(records: list[Record], sizes: list[int], repeat: int) -> dict[tuple[int, str], tuple[float, float]]:
    """Prints the table; returns (size, codec) -> (ratio, compress us a value), 'json' -> (B a value, encode us)."""
    table = codecs()
    out: dict[tuple[int, str], tuple[float, float]] = {}
    print(f"\n{'records':>7} {'codec':<20} {'B/value':>8} {'ratio':>6} {'compress':>9} {'decompress':>10}   "
          f"(us a value, this thread's CPU; JSON: encoding the message, for scale)")
    for size in sizes:
        msgs = messages(records, size)
        n_values = sum(v for _, v in msgs)
        raw_bytes = sum(len(p) for p, _ in msgs)
        bodies = [{"id": i + 1, **r.to_wire()} for i, r in enumerate(records)]
        chunks = [bodies[i:i + size] for i in range(0, len(bodies) - size + 1, size)]
        enc_us = thread_us(lambda: [encode({"v": 2, "gw": GW, "sent": 0, "recs": c}) for c in chunks], n_values, repeat)
        print(f"{size:>7} {'json':<20} {raw_bytes / n_values:>8.2f} {1:>6.2f} {enc_us:>9.3f} {'':>10}   "
              f"({len(msgs)} messages, {raw_bytes / len(msgs):,.0f} B each)")
        out[size, "json"] = (raw_bytes / n_values, enc_us)
        for name, (comp, decomp) in table.items():
            packed = [comp(p) for p, _ in msgs]
            assert all(decomp(z) == p for z, (p, _) in zip(packed, msgs))
            z_bytes = sum(len(z) for z in packed)
            c_us = thread_us(lambda: [comp(p) for p, _ in msgs], n_values, repeat)
            d_us = thread_us(lambda: [decomp(z) for z in packed], n_values, repeat)
            out[size, name] = (raw_bytes / z_bytes, c_us)
            mark = "  <- mqtt.compress" if name == CHOSEN else ""
            print(f"{'':>7} {name:<20} {z_bytes / n_values:>8.2f} {raw_bytes / z_bytes:>6.2f} {c_us:>9.3f} "
                  f"{d_us:>10.3f}{mark}", flush=True)
    return out


# -- part 2: the uplink's own CPU ----------------------------------------------------------------
def drain_cpu(directory: Path, records: list[Record], batch_max: int, compress: bool) -> tuple[float, float]:
    """(process CPU us a value, telemetry payload bytes a value) of an Uplink draining ``records``."""
    from edge_agent.buffer.outbox import Buffer
    from edge_agent.uplink import drain as drain_module

    path = directory / f"c-{batch_max}-{int(compress)}.db"
    for suffix in ("", "-wal", "-shm", ".ids", ".lock"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    buf = Buffer(path).open()
    for start in range(0, len(records), 2000):
        buf.append(records[start:start + 2000])
    values = sum(len(r.vals) for r in records)
    sizes: list[int] = []
    build = drain_module.build_client

    def counting_client(*a: Any, **k: Any) -> Any:  # counts payload bytes as handed to paho
        client = build(*a, **k)
        publish = client.publish

        def counted(topic: str, payload: bytes, *pa: Any, **pk: Any) -> Any:
            if topic.endswith("/telemetry"):
                sizes.append(len(payload))
            return publish(topic, payload, *pa, **pk)
        client.publish = counted
        return client

    gw = GatewaySettings(id=GW, site="bench", state_dir=directory)
    drain_module.build_client = counting_client
    try:
        with Mosquitto(directory, extra=("max_queued_messages 0",)) as broker:
            up = drain_module.Uplink(MqttSettings(host=broker.host, port=broker.port, batch_max=batch_max, inflight=20,
                                                  compress=compress), gw, buf)
            up.start()
            while not up.connected:
                time.sleep(0.0005)
            c0 = time.process_time()
            while up.stats().acked_items < len(records):
                time.sleep(0.002)
            cpu = time.process_time() - c0
            up.stop()
    finally:
        drain_module.build_client = build
        buf.close()
    return cpu / values * 1e6, sum(sizes) / values


def drain_part(directory: Path, records: list[Record], sizes: list[int], repeat: int) -> None:
    print(f"\nUplink draining {len(records):,} records, process CPU a value (drain + paho + SQLite threads), "
          f"median of {repeat}, off and on interleaved")
    print(f"{'batch_max':>9} {'off us/v':>9} {'on us/v':>8} {'added':>7} {'off B/v':>8} {'on B/v':>7} {'ratio':>6}")
    for size in sizes:
        runs: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
        for _ in range(repeat):
            for mode in (False, True):
                runs[mode].append(drain_cpu(directory, records, size, mode))
        (off_us, off_b), (on_us, on_b) = [(median(r[0] for r in runs[m]), median(r[1] for r in runs[m]))
                                          for m in (False, True)]
        print(f"{size:>9} {off_us:>9.2f} {on_us:>8.2f} {on_us - off_us:>+7.2f} {off_b:>8.2f} {on_b:>7.2f} "
              f"{off_b / on_b:>6.2f}", flush=True)


# -- part 3: the agent at W2 ----------------------------------------------------------------------
class Telemetry:
    """A paho subscriber on the gateway's telemetry: (arrival, payload) of every message."""

    def __init__(self, broker: Mosquitto) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.got: list[tuple[float, bytes]] = []
        self._lock, self._ready = threading.Lock(), threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-compress-{id(self):x}")
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(f"edge/v1/bench/{GW}/telemetry", qos=1)
        self.client.on_subscribe = lambda *a: self._ready.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port, keepalive=30)
        self.client.loop_start()
        if not self._ready.wait(10):
            raise RuntimeError("the subscriber got no SUBACK")

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self._lock:
            self.got.append((time.monotonic(), bytes(msg.payload)))

    def between(self, t0: float, t1: float) -> list[bytes]:
        with self._lock:
            return [p for t, p in self.got if t0 <= t < t1]

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def agent_run(directory: Path, compress: bool, seconds: float, warmup: float) -> dict[str, float]:
    import yaml
    from _cmp_gateways import cpu_seconds, edge_gateway
    from compare_thingsboard import Simulator

    from edge_agent.platform import decode_payload

    with Mosquitto(directory, extra=("max_queued_messages 0",)) as broker:
        sim = Simulator(directory)
        sub = Telemetry(broker)
        gw = edge_gateway(directory / "gateway", broker_port=broker.port, sim_port=sim.port, interval_ms=PERIOD_MS)
        config = directory / "gateway" / "gateway.yaml"
        cfg = yaml.safe_load(config.read_text())
        cfg["mqtt"]["compress"] = compress
        config.write_text(yaml.safe_dump(cfg, sort_keys=False))
        try:
            gw.start()
            deadline = time.monotonic() + 60
            while not sub.between(0, float("inf")):
                if not gw.alive() or time.monotonic() > deadline:
                    raise RuntimeError(f"the agent sent nothing:\n{gw.log_tail()}")
                time.sleep(0.2)
            time.sleep(warmup)
            t0, cpu0 = time.monotonic(), cpu_seconds(gw.pid) or 0.0
            time.sleep(seconds)
            t1, cpu1 = time.monotonic(), cpu_seconds(gw.pid) or 0.0
        finally:
            gw.stop()
            sub.stop()
            sim.stop()
    payloads = sub.between(t0, t1)
    recs = [r for p in payloads for r in decode_payload(p)["recs"]]
    values = sum(len(r["vals"]) for r in recs)
    return {"cpu_us": (cpu1 - cpu0) / max(1, values) * 1e6, "bytes": sum(map(len, payloads)) / max(1, values),
            "records_per_message": len(recs) / max(1, len(payloads)), "values_per_s": values / (t1 - t0),
            "xz_share": sum(p[:1] != b"{" for p in payloads) / max(1, len(payloads))}


def agent_part(directory: Path, seconds: float, repeat: int) -> dict[bool, dict[str, float]]:
    print(f"\nThe agent at W2 (edge-agent run, {UNITS} x {REGISTERS} uint16 every {PERIOD_MS} ms), {seconds:.0f} s "
          f"measured, median of {repeat}, off and on in turn")
    runs: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    for i in range(repeat):
        for mode in (False, True):
            run_dir = directory / f"agent-{i}-{'on' if mode else 'off'}"
            run_dir.mkdir()
            runs[mode].append(agent_run(run_dir, mode, seconds, warmup=2.0 if seconds < 20 else 5.0))
    out = {m: {k: median(r[k] for r in runs[m]) for k in runs[m][0]} for m in (False, True)}
    print(f"{'compress':>8} {'CPU us/value':>12} {'CPU-s/1000':>10} {'B/value':>8} {'recs/msg':>8} {'values/s':>9} "
          f"{'xz msgs':>7}")
    for mode in (False, True):
        f = out[mode]
        print(f"{('on' if mode else 'off'):>8} {f['cpu_us']:>12.2f} {f['cpu_us'] / 1000:>10.4f} {f['bytes']:>8.2f} "
              f"{f['records_per_message']:>8.1f} {f['values_per_s']:>9,.0f} {f['xz_share']:>7.0%}", flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer polls, one run each, 10 s agent windows")
    ap.add_argument("--sizes", default=f"1,10,20,{W2_RECORDS},100,500", help="records a message (part 1)")
    ap.add_argument("--values", choices=("random", "slow"), default="random")
    ap.add_argument("--drain", action="store_true", help="part 2: the real Uplink, compress off and on")
    ap.add_argument("--drain-sizes", default=f"{W2_RECORDS},500", help="batch_max of the drain runs")
    ap.add_argument("--agent", action="store_true", help="part 3: the real agent at W2, compress off and on")
    ap.add_argument("--seconds", type=float, default=None, help="measured seconds an agent run (default 30)")
    ap.add_argument("--repeat", type=int, default=None, help="runs a figure, median shown (default 3)")
    args = ap.parse_args()
    repeat = args.repeat or (1 if args.quick else 3)
    cycles = 100 if args.quick else 500  # x 20 records x 20 values
    sizes = [int(s) for s in args.sizes.split(",")]
    records = w2_records(cycles, args.values)
    check_xz_is_the_uplinks(records)
    print(f"W2 telemetry: {len(records):,} records of {REGISTERS} values ({args.values} values), "
          f"messages of {args.sizes} records")
    table = payload_part(records, sizes, repeat)
    with tempfile.TemporaryDirectory(prefix="bench-compress-") as tmp:
        if args.drain:
            drain_part(Path(tmp), w2_records(cycles * (1 if args.quick else 2), args.values),
                       [int(s) for s in args.drain_sizes.split(",")], repeat)
        agent = agent_part(Path(tmp), args.seconds or (10.0 if args.quick else 30.0), repeat) if args.agent else None
    at = W2_RECORDS if W2_RECORDS in sizes else sizes[0]
    zlib_best = max((name for s, name in table if s == at and name.startswith(("zlib", "deflate"))),
                    key=lambda name: table[at, name][0])
    print(f"\nat {at} records a message: best zlib/deflate {zlib_best} {table[at, zlib_best][0]:.2f}x "
          f"({table[at, zlib_best][1]:.2f} us a value); zlib-1 {table[at, 'zlib-1'][0]:.2f}x; "
          f"{CHOSEN} {table[at, CHOSEN][0]:.2f}x ({table[at, CHOSEN][1]:.2f} us a value); "
          f"bz2-9 {table[at, 'bz2-9'][0]:.2f}x ({table[at, 'bz2-9'][1]:.2f} us a value)")
    if agent is not None:
        off, on = agent[False], agent[True]
        ratio, added = off["bytes"] / on["bytes"], on["cpu_us"] / off["cpu_us"] - 1
        result = (f"mqtt.compress (xz) at W2, the agent: {on['bytes']:.2f} B a value, {on['cpu_us'] / 1000:.4f} CPU-s "
                  f"per 1,000 values ({on['records_per_message']:.0f} records a message)")
        baseline = (f"compress off, same session: {off['bytes']:.2f} B a value, {off['cpu_us'] / 1000:.4f} CPU-s "
                    "per 1,000")
    else:
        ratio, c_us = table[at, CHOSEN]
        added = c_us / AGENT_US_PER_VALUE_W2
        result = (f"xz at {at} records a message: {ratio:.2f}x fewer bytes for {c_us:.2f} us a value of compression "
                  "(payloads alone; --agent measures the agent)")
        baseline = (f"plain JSON; the agent's CPU at W2: {AGENT_US_PER_VALUE_W2:.0f} us a value "
                    "(compare_thingsboard at 44dd774)")
    summary(result, baseline, f"{ratio:.2f}x fewer bytes, {added:+.1%} CPU",
            f">= {RATIO_GOAL:.0f}x fewer bytes for <= {CPU_GOAL:.0%} more CPU at W2",
            ratio >= RATIO_GOAL and added <= CPU_GOAL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
