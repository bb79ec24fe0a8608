"""``edge-agent simulate dlt645`` and ``simulate cjt188``: simulated meters sharing one line.

    edge-agent simulate dlt645 --pty --meter 000000000101 \\
        --meter 000000000102:phases=3,multi_frame=true --fault 000000000102:delay=0.3
    edge-agent simulate cjt188 --tcp 127.0.0.1:4001 --meter 00000000000101:reply_di_order=1F90

``--meter ADDRESS[:key=value,...]`` takes the options of ``meters.Dlt645Meter`` or
``meters.Cjt188Meter`` (a list such as ``missing`` is separated by ``/``); ``--fault
ADDRESS:FAULT[,...]`` sets silence, garbage, bad_checksum, echo, error=BITS or delay=SECONDS.
Over TCP each answer is delayed by its wire time at ``--baud``, as through a serial-to-Ethernet
converter; a pty paces the bytes itself.

Prints one line per listener (``--pty`` adds the path the agent should open) and one listing the
meters, serves until SIGINT or SIGTERM, then exits 0. Bad arguments: one line on stderr, exit 2;
a listener that cannot open (port taken, no such serial device): one line, exit 1.
"""

from __future__ import annotations

import argparse
import inspect
import signal
import sys
import threading
from typing import Any, Callable

from edge_agent.units import parse_duration

from .byteserver import ByteServer
from .args import coerce, fmt_address, one_line_error, parse_hostport, suggest
from .meters import Cjt188Bus, Cjt188Meter, Dlt645Bus, Dlt645Meter, MeterFaults
from .ptypair import PtyPair

__all__ = ["register", "run", "meter_parser", "fault_parser"]

# kind -> (meter class, line class, address digits)
FAMILIES: dict[str, tuple[type, type, int]] = {
    "dlt645": (Dlt645Meter, Dlt645Bus, 12),
    "cjt188": (Cjt188Meter, Cjt188Bus, 14),
}
_HIDDEN = ("address", "clock")  # constructor parameters that are not meter options
_FAULT_FLAGS = ("silence", "garbage", "bad_checksum", "echo")
_FAULT_VALUES = ("error", "delay")


def _address(text: str, digits: int, spec: str) -> str:
    if not text.isdigit() or not text.isascii() or len(text) > digits:
        raise argparse.ArgumentTypeError(f"{spec!r}: address {text!r} is not up to {digits} digits")
    return text.zfill(digits)


def _value(text: str, default: Any, what: str) -> Any:
    """A meter option's value, typed by its default (text stays text: a meter type, a DI order)."""
    if isinstance(default, str) and not isinstance(default, bool):
        return text
    return coerce(text, default, what)


def meter_parser(kind: str) -> Callable[[str], tuple[str, dict[str, Any]]]:
    """``ADDRESS[:key=value,...]`` -> (address, keyword arguments checked by the meter itself)."""
    cls, _, digits = FAMILIES[kind]
    params = {name: p.default for name, p in inspect.signature(cls).parameters.items() if name not in _HIDDEN}

    def parse(spec: str) -> tuple[str, dict[str, Any]]:
        address_text, _, rest = spec.partition(":")
        address = _address(address_text, digits, spec)
        kwargs: dict[str, Any] = {}
        for item in filter(None, rest.split(",")):
            key, sep, value = item.partition("=")
            if not sep:
                raise argparse.ArgumentTypeError(f"{spec!r}: {item!r} is not key=value")
            if key not in params:
                raise argparse.ArgumentTypeError(f"{spec!r}: a {kind} meter has no option {key!r}"
                                                 f"{suggest(key, list(params))}")
            kwargs[key] = _value(value, params[key], f"{spec!r}: {key}")
        try:
            cls(address, **kwargs)  # the meter's own range checks, before anything listens
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{spec!r}: {exc}") from None
        return address, kwargs
    return parse


def _delay(text: str, spec: str) -> float:
    try:
        return float(text)
    except ValueError:
        try:
            return parse_duration(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{spec!r}: delay {exc}") from None


def fault_parser(kind: str) -> Callable[[str], tuple[str, dict[str, Any]]]:
    """``ADDRESS:silence|garbage|bad_checksum|echo|error=BITS|delay=S[,...]`` -> (address, MeterFaults fields)."""
    digits = FAMILIES[kind][2]

    def parse(spec: str) -> tuple[str, dict[str, Any]]:
        address_text, sep, rest = spec.partition(":")
        if not sep or not rest:
            raise argparse.ArgumentTypeError(f"{spec!r} is not ADDRESS:FAULT, e.g. {'0' * (digits - 1)}1:silence")
        address, fields = _address(address_text, digits, spec), {}
        for item in rest.split(","):
            key, eq, value = item.partition("=")
            if key in _FAULT_FLAGS and not eq:
                fields[key] = True
            elif key == "error" and eq:
                fields["error"] = coerce(value, 0, f"{spec!r}: error")
            elif key == "delay" and eq:
                fields["delay_s"] = _delay(value, spec)
            else:
                hint = suggest(key, list(_FAULT_FLAGS) + [f"{v}=" for v in _FAULT_VALUES])
                raise argparse.ArgumentTypeError(f"{spec!r}: unknown fault {item!r}{hint}")
        try:
            MeterFaults(**fields)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{spec!r}: {exc}") from None
        return address, fields
    return parse


def _add_kind(kinds: Any, kind: str, title: str, example: str) -> None:
    p = kinds.add_parser(kind, help=f"{title} meters", prog=f"edge-agent simulate {kind}",
                         description=f"Serve simulated {title} meters on one line until SIGINT or SIGTERM.")
    one_line_error(p)
    p.add_argument("--tcp", type=parse_hostport, action="append", default=[], metavar="HOST:PORT",
                   help="TCP listener, as a serial-to-Ethernet converter (port 0 picks a free one)")
    line = p.add_mutually_exclusive_group()
    line.add_argument("--serial", metavar="PATH", help="answer on this serial port")
    line.add_argument("--pty", action="store_true", help="make a virtual serial cable and print the agent's end")
    p.add_argument("--baud", type=int, default=2400)
    p.add_argument("--parity", choices=("N", "E", "O"), default="E")
    p.add_argument("--stopbits", type=int, choices=(1, 2), default=1)
    p.add_argument("--meter", type=meter_parser(kind), action="append", required=True,
                   metavar="ADDRESS[:k=v,...]", help=f"a meter to simulate, e.g. {example}")
    p.add_argument("--fault", type=fault_parser(kind), action="append", default=[], metavar="ADDRESS:FAULT",
                   help="silence, garbage, bad_checksum, echo, error=BITS or delay=SECONDS (comma-separated)")
    p.set_defaults(func=run, _parser=p, _kind=kind)


def register(kinds: Any) -> None:
    """Add ``dlt645`` and ``cjt188`` to the ``simulate`` kinds (argparse subparsers)."""
    _add_kind(kinds, "dlt645", "DL/T 645", "000000000101:phases=3,missing=frequency_Hz")
    _add_kind(kinds, "cjt188", "CJ/T 188", "00000000000101:meter_type=gas,reply_di_order=1F90")


def _build(args: argparse.Namespace) -> Any:
    """The line of meters the arguments describe; parser.error (exit 2) for what does not fit."""
    parser: argparse.ArgumentParser = args._parser
    meter_cls, line_cls, _ = FAMILIES[args._kind]
    meters: dict[str, Any] = {}
    for address, kwargs in args.meter:
        if address in meters:
            parser.error(f"--meter: address {address} is given twice")
        meters[address] = meter_cls(address, **kwargs)
    for address, fields in args.fault:
        if address not in meters:
            parser.error(f"--fault: address {address} has no --meter (meters: {', '.join(meters)})")
        meters[address].set_faults(**fields)
    if not (args.tcp or args.serial or args.pty):
        parser.error("nothing to serve on: give --tcp, --serial or --pty")
    if args.baud <= 0:
        parser.error(f"--baud {args.baud} must be positive")
    return line_cls(meters.values())


def run(args: argparse.Namespace) -> int:
    """Serve until a signal arrives; the exit code."""
    line = _build(args)
    kind = args._kind
    done = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: done.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    server, pair = ByteServer(line), None
    bits = 10 + (args.parity != "N") + (args.stopbits - 1)
    framing = f"{args.baud} 8{args.parity}{args.stopbits}"
    try:
        for host, port in args.tcp:
            print(f"{kind} TCP on {fmt_address(server.serve_tcp(host, port, baud=args.baud, bits_per_byte=bits))}", flush=True)
        if args.pty:
            pair = PtyPair(baud=args.baud, bits_per_byte=bits)
            # our end with the default line settings: a pty carries no parity bits (some kernels
            # drop or refuse the setting); the pair paces every byte at the framing's bit count
            server.serve_serial(pair.b, baud=args.baud)
            print(f"{kind} on a pty, {framing}; serial port for the agent: {pair.a}", flush=True)
        elif args.serial:
            server.serve_serial(args.serial, baud=args.baud, parity=args.parity, stopbits=args.stopbits)
            print(f"{kind} on {args.serial}, {framing}", flush=True)
        print("meters: " + ", ".join(map(repr, line.meters)), flush=True)
        while not done.wait(0.5):
            pass
    except OSError as exc:  # serial.SerialException is an OSError too
        print(f"edge-agent simulate {kind}: {exc}", file=sys.stderr)
        return 1
    finally:
        server.stop()
        if pair is not None:
            pair.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
