"""What each platform command does, once it is verified and authorised (``commands.py`` decides
whether it may; this module only does it). Every op returns the ``data`` of its result or raises
``CommandRejected`` with the code the platform sees; messages name the device, point and cause,
never a value read from a device (docs/commands.md).

- ``ping``: version, uptime, uplink and backlog figures.
- ``poll``: asks the device's bus worker to poll it at its next turn (within about a second);
  the readings follow on telemetry like any other.
- ``write``: through the device's reader, whatever its protocol (``view.PointWriter``):
  ``write(point, value, **extra)`` (``lane`` for a gate). A gate answers with the controller's
  ack; a Modbus reader writes the point and, where the table can be read (coil, holding
  register), reads it back and compares. Silence: ``timeout``; a refusal, a dead link or a
  read-back that differs: ``device_error``.
- ``replay``: counts the buffered rows in an id or time range and republishes them on their
  topics, ids and bodies unchanged, each message marked ``"replay": "<command id>"``, at most
  ``commands.replay_rate`` rows per second, on a thread of its own (one replay at a time): the
  drain keeps publishing live data meanwhile. The result (at once) says how many rows.
- ``apply``: ``config.apply`` is handed over to the supervisor through the view's ``apply_config``
  (``agent/handover.py``: the new config checked and written, then a restart posted).

The ops see the running agent only through ``view.AgentView`` (built by the daemon); tests build
one over fakes.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Any, Callable

from ..buffer.file import BufferError
from ..buffer.stats import read_range, replay_span
from ..errors import DeviceFault, LinkError, NoResponse
from .types import Command, CommandRejected
from .view import AgentView, PointWriter

__all__ = ["CommandOps", "parse_range"]

log = logging.getLogger("edge_agent.commands")

REPLAY_RETRY_S = 1.0  # a replay waits this long between tries while the uplink is away
REPLAY_GIVE_UP = 30  # tries of one message, while connected, before a replay gives up
MAX_INT = 2**63 - 1
_SAFE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def _name(text: object) -> str:
    """A name from a command, fit for a message: as is when it looks like a name, else elided."""
    return str(text) if isinstance(text, str) and _SAFE.fullmatch(text) else "(unprintable)"


def _int(args: dict[str, Any], key: str) -> int | None:
    value = args.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_INT:
        raise CommandRejected("bad_request", f"args.{key} must be a non-negative integer")
    return value


def parse_range(args: dict[str, Any]) -> tuple[str, int, int]:
    """``{"from_id", "to_id"}`` or ``{"from_ts", "to_ts"}`` (inclusive; ms for times) ->
    ("id" | "ts", low, high). Either end may be left out (from the start, to the end); one
    kind of range only."""
    unknown = sorted(set(args) - {"from_id", "to_id", "from_ts", "to_ts"})
    if unknown:
        raise CommandRejected("bad_request", f"buffer.replay takes from_id/to_id or from_ts/to_ts, "
                                             f"not {', '.join(_name(k) for k in unknown)}")
    ids = (_int(args, "from_id"), _int(args, "to_id"))
    times = (_int(args, "from_ts"), _int(args, "to_ts"))
    by_id, by_ts = ids != (None, None), times != (None, None)
    if by_id == by_ts:
        raise CommandRejected("bad_request", "buffer.replay needs an id range (from_id, to_id) or a time "
                                             "range (from_ts, to_ts), not both")
    kind, (low, high) = ("id", ids) if by_id else ("ts", times)
    low, high = low or 0, MAX_INT if high is None else high
    if low > high:
        raise CommandRejected("bad_request", f"buffer.replay: from_{kind} is after to_{kind}")
    return kind, low, high


class CommandOps:
    """The ops of a running agent (module docstring). ``stop()`` ends a replay in progress."""

    def __init__(self, view: AgentView, *, clock: Callable[[], float] = time.time) -> None:
        self.view = view
        self._clock = clock
        self._stop = threading.Event()
        self._replay_lock = threading.Lock()
        self._replay: threading.Thread | None = None
        self.replayed_rows = 0  # rows republished by replays of this run (tests, logs)

    @property
    def settings(self) -> Any:
        return self.view.settings

    # -- agent.ping ---------------------------------------------------------------------------
    def ping(self) -> dict[str, Any]:
        now_ms = int(self._clock() * 1000)
        started = self.view.started_ms
        data: dict[str, Any] = {"version": self.view.version, "started": started,
                                "uptime_s": max(0, (now_ms - started) // 1000)}
        uplink = self.view.uplink()
        if uplink is not None:
            data["uplink"] = {"connected": uplink.connected, "reconnects": uplink.reconnects}
        try:
            stats = self.view.backlog()
            data["backlog"] = {"count": stats.pending, "bytes": stats.pending_bytes,
                               "oldest_ts": stats.oldest_pending_ts, "by_prio": dict(stats.pending_by_prio)}
        except Exception as exc:  # a ping still answers; the backlog is what it could not read
            log.warning("agent.ping: cannot read the buffer's stats: %s", exc)
            data["backlog"] = None
        return data

    # -- device.poll --------------------------------------------------------------------------
    def poll(self, device: str) -> dict[str, Any]:
        if self.view.request_poll(device):
            return {"requested": True}
        raise CommandRejected("device_error", f"device {device} is not being polled")

    # -- device.write -------------------------------------------------------------------------
    def write(self, device: str, point: str, value: Any, args: dict[str, Any]) -> dict[str, Any]:
        """Write ``value`` to ``point`` of ``device``; ``args`` are the command's (point, value and
        the driver's extras). Authorisation (``writable``) is the caller's, done before this."""
        reader = self.view.reader(device)
        if reader is None:
            raise CommandRejected("device_error", f"device {device} is not running")
        if not isinstance(reader, PointWriter):
            raise CommandRejected("not_allowed", f"driver {self.settings.device(device).driver} of {device} "
                                                 "cannot write")
        extra = {k: v for k, v in args.items() if k not in ("point", "value")}  # shape checked by authorise
        try:
            read_back = reader.write(point, value, **extra)
        except PermissionError as exc:  # the point cannot be written at all
            raise CommandRejected("not_allowed", _line(exc)) from None
        except NoResponse as exc:
            raise CommandRejected("timeout", _line(exc)) from None
        except (DeviceFault, LinkError) as exc:
            raise CommandRejected("device_error", _line(exc)) from None
        except ValueError as exc:  # the driver refused the value or an argument before sending
            raise CommandRejected("bad_request", _line(exc)) from None
        if read_back is not None:
            return {"point": point, "read_back": read_back}
        return {"point": point, "acked": True, **({"lane": extra["lane"]} if "lane" in extra else {})}

    # -- buffer.replay ------------------------------------------------------------------------
    def replay(self, args: dict[str, Any], cmd_id: str) -> dict[str, Any]:
        kind, low, high = parse_range(args)
        bounds = {"from_id": low, "to_id": high} if kind == "id" else {"from_ts": low, "to_ts": high}
        path = self.settings.buffer.path
        with self._replay_lock:
            if self._replay is not None and self._replay.is_alive():
                raise CommandRejected("not_allowed", "a replay is already running; try again when it is done")
            try:
                span = replay_span(path, **bounds)
            except BufferError as exc:
                raise CommandRejected("internal", f"cannot read the buffer: {_line(exc)}") from None
            data: dict[str, Any] = {"rows": span.rows}
            if span.rows == 0:
                return data
            data.update(first_id=span.first_id, last_id=span.last_id)
            times = {"from_ts": low, "to_ts": high} if kind == "ts" else {}
            self._replay = threading.Thread(target=self._replay_main, name=f"replay-{cmd_id}", daemon=True,
                                            args=(cmd_id, span, times))
            self._replay.start()
        return data

    def _replay_main(self, cmd_id: str, span: Any, times: dict[str, int]) -> None:
        try:
            sent = self._republish(cmd_id, span, times)
            log.info("buffer.replay %s: %d of %d row(s) republished", cmd_id, sent, span.rows)
        except Exception as exc:  # the thread ends; live data is unaffected
            log.error("buffer.replay %s failed: %s: %s", cmd_id, type(exc).__name__, exc)

    def _republish(self, cmd_id: str, span: Any, times: dict[str, int]) -> int:
        rate = max(1, int(self.settings.commands.replay_rate))
        page = max(1, min(self.settings.mqtt.batch_max, rate))
        path, cursor, sent, next_at = self.settings.buffer.path, span.first_id - 1, 0, 0.0
        while cursor < span.last_id and not self._stop.is_set():
            rows = read_range(path, after_id=cursor, to_id=span.last_id, limit=page, **times)
            if not rows:
                break
            for kind, bodies in _by_kind(rows):
                # at most `rate` rows per second: n rows, then n/rate seconds before the next message
                if self._stop.wait(max(0.0, next_at - time.monotonic())):
                    return sent
                refused = 0
                while not self._publish(kind, bodies, cmd_id):
                    uplink = self.view.uplink()
                    refused += uplink is not None and uplink.connected
                    if refused >= REPLAY_GIVE_UP:  # connected, yet never acknowledged: too big, or refused
                        log.error("buffer.replay %s: the broker does not take the message with ids %d..%d; "
                                  "giving up", cmd_id, bodies[0]["id"], bodies[-1]["id"])
                        return sent
                    if self._stop.wait(REPLAY_RETRY_S):  # the uplink is away (or stopping): wait
                        return sent
                next_at = time.monotonic() + len(bodies) / rate
                sent += len(bodies)
                self.replayed_rows += len(bodies)
            cursor = rows[-1][0]
        return sent

    def _publish(self, kind: str, bodies: list[dict[str, Any]], cmd_id: str) -> bool:
        return self.view.publish_replay(kind, bodies, cmd_id)

    # -- config.apply -------------------------------------------------------------------------
    def apply(self, command: Command) -> dict[str, Any] | None:
        """The view's ``apply_config(command)``: the data of an ok result now, or None when the
        supervisor publishes the result itself later (after the new uplink connected, or rolled back)."""
        if self.view.apply_config is None:
            raise CommandRejected("not_allowed", "config.apply is not available on this gateway")
        return self.view.apply_config(command)

    # -- lifecycle ----------------------------------------------------------------------------
    def stop(self, timeout: float = 2.0) -> None:
        """End a replay in progress (what it has not republished yet is not republished)."""
        self._stop.set()
        thread = self._replay
        if thread is not None:
            thread.join(timeout)


def _line(exc: BaseException) -> str:
    """One line of an exception's message, bounded (bus and driver messages carry no values)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _by_kind(rows: list[tuple[int, str, dict]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """Consecutive rows of one kind, in id order: one message each."""
    groups: list[tuple[str, list[dict[str, Any]]]] = []
    for _, kind, body in rows:
        if groups and groups[-1][0] == kind:
            groups[-1][1].append(body)
        else:
            groups.append((kind, [body]))
    return groups

