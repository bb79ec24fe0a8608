"""The ``edge-agent`` verbs for installers and technicians.

Exit codes: 0 ok, 1 a problem found or the command failed, 2 bad usage. An expected failure
(bad config, absent port, broker down, no buffer yet) is one clear line on stderr, never a
traceback. Heavy modules are imported per verb so ``check`` stays instant on a Pi.
"""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from . import __version__

__all__ = ["main"]


class CliFailure(Exception):
    """An expected failure: printed as one line, exit 1."""


def _load(path: str):
    from .config import ConfigError, load_settings

    try:
        return load_settings(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        raise CliFailure(f"{path}: {len(exc.problems)} problem(s); nothing was started") from None


def setup_logging(level: str) -> None:
    """stderr only; under systemd (JOURNAL_STREAM set) journald adds its own timestamps."""
    if os.environ.get("JOURNAL_STREAM"):
        fmt = "%(levelname)s %(name)s: %(message)s"
    else:
        fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=getattr(logging, level.upper()), format=fmt, stream=sys.stderr)
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # its per-timeout noise; our bus layer reports


def cmd_run(args: argparse.Namespace) -> int:
    from .buffer import BufferError
    from .daemon import run
    from .uplink import UplinkError

    settings = _load(args.config)
    setup_logging(args.log_level)
    try:
        return run(settings)
    except (BufferError, UplinkError) as exc:  # a file the agent cannot use: nothing to retry
        raise CliFailure(str(exc)) from None


def cmd_check(args: argparse.Namespace) -> int:
    from .config import check_file

    problems = check_file(args.config)
    for problem in problems:
        print(problem)
    if problems:
        print(f"{args.config}: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    settings = _load(args.config)
    print(f"{args.config}: ok ({len(settings.buses)} bus(es), {len(settings.devices)} device(s))")
    return 0


def _age(ms: int | None, now_ms: int) -> str:
    from .units import format_duration

    return "never" if ms is None else f"{format_duration(max(0, now_ms - ms) / 1000)} ago"


def cmd_status(args: argparse.Namespace) -> int:
    from .buffer import Buffer, BufferError
    from .units import format_size

    settings = _load(args.config)
    path = settings.buffer.path
    try:
        stats = Buffer.read_stats(path)
    except BufferError as exc:
        if not Path(path).exists():
            if args.json:
                print(json.dumps({"gateway": settings.gateway.id, "buffer": None}))
            else:
                print(f"gateway {settings.gateway.id}: no buffer yet at {path} (the daemon has not run)")
            return 0
        raise CliFailure(str(exc)) from None
    now_ms = int(time.time() * 1000)
    data: dict[str, Any] = {"gateway": settings.gateway.id, "buffer": str(path), **vars(stats)}
    if args.json:
        print(json.dumps(data, sort_keys=True))
        return 0
    lanes = "  ".join(f"{k} {v}" for k, v in stats.pending_by_prio.items())
    print(f"gateway       {settings.gateway.id} (site {settings.gateway.site})")
    print(f"buffer        {path} ({format_size(stats.file_bytes)})")
    print(f"backlog       {stats.pending} unsent ({format_size(stats.pending_bytes)}), "
          f"oldest {_age(stats.oldest_pending_ts, now_ms)}")
    print(f"  by priority {lanes}")
    evicted = "  ".join(f"{k} {v}" for k, v in stats.evicted.items())
    print(f"evicted       {evicted}  (unsent rows dropped because the buffer was full)")
    print(f"retained sent {stats.retained_sent}")
    print(f"last publish  {_age(stats.last_sent_at, now_ms)}")
    print(f"next id       {stats.next_id}")
    return 0


def cmd_read(args: argparse.Namespace) -> int:
    from .bus import LinkError, ModbusBus
    from .poll import DeviceReader
    from .privacy import Privacy
    from .registry import get_driver

    settings = _load(args.config)
    names = [d.name for d in settings.devices]
    if args.device not in names:
        hint = difflib.get_close_matches(args.device, names, n=1)
        raise CliFailure(f"unknown device {args.device!r}" + (f" (did you mean {hint[0]!r}?)" if hint else
                         f"; the config has: {', '.join(names) or 'none'}"))
    device = settings.device(args.device)
    bus = ModbusBus(settings.bus(device.bus))
    try:
        result = DeviceReader(device, get_driver(device.driver), bus).poll()
    except LinkError as exc:
        raise CliFailure(str(exc)) from None
    finally:
        bus.close()
    readings = Privacy(settings.privacy).apply(result.readings)
    print(f"{device.name} ({device.driver}) on bus {device.bus}, address {device.address}: "
          f"{result.requests} request(s)")
    if readings:
        width = max(len(r.pt) for r in readings)
        print(f"{'point':<{width}}  {'value':>14}  quality")
        for r in readings:
            value = "-" if r.val is None else str(r.val)
            print(f"{r.pt:<{width}}  {value:>14}  {r.q}")
    for error in result.errors:
        print(f"error: {error}", file=sys.stderr)
    return 0 if result.answered and not result.errors else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-agent", description="Community IoT gateway agent.")
    parser.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("-c", "--config", required=True, metavar="FILE", help="the gateway's YAML config")
        return p

    p = verb("run", "run the daemon in the foreground (systemd runs this)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=cmd_run)
    verb("check", "validate a config without touching any device").set_defaults(func=cmd_check)
    p = verb("status", "backlog, last publish, ids: works whether or not the daemon runs")
    p.add_argument("--json", action="store_true", help="one JSON object, for scripts")
    p.set_defaults(func=cmd_status)
    p = verb("read", "poll one device once and print its points (masked as the uplink would)")
    p.add_argument("device", metavar="DEVICE")
    p.set_defaults(func=cmd_read)
    from .sim import cli as sim_cli

    sim_cli.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CliFailure as exc:
        print(f"edge-agent: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
