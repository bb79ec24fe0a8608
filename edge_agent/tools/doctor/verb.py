"""``edge-agent doctor -c FILE [--json] [--user NAME]``: everything a technician checks by hand
before blaming the agent, one line each, with the fix.

    OK    config: /etc/edge-agent/gateway.yaml valid (2 bus(es), 3 device(s))
    FAIL  serial river-rs485: /dev/ttyUSB0 not found
          -> fix: plug the adapter in; 'ls -l /dev/serial/by-id/' lists the ports present ...
    WARN  clock: not synchronised (adjtimex: STA_UNSYNC): readings carry clk: "unsynced"
          -> fix: ...

Checks, in order (docs/troubleshooting.md lists every finding and its fix):

- ``config``: the file is valid (``config.check_file``); on FAIL its problems follow and nothing
  else is checked.
- ``service user``: whose access the other checks judge. As root: the ``edge-agent`` user
  (``--user`` names another), through its groups and the files' mode and owner; otherwise the
  user running doctor, through real opens.
- ``config file``: (as root, for the service user) the config is readable by it.
- ``serial BUS``: per serial bus: present, a character device, readable and writable by the
  service user, a tty, and no other process holding it (``scan.port_problem``/``scan.holders``,
  the checks ``edge-agent scan`` makes); the running daemon holding its own port is fine.
- ``broker dns``/``tcp``/``tls``/``cert``/``mqtt``: name resolution, TCP connect, the TLS
  handshake with the configured CA and client certificate, the server certificate's expiry
  (WARN under 30 days, FAIL expired), then an MQTT CONNECT as ``<client id>-doctor``; each
  within 3 s; a failed step ends the chain (``doctor_broker``). ``client cert``: the expiry of
  ``mqtt.tls.cert_file``. With several ``mqtt.hosts``: the same chain for each node, one line
  each, ``broker node HOST:PORT`` (a bad node WARNs while another is good, FAILs when none is).
- ``clock``: synchronised (``clock.clock_state``); WARN when not, as readings then carry
  ``clk: "unsynced"``.
- ``state dir``, ``disk``: the state and buffer directories writable by the service user; free
  space on the buffer's filesystem against ``buffer.max_bytes`` (FAIL when the cap cannot fit,
  WARN under twice the cap).
- ``pseudonym key``, ``platform key``, ``command key ID``, ``mqtt password``, ``tls files``:
  present, valid, readable by the service user; secrets mode 0600 and owned by it.
- ``web password``, ``web tls``, ``web cert``, ``web listen``: with a ``web`` section, the page's
  password file (0600, owned by the service user, a scrypt hash), its TLS files and certificate
  expiry, and whether the page answers at ``web.listen`` (WARN when nothing listens) (``web``).
- ``systemd``: ``systemctl is-enabled``/``is-active edge-agent`` where systemctl exists.

Exit 1 when any check FAILs, 0 otherwise (WARN included), 2 on bad usage. Every check runs
with a time limit (``TIMEOUT_S``; broker steps ``BROKER_TIMEOUT_S``) and no check's own error
becomes a traceback: it is reported as that check's FAIL. ``--json`` prints one object instead:
``{"config", "user", "ok", "counts", "checks": [{"status", "check", "finding", "fix", "details"}]}``.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import sys
import threading
from dataclasses import asdict
from typing import Any, Callable, Iterable, TextIO

from . import broker as doctor_broker
from . import local as dc
from . import web as doctor_web
from .finding import BROKER_TIMEOUT_S, FAIL, OK, SERVICE_USER, TIMEOUT_S, WARN, Finding, Who

__all__ = ["register", "cmd_doctor", "service_user", "run_checks", "timed", "format_finding"]


def _one_line(text: str) -> str:
    """A command line shown in a finding may hold newlines (``python -c``): one line stays one."""
    return " ".join(text.splitlines())


def format_finding(f: Finding) -> str:
    lines = [f"{f.status:<4}  {f.check}: {_one_line(f.finding)}"]
    lines += [f"      {_one_line(d)}" for d in f.details]
    if f.fix and f.status != OK:
        lines.append(f"      -> fix: {_one_line(f.fix)}")
    return "\n".join(lines)


def service_user(name: str | None) -> tuple[Who, Finding]:
    """Whose access counts, and the line that says so (``--user`` NAME, or by who runs doctor)."""
    try:
        me = pwd.getpwuid(os.geteuid())
    except KeyError:  # a uid with no passwd entry (some containers)
        me = pwd.struct_passwd((f"uid {os.geteuid()}", "x", os.geteuid(), os.getegid(), "", "/", ""))
    if name is None and os.geteuid() == 0:
        try:
            pwd.getpwnam(SERVICE_USER)
            name = SERVICE_USER
        except KeyError:
            return (Who(me.pw_name, me.pw_uid),
                    Finding(WARN, "service user", f"no user '{SERVICE_USER}' on this system: access is checked "
                            f"for {me.pw_name} instead",
                            "scripts/install.sh creates the user; or name the user the agent runs as: --user NAME"))
    if name is None or name == me.pw_name:
        note = "" if os.geteuid() == 0 else f" (run as root to check for the service user '{SERVICE_USER}')"
        return Who(me.pw_name, me.pw_uid), Finding(OK, "service user", f"checking access for {me.pw_name}{note}")
    try:
        user = pwd.getpwnam(name)
    except KeyError:
        return (Who(me.pw_name, me.pw_uid),
                Finding(FAIL, "service user", f"no user '{name}' on this system: access is checked for {me.pw_name}",
                        "scripts/install.sh creates the edge-agent user; or pass the user the agent runs as: "
                        "--user NAME"))
    gids = frozenset(os.getgrouplist(user.pw_name, user.pw_gid))
    who = Who(user.pw_name, user.pw_uid, gids, current=False)
    if os.geteuid() != 0:
        return who, Finding(WARN, "service user", f"checking {user.pw_name}'s access by mode bits only: not root, so "
                            "other processes and some files cannot be seen", "run doctor as root (sudo)")
    names = ", ".join(sorted(_group_names(gids))) or "none"
    return who, Finding(OK, "service user", f"checking access for {user.pw_name} (uid {user.pw_uid}, groups {names})")


def _group_names(gids: Iterable[int]) -> list[str]:
    import grp

    out = []
    for gid in gids:
        try:
            out.append(grp.getgrgid(gid).gr_name)
        except KeyError:
            out.append(str(gid))
    return out


def timed(check: str, fn: Callable[[], Finding | list[Finding]], timeout: float) -> list[Finding]:
    """``fn()`` in a thread, given ``timeout`` seconds; its own error or silence becomes a FAIL."""
    box: list[Any] = []

    def target() -> None:
        try:
            got = fn()
            box.append(got if isinstance(got, list) else [got])
        except Exception as exc:  # a check must never end doctor with a traceback
            box.append([Finding(FAIL, check, f"the check itself failed: {type(exc).__name__}: {exc}",
                                "report this with the line above; the other checks still ran")])

    worker = threading.Thread(target=target, name=f"doctor {check}", daemon=True)
    worker.start()
    worker.join(timeout)
    if not box:
        fix = ("the network drops the packets (a firewall?), or the server is overloaded: try again, then "
               "ask the network's operator" if check.startswith("broker") else
               "something hangs here (a stuck device driver or filesystem): look at it by hand; 'dmesg | tail'")
        return [Finding(FAIL, check, f"no answer within {timeout:g} s", fix)]
    return box[0]


def run_checks(settings: Any, config: str, who: Who, emit: Callable[[Finding], None]) -> None:
    """Every check after ``config``, in order; each finding goes to ``emit`` as it is known."""

    def run(check: str, fn: Callable[[], Finding | list[Finding]], timeout: float = TIMEOUT_S) -> list[Finding]:
        found = timed(check, fn, timeout)
        for f in found:
            emit(f)
        return found

    if not who.current:  # the current user has just read it
        run("config file", lambda: dc.check_config_file(config, who))
    for bus in settings.buses:
        if bus.serial:
            run(f"serial {bus.name}", lambda bus=bus: dc.check_serial(bus, who))
    doctor_broker.run(settings, run, BROKER_TIMEOUT_S, quiet=timed)
    run("clock", dc.check_clock)
    run("state dir", lambda: dc.check_state_dir(settings, who))
    run("disk", lambda: dc.check_disk(settings.buffer))
    run("keys", lambda: dc.check_keys(settings, who, config))
    run("unsigned commands", lambda: dc.check_unsigned(settings))
    if settings.web is not None:
        run("web", lambda: doctor_web.check_web(settings, who, config))
    run("systemd", dc.check_systemd)


def _check_config(path: str) -> tuple[Any, Finding]:
    from ...config.schema import ConfigError, check_file, load_settings

    problems = check_file(path)
    if problems:
        return None, Finding(FAIL, "config", f"{path}: {len(problems)} problem(s)",
                             f"correct each line above ('edge-agent check -c {path}' lists them again); "
                             "nothing else was checked", tuple(map(str, problems)))
    try:
        settings = load_settings(path)
    except ConfigError as exc:  # check_file said ok: only a race with an editor gets here
        return None, Finding(FAIL, "config", f"{path}: {exc}", f"edge-agent check -c {path}")
    return settings, Finding(OK, "config", f"{path} valid ({len(settings.buses)} bus(es), "
                                           f"{len(settings.devices)} device(s))")


def cmd_doctor(args: argparse.Namespace) -> int:
    """0 nothing FAILed, 1 something did."""
    findings: list[Finding] = []
    out: TextIO = sys.stdout

    def emit(f: Finding) -> None:
        findings.append(f)
        if not args.json:
            print(format_finding(f), file=out, flush=True)

    settings, first = _check_config(args.config)
    emit(first)
    who = None
    if settings is not None:
        who, line = service_user(args.user)
        emit(line)
        run_checks(settings, args.config, who, emit)
    counts = {s: sum(f.status == s for f in findings) for s in (OK, WARN, FAIL)}
    if args.json:
        print(json.dumps({"config": args.config, "user": who.name if who else None, "ok": not counts[FAIL],
                          "counts": counts, "checks": [asdict(f) for f in findings]}, ensure_ascii=False))
    else:
        print(f"doctor: {counts[FAIL]} FAIL, {counts[WARN]} WARN, {counts[OK]} OK", file=out)
    return 1 if counts[FAIL] else 0


def register(sub: Any) -> None:
    """Add the ``doctor`` verb to the agent's CLI (argparse subparsers)."""
    text = ("check serial ports, broker (DNS, TCP, TLS, certificate), clock, disk, keys and the service: "
            "one line each, with the fix")
    p = sub.add_parser("doctor", help=text, description=text)
    p.add_argument("-c", "--config", required=True, metavar="FILE", help="the gateway's YAML config")
    p.add_argument("--json", action="store_true", help="one JSON object, for scripts")
    p.add_argument("--user", metavar="NAME",
                   help=f"the user the daemon runs as (default: '{SERVICE_USER}' when run as root, else you)")
    p.set_defaults(func=cmd_doctor)
