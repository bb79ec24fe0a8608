"""The files a valid config names that ``run`` will read, and whether they are there: warnings.

``run`` reads key, password and TLS files at start and refuses to start when one is absent,
so ``check`` on the gateway looks for each (a ``stat`` and an access test: never a device,
a port or the broker) and reports what it finds as a warning at the line that names the file::

    gateway.yaml:41: privacy.key_file: warning: /etc/edge-agent/keys/pseudonym.key does not exist;
        'run' refuses to start without it: 'edge-agent keys init -c gateway.yaml' creates it

Warnings, not errors: the config itself is sound, and on a bench or a build machine the files
come later. ``check --strict`` (installers, on the gateway) fails on them. Only the files
``run`` reads are looked for, on the same rules: the pseudonym key when some action
pseudonymizes (``Privacy.load``), the TLS files when TLS is enabled, the page's password and TLS
files when the config has ``web``. Whether the *agent's* user may read them, and their modes, is
``doctor``'s business: this is the user running ``check``.

The default ``privacy.key_file`` (``{state_dir}/keys/pseudonym.key``) is reported at the line
that decides where it is: ``gateway.state_dir``, else ``gateway``.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..settings import Settings
from .source import Node, Problem

__all__ = ["file_warnings"]


@dataclass(frozen=True)
class _Named:
    """A file the config names: where (key path and line), and how to provide it."""

    path: Path
    key: str
    line: int | None
    fix: str
    note: str = ""


def file_warnings(settings: Settings, root: Node, file: str) -> list[Problem]:
    """One warning per named file that is absent, empty, not a file or unreadable; ``file`` is the
    config as given on the command line (it names the file and goes into the fixes)."""
    out = []
    for named in _named(settings, root, file):
        why = _why_not(named, file)
        if why:
            out.append(Problem(file, named.line, named.key, why, warning=True))
    return sorted(out, key=lambda p: p.line or 0)


def _why_not(named: _Named, file: str) -> str | None:
    path, note = named.path, named.note
    try:
        st = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return f"{path} does not exist{note}; 'run' refuses to start without it: {named.fix}"
    except PermissionError:
        return f"cannot tell whether {path} exists: {_user()} may not look into its directory; {_instead(file)}"
    except OSError as exc:
        return f"cannot look at {path}: {exc.strerror or exc}"
    if not stat.S_ISREG(st.st_mode):
        return f"{path} is not a file{note}; 'run' refuses to start: point {named.key} at the file itself"
    if not os.access(path, os.R_OK):
        return f"{path} is not readable by {_user()}; {_instead(file)}"
    if st.st_size == 0:
        return f"{path} is empty{note}; 'run' refuses to start: {named.fix}"
    return None


def _instead(file: str) -> str:
    """Where a permission question goes: ``check`` judges only the user running it."""
    doctor = f"'edge-agent doctor -c {file}' judges the agent's own access"
    return doctor if os.geteuid() == 0 else f"check as root ('sudo edge-agent check -c {file}'); {doctor}"


def _user() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


def _named(settings: Settings, root: Node, file: str) -> Iterator[_Named]:
    from ..privacy.stage import DEFAULT_ACTIONS

    privacy = settings.privacy
    used = set({**DEFAULT_ACTIONS, **privacy.actions}.values()) | set(settings.privacy_overrides.values())
    if privacy.key_file is not None and "pseudonymize" in used:
        fix = f"'edge-agent keys init -c {file}' creates it"
        line = _line(root, "privacy", "key_file")
        if line is not None:
            yield _Named(privacy.key_file, "privacy.key_file", line, fix)
        else:  # the default: the line that decides where it is
            line = _line(root, "gateway", "state_dir") or _key_line(root, "gateway")
            yield _Named(privacy.key_file, "privacy.key_file", line, fix,
                         " (the default key file, {state_dir}/keys/pseudonym.key)")
    if privacy.platform_key_file is not None:
        yield _Named(privacy.platform_key_file, "privacy.platform_key_file",
                     _line(root, "privacy", "platform_key_file"),
                     "ask the platform operator for its public key ('edge-agent platform keygen DIR' makes "
                     "DIR/platform.pub) and copy it there")
    for i, trusted in enumerate(settings.commands.keys):
        yield _Named(trusted.public_key_file, f"commands.keys[{i}].public_key_file",
                     _line(root, "commands", "keys", i, "public_key_file"),
                     "ask the platform operator for its command key ('edge-agent platform signkey DIR' makes "
                     "DIR/command.pub) and copy it there")
    mqtt = settings.mqtt
    if mqtt.username_file is not None:
        yield _Named(mqtt.username_file, "mqtt.credentials.username_file",
                     _line(root, "mqtt", "credentials", "username_file"),
                     "write the user name (a ThingsBoard device's access token) there (one line), mode 0600, "
                     "owned by the agent's user")
    if mqtt.password_file is not None:
        yield _Named(mqtt.password_file, "mqtt.credentials.password_file",
                     _line(root, "mqtt", "credentials", "password_file"),
                     "write the broker password there (one line), mode 0600, owned by the agent's user")
    if mqtt.tls.enabled:
        for key in ("ca_file", "cert_file", "key_file"):
            path = getattr(mqtt.tls, key)
            if path is not None:
                yield _Named(path, f"mqtt.tls.{key}", _line(root, "mqtt", "tls", key),
                             "copy the file the broker's operator gave you there, or correct the path")
    yield from _web(settings, root, file)


def _web(settings: Settings, root: Node, file: str) -> Iterator[_Named]:
    """The page's password file (default ``{state_dir}/web.passwd``, reported at ``web``) and TLS files."""
    web = settings.web
    if web is None:
        return
    line = _line(root, "web", "password_file")
    yield _Named(web.password_file, "web.password_file", line or _key_line(root, "web"),
                 f"'edge-agent web passwd -c {file}' sets the technician's password there",
                 "" if line else " (the default, {state_dir}/web.passwd)")
    for key, path in (("cert_file", web.tls_cert_file), ("key_file", web.tls_key_file)):
        if path is not None:
            yield _Named(path, f"web.tls.{key}", _line(root, "web", "tls", key),
                         "copy the page's certificate and key there, or correct the path")


def _node(root: Node, *keys: str | int) -> Node | None:
    node: Node | None = root
    for key in keys:
        value = node.value if node is not None else None
        if isinstance(key, int):
            node = value[key] if isinstance(value, list) and key < len(value) else None
        else:
            node = value.get(key) if isinstance(value, dict) else None
    return node


def _line(root: Node, *keys: str | int) -> int | None:
    """The line of the value at ``keys`` (written and not null), else None."""
    node = _node(root, *keys)
    return node.line if node is not None and node.value is not None else None


def _key_line(root: Node, key: str) -> int | None:
    return (root.key_lines or {}).get(key)
