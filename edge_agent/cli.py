"""The ``edge-agent`` verbs for installers and technicians.

Exit codes: 0 ok, 1 a problem found or the command failed, 2 bad usage. An expected failure
(bad config, absent port, broker down, no buffer yet) is one clear line on stderr, never a
traceback: every such exception derives from ``errors.EdgeAgentError``, and ``main`` catches
that root once. Heavy modules are imported per verb so ``check`` stays instant on a Pi.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from . import __version__
from .errors import EdgeAgentError

__all__ = ["main"]

READ_LISTEN_S = 5.0  # how long 'read' listens to a talking device (hub, gate) for something to show
STATUS_ASK_S = 5.0  # how long 'status' waits for the daemon's answer before reading the buffer file


class CliFailure(EdgeAgentError):
    """An expected failure of a verb: printed as one line, exit 1."""


def _load(path: str):
    from .config.schema import ConfigError, load_settings

    try:
        return load_settings(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        raise CliFailure(f"{path}: {len(exc.problems)} problem(s); nothing was started") from None


def setup_logging(level: str, *, log_file: str | None = None, log_max: int | None = None,
                  log_keep: int | None = None) -> None:
    """stderr (journald's priority prefixes and no timestamps of ours when stderr is the journal
    stream), and a rotated file when ``log_file`` is given (``logsetup``).

    Every record is scrubbed of identifiers and byte runs on its way out (``logfilter``), and
    repeated identical warnings and errors become one count a minute."""
    from .agent import logsetup

    logsetup.setup(level, log_file=log_file,
                   max_bytes=logsetup.DEFAULT_MAX_BYTES if log_max is None else log_max,
                   keep=logsetup.DEFAULT_KEEP if log_keep is None else log_keep)


def _with_config(message: str, config: str | None) -> str:
    """A message with the real config path in the command it suggests (key file problems say
    ``-c CONFIG``: the module that raises them does not know the path)."""
    return message.replace("-c CONFIG", f"-c {config}") if config else message


def _privacy(settings: Any) -> Any:
    """The privacy stage as the daemon builds it (keys loaded); KeyFileError / SealError when a
    key is missing or loosely permitted (``main`` prints it as one line)."""
    from .privacy.stage import Privacy

    return Privacy.load(settings.privacy, overrides=settings.privacy_overrides)


def cmd_run(args: argparse.Namespace) -> int:
    """A file or key the agent cannot use (buffer, ledger, uplink, key files) stops it with one
    line: ``main`` catches ``EdgeAgentError``."""
    from .agent.supervisor import run

    settings = _load(args.config)
    try:
        setup_logging(args.log_level, log_file=args.log_file, log_max=args.log_max, log_keep=args.log_keep)
    except OSError as exc:
        raise CliFailure(f"--log-file {args.log_file}: {exc.strerror or exc}") from None
    return run(settings)


def cmd_check(args: argparse.Namespace) -> int:
    """Problems (exit 1); else warnings for the files the config names that are not there (exit 0,
    or 1 with ``--strict``), all on stdout as ``FILE:LINE: key.path: [warning: ]...``."""
    from .config.schema import check_config

    settings, found = check_config(args.config)
    for problem in found:
        print(problem)
    if settings is None:
        print(f"{args.config}: {len(found)} problem(s)", file=sys.stderr)
        return 1
    if found and args.strict:
        print(f"{args.config}: {len(found)} warning(s), and --strict fails on any", file=sys.stderr)
        return 1
    warned = f", {len(found)} warning(s)" if found else ""
    print(f"{args.config}: ok ({len(settings.buses)} bus(es), {len(settings.devices)} device(s){warned})")
    return 0


def _key_state(settings: Any, config: str) -> dict[str, Any]:
    """The pseudonym key as ``status`` reports it: active version and fingerprint, or why not."""
    from .privacy.keys import KeyFileError, load_keyring

    path = settings.privacy.key_file
    if path is None:
        return {"file": None, "state": "none"}
    try:
        ring = load_keyring(path)
    except KeyFileError as exc:
        return {"file": str(path), "state": "unreadable", "reason": _with_config(str(exc), config)}
    return {"file": str(path), "state": "ok", "active_version": ring.active,
            "fingerprint": ring.fingerprints()[ring.active], "versions": len(ring.versions)}


def cmd_status(args: argparse.Namespace) -> int:
    """The running daemon's view over its control socket; when nobody answers, the buffer file's
    (``status.py`` gathers and prints both; ``source`` says which was used)."""
    from .agent import status as status_view
    from .buffer.file import BufferCorrupt, BufferDenied, BufferError
    from .clock import clock_state
    from .agent.control import socket_path, status_or_reason

    settings = _load(args.config)
    path = settings.buffer.path
    key = _key_state(settings, args.config)
    found = status_or_reason(settings, timeout=STATUS_ASK_S)
    if isinstance(found, dict):
        data = found
    else:
        error: BufferError | None = None
        try:
            from_file = status_view.from_buffer(settings)  # None: the file holds no buffer yet
        except BufferError as exc:
            from_file, error = None, exc
        data = from_file or {"gateway": settings.gateway.id, "site": settings.gateway.site, "source": None,
                             "buffer": None}
        if error is not None:  # unreadable or not ours: say so, and still show what does not need it
            data["buffer_error"] = str(error)
            data["buffer_corrupt"] = isinstance(error, BufferCorrupt)
            data["buffer_denied"] = isinstance(error, BufferDenied)
        data["fallback_reason"] = found
    data["control_socket"] = str(socket_path(settings.gateway.state_dir))
    data["pseudonym_key"] = key
    if not data.get("clock"):
        here = clock_state(slow=True)
        data["clock"] = {"synced": here.synced, "source": here.source, "detail": here.detail}
    if args.json:
        print(json.dumps(data, sort_keys=True))
    elif data["buffer"] is None:
        if "buffer_error" in data:
            print(f"gateway {settings.gateway.id}: the daemon does not answer ({found}) and its buffer "
                  f"cannot be read: {data['buffer_error']}")
            print(f"  -> {_unreadable_hint(data, Path(path))}")
        elif Path(path).exists():
            print(f"gateway {settings.gateway.id}: no buffer yet at {path} (the file is there, its tables not yet: "
                  "the daemon is starting, or has not run)")
        else:
            print(f"gateway {settings.gateway.id}: no buffer yet at {path} (the daemon has not run)")
        print(f"clock         {status_view.clock_line(data['clock'])}")
        print(f"pseudonym key {status_view.key_line(key, None)}")
    else:
        print("\n".join(status_view.render(data)))
    if "buffer_error" in data:  # exit 1 always says why on stderr, --json or not
        print(f"edge-agent: status: {data['buffer_error']}", file=sys.stderr)
        return 1
    return 0


def _unreadable_hint(data: dict[str, Any], path: Path) -> str:
    """What to do about a buffer ``status`` could not read: what ``run`` does with a corrupt one
    (docs/storage.md), whom to ask when this user may not open it."""
    if data["buffer_corrupt"]:
        return (f"'edge-agent run' (or 'systemctl start edge-agent') quarantines it: moves it aside as "
                f"{path.name}.corrupt-<time> (its rows stay there for manual recovery), starts a fresh buffer, "
                "and ids continue above the old ones")
    if data["buffer_denied"]:
        return ("run as root or as a member of the service group (edge-agent), or start the daemon and ask it "
                "('systemctl start edge-agent')")
    return "start the daemon and ask it ('systemctl start edge-agent')"


def _shown(value: Any) -> str:
    """A value as the wire carries it: strings as they are, anything else as its JSON."""
    if value is None:
        return "-"
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _tail_line(kind: str, body: dict, points: set[str] | frozenset[str] = frozenset()) -> str:
    """One buffered row: an event with its data, or a record as ``point=value`` pairs (a point
    that is not good followed by its quality; ``points``, when given, limits the pairs shown),
    its sealed points as ``<sealed>``."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(body["ts"] / 1000)) + f".{body['ts'] % 1000:03d}Z"
    clock = " clk=unsynced" if body.get("clk") else ""
    if kind == "event":
        data = json.dumps(body.get("data", {}), ensure_ascii=False, sort_keys=True)
        return f"{body['id']:>8}  {stamp}  {body['dev']}  event {body['type']} [{body['prio']}] {data}{clock}"
    where = body["dev"] + (f"[{body['sub']}]" if "sub" in body else "")
    quality = body.get("q") or {}
    pairs = [f"{pt}={json.dumps(val, ensure_ascii=False)}" + (f" ({quality[pt]})" if pt in quality else "")
             for pt, val in (body.get("vals") or {}).items() if not points or pt in points]
    if "sealed" in body and not points:
        pairs.append("<sealed>")
    return f"{body['id']:>8}  {stamp}  {where}  {' '.join(pairs)}{clock}"


def _unknown_device(name: str, names: list[str]) -> str:
    hint = difflib.get_close_matches(name, names, n=1)
    return f"unknown device {name!r}" + (f" (did you mean {hint[0]!r}?)" if hint else
                                         f"; the config has: {', '.join(names) or 'none'}")


def cmd_tail(args: argparse.Namespace) -> int:
    """Follow the buffer file: rows are stored after the privacy stage, so what is printed is
    what the wire carries. Works beside the daemon (read-only), or after it."""
    settings = _load(args.config)
    path = settings.buffer.path
    devices, points = set(args.device or ()), set(args.point or ())
    names = [d.name for d in settings.devices]
    for name in sorted(devices - set(names)):  # a filter, not a failure: rows of a removed device may remain
        print(f"edge-agent: {_unknown_device(name, names)}; following it anyway", file=sys.stderr)

    def wanted(kind: str, body: dict) -> bool:
        return ((not devices or body.get("dev") in devices)
                and (not points or (kind == "record" and not points.isdisjoint(body.get("vals") or {}))))

    try:
        return _follow(path, args, wanted, points)
    except KeyboardInterrupt:  # the usual way to end a follow
        return 0


def _follow(path, args: argparse.Namespace, wanted, points: set[str]) -> int:
    from .buffer.outbox import BufferError
    from .buffer.stats import read_rows

    last_id, announced = 0, False
    first = True
    while True:
        try:
            rows = read_rows(path, after_id=last_id, last=args.lines if first else None)
        except BufferError:
            if not args.follow:
                raise
            if not announced:
                print(f"waiting for the buffer at {path} ...", file=sys.stderr, flush=True)
                announced = True
            rows = []
        first = False
        for rid, kind, body in rows:
            last_id = rid
            if wanted(kind, body):
                print(_tail_line(kind, body, points), flush=True)
        if not args.follow:
            return 0
        if not rows:
            time.sleep(0.2)


def cmd_read(args: argparse.Namespace) -> int:
    from .field.readers import make_reader, open_link
    from .field.registry import get_driver

    settings = _load(args.config)
    names = [d.name for d in settings.devices]
    if args.device not in names:
        raise CliFailure(_unknown_device(args.device, names))
    device = settings.device(args.device)
    driver = get_driver(device.driver)
    privacy = _privacy(settings)  # before the bus: no value is read that cannot be protected
    setup_logging("warning")  # whatever a library logs is scrubbed too
    link = open_link(settings.bus(device.bus))
    try:
        reader = make_reader(device, driver, link)
        result = reader.poll()
        # a talking device (hub, gate) may be quiet for a moment: listen up to READ_LISTEN_S
        deadline = time.monotonic() + READ_LISTEN_S
        while driver.streaming and not (result.readings or result.events) and time.monotonic() < deadline:
            more = reader.poll()
            result.readings += more.readings
            result.events += more.events
            result.errors += more.errors
            result.bad_frames += more.bad_frames
            result.bad_frame_notes += more.bad_frame_notes
            result.answered = result.answered or more.answered
    finally:
        link.close()
    return _print_read(device, result, privacy)


def _print_read(device: Any, result: Any, privacy: Any) -> int:
    records = privacy.apply_records(result.readings)  # exactly what the buffer would store
    where = f", address {device.address}" if device.address is not None else ""
    print(f"{device.name} ({device.driver}) on bus {device.bus}{where}: {result.requests} request(s)")
    rows = [(pt if rec.sub is None else f"{pt} [{rec.sub}]", val, rec.q.get(pt, "good"))
            for rec in records for pt, val in rec.vals.items()]
    rows += [("<sealed>" if rec.sub is None else f"<sealed> [{rec.sub}]", f"for {rec.sealed['kid']}", "")
             for rec in records if rec.sealed is not None]
    if rows:
        width = max(len(name) for name, _, _ in rows)
        print(f"{'point':<{width}}  {'value':>14}  quality")
        for name, val, quality in rows:
            print(f"{name:<{width}}  {_shown(val):>14}  {quality}".rstrip())
    for event in result.events:
        wire = privacy.apply_event(event).to_wire()
        print(f"event {wire['type']} ({wire['prio']}): {json.dumps(wire['data'], ensure_ascii=False)}")
    if result.bad_frames:
        named = "; ".join(result.bad_frame_notes[:5])
        print(f"{result.bad_frames} bad frame(s) skipped" + (f": {named}" if named else ""), file=sys.stderr)
    for error in result.errors:
        print(f"error: {error}", file=sys.stderr)
    nothing_usable = result.bad_frames and not (result.readings or result.events)
    return 0 if result.answered and not result.errors and not nothing_usable else 1


def _platform_key_lines(settings: Any) -> list[str]:
    """What ``keys init`` says about the platform's public key (for seal), if one is configured."""
    from .privacy.keys import fingerprint
    from .privacy.seal import PlatformKey

    path = settings.privacy.platform_key_file
    if path is None:
        return []
    if not Path(path).exists():
        return [f"platform key {path}: not there yet; 'run' refuses to start until the platform operator "
                "provides it ('edge-agent platform keygen DIR' on the platform side makes one)"]
    key = PlatformKey.load(path)  # SealError: one line (main)
    return [f"platform key kid {key.kid} {fingerprint(key.raw)} ({path})"]


def cmd_keys_init(args: argparse.Namespace) -> int:
    """Create the site pseudonym key where the config points (or add a version with --rotate)."""
    from .privacy.keys import create_site_key, load_keyring, rotate_site_key

    settings = _load(args.config)
    path = Path(settings.privacy.key_file or settings.gateway.state_dir / "keys" / "pseudonym.key")
    platform = _platform_key_lines(settings)  # a bad platform key fails before anything is written
    try:
        if not args.rotate and path.is_file() and not path.is_symlink() and path.stat().st_size == 0:
            path.unlink()  # an empty file (a touch, a failed copy) held no key: nothing is lost
            print(f"key file {path} was empty; replacing it")
        if path.exists() or path.is_symlink():
            ring = rotate_site_key(path) if args.rotate else load_keyring(path)
            print(f"added site key v{ring.active} to {path}; new data uses v{ring.active}" if args.rotate else
                  f"site key file {path} exists and is valid; kept ('keys init --rotate' adds a version)")
        elif args.rotate:
            raise CliFailure(f"key file {path} does not exist, so there is nothing to rotate; "
                             f"'edge-agent keys init -c {args.config}' creates it")
        else:
            parent_existed = path.parent.exists()
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not parent_existed:
                os.chmod(path.parent, 0o700)  # whatever the umask: only the agent's user may list it
            ring = create_site_key(path)
            print(f"created site key file {path} (mode 0600)")
    except OSError as exc:  # KeyFileError is not one: main prints it
        raise CliFailure(f"key file {path}: {exc.strerror or exc}") from None
    for version, fp in ring.fingerprints().items():
        print(f"site key v{version} {fp}" + (" (active)" if version == ring.active else ""))
    for line in platform:
        print(line)
    from .tools.audit import audit_cli_action

    warning = audit_cli_action(settings.gateway.state_dir, "keys rotate" if args.rotate else "keys init")
    if warning:
        print(warning, file=sys.stderr)
    return 0


def _new_password() -> str:
    """The page's password: asked twice on a terminal, else one line of standard input (install scripts)."""
    from .web.auth import MIN_PASSWORD

    if sys.stdin.isatty():
        import getpass

        password = getpass.getpass("technician's password for the page: ")
        if getpass.getpass("the same again: ") != password:
            raise CliFailure("the two passwords differ; nothing was written")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if len(password) < MIN_PASSWORD:
        raise CliFailure(f"{'an empty password' if not password else 'a password this short'} is refused: give at "
                         f"least {MIN_PASSWORD} characters; nothing was written")
    return password


def cmd_web_passwd(args: argparse.Namespace) -> int:
    """Write the scrypt hash of a new password where ``web.password_file`` points (mode 0600; as
    root, owned by the service user when it exists, so the agent can read it)."""
    import pwd

    from .tools.doctor.finding import SERVICE_USER
    from .web.auth import hash_password, write_password_file

    settings = _load(args.config)
    path = settings.web.password_file if settings.web else settings.gateway.state_dir / "web.passwd"
    password = _new_password()
    owner, who = None, f"uid {os.geteuid()}"
    try:
        who = pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:  # a uid with no passwd entry (some containers)
        pass
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam(SERVICE_USER)
            owner, who = (user.pw_uid, user.pw_gid), SERVICE_USER
        except KeyError:
            pass
    try:
        write_password_file(path, hash_password(password), owner)
    except OSError as exc:
        raise CliFailure(f"password file {path}: {exc.strerror or exc}") from None
    print(f"wrote {path} (scrypt hash, mode 0600, owner {who}); a running agent reads it at the next request "
          "and ends every session")
    if settings.web is None:
        print(f"note: {args.config} has no 'web' section, so the page is off; add 'web:' to serve it (docs/web.md)")
    from .tools.audit import audit_cli_action

    warning = audit_cli_action(settings.gateway.state_dir, "web passwd")
    if warning:
        print(warning, file=sys.stderr)
    return 0


def cmd_platform_keygen(args: argparse.Namespace) -> int:
    from .privacy.keys import fingerprint
    from .platform import generate_platform_keypair
    from .privacy.seal import PlatformKey

    try:
        private_path, public_path = generate_platform_keypair(args.dir)
    except FileExistsError:
        raise CliFailure(f"{Path(args.dir) / 'platform.key'} already exists; it is kept") from None
    except OSError as exc:
        raise CliFailure(f"{args.dir}: {exc.strerror or exc}") from None
    key = PlatformKey.load(public_path)
    print(f"private key {private_path} (mode 0600; keep it on the platform, never on a gateway)")
    print(f"public key  {public_path} (privacy.platform_key_file on gateways)")
    print(f"kid {key.kid} {fingerprint(key.raw)}")
    return 0


def cmd_platform_unseal(args: argparse.Namespace) -> int:
    from .platform import main_unseal

    return main_unseal(["--key", args.key, *([args.file] if args.file else [])])


def _size_arg(text: str) -> int:
    from .units import parse_size

    try:
        size = parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if size < 4096:
        raise argparse.ArgumentTypeError(f"{text!r} is too small for a log file; at least 4KiB, e.g. '10MiB'")
    return size


def _count_arg(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 100:
        raise argparse.ArgumentTypeError(f"{text!r}: a whole number of files from 1 to 100")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    from .tools.audit import row_count

    parser = argparse.ArgumentParser(prog="edge-agent", description="Community IoT gateway agent.")
    parser.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name: str, help_text: str, parent: Any = sub) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=help_text, description=help_text)
        p.add_argument("-c", "--config", required=True, metavar="FILE", help="the gateway's YAML config")
        return p

    p = verb("run", "run the daemon in the foreground (systemd runs this)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-file", metavar="PATH", help="also log to PATH (mode 0640), rotated at --log-max")
    p.add_argument("--log-max", type=_size_arg, default=None, metavar="SIZE",
                   help="rotate the log file at this size (default 10MiB)")
    p.add_argument("--log-keep", type=_count_arg, default=None, metavar="N",
                   help="rotated log files kept: PATH.1 ... PATH.N (default 3)")
    p.set_defaults(func=cmd_run)
    p = verb("check", "validate a config without touching any device; warn about files it names that are not there")
    p.add_argument("--strict", action="store_true",
                   help="exit 1 on any warning too (for installers, on the gateway itself)")
    p.set_defaults(func=cmd_check)
    p = verb("status", "uplink, backlog and drain, device health, keys, clock: works whether or not the "
                       "daemon runs")
    p.add_argument("--json", action="store_true", help="one JSON object, for scripts")
    p.set_defaults(func=cmd_status)
    p = verb("tail", "follow records and events as they are buffered (as the wire carries them)")
    p.add_argument("--device", action="append", metavar="DEVICE", help="only this device (repeatable)")
    p.add_argument("--point", action="append", metavar="POINT",
                   help="only records with this point, showing only such points (repeatable)")
    p.add_argument("-n", "--lines", type=row_count, default=10, metavar="N",
                   help="start with the last N rows (records and events)")
    p.add_argument("--no-follow", dest="follow", action="store_false", help="print and exit")
    p.set_defaults(func=cmd_tail)
    p = verb("read", "poll one device once and print its points (masked as the uplink would)")
    p.add_argument("device", metavar="DEVICE")
    p.set_defaults(func=cmd_read)
    keys = sub.add_parser("keys", help="the gateway's keys", description="the gateway's keys")
    keys_sub = keys.add_subparsers(dest="keys_verb", required=True, metavar="VERB")
    p = verb("init", "create the site pseudonym key where the config points; print fingerprints", keys_sub)
    p.add_argument("--rotate", action="store_true", help="add a new key version; new data uses it")
    p.set_defaults(func=cmd_keys_init)
    web = sub.add_parser("web", help="the technician's page", description="the technician's page (docs/web.md)")
    web_sub = web.add_subparsers(dest="web_verb", required=True, metavar="VERB")
    p = verb("passwd", "set the page's password (asked twice on a terminal, else one line of standard input)",
             web_sub)
    p.set_defaults(func=cmd_web_passwd)
    platform = sub.add_parser("platform", help="the platform's side of seal and of signed commands (not for gateways)",
                              description="The platform's side: its seal key pair and opening sealed values; "
                                          "its command signing key and signing commands.")
    platform_sub = platform.add_subparsers(dest="platform_verb", required=True, metavar="VERB")
    p = platform_sub.add_parser("keygen", help="write DIR/platform.key (0600) and DIR/platform.pub")
    p.add_argument("dir", metavar="DIR")
    p.set_defaults(func=cmd_platform_keygen)
    p = platform_sub.add_parser("unseal", help="print a JSON payload with every sealed value opened")
    p.add_argument("--key", required=True, metavar="FILE", help="the platform's private key (PEM)")
    p.add_argument("file", nargs="?", metavar="PAYLOAD_FILE", help="JSON payload (default: stdin)")
    p.set_defaults(func=cmd_platform_unseal)
    from .tools import audit as cli_commands
    from .tools.doctor import verb as doctor
    from .tools import scan
    from .sim import cli as sim_cli

    cli_commands.register(sub, platform_sub, _load)  # audit, platform signkey, platform sign
    from .fleet import cli as fleet_cli

    fleet_cli.register(platform_sub)  # platform watch, platform send (issue 16)

    scan.register(sub)
    doctor.register(sub)  # doctor -c FILE [--json] [--user NAME]
    sim_cli.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except EdgeAgentError as exc:  # an expected failure, CliFailure included: its one line, exit 1
        print(f"edge-agent: {_with_config(str(exc), getattr(args, 'config', None))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C before the verb finished: it failed (contract: 0, 1 or 2)
        print("edge-agent: interrupted", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
