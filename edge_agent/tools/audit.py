"""The verbs of signed commands: ``audit`` on the gateway, ``platform signkey`` / ``platform sign``
on the platform's side, and the audit row of a local privileged action.

    edge-agent audit -c FILE [--verify] [--json] [-n N]
    edge-agent platform signkey DIR
    edge-agent platform sign --key FILE [--kid ID] --op OP [--target T] [--args JSON] [--ttl 60s]
                             [--id ID] [--iat-ms N]

``platform sign`` prints the signed command as one JSON line (ASCII, so any terminal or pipe
carries it), ready for ``mosquitto_pub -t R/cmd -s``. Exit codes as every verb: 0 ok, 1 failed
(one line on stderr, prefixed ``edge-agent:``), 2 bad usage. Split from ``cli.py`` along the
seam of the command feature; ``cli.build_parser`` calls ``register``.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any, Callable

__all__ = ["register", "cmd_audit", "cmd_platform_signkey", "cmd_platform_sign", "audit_cli_action",
           "local_actor"]


class _Failure(Exception):
    """An expected failure of one of these verbs: one line, exit 1."""


def _run(body: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def verb(args: argparse.Namespace) -> int:
        try:
            return body(args)
        except _Failure as exc:
            print(f"edge-agent: {exc}", file=sys.stderr)
            return 1
    verb.__name__ = body.__name__
    return verb


def local_actor() -> str:
    """``local:<login name>`` of whoever runs the CLI (``local:uid<N>`` when it has no name)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError, ImportError):
        user = f"uid{os.getuid()}"
    return f"local:{user}"


def audit_cli_action(state_dir: Path, detail: str, *, outcome: str = "done") -> str | None:
    """Append a ``cli`` audit row for a local privileged action when ``state_dir`` exists.

    Returns a warning line when the row could not be written (the action itself stands), else None."""
    if not Path(state_dir).is_dir():
        return None
    from ..commands.ledger import Ledger, LedgerError, ledger_path

    try:
        with Ledger(ledger_path(state_dir)) as ledger:
            ledger.audit("cli", actor=local_actor(), outcome=outcome, detail=detail)
    except LedgerError as exc:
        return f"warning: the audit row for '{detail}' was not written: {exc}"
    return None


# -- platform signkey / sign ----------------------------------------------------------------------

@_run
def cmd_platform_signkey(args: argparse.Namespace) -> int:
    from ..commands.signing import SigningKeyError, generate

    try:
        private_path, public_path, kid = generate(args.dir)
    except SigningKeyError as exc:
        raise _Failure(str(exc)) from None
    print(f"private key {private_path} (mode 0600; keep it on the platform, never on a gateway)")
    print(f"public key  {public_path} (commands.keys[].public_key_file on gateways)")
    print(f"kid {kid}")
    return 0


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object, e.g. '{\"point\": \"barrier\", \"value\": \"open\"}'")
    return value


def _ttl_ms(text: str) -> int:
    from ..units import parse_duration

    try:
        seconds = parse_duration(text)
    except (ValueError, TypeError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return int(round(seconds * 1000))


@_run
def cmd_platform_sign(args: argparse.Namespace) -> int:
    from ..commands.signing import SigningKeyError, load_private_key, sign

    try:
        key = load_private_key(args.key)
    except SigningKeyError as exc:
        raise _Failure(str(exc)) from None
    iat = args.iat_ms if args.iat_ms is not None else int(time.time() * 1000)
    command = {"v": 1, "id": args.id or f"c-{secrets.token_hex(6)}", "op": args.op, "target": args.target,
               "args": args.args, "iat": iat, "exp": iat + args.ttl}
    signed = sign(command, key, args.kid)
    print(json.dumps(signed, separators=(",", ":")))  # ASCII escapes: safe on any terminal or pipe
    return 0


# -- audit ----------------------------------------------------------------------------------------

def _stamp(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


def _line(row: dict[str, Any]) -> str:
    outcome = row["outcome"] + (f" {row['code']}" if row["code"] else "")
    what = " ".join(x for x in (row["op"], row["target"] and f"-> {row['target']}",
                                row["cmd_id"] and f"[{row['cmd_id']}]") if x)
    detail = f"  {row['detail']}" if row["detail"] else ""
    return f"{row['seq']:>6}  {_stamp(row['ts'])}  {row['kind']:<7}  {row['actor']}  {outcome}  {what}{detail}".rstrip()


@_run
def cmd_audit(args: argparse.Namespace) -> int:
    from ..commands.ledger import Ledger, LedgerError, ledger_path

    settings = args.load(args.config)
    path = ledger_path(settings.gateway.state_dir)
    if not path.exists():
        if args.json:
            print(json.dumps({"audit": None, "count": 0, "rows": [], **({"problems": []} if args.verify else {})}))
        else:
            print(f"no audit log yet at {path} (no command or privileged action recorded)")
        return 0
    try:
        with Ledger(path, readonly=True) as ledger:
            problems = ledger.verify_chain() if args.verify else []
            rows = [] if args.verify and not args.json else ledger.rows(limit=args.lines)
            count = ledger.count()
    except LedgerError as exc:
        raise _Failure(str(exc)) from None
    if args.json:
        out: dict[str, Any] = {"audit": str(path), "count": count, "rows": rows}
        if args.verify:
            out["problems"] = problems
        print(json.dumps(out, ensure_ascii=False, sort_keys=True))
    elif args.verify:
        for problem in problems:
            print(problem)
        if not problems:
            print(f"{path}: audit chain intact ({count} row(s))")
    else:
        for row in rows:
            print(_line(row))
    if problems:
        raise _Failure(f"{path}: audit chain broken: {problems[0]}")
    return 0


def row_count(text: str) -> int:
    """A count for -n: 0 or more (a usage error, exit 2, otherwise)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count of rows (0 or more)")
    return value


def register(sub: Any, platform_sub: Any, load: Callable[[str], Any]) -> None:
    """Add ``audit`` and ``platform signkey|sign``; ``load(config_path)`` is the CLI's config loader."""
    text = "list the audit log of commands and privileged actions; --verify checks its hash chain"
    p = sub.add_parser("audit", help=text, description=text)
    p.add_argument("-c", "--config", required=True, metavar="FILE", help="the gateway's YAML config")
    p.add_argument("--verify", action="store_true", help="check the hash chain; exit 1 naming the first bad row")
    p.add_argument("--json", action="store_true", help="one JSON object, for scripts")
    p.add_argument("-n", "--lines", type=row_count, default=None, metavar="N", help="only the last N rows")
    p.set_defaults(func=cmd_audit, load=load)

    p = platform_sub.add_parser("signkey", help="write DIR/command.key (0600) and DIR/command.pub for signing commands")
    p.add_argument("dir", metavar="DIR")
    p.set_defaults(func=cmd_platform_signkey)
    p = platform_sub.add_parser("sign", help="print a signed command as one JSON line (for mosquitto_pub -s)")
    p.add_argument("--key", required=True, metavar="FILE", help="the platform's command signing key (PEM)")
    p.add_argument("--kid", metavar="ID", help="the key's id as the gateway's commands.keys names it "
                   "(default: none; the gateway tries each trusted key)")
    p.add_argument("--op", required=True, metavar="OP", help="agent.ping, device.poll, device.write, "
                   "config.apply or buffer.replay")
    p.add_argument("--target", metavar="DEVICE", help="the device (device ops)")
    p.add_argument("--args", type=_json_object, default={}, metavar="JSON", help="the op's arguments, a JSON object")
    p.add_argument("--ttl", type=_ttl_ms, default=60_000, metavar="DURATION", help="exp - iat (default 60s)")
    p.add_argument("--id", metavar="ID", help="the command id (default: c- and 12 random hex digits)")
    p.add_argument("--iat-ms", type=int, metavar="N", help="issued-at, ms since the epoch (default: now)")
    p.set_defaults(func=cmd_platform_sign)
