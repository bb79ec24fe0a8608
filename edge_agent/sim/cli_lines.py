"""``edge-agent simulate hub`` and ``edge-agent simulate gate``: the JSON-line devices, for a
bench test without hardware::

    edge-agent simulate hub --pty --residents 20 --vitals-every 2s --sos-after 10s
    edge-agent simulate gate --tcp 127.0.0.1:7001 --lanes 2 --passage-every 3s --fault garbage

Each prints one line per listener (``--pty`` adds the path the agent should open), serves until
SIGINT or SIGTERM, then exits 0. Bad arguments: one line on stderr and exit 2; a listener that
cannot open (port taken, no such serial device): one line and exit 1. Durations take a unit
(``500ms``, ``10s``, ``2m``) or a bare number of seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import signal
import sys
import threading
from typing import Any, Sequence

from edge_agent.units import parse_seconds as seconds_of

from .byteserver import ByteServer
from .args import fmt_address, one_line_error, parse_hostport, suggest
from .gate import GateFaults, GateSim
from .hub import HubFaults, HubSim
from .ptypair import PtyPair

__all__ = ["register", "run_hub", "run_gate", "parse_seconds", "parse_position", "fault_parser"]

HUB_FAULTS = tuple(f.name for f in dataclasses.fields(HubFaults))
GATE_FAULTS = tuple(f.name for f in dataclasses.fields(GateFaults))
_SIGNED = re.compile(r"\s*(-?)\s*(.*)")


def parse_seconds(text: str) -> float:
    """``10``, ``2.5``, ``500ms``, ``10s``, ``2m`` -> seconds, not negative."""
    try:
        seconds = seconds_of(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None
    if not 0 <= seconds < 10**7:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration from 0 to 10^7 s")
    return seconds


def _signed_seconds(text: str) -> float:
    """As ``parse_seconds``, with an optional minus sign (a hub clock behind the gateway's)."""
    sign, rest = _SIGNED.fullmatch(text).groups()  # type: ignore[union-attr]
    return -parse_seconds(rest) if sign else parse_seconds(rest)


def parse_position(text: str) -> tuple[float, float]:
    """``LAT,LON`` in degrees."""
    lat, sep, lon = text.partition(",")
    try:
        position = (float(lat), float(lon))
    except ValueError:
        position = None
    if not sep or position is None or not (-90 <= position[0] <= 90 and -180 <= position[1] <= 180):
        raise argparse.ArgumentTypeError(f"{text!r} is not LAT,LON in degrees, e.g. 22.817,108.366")
    return position


def fault_parser(known: Sequence[str]):
    """An argparse type: ``name[,name...]`` of ``known`` faults -> the names."""
    def parse(text: str) -> list[str]:
        names = [n.strip() for n in text.split(",") if n.strip()]
        for name in names:
            if name not in known:
                raise argparse.ArgumentTypeError(f"unknown fault {name!r}{suggest(name, list(known))}")
        if not names:
            raise argparse.ArgumentTypeError(f"no fault named; one of: {', '.join(known)}")
        return names
    return parse


def _count(low: int, high: int, what: str):
    def parse(text: str) -> int:
        if not text.strip().isdigit() or not low <= int(text) <= high:
            raise argparse.ArgumentTypeError(f"{what} {text!r} is not {low}..{high}")
        return int(text)
    return parse


def _add_listeners(parser: argparse.ArgumentParser, baud: int) -> None:
    parser.add_argument("--tcp", type=parse_hostport, action="append", default=[], metavar="HOST:PORT",
                        help="TCP listener, like a serial-to-Ethernet converter (port 0 picks a free one)")
    line = parser.add_mutually_exclusive_group()
    line.add_argument("--serial", metavar="PATH", help="talk on this serial port")
    line.add_argument("--pty", action="store_true", help="make a virtual serial cable and print the agent's end")
    parser.add_argument("--baud", type=_count(1, 4_000_000, "baud"), default=baud, help=f"default {baud} (8N1)")
    parser.add_argument("--seed", type=int, default=20241123, help="the same seed gives the same people and values")


def register(kinds: Any) -> None:
    """Add ``hub`` and ``gate`` to the ``simulate`` kinds (argparse subparsers)."""
    hub = kinds.add_parser("hub", help="a wearables hub (JSON lines)", prog="edge-agent simulate hub",
                           description="Serve a simulated wearables hub until SIGINT or SIGTERM.")
    one_line_error(hub)
    _add_listeners(hub, 115200)
    hub.add_argument("--residents", type=_count(1, 10000, "residents"), default=5, metavar="N",
                     help="synthetic residents, one band each (default 5)")
    hub.add_argument("--vitals-every", type=parse_seconds, default=5.0, metavar="DURATION",
                     help="each band's vitals period (default 5s)")
    for kind in ("sos", "fall", "off-wrist"):
        hub.add_argument(f"--{kind}-after", type=parse_seconds, metavar="DURATION",
                         help=f"one {kind.replace('-', '_')} this long after start")
    hub.add_argument("--near", type=parse_position, default=(22.817, 108.366), metavar="LAT,LON",
                     help="where alarms are raised (within ~200 m)")
    hub.add_argument("--no-hub-clock", action="store_true", help="leave ts out of every line")
    hub.add_argument("--clock-skew", type=_signed_seconds, default=0.0, metavar="DURATION",
                     help="the hub clock's error, e.g. --clock-skew=-1h")
    hub.add_argument("--fault", type=fault_parser(HUB_FAULTS), action="append", default=[], metavar="FAULT[,...]",
                     help=f"one of {', '.join(HUB_FAULTS)}")
    hub.set_defaults(func=run_hub, _parser=hub)

    gate = kinds.add_parser("gate", help="a gate controller (JSON lines)", prog="edge-agent simulate gate",
                            description="Serve a simulated gate controller until SIGINT or SIGTERM.")
    one_line_error(gate)
    _add_listeners(gate, 9600)
    gate.add_argument("--lanes", type=_count(1, 255, "lanes"), default=2, metavar="N", help="default 2")
    gate.add_argument("--passage-every", type=parse_seconds, default=5.0, metavar="DURATION",
                      help="one passage per period, lanes in turn (default 5s)")
    gate.add_argument("--vehicles", type=_count(1, 10000, "vehicles"), default=8, metavar="N",
                      help="synthetic plates and cards, used in turn (default 8)")
    gate.add_argument("--no-gate-clock", action="store_true", help="leave ts out of passages")
    gate.add_argument("--fault", type=fault_parser(GATE_FAULTS), action="append", default=[], metavar="FAULT[,...]",
                      help=f"one of {', '.join(GATE_FAULTS)}")
    gate.set_defaults(func=run_gate, _parser=gate)


def _faults(args: argparse.Namespace) -> dict[str, bool]:
    return {name: True for names in args.fault for name in names}


def run_hub(args: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser = args._parser
    if args.vitals_every <= 0:
        parser.error("--vitals-every must be longer than 0s")
    sim = HubSim(args.residents, seed=args.seed, vitals_every_s=args.vitals_every, sos_after_s=args.sos_after,
                 fall_after_s=args.fall_after, off_wrist_after_s=args.off_wrist_after, near=args.near,
                 hub_clock=not args.no_hub_clock, skew_s=args.clock_skew)
    sim.set_faults(**_faults(args))
    summary = f"bands: {len(sim.bands)}, vitals every {args.vitals_every:g}s"
    return _serve("hub", sim, args, summary)


def run_gate(args: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser = args._parser
    if args.passage_every <= 0:
        parser.error("--passage-every must be longer than 0s")
    sim = GateSim(args.lanes, passage_every_s=args.passage_every, vehicles=args.vehicles, seed=args.seed,
                  gate_clock=not args.no_gate_clock)
    sim.set_faults(**_faults(args))
    summary = f"lanes: {args.lanes}, a passage every {args.passage_every:g}s"
    return _serve("gate", sim, args, summary)


def _serve(what: str, handler: Any, args: argparse.Namespace, summary: str) -> int:
    """Open the listeners, print them, serve until a signal; the exit code."""
    if not (args.tcp or args.serial or args.pty):
        args._parser.error("nothing to serve on: give --tcp, --serial or --pty")
    done = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: done.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    server, pair = ByteServer(handler), None
    try:
        for host, port in args.tcp:
            print(f"{what} TCP on {fmt_address(server.serve_tcp(host, port, baud=args.baud))}", flush=True)
        if args.pty:
            pair = PtyPair(baud=args.baud)
            server.serve_serial(pair.b, baud=args.baud)
            print(f"{what} on a pty, {args.baud} 8N1; serial port for the agent: {pair.a}", flush=True)
        elif args.serial:
            server.serve_serial(args.serial, baud=args.baud)
            print(f"{what} on {args.serial}, {args.baud} 8N1", flush=True)
        print(summary, flush=True)
        while not done.wait(0.5):
            pass
    except OSError as exc:  # serial.SerialException is an OSError too
        print(f"edge-agent simulate {what}: {exc}", file=sys.stderr)
        return 1
    finally:
        server.stop()
        if pair is not None:
            pair.close()
        for sig, handler_ in previous.items():
            signal.signal(sig, handler_)
    return 0
