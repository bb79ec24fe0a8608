"""The op table: every op a command may name, once, with all the service needs to know of it.

Each row says whether the target is a device (else the op takes none), how its ``args`` are
checked (before the ``accepted`` audit row, so a malformed request is ``rejected``; what only
the op can judge it refuses after, as ``failed``), what further authorisation a device op needs
(``device.write``: the point and value against ``devices.writable``), what it does (a
``CommandOps`` method) and how its audit rows read. The floor's ``settings.OPS`` holds the same
names, in the same order (the vocabulary ``commands.ops`` is checked against, with no import of
this room); the table refuses to load when the two differ.

Audit details carry op, point and range names, and a written value only when it is a number, a
boolean or a short word (``open``), as ``WriteRule`` lists allow; never a value read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from ..settings import OPS, DeviceSettings
from .ops import parse_range
from .types import Command, CommandRejected

if TYPE_CHECKING:
    from .ops import CommandOps

__all__ = ["Op", "OP_TABLE", "WRITE_EXTRA_ARGS", "name"]

WRITE_EXTRA_ARGS = ("lane",)  # device.write arguments besides point and value (for readers with write())
_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_WORD = re.compile(r"[a-z_]{1,16}")

CheckArgs = Callable[[Command, "bool | None"], None]  # (command, target on a Modbus bus?) -> None or raises
Authorise = Callable[[Command, DeviceSettings], None]
Run = Callable[["CommandOps", Command], "dict[str, Any] | None"]


def name(text: object) -> str:
    """A name from a command, fit for a message: as is when it looks like a name, else elided."""
    return str(text) if isinstance(text, str) and _ID.fullmatch(text) else "(unprintable name)"


def _value(value: object) -> str:
    """A written value for the audit detail, when it cannot be personal data (else elided)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str) and _WORD.fullmatch(value):
        return value
    return "(value)"


# -- args, checked before the accepted row ------------------------------------------------------
def _no_args(cmd: Command, modbus: bool | None) -> None:
    if cmd.args:
        raise CommandRejected("bad_request", f"{cmd.op} takes no args, not "
                                             f"{', '.join(name(k) for k in sorted(cmd.args))}")


def _range_args(cmd: Command, modbus: bool | None) -> None:
    parse_range(cmd.args)


def _config_args(cmd: Command, modbus: bool | None) -> None:
    unknown = sorted(set(cmd.args) - {"config"})
    if unknown:
        raise CommandRejected("bad_request", f"config.apply takes only config, not "
                                             f"{', '.join(name(k) for k in unknown)}")


def _write_args(cmd: Command, modbus: bool | None) -> None:
    args = cmd.args
    extra = sorted(set(args) - {"point", "value"})
    if modbus and extra:
        raise CommandRejected("bad_request", f"a Modbus write takes only point and value, "
                                             f"not {', '.join(name(k) for k in extra)}")
    unknown = [k for k in extra if k not in WRITE_EXTRA_ARGS]
    if unknown:
        raise CommandRejected("bad_request", f"device.write takes point, value and {', '.join(WRITE_EXTRA_ARGS)}, "
                                             f"not {', '.join(name(k) for k in unknown)}")
    lane = args.get("lane")
    if "lane" in args and (isinstance(lane, bool) or not isinstance(lane, int) or lane < 0):
        raise CommandRejected("bad_request", "args.lane must be a non-negative integer")


# -- a device op's own authorisation ----------------------------------------------------------------
def _writable(cmd: Command, device: DeviceSettings) -> None:
    """``device.write``: a point the device's ``writable`` lists, with a value its rule allows."""
    point, value = cmd.args.get("point"), cmd.args.get("value")
    if not isinstance(point, str) or "value" not in cmd.args:
        raise CommandRejected("bad_request", "device.write needs args.point (a name) and args.value")
    rule = device.writable.get(point)
    if rule is None:
        raise CommandRejected("not_allowed", f"{device.name}: point {name(point)} is not writable "
                                             "by commands (devices.writable)")
    if not rule.allows(value):
        raise CommandRejected("not_allowed", f"{device.name}: that value is not allowed for {point} "
                                             "(devices.writable)")


# -- audit details ------------------------------------------------------------------------------------
def _write_summary(cmd: Command) -> str:
    lane = cmd.args.get("lane")
    return f"{cmd.args['point']}={_value(cmd.args['value'])}" + (f" lane {_value(lane)}" if lane is not None else "")


def _write_done(cmd: Command, data: dict[str, Any]) -> str:
    return _write_summary(cmd) + (" acked" if data.get("acked") else f" read back: {data.get('read_back')}")


def _range_summary(cmd: Command) -> str:
    return " ".join(f"{k}={_value(v)}" for k, v in sorted(cmd.args.items()))


def _range_done(cmd: Command, data: dict[str, Any]) -> str:
    return f"replaying {data.get('rows', 0)} row(s)" + (
        f" ids {data['first_id']}..{data['last_id']}" if data.get("rows") else "")


@dataclass(frozen=True)
class Op:
    """One op (module docstring). ``summary`` is the ``accepted`` row's detail, ``done`` the
    ``done`` row's (by default the summary again)."""

    name: str
    device: bool  # its target is a device of this gateway; else it takes no target
    check_args: CheckArgs
    run: Run
    authorise: Authorise | None = None
    summary: Callable[[Command], str] = lambda cmd: cmd.op
    done: Callable[[Command, dict[str, Any]], str] | None = None

    def done_detail(self, cmd: Command, data: dict[str, Any]) -> str:
        return self.done(cmd, data) if self.done is not None else self.summary(cmd)


OP_TABLE: dict[str, Op] = {op.name: op for op in (
    Op("agent.ping", device=False, check_args=_no_args, run=lambda ops, cmd: ops.ping()),
    Op("device.poll", device=True, check_args=_no_args, run=lambda ops, cmd: ops.poll(cmd.target)),
    Op("device.write", device=True, check_args=_write_args, authorise=_writable,
       run=lambda ops, cmd: ops.write(cmd.target, cmd.args["point"], cmd.args["value"], cmd.args),
       summary=_write_summary, done=_write_done),
    Op("config.apply", device=False, check_args=_config_args, run=lambda ops, cmd: ops.apply(cmd),
       summary=lambda cmd: "config apply requested"),
    Op("buffer.replay", device=False, check_args=_range_args, run=lambda ops, cmd: ops.replay(cmd.args, cmd.id),
       summary=_range_summary, done=_range_done),
)}

if tuple(OP_TABLE) != OPS:  # a new op goes into both, in the same place
    raise RuntimeError(f"commands/optable.py lists {', '.join(OP_TABLE)} but settings.OPS lists {', '.join(OPS)}: "
                       "add the op to both, in the same order")
