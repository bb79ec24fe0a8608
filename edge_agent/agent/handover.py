"""``config.apply``'s hand-over from the command worker to the supervisor: one way, one apply at a time.

The command worker's side is ``submit`` (an agent's ``AgentView.apply_config``, bound to the
settings that agent runs): it checks the new config and writes it (``config.apply``: prepare,
install), then posts a ``Restart`` here and returns None: the result comes later. A config equal
to the running one is answered at once (``{"changed": false}``); a refusal is raised at once, as
any op's. The worker never calls the supervisor, and nothing here calls back into the command
service: the supervisor ``take``s the posted restart on its own thread, restarts the agent (whose
service stops with it) and, when the apply is over, hands its one result to ``conclude``, which
publishes it through the agent that runs then, writes its audit row and lets the next apply in.

Between ``submit`` and ``conclude`` (or from ``hold``, for an apply the previous run left
unfinished) another ``config.apply`` is refused ``not_allowed``.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..commands.ledger import Ledger, ledger_path
from ..commands.types import Command, CommandRejected, result
from ..config import apply as config_apply
from ..settings import Settings

__all__ = ["Restart", "ApplyHandover"]

log = logging.getLogger("edge_agent")

Publish = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class Restart:
    """Restart the agent on ``settings``; ``pending`` (its record on disk) is on trial until it concludes."""

    pending: config_apply.PendingApply
    settings: Settings


class ApplyHandover:
    """The mailbox between the command worker and the supervisor (module docstring)."""

    def __init__(self, state_dir: Path, clock: Callable[[], float] = time.time) -> None:
        self._state_dir = Path(state_dir)  # config.apply never changes it (prepare refuses)
        self._clock = clock
        self._lock = threading.Lock()
        self._posted: Restart | None = None
        self._busy: str | None = None  # the id of the apply under way (posted, on trial, or resumed)

    # -- the command worker's side --------------------------------------------------------------
    def submit(self, command: Command, current: Settings) -> dict[str, Any] | None:
        """Check and write the new config, then post the restart (None: the result comes later)."""
        with self._lock:
            if self._busy is not None:
                raise CommandRejected("not_allowed", f"config.apply {self._busy} is still under way; "
                                      "send again after its result", cmd_id=command.id, signer=command.signer)
            self._busy = command.id
        try:
            text, new = config_apply.prepare(command, current)
            if current.source is not None and config_apply.sha256_file(current.source) == \
                    config_apply.sha256_text(text):
                self.release()
                return {"changed": False, "config": current.source.name}
            pending = config_apply.install(command, current, text, now_ms=int(self._clock() * 1000))
        except BaseException:
            self.release()
            raise
        with self._lock:
            self._posted = Restart(pending, new)
        return None

    # -- the supervisor's side --------------------------------------------------------------------
    def take(self) -> Restart | None:
        """The restart posted since the last look, if any."""
        with self._lock:
            posted, self._posted = self._posted, None
        return posted

    def hold(self, cmd_id: str) -> None:
        """An apply the previous run left unfinished is under way until it concludes."""
        with self._lock:
            self._busy = cmd_id

    def release(self) -> None:
        with self._lock:
            self._busy = None

    def conclude(self, pending: config_apply.PendingApply, publish: Publish | None, *, ok: bool,
                 code: str | None = None, message: str = "", data: dict[str, Any] | None = None) -> None:
        """The apply's one result, published through ``publish`` (the running agent's uplink), its
        audit row, and the record gone: the apply is over and the next may come."""
        answer = result(pending.cmd_id, ok, int(self._clock() * 1000), code=code, message=message, data=data)
        if publish is not None:
            publish(answer)
        self._audit(pending, ok, code, message if not ok else f"applied; uplink connected after "
                    f"{(data or {}).get('connected_after_ms')} ms")
        config_apply.clear_pending(self._state_dir)
        self.release()

    def _audit(self, pending: config_apply.PendingApply, ok: bool, code: str | None, detail: str) -> None:
        try:
            with Ledger(ledger_path(self._state_dir)) as ledger:
                ledger.audit("command", actor=pending.signer, cmd_id=pending.cmd_id, op="config.apply",
                             outcome="done" if ok else "failed", code=code, detail=detail)
        except Exception as exc:  # the result is out already; the missing row is logged
            log.error("config.apply %s: cannot write the audit log (%s: %s)", pending.cmd_id,
                      type(exc).__name__, exc)
