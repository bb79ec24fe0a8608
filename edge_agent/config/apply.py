"""``config.apply``: a whole new config from the platform, checked, written atomically, rolled back.

The command's ``args`` carry the new config as YAML text: ``{"config": "<yaml text>"}``. Steps,
each of which either completes or leaves the running config untouched:

1. ``prepare``: checked exactly as ``edge-agent check`` checks a file (as if it were the running
   config's file, so relative paths mean the same); any problem refuses the command with
   ``bad_request`` and the first problem lines (``config.apply:LINE: key.path: message``). A change
   of ``gateway.id``, ``gateway.state_dir`` or ``buffer.path`` is refused with ``not_allowed``:
   buffered data, ids, keys and the replay cache live there and would be left behind. The key
   files the new config names (privacy, trusted command keys) must load, or ``bad_request``.
2. ``install``: the running file is copied to ``FILE.1`` (older copies shift to ``FILE.2`` ...,
   ``commands.config_backups`` kept), then the pending-apply record ``{state_dir}/config-apply.json``
   is written (command id, signer, backup, SHA-256 of the new text, deadline), then the new text
   replaces the file (temp file, fsync, rename, fsync of the directory).
3. The daemon (``supervisor.Supervisor``) restarts the agent with the new settings. The result is
   sent once: ``ok`` when the new uplink has connected, or ``rolled_back`` after ``restore`` put
   the backup back and the previous config runs again (the failed text is kept as ``FILE.failed``).
   The record is removed only after that result is handed to the uplink.

A record found at start means the agent stopped during an apply (crash, power cut, systemd stop):
the apply is never confirmed after the fact; the backup is restored when the new file is in place,
and the result says ``rolled_back``. No I/O but the config's directory and the record.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..commands.types import Command, CommandRejected
from .schema import check_text
from ..settings import Settings

__all__ = ["PENDING_NAME", "PendingApply", "prepare", "install", "restore", "read_pending", "clear_pending",
           "pending_path", "sha256_file", "sha256_text", "write_atomic", "describe"]

log = logging.getLogger("edge_agent.config_apply")

PENDING_NAME = "config-apply.json"
SHOWN_AS = "config.apply"  # how problems name the text: config.apply:12: mqtt.port: ...
MAX_PROBLEMS_SHOWN = 3
MAX_MESSAGE = 600


@dataclass(frozen=True)
class PendingApply:
    """An apply in progress, as written to ``{state_dir}/config-apply.json``."""

    cmd_id: str
    signer: str
    config: Path  # the file replaced
    backup: Path  # the previous config, restored on rollback
    sha256: str  # of the new file's bytes: tells whether the new config ever landed
    deadline_ms: int  # wall clock: the new uplink must be connected by then
    rollback_after_s: float
    started_ms: int

    def to_json(self) -> bytes:
        fields = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}
        return json.dumps({"v": 1, **fields}, sort_keys=True).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> "PendingApply":
        obj = json.loads(data)
        return cls(cmd_id=str(obj["cmd_id"]), signer=str(obj["signer"]), config=Path(obj["config"]),
                   backup=Path(obj["backup"]), sha256=str(obj["sha256"]), deadline_ms=int(obj["deadline_ms"]),
                   rollback_after_s=float(obj["rollback_after_s"]), started_ms=int(obj["started_ms"]))


def prepare(command: Command, current: Settings) -> tuple[str, Settings]:
    """The new config's text and settings, or ``CommandRejected`` saying why it cannot be applied."""
    text = command.args.get("config")
    if not isinstance(text, str) or not text.strip():
        raise CommandRejected("bad_request", 'config.apply needs args {"config": "<the whole new config as '
                              'YAML text>"}', cmd_id=command.id, signer=command.signer)
    if current.source is None:
        raise CommandRejected("not_allowed", "the running config was not read from a file; nothing to replace",
                              cmd_id=command.id, signer=command.signer)
    new, problems = check_text(text, current.source, shown_as=SHOWN_AS)
    if problems or new is None:
        shown = "; ".join(map(str, problems[:MAX_PROBLEMS_SHOWN]))
        more = f" (+{len(problems) - MAX_PROBLEMS_SHOWN} more)" if len(problems) > MAX_PROBLEMS_SHOWN else ""
        raise CommandRejected("bad_request", _clip(f"invalid config: {shown}{more}"),
                              cmd_id=command.id, signer=command.signer)
    for key, old_value, new_value in (("gateway.id", current.gateway.id, new.gateway.id),
                                      ("gateway.state_dir", _real(current.gateway.state_dir),
                                       _real(new.gateway.state_dir)),
                                      ("buffer.path", _real(current.buffer.path), _real(new.buffer.path))):
        if old_value != new_value:
            raise CommandRejected("not_allowed", f"{key} cannot be changed by config.apply (buffered data, ids "
                                  "and keys would be left behind); change it on the gateway",
                                  cmd_id=command.id, signer=command.signer)
    _check_keys(command, new)
    return text, new


def _real(path: Path) -> Path:
    """The file a path names, whatever its spelling (``..``, a symlink): the same file is no change."""
    return Path(os.path.realpath(path))


def _check_keys(command: Command, new: Settings) -> None:
    """The key files the new config names load: a missing one would only fail after the restart."""
    from ..privacy.keys import KeyFileError
    from ..privacy.stage import Privacy
    from ..privacy.seal import SealError

    try:
        Privacy.load(new.privacy, overrides=new.privacy_overrides)
        if new.commands.enabled:
            from ..commands.signing import SigningKeyError, load_public_key

            try:
                for key in new.commands.keys:
                    load_public_key(key.public_key_file)
            except SigningKeyError as exc:
                raise CommandRejected("bad_request", _clip(str(exc)), cmd_id=command.id,
                                      signer=command.signer) from None
    except (KeyFileError, SealError) as exc:
        raise CommandRejected("bad_request", _clip(str(exc).replace("-c CONFIG", f"-c {new.source}")),
                              cmd_id=command.id, signer=command.signer) from None


def install(command: Command, current: Settings, text: str, *, now_ms: int | None = None) -> PendingApply:
    """Back up the running file, record the apply, write the new text; ``CommandRejected("internal")``
    when a file cannot be written (the running config is then unchanged)."""
    assert current.source is not None
    config = current.source
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    data = text.encode("utf-8")
    try:
        backup = _rotate(config, current.commands.config_backups)
        pending = PendingApply(cmd_id=command.id, signer=command.signer, config=config, backup=backup,
                               sha256=sha256_text(text),
                               deadline_ms=now_ms + int(current.commands.rollback_after_s * 1000),
                               rollback_after_s=current.commands.rollback_after_s, started_ms=now_ms)
        write_atomic(pending_path(current.gateway.state_dir), pending.to_json(), 0o600)
        write_atomic(config, data, _mode(config))
    except OSError as exc:
        raise CommandRejected("internal", _clip(f"cannot write the config: {exc.strerror or exc} "
                                                f"({getattr(exc, 'filename', None) or config})"),
                              cmd_id=command.id, signer=command.signer) from None
    log.info("config.apply %s: %s written (previous kept as %s)", command.id, config, backup.name)
    return pending


def restore(pending: PendingApply) -> bool:
    """Put the backup back over the config file (the new text kept as ``FILE.failed``). False when
    the file already differs from the applied text (the new config never landed, or is restored)."""
    if sha256_file(pending.config) != pending.sha256:
        return False
    failed = pending.config.with_name(pending.config.name + ".failed")
    write_atomic(failed, pending.config.read_bytes(), 0o600)
    write_atomic(pending.config, pending.backup.read_bytes(), _mode(pending.config))
    log.warning("config.apply %s: previous config restored from %s", pending.cmd_id, pending.backup.name)
    return True


def pending_path(state_dir: Path) -> Path:
    return Path(state_dir) / PENDING_NAME


def read_pending(state_dir: Path) -> PendingApply | None:
    """The record of an apply in progress, or None. An unreadable record is logged and removed:
    it was never completed (it is written atomically), so no apply depended on it."""
    path = pending_path(state_dir)
    try:
        return PendingApply.from_json(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.error("config.apply: ignoring an unreadable %s (%s)", path, exc)
        clear_pending(state_dir)
        return None


def clear_pending(state_dir: Path) -> None:
    try:
        pending_path(state_dir).unlink()
    except FileNotFoundError:
        pass
    _fsync_dir(Path(state_dir))


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_file(path: Path) -> str | None:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """``path`` holds ``data`` entirely or keeps its old content, even across a power cut."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _rotate(config: Path, keep: int) -> Path:
    """``FILE.1`` = the running file; older backups shift up; those past ``keep`` go."""
    for old in config.parent.glob(config.name + ".*"):
        suffix = old.name[len(config.name) + 1:]
        if suffix.isdigit() and int(suffix) >= keep:
            old.unlink()
    for k in range(keep - 1, 0, -1):
        src = config.with_name(f"{config.name}.{k}")
        if src.exists():
            os.replace(src, config.with_name(f"{config.name}.{k + 1}"))
    backup = config.with_name(config.name + ".1")
    write_atomic(backup, config.read_bytes(), _mode(config))
    return backup


def _mode(path: Path) -> int:
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        return 0o644


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE - 1] + "…"


def describe(pending: PendingApply) -> dict[str, Any]:
    """What an ``ok`` result's data says about the apply."""
    return {"config": pending.config.name, "backup": pending.backup.name, "sha256": pending.sha256}
