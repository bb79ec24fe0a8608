"""``edge-agent scan``: find the devices on a serial bus, for an installer who does not know
the baud rate or the ids yet.

    edge-agent scan --port /dev/ttyUSB0 [--protocol modbus-rtu|dlt645] [--baud 9600,19200]
                    [--parity N|E|O] [--stopbits 1|2] [--ids 1-247] [--timeout 0.1]
                    [--stop-at-first] [--force]

An RS-485 line carries one transaction at a time: probing a line the daemon polls garbles both.
So the port is checked before it is touched: it must exist, be a character device we may open,
and no other process may hold it open (``/proc/*/fd``) or locked (``flock``, as pymodbus does);
otherwise one line says who holds it and how to stop it, and ``--force`` scans anyway (saying so).

Output: a progress bar on stderr (on a terminal; elsewhere a line about every 10 %, so logs stay
readable) and the result table on stdout. Exit 0 when something answered, 1 when nothing did
or the port cannot be used, 2 on bad usage; an expected failure is one line on stderr prefixed
``edge-agent scan:``, never a traceback. The probing itself is in ``scan_probe``.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import grp
import os
import stat
import sys
import time
from typing import Any, TextIO

from ..errors import EdgeAgentError
from .scan_probe import Found, Scanner, ScanPlan

__all__ = ["register", "cmd_scan", "parse_ids", "parse_bauds", "parse_timeout", "format_ids", "holders",
           "port_problem", "print_table", "ProgressBar", "UsageError"]

PREFIX = "edge-agent scan"
DEFAULTS: dict[str, dict[str, Any]] = {  # the rates field devices ship with first, then the rest
    "modbus-rtu": {"bauds": (9600, 19200, 4800, 38400, 2400, 57600, 115200), "parity": "N", "timeout_s": 0.1},
    "dlt645": {"bauds": (2400, 1200, 4800, 9600), "parity": "E", "timeout_s": 0.5},
}
MAX_UNIT = 247


class UsageError(EdgeAgentError, ValueError):
    """A bad argument: one line, exit 2."""


# -- arguments ----------------------------------------------------------------------------------

def register(sub: Any) -> None:
    """Add the ``scan`` verb to the agent's CLI (argparse subparsers)."""
    text = "find devices on a serial bus: every id at every baud rate, with a progress bar"
    p = sub.add_parser("scan", help=text, description=text)
    p.add_argument("--port", required=True, metavar="PORT", help="serial port, e.g. /dev/ttyUSB0")
    p.add_argument("--protocol", choices=sorted(DEFAULTS), default="modbus-rtu")
    p.add_argument("--baud", metavar="RATES", help="comma list; default: modbus-rtu "
                   + ",".join(map(str, DEFAULTS["modbus-rtu"]["bauds"])) + "; dlt645 "
                   + ",".join(map(str, DEFAULTS["dlt645"]["bauds"])))
    p.add_argument("--parity", type=str.upper, choices=["N", "E", "O"],
                   help="default N for modbus-rtu, E for dlt645")
    p.add_argument("--stopbits", type=int, choices=[1, 2], default=1)
    p.add_argument("--ids", metavar="RANGES", help="modbus-rtu only: e.g. 1-247 or 1,5,10-20 (default 1-247)")
    p.add_argument("--timeout", metavar="SECONDS",
                   help="wait per probe beyond the frames' time on the wire "
                        "(default 0.1 modbus-rtu, 0.5 dlt645; '100ms' works too)")
    p.add_argument("--stop-at-first", action="store_true", help="stop as soon as one device answers")
    p.add_argument("--force", action="store_true", help="scan even though another process has the port open")
    p.set_defaults(func=cmd_scan)


def parse_ids(text: str) -> tuple[int, ...]:
    """``1-247``, ``1,5,10-20`` -> sorted unit ids; UsageError naming the bad part."""
    ids: set[int] = set()
    for part in (p.strip() for p in text.split(",")):
        low, sep, high = part.partition("-")
        try:
            first, last = int(low), int(high if sep else low)
        except ValueError:
            raise UsageError(f"--ids {text}: {part!r} is not an id or a range like 1-247") from None
        if first > last:
            raise UsageError(f"--ids {text}: range {part} runs backwards (did you mean {last}-{first}?)")
        if first < 1 or last > MAX_UNIT:
            why = " (0 is broadcast: nobody answers it)" if first == 0 else ""
            raise UsageError(f"--ids {text}: {part} is outside 1-{MAX_UNIT}{why}")
        ids.update(range(first, last + 1))
    return tuple(sorted(ids))


def parse_bauds(text: str) -> tuple[int, ...]:
    """``9600,19200`` -> rates in the order given, repeats dropped; UsageError otherwise."""
    from ..config.buses import BAUDS

    rates: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part.isdigit() or not part.isascii():
            raise UsageError(f"--baud {text}: {part!r} is not a baud rate such as 9600")
        if int(part) not in BAUDS:
            near = min(BAUDS, key=lambda b: abs(b - int(part)))
            raise UsageError(f"--baud {text}: {part} is not a serial rate a bus can use "
                             f"({', '.join(map(str, BAUDS))}; did you mean {near}?)")
        if int(part) not in rates:
            rates.append(int(part))
    return tuple(rates)


def parse_timeout(text: str) -> float:
    """Seconds from ``0.1`` or ``100ms``; UsageError outside 10 ms .. 10 s."""
    from ..units import parse_seconds

    try:
        seconds = parse_seconds(text)
    except ValueError as exc:
        raise UsageError(f"--timeout {text}: {exc}") from None
    if not 0.01 <= seconds <= 10:
        raise UsageError(f"--timeout {text}: use 0.01 to 10 seconds")
    return seconds


def make_plan(args: argparse.Namespace) -> ScanPlan:
    """The scan the arguments ask for, with the protocol's defaults filled in."""
    d = DEFAULTS[args.protocol]
    if not args.port.strip():
        raise UsageError("--port is empty: name the serial port, e.g. /dev/ttyUSB0")
    if args.ids is not None and args.protocol != "modbus-rtu":
        raise UsageError(f"--ids is for modbus-rtu; {args.protocol} meters are found by the wildcard "
                         "address, not by trying ids")
    return ScanPlan(port=args.port, protocol=args.protocol,
                    bauds=parse_bauds(args.baud) if args.baud is not None else d["bauds"],
                    parity=args.parity or d["parity"], stop_bits=args.stopbits,
                    ids=parse_ids(args.ids) if args.ids is not None else tuple(range(1, MAX_UNIT + 1)),
                    timeout_s=parse_timeout(args.timeout) if args.timeout else d["timeout_s"],
                    stop_at_first=args.stop_at_first)


# -- the port -----------------------------------------------------------------------------------

def _cmdline(pid: int) -> str:
    """The command line of ``pid``, with the interpreter and script shown by their names
    (``python3 edge-agent run -c /etc/edge-agent/gateway.yaml``) so the line stays short."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            words = [w.decode(errors="replace") for w in f.read().rstrip(b"\0").split(b"\0") if w]
        if not words:
            with open(f"/proc/{pid}/comm") as f:
                return f"[{f.read().strip()}]"
    except OSError:
        return "?"
    words[0] = os.path.basename(words[0])
    if words[0].startswith("python") and len(words) > 1 and words[1].startswith("/"):
        words[1] = os.path.basename(words[1])
    return " ".join(words)


_PTY_MAJORS = range(136, 144)  # Unix98 pty slaves: every devpts instance reuses these numbers


def _same_device(fd_path: str, node: os.stat_result | None) -> bool:
    """Whether an open descriptor (``/proc/PID/fd/N``) is the port: the same inode, or for a real
    serial device the same device number (an alias node, a bind mount). Not the path, and not a
    pty's number: a container's own devpts has a ``/dev/pts/0`` of the same path and number."""
    if node is None:
        return False
    try:
        st = os.stat(fd_path)
    except OSError:
        return False
    if (st.st_dev, st.st_ino) == (node.st_dev, node.st_ino):
        return True
    return (stat.S_ISCHR(st.st_mode) and stat.S_ISCHR(node.st_mode) and st.st_rdev == node.st_rdev
            and os.major(st.st_rdev) not in _PTY_MAJORS)


def holders(path: str) -> list[tuple[int, str]]:
    """Other processes holding ``path`` open: (PID, command line), from ``/proc/*/fd``. Only the
    processes we may look into are seen (all of them as root); ``_locked`` covers the rest."""
    try:
        node: os.stat_result | None = os.stat(os.path.realpath(path))
    except OSError:
        node = None
    me, found = os.getpid(), []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            fds = os.listdir(f"/proc/{name}/fd")
        except OSError:
            continue
        if any(_same_device(f"/proc/{name}/fd/{fd}", node) for fd in fds):
            found.append((int(name), _cmdline(int(name))))
    return found


def _no_permission(path: str) -> str:
    try:
        group = grp.getgrgid(os.stat(path).st_gid).gr_name
    except (OSError, KeyError):
        group = "dialout"
    return (f"no permission to open {path}: add your user to the '{group}' group "
            f"(sudo usermod -aG {group} $USER, then log in again), or run as root")


def _locked(fd: int) -> bool:
    """Whether another program holds an exclusive lock on the port (pyserial's ``exclusive``)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        return exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN)
    fcntl.flock(fd, fcntl.LOCK_UN)
    return False


def port_problem(path: str) -> tuple[str | None, bool]:
    """Why ``path`` cannot be scanned (None when it can), and whether it is locked by another
    program. The port is opened non-blocking and closed at once: no byte is sent."""
    if not os.path.exists(path):
        return (f"serial port {path} not found (ls /dev/ttyUSB* /dev/ttyACM* /dev/serial/by-id/ "
                "lists the ones present)"), False
    if not stat.S_ISCHR(os.stat(path).st_mode):
        return f"{path} is not a serial device", False
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    except PermissionError:
        return _no_permission(path), False
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            return f"serial port {path} is busy: another program opened it exclusively", False
        return f"cannot open serial port {path}: {os.strerror(exc.errno or 0).lower()}", False
    try:
        if not os.isatty(fd):
            return f"{path} is not a serial device", False
        return None, _locked(fd)
    finally:
        os.close(fd)


def _short(text: str, limit: int = 100) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _is_daemon(cmd: str) -> bool:
    """``edge-agent run ...`` (as systemd starts it), not another ``edge-agent`` verb."""
    words = cmd.split()
    return any(w in ("edge-agent", "edge_agent.cli") for w in words) and "run" in words


def _busy(path: str, procs: list[tuple[int, str]]) -> tuple[str, str]:
    """Who holds the port, and how to free it."""
    if not procs:
        return f"serial port {path} is locked by another program", "close that program"
    who = "; ".join(f"PID {pid} ({_short(cmd)})" for pid, cmd in procs[:3]) + ("; ..." if len(procs) > 3 else "")
    daemon = any(_is_daemon(cmd) for _, cmd in procs)
    return f"serial port {path} is in use by {who}", \
        "stop it first (systemctl stop edge-agent)" if daemon else "stop it first"


# -- progress and results -----------------------------------------------------------------------

class ProgressBar:
    """``[#####.....] 120/1729 probes, 19200 baud, 2 found, ETA 14s`` redrawn in place on a
    terminal; elsewhere (a log, a pipe) one plain line about every 10 %."""

    WIDTH = 20

    def __init__(self, total: int, stream: TextIO, tty: bool | None = None) -> None:
        self.total, self.stream = total, stream
        self.tty = stream.isatty() if tty is None else tty
        self.started = time.monotonic()
        self._drawn_at = 0.0
        self._next_step = 1
        self._open = False

    def _text(self, done: int, baud: int, found: int) -> str:
        from ..units import format_duration

        eta = ""
        if 0 < done < self.total:
            eta = f", ETA {format_duration((time.monotonic() - self.started) / done * (self.total - done))}"
        return f"{done}/{self.total} probes, {baud} baud, {found} found{eta}"

    def __call__(self, done: int, baud: int, found: int) -> None:
        now = time.monotonic()
        if self.tty:
            if done < self.total and now - self._drawn_at < 0.1:
                return  # redrawing faster than the eye wastes the probe's time
            filled = self.WIDTH * done // max(self.total, 1)
            bar = "#" * filled + "." * (self.WIDTH - filled)
            self.stream.write(f"\r[{bar}] {self._text(done, baud, found)}\x1b[K")
            self._open, self._drawn_at = True, now
        elif done * 10 >= self._next_step * self.total or done == self.total:
            self.stream.write(f"{PREFIX}: {100 * done // max(self.total, 1)}% {self._text(done, baud, found)}\n")
            self._next_step = 10 * done // max(self.total, 1) + 1
        self.stream.flush()

    def close(self) -> None:
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False


def format_ids(ids: tuple[int, ...]) -> str:
    """``(1, 2, 3, 5)`` -> ``1-3,5``."""
    runs: list[list[int]] = []
    for unit in ids:
        if runs and unit == runs[-1][1] + 1:
            runs[-1][1] = unit
        else:
            runs.append([unit, unit])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def print_table(found: list[Found], out: TextIO) -> None:
    """protocol, baud, framing, address and the kind of answer, one row per device."""
    head = ("protocol", "baud", "framing", "address", "answer")
    rows = [head] + [(f.protocol, str(f.baud), f.framing, f.address, f.answer) for f in found]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head) - 1)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1], file=out)


def _tried(plan: ScanPlan) -> str:
    ids = f" ids {format_ids(plan.ids)}" if plan.modbus else " wildcard read-address"
    bauds = ", ".join(map(str, plan.bauds))
    return f"{plan.protocol}{ids} at {bauds} baud {plan.framing}, {plan.timeout_s:g} s per probe"


def _report(scanner: Scanner, out: TextIO) -> None:
    found = list(scanner.found.values())
    if found:
        print_table(found, out)
    for note in scanner.notes:
        print(f"note: {note}", file=out)
    if found:
        print(f"{len(found)} device(s) answered on {scanner.plan.port} "
              f"({scanner.probes} probe(s) in {scanner.elapsed_s:.1f} s)", file=out)


# -- the verb -----------------------------------------------------------------------------------

def _fail(line: str, code: int = 1) -> int:
    print(f"{PREFIX}: {line}", file=sys.stderr)
    return code


def _check_port(plan: ScanPlan, force: bool) -> str | None:
    """A refusal line, or None (after a warning when ``force`` overrides a busy port)."""
    problem, locked = port_problem(plan.port)
    if problem:
        return problem
    procs = holders(plan.port)
    if procs or locked:
        who, fix = _busy(plan.port, procs)
        if not force:
            return f"{who}: {fix}, or scan anyway with --force"
        print(f"{PREFIX}: warning: {who}; scanning anyway (--force): its traffic and ours "
              "will garble each other", file=sys.stderr)
    return None


def cmd_scan(args: argparse.Namespace) -> int:
    """The ``scan`` verb: 0 something answered, 1 nothing did or the port is unusable, 2 bad usage."""
    from ..errors import LinkError

    try:
        plan = make_plan(args)
    except UsageError as exc:
        return _fail(str(exc), 2)
    refusal = _check_port(plan, args.force)
    if refusal:
        return _fail(refusal)
    scanner = Scanner(plan)
    bar = ProgressBar(plan.total, sys.stderr)
    try:
        scanner.run(bar)
    except LinkError as exc:
        bar.close()
        _report(scanner, sys.stdout)
        return _fail(str(exc).removeprefix("bus scan: "))
    except KeyboardInterrupt:
        bar.close()
        _report(scanner, sys.stdout)
        return _fail(f"interrupted after {scanner.probes} of {plan.total} probes; what answered so far is above")
    bar.close()
    _report(scanner, sys.stdout)
    if not scanner.found:
        return _fail(f"nothing answered on {plan.port}: tried {_tried(plan)}; check the wiring "
                     "(A/B swapped?), power, termination and --parity")
    return 0
