"""``edge-agent simulate modbus``: simulated devices for a bench test without hardware.

    edge-agent simulate modbus --tcp 127.0.0.1:5020 --pty \\
        --device 1:qdy_level:rise_m_per_min=0.5 --device 2:eastron_meter --fault 2:delay=0.2

Prints one line per listener (``--pty`` adds the path the agent should open), serves until
SIGINT or SIGTERM, then exits 0. Bad arguments: one line on stderr and exit 2; a listener
that cannot open (port taken, no such serial device): one line and exit 1.
"""

from __future__ import annotations

import argparse
import inspect
import signal
import sys
import threading
from typing import Any, Sequence

from edge_agent.units import parse_duration

from . import cli_lines, cli_meters
from .args import coerce, fmt_address, one_line_error, parse_hostport, suggest
from .devices import MODELS, DeviceModel, Faults
from .modbus import ModbusSimulator
from .ptypair import PtyPair

__all__ = ["register", "main", "parse_device", "parse_fault"]

PROG = "edge-agent simulate modbus"
_FAULT_FLAGS = ("silence", "garbage", "bad_crc")
_FAULT_VALUES = ("exception", "delay", "deaf")


def _unit(text: str, spec: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 247:
        raise argparse.ArgumentTypeError(f"{spec!r}: unit id {text!r} is not 1..247")
    return int(text)


def parse_device(spec: str) -> tuple[int, str, dict[str, Any]]:
    """``UNIT:MODEL[:key=value,...]`` -> (unit, model, keyword arguments checked against the model)."""
    parts = spec.split(":", 2)
    if len(parts) < 2:
        raise argparse.ArgumentTypeError(f"{spec!r} is not UNIT:MODEL[:key=value,...], e.g. 1:qdy_level")
    unit, model = _unit(parts[0], spec), parts[1]
    if model not in MODELS:
        raise argparse.ArgumentTypeError(f"{spec!r}: unknown model {model!r}{suggest(model, list(MODELS))}")
    params = {name: p.default for name, p in inspect.signature(MODELS[model]).parameters.items()}
    kwargs: dict[str, Any] = {}
    for item in filter(None, parts[2].split(",") if len(parts) > 2 else []):
        key, sep, value = item.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"{spec!r}: {item!r} is not key=value")
        if key not in params:
            raise argparse.ArgumentTypeError(f"{spec!r}: {model} has no option {key!r}{suggest(key, list(params))}")
        kwargs[key] = coerce(value, params[key], f"{spec!r}: {key}")
    try:
        MODELS[model](**kwargs)  # the model's own range checks, before anything listens
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{spec!r}: {exc}") from None
    return unit, model, kwargs


def parse_fault(spec: str) -> tuple[int, dict[str, Any]]:
    """``UNIT:silence|garbage|bad_crc|exception=N|delay=S|deaf=S[,...]`` -> (unit, Faults fields)."""
    unit_text, sep, rest = spec.partition(":")
    if not sep or not rest:
        raise argparse.ArgumentTypeError(f"{spec!r} is not UNIT:FAULT, e.g. 1:silence or 1:delay=0.5")
    unit, fields = _unit(unit_text, spec), {}
    for item in rest.split(","):
        key, eq, value = item.partition("=")
        if key in _FAULT_FLAGS and not eq:
            fields[key] = True
        elif key == "exception" and eq:
            fields["exception"] = coerce(value, 0, f"{spec!r}: exception")
        elif key in ("delay", "deaf") and eq:
            try:
                fields[f"{key}_s"] = float(value)
            except ValueError:
                try:
                    fields[f"{key}_s"] = parse_duration(value)
                except ValueError as exc:
                    raise argparse.ArgumentTypeError(f"{spec!r}: {key} {exc}") from None
        else:
            hint = suggest(key, list(_FAULT_FLAGS) + [f"{v}=" for v in _FAULT_VALUES])
            raise argparse.ArgumentTypeError(f"{spec!r}: unknown fault {item!r}{hint}")
    try:
        Faults(**fields)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{spec!r}: {exc}") from None
    return unit, fields


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``simulate`` verb to the agent's CLI; the handler is ``args.func(args) -> int``."""
    simulate = subparsers.add_parser("simulate", help="simulated devices for a bench test",
                                     description="Simulated field devices, so a gateway can be tested without hardware.")
    one_line_error(simulate)
    kinds = simulate.add_subparsers(dest="sim_kind", metavar="KIND", required=True)
    modbus = kinds.add_parser("modbus", help="Modbus TCP / RTU devices", prog=PROG,
                              description="Serve simulated Modbus devices until SIGINT or SIGTERM.")
    one_line_error(modbus)
    modbus.add_argument("--tcp", type=parse_hostport, action="append", default=[], metavar="HOST:PORT",
                        help="Modbus TCP listener (port 0 picks a free one)")
    modbus.add_argument("--rtu-tcp", type=parse_hostport, action="append", default=[], metavar="HOST:PORT",
                        help="RTU frames over TCP (a serial-to-Ethernet converter in transparent mode)")
    line = modbus.add_mutually_exclusive_group()
    line.add_argument("--serial", metavar="PATH", help="answer RTU on this serial port")
    line.add_argument("--pty", action="store_true", help="make a virtual serial cable and print the agent's end")
    modbus.add_argument("--baud", type=int, default=9600)
    modbus.add_argument("--parity", choices=("N", "E", "O"), default="N")
    modbus.add_argument("--stopbits", type=int, choices=(1, 2), default=1)
    modbus.add_argument("--device", type=parse_device, action="append", required=True, metavar="UNIT:MODEL[:k=v,...]",
                        help=f"a unit to simulate; models: {', '.join(MODELS)}")
    modbus.add_argument("--fault", type=parse_fault, action="append", default=[], metavar="UNIT:FAULT",
                        help="silence, garbage, bad_crc, exception=N, delay=SECONDS or deaf=SECONDS (comma-separated)")
    modbus.set_defaults(func=run_modbus, _parser=modbus)
    cli_meters.register(kinds)  # the other families: dlt645, cjt188, hub, gate
    cli_lines.register(kinds)
    return simulate


def run_modbus(args: argparse.Namespace) -> int:
    """Serve until a signal arrives; the exit code."""
    parser: argparse.ArgumentParser = args._parser
    units: dict[int, DeviceModel] = {}
    for unit, model, kwargs in args.device:
        if unit in units:
            parser.error(f"--device: unit {unit} is given twice")
        units[unit] = MODELS[model](**kwargs)
    for unit, fields in args.fault:
        if unit not in units:
            parser.error(f"--fault: unit {unit} has no --device (units: {', '.join(map(str, sorted(units)))})")
        units[unit].set_faults(**fields)
    if not (args.tcp or args.rtu_tcp or args.serial or args.pty):
        parser.error("nothing to serve on: give --tcp, --rtu-tcp, --serial or --pty")
    if args.baud <= 0:
        parser.error(f"--baud {args.baud} must be positive")

    done = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: done.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    sim, pair = ModbusSimulator(units), None
    framing = f"{args.baud} 8{args.parity}{args.stopbits}"
    try:
        for host, port in args.tcp:
            print(f"modbus TCP on {fmt_address(sim.serve_tcp(host, port))}", flush=True)
        for host, port in args.rtu_tcp:
            print(f"modbus RTU-over-TCP on {fmt_address(sim.serve_tcp(host, port, rtu_framing=True))}", flush=True)
        if args.pty:
            pair = PtyPair(baud=args.baud, bits_per_byte=10 + (args.parity != "N") + (args.stopbits - 1))
            sim.serve_serial(pair.b, baud=args.baud, parity=args.parity, stopbits=args.stopbits)
            print(f"modbus RTU on a pty, {framing}; serial port for the agent: {pair.a}", flush=True)
        elif args.serial:
            sim.serve_serial(args.serial, baud=args.baud, parity=args.parity, stopbits=args.stopbits)
            print(f"modbus RTU on {args.serial}, {framing}", flush=True)
        print("units: " + ", ".join(f"{u}={type(d).__name__}" for u, d in sorted(units.items())), flush=True)
        while not done.wait(0.5):
            pass
    except OSError as exc:  # serial.SerialException is an OSError too
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    finally:
        sim.stop()
        if pair is not None:
            pair.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry: ``python -m edge_agent.sim.cli simulate modbus ...``."""
    parser = argparse.ArgumentParser(prog="edge-agent")
    one_line_error(parser)
    register(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
