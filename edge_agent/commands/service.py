"""Platform commands on the gateway: queue, verify, authorise, execute, answer, audit.

``R/cmd`` payloads arrive on paho's network thread (``Uplink(on_command=service.submit)``);
``submit`` only queues them (bounded: ``QUEUE_MAX`` messages; a payload over
``commands.max_bytes`` is queued as its size alone and refused ``too_large`` unread; a full
queue drops the message and counts it). One worker thread then runs ``handle`` for each, in
order:

1. **verify** (``command_verify.CommandVerifier``): size, JSON, schema, signature by a trusted
   key, validity times, replay. A refusal is answered with its code and audited ``rejected``.
2. **authorise** (here, by the op's row in ``optable.OP_TABLE``): the op enabled in
   ``commands.ops``; a device op names a configured, enabled device; ``device.write`` names a
   point in that device's ``writable`` and a value its ``WriteRule`` allows; the other ops name
   no target; ``args`` has the op's shape. Refusals: ``not_allowed`` (or ``bad_request`` for a
   malformed request), audited ``rejected``.
3. **audit** ``accepted`` *before* acting: if the audit log cannot be written, nothing is done
   (``internal``). A command never acts unrecorded.
4. **execute** (the row's ``run``: a ``command_ops.CommandOps`` method), then audit ``done``
   or ``failed``, and hand the result to ``publish_result`` (``Uplink.publish_result``:
   ``R/cmd/result``, QoS 1).

Other dialects (``mqtt.dialect``, docs/dialects.md): ``submit`` gets the dialect's ``Inbound``.
One that carries our signed command (``signed``) is verified as above. One without a signature
(``unsigned``: ThingsBoard RPC, Sparkplug DCMD) is refused ``bad_signature`` unless
``commands.unsigned.<dialect>`` lists its op; allowed, it is authorised, audited (actor
``unsigned:<dialect>``) and executed like any other. Its result goes back with the ``Inbound``,
so the dialect answers where its request came from.

``config.apply`` is handed over to the supervisor (the view's ``apply_config``,
``agent/handover.py``): when it returns None the supervisor publishes the result itself later
(after the new uplink connected, or after a rollback) and audits the outcome; here it is
audited ``accepted`` only.

``handle`` never raises: whatever goes wrong becomes a result (``internal`` for a bug, by its
type name only). Results and audit rows carry command ids, op names, device and point names and
codes, never a value read from a device; a written value appears in the audit detail only when
it is a number, a boolean or a short word (``open``), as ``WriteRule`` lists allow.

Threads: paho's network thread calls ``submit``; the worker (``commands``) runs everything
else; a ``buffer.replay`` runs on a thread of its own (``command_ops``).
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
from typing import Any, Callable, Mapping, Protocol

from .ops import CommandOps
from .optable import OP_TABLE, name as _name
from .types import Command, CommandRejected, result
from .view import AgentView
from ..settings import Settings

__all__ = ["CommandService", "Verifier", "AuditLog", "QUEUE_MAX", "UNVERIFIED"]

log = logging.getLogger("edge_agent.commands")

QUEUE_MAX = 64  # messages waiting for the worker; more are dropped (and counted)
LOG_REFUSALS_PER_MIN = 10  # refusals logged at WARNING per minute; the rest at DEBUG (all are audited)
UNVERIFIED = "unverified"  # the audit actor of a message whose signature did not verify
_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


class _Oversize(int):
    """A queued payload's size when it was too large to keep."""


class Verifier(Protocol):
    """``command_verify.CommandVerifier``: a ``Command``, or ``CommandRejected``."""

    def verify(self, payload: bytes) -> Command: ...


class AuditLog(Protocol):
    """What the service needs of ``ledger.Ledger``."""

    def audit(self, kind: str, *, actor: str, cmd_id: str | None = None, op: str | None = None,
              target: str | None = None, outcome: str, code: str | None = None, detail: str = "") -> int: ...

    def close(self) -> None: ...


class CommandService:
    """Takes command payloads, answers each with a result (module docstring)."""

    def __init__(self, settings: Settings, verifier: Verifier, ledger: AuditLog, ops: CommandOps, *,
                 clock: Callable[[], float] = time.time, queue_max: int = QUEUE_MAX,
                 owns_ledger: bool = False) -> None:
        self.settings = settings
        self._verifier = verifier
        self._ledger = ledger
        self._ops = ops
        self._clock = clock
        self._owns_ledger = owns_ledger
        self._max_bytes = settings.commands.max_bytes
        self._queue: queue.Queue[bytes | _Oversize | None] = queue.Queue(maxsize=max(1, queue_max))
        self._publish: Callable[[dict[str, Any]], None] | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self.received = 0
        self.dropped = 0  # queue full
        self._dropped_audited = 0
        self.unhandled = 0  # still queued when the service stopped
        self.handled = 0
        self._log_window = (0.0, 0)  # (monotonic start of the minute, refusals logged in it)

    @classmethod
    def build(cls, settings: Settings, view: AgentView) -> "CommandService":
        """The service of a running agent: the ledger ``{state_dir}/commands.db`` (opened here,
        closed by ``stop``), the verifier with the configured keys, the ops on the agent's ``view``.
        Raises the verifier's clear error when a key file cannot be used."""
        from .verify import CommandVerifier
        from .ledger import Ledger, ledger_path

        ledger = Ledger(ledger_path(settings.gateway.state_dir))
        ledger.open()
        try:
            verifier = CommandVerifier.from_settings(settings.commands, ledger)
        except BaseException:
            ledger.close()
            raise
        return cls(settings, verifier, ledger, CommandOps(view), owns_ledger=True)

    # -- the network thread's side ------------------------------------------------------------
    def submit(self, payload: Any) -> None:
        """Queue one ``R/cmd`` payload, or a dialect's ``Inbound``; returns at once (paho's network
        thread calls this)."""
        with self._lock:
            self.received += 1
        size = len(payload.signed or b"") if _is_inbound(payload) else len(payload)
        item: Any = _Oversize(size) if size > self._max_bytes else (
            payload if _is_inbound(payload) else bytes(payload))
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            with self._lock:
                self.dropped += 1
                first = self.dropped - self._dropped_audited == 1
            log.log(logging.WARNING if first else logging.DEBUG, "commands: %d messages wait already; "
                    "dropping one (%d dropped so far)", self._queue.maxsize, self.dropped)

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self, publish_result: Callable[..., None]) -> None:
        """Start the worker; results go to ``publish_result(result, reply)`` (``Uplink.publish_result``;
        ``reply``: the command's ``Inbound`` in another dialect, else None)."""
        if self._thread is not None:
            raise RuntimeError("command service already started")
        self._publish = publish_result
        self._thread = threading.Thread(target=self._run, name="commands", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Finish the command in hand (queued ones are not handled: one audit row counts them),
        end a replay, close the ledger when ``build`` opened it. May be called from the worker itself
        (a ``config.apply`` that restarts the agent at once): it then does not wait for itself."""
        self._stopping.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            left = 0
            try:
                while True:
                    left += self._queue.get_nowait() is not None
            except queue.Empty:
                pass
            self.unhandled += left
            try:
                self._queue.put_nowait(None)  # wakes a worker waiting for work
            except queue.Full:
                pass  # refilled meanwhile: the worker sees _stopping after its current message
            if thread is not threading.current_thread():
                thread.join(timeout)
                if thread.is_alive():
                    log.warning("commands: the worker did not stop within %.1f s", timeout)
        self._ops.stop()
        self._audit_drops()
        if self.unhandled:
            self._write_audit(actor=UNVERIFIED, outcome="rejected",
                              detail=f"{self.unhandled} message(s) on R/cmd not handled: the agent stopped")
        if self._owns_ledger:
            self._ledger.close()

    def _run(self) -> None:
        while not self._stopping.is_set():
            payload = self._queue.get()
            if payload is None or self._stopping.is_set():
                self.unhandled += payload is not None
                return
            self._audit_drops()
            if isinstance(payload, _Oversize):  # the verifier's first rule, without keeping the bytes
                answer = self._refused(CommandRejected("too_large", f"payload is {int(payload)} bytes, more than "
                                                                    f"the {self._max_bytes} allowed"), None)
            else:
                answer = self.handle(payload)
            if answer is not None and self._publish is not None:
                try:
                    if _is_inbound(payload) and payload.dialect != "edge":
                        self._publish(answer, payload)
                    else:
                        self._publish(answer)
                except Exception as exc:  # the worker outlives a failing uplink
                    log.error("commands: the result of %s could not be queued: %s", answer.get("id"), exc)

    # -- one command ----------------------------------------------------------------------------
    def handle(self, payload: Any) -> dict[str, Any] | None:
        """Verify, authorise, execute, audit; the result (None: the supervisor answers later). Never raises."""
        with self._lock:
            self.handled += 1
        try:
            if _is_inbound(payload) and payload.signed is None:
                cmd = self._unsigned(payload)
            else:
                cmd = self._verifier.verify(payload.signed if _is_inbound(payload) else payload)
        except CommandRejected as exc:
            return self._refused(exc, None)
        except Exception as exc:  # a verifier bug: refuse, never act
            log.error("commands: verification failed unexpectedly (%s)", type(exc).__name__)
            return self._refused(CommandRejected("internal", "the command could not be checked"), None)
        try:
            self.authorise(cmd)
        except CommandRejected as exc:
            return self._refused(exc, cmd)
        op = OP_TABLE.get(cmd.op)
        if not self._audit(cmd, "accepted", detail=op.summary(cmd) if op is not None else cmd.op):
            return result(cmd.id, False, self._now_ms(), code="internal",
                          message="the audit log cannot be written; the command was not carried out")
        try:
            data = self._execute(cmd)
        except CommandRejected as exc:
            self._audit(cmd, "failed", code=exc.code, detail=exc.message)
            return result(cmd.id, False, self._now_ms(), code=exc.code, message=exc.message)
        except Exception as exc:  # a bug in an op: say which kind, never the message (it may hold a value)
            log.error("commands: %s %s failed unexpectedly (%s)", cmd.op, cmd.id, type(exc).__name__)
            message = f"the gateway failed to carry out the command ({type(exc).__name__})"
            self._audit(cmd, "failed", code="internal", detail=message)
            return result(cmd.id, False, self._now_ms(), code="internal", message=message)
        if data is None:  # config.apply: the supervisor answers when the new config runs (or rolled back)
            return None
        self._audit(cmd, "done", detail=op.done_detail(cmd, data) if op is not None else cmd.op)
        return result(cmd.id, True, self._now_ms(), data=data)

    def _unsigned(self, inbound: Any) -> Command:
        """A dialect's command without our signature, as a ``Command`` when its op is allowed unsigned
        in that dialect (``commands.unsigned``); CommandRejected otherwise."""
        raw = inbound.unsigned
        cmd_id = _safe_id(raw.get("id")) if isinstance(raw, Mapping) else None
        actor = f"unsigned:{inbound.dialect}"
        if not isinstance(raw, Mapping) or not isinstance(raw.get("op"), str):
            raise CommandRejected("bad_request", f"a {inbound.dialect} request this gateway cannot read",
                                  cmd_id=cmd_id, signer=actor)
        op, target, args = raw["op"], raw.get("target"), raw.get("args") or {}
        if op not in self.settings.commands.unsigned.get(inbound.dialect, ()):
            raise CommandRejected("bad_signature", f"the command carries no signature and {_name(op)} is not "
                                  f"allowed unsigned in the {inbound.dialect} dialect (commands.unsigned)",
                                  cmd_id=cmd_id, signer=actor)
        if cmd_id is None or (target is not None and not isinstance(target, str)) or not isinstance(args, dict):
            raise CommandRejected("bad_request", "the request's id, target or arguments have the wrong form",
                                  cmd_id=cmd_id, signer=actor)
        now = self._now_ms()
        return Command(id=cmd_id, op=op, target=target, args=dict(args), iat=now, exp=now, signer=actor,
                       raw=dict(raw))

    def authorise(self, cmd: Command) -> None:
        """Whether this gateway lets ``cmd`` act (module docstring); CommandRejected when not."""
        commands = self.settings.commands
        if cmd.op not in commands.ops:
            raise CommandRejected("not_allowed", f"op {cmd.op} is not enabled on this gateway")
        op = OP_TABLE.get(cmd.op)  # None: enabled yet unknown (a hand-built config), refused when it runs
        if op is None or not op.device:
            if cmd.target is not None:
                raise CommandRejected("bad_request", f"{cmd.op} takes no target")
            if op is not None:
                op.check_args(cmd, None)
            return
        if cmd.target is None:
            raise CommandRejected("bad_request", f"{cmd.op} needs a target device")
        device = next((d for d in self.settings.devices if d.name == cmd.target), None)
        if device is None:
            raise CommandRejected("not_allowed", f"{_name(cmd.target)} is not a device of this gateway")
        if not device.enabled:
            raise CommandRejected("not_allowed", f"device {device.name} is disabled")
        op.check_args(cmd, self.settings.bus(device.bus).is_modbus)
        if op.authorise is not None:
            op.authorise(cmd, device)

    def _execute(self, cmd: Command) -> dict[str, Any] | None:
        op = OP_TABLE.get(cmd.op)
        if op is None:
            raise CommandRejected("unknown_op", f"op {_name(cmd.op)} is not known")
        return op.run(self._ops, cmd)

    # -- results and audit rows -----------------------------------------------------------------
    def _refused(self, exc: CommandRejected, cmd: Command | None) -> dict[str, Any]:
        cmd_id = cmd.id if cmd is not None else _safe_id(exc.cmd_id)
        actor = cmd.signer if cmd is not None else (exc.signer or UNVERIFIED)
        self._write_audit(actor=actor, cmd_id=cmd_id, op=cmd.op if cmd else None,
                          target=cmd.target if cmd else None, outcome="rejected", code=exc.code, detail=exc.message)
        log.log(self._refusal_level(), "commands: %s refused: %s (%s)", cmd_id or "a message", exc.code, exc.message)
        return result(cmd_id, False, self._now_ms(), code=exc.code, message=exc.message)

    def _audit(self, cmd: Command, outcome: str, *, code: str | None = None, detail: str = "") -> bool:
        return self._write_audit(actor=cmd.signer, cmd_id=cmd.id, op=cmd.op, target=cmd.target,
                                 outcome=outcome, code=code, detail=detail)

    def _write_audit(self, **row: Any) -> bool:
        try:
            self._ledger.audit("command", **row)
            return True
        except Exception as exc:
            log.error("commands: cannot write the audit log (%s: %s)", type(exc).__name__, exc)
            return False

    def _audit_drops(self) -> None:
        """One audit row for the messages dropped since the last one (a flood of R/cmd)."""
        with self._lock:
            new = self.dropped - self._dropped_audited
            self._dropped_audited = self.dropped
        if new:
            self._write_audit(actor=UNVERIFIED, outcome="rejected",
                              detail=f"{new} message(s) on R/cmd dropped unread: the queue was full")

    def _refusal_level(self) -> int:
        """WARNING for the first refusals of a minute, DEBUG past ``LOG_REFUSALS_PER_MIN`` (a flood)."""
        start, count = self._log_window
        now = time.monotonic()
        if now - start >= 60:
            start, count = now, 0
        self._log_window = (start, count + 1)
        if count == LOG_REFUSALS_PER_MIN:
            log.warning("commands: more than %d refusals this minute; the rest are logged at DEBUG "
                        "(all are in the audit log)", LOG_REFUSALS_PER_MIN)
        return logging.WARNING if count < LOG_REFUSALS_PER_MIN else logging.DEBUG

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)


def _is_inbound(payload: object) -> bool:
    """A dialect's ``uplink.dialect.Inbound`` (``dialect``, ``signed``, ``unsigned``, ``reply``), not
    raw ``R/cmd`` bytes; told by its shape, since commands sit below the uplink."""
    return not isinstance(payload, (bytes, bytearray, memoryview)) and hasattr(payload, "dialect")


def _safe_id(cmd_id: object) -> str | None:
    """A command id from a message that did not verify, only when it has the id's form."""
    return cmd_id if isinstance(cmd_id, str) and _ID.fullmatch(cmd_id) else None
