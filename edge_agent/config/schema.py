"""One YAML file -> ``Settings``, checked completely before the daemon touches a port or a broker.

Principle 1 of the house: fail at start-up, not at 3 a.m. So every section is read even after
an error, and ``ConfigError`` lists every problem as ``FILE:LINE: key.path: message`` with the
likely fix, the way ``edge-agent check`` prints them. Reading the file is the only I/O here
(``check_config`` adds ``config_files``: a look for each key, password and TLS file the config
names, as warnings); opening ports and the broker, and key files' modes, are the doctor's. Relative paths are taken from the
config file's directory, so a config works the same whatever directory the daemon starts in.

This module is the entry and the order; each section has its reader: ``gateway`` (gateway,
buffer), ``mqtt``, ``privacy``, ``buses``, ``devices`` (with ``alarms``, ``commands``'s
``writable``, ``privacy``'s overrides and ``addresses``), ``commands``, ``web``.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigurationError
from ..settings import Settings
from .buses import read_buses
from .commands import read_commands
from .devices import read_devices
from .gateway import DEFAULT_STATE_DIR, read_buffer, read_gateway
from .mqtt import read_mqtt
from .privacy import read_privacy
from .source import Node, Problem, Report, Section, compose
from .web import read_web

__all__ = ["Problem", "ConfigError", "load_settings", "check_file", "check_config", "check_text", "parse_settings"]


class ConfigError(ConfigurationError):
    """The config cannot be used; ``problems`` holds every reason, one per line in ``str()``."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(problems)
        self.problems = problems

    def __str__(self) -> str:
        return "\n".join(map(str, self.problems))


def load_settings(path: str | Path) -> Settings:
    """Read and check ``path``; raise ``ConfigError`` naming every problem found."""
    settings, problems, _ = _load(path)
    if settings is None:
        raise ConfigError(problems)
    return settings


def check_file(path: str | Path) -> list[Problem]:
    """Every problem of ``path`` (``[]`` when it is valid); bad content never raises."""
    return _load(path)[1]


def check_config(path: str | Path) -> tuple[Settings | None, list[Problem]]:
    """What ``edge-agent check`` reports: every problem of ``path``; when there is none, the
    settings and a warning (``Problem.warning``) for each file they name that ``run`` would not
    find or could not read (``config_files``; a stat per file, no device or broker I/O)."""
    settings, problems, root = _load(path)
    if settings is None or root is None:
        return None, problems
    from .files import file_warnings

    return settings, file_warnings(settings, root, str(path))


def check_text(text: str, path: str | Path, *, shown_as: str | None = None) -> tuple[Settings | None, list[Problem]]:
    """Check ``text`` exactly as ``check_file`` would if it were the file at ``path`` (relative paths
    from its directory; ``Settings.source`` is ``path``); problems name ``shown_as`` (default: the
    path). For ``config.apply``, which checks a config before it is written. Never raises."""
    where = Path(path).absolute()
    return _parse(text, shown_as or str(path), where.parent, where)[:2]


def parse_settings(text: str, source: str = "<string>", base_dir: Path | None = None) -> Settings:
    """As ``load_settings``, from text; relative paths are taken from ``base_dir`` (default: cwd).

    ``source`` only names the text in problems; ``Settings.source`` stays None (no file behind it).
    """
    settings, problems, _ = _parse(text, source, base_dir if base_dir is not None else Path.cwd(), None)
    if settings is None:
        raise ConfigError(problems)
    return settings


def _load(path: str | Path) -> tuple[Settings | None, list[Problem], Node | None]:
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        return None, [Problem(file, None, "", f"not UTF-8 text ({exc.reason} at byte {exc.start})")], None
    except OSError as exc:
        return None, [Problem(file, None, "", f"cannot read the file: {exc.strerror or exc}")], None
    return _parse(text, file, Path(path).absolute().parent, Path(path).absolute())


def _parse(text: str, file: str, base_dir: Path,
           source: Path | None) -> tuple[Settings | None, list[Problem], Node | None]:
    """Settings (None on any problem), the problems by line, and the located YAML they came from."""
    report = Report(file)
    root = compose(text, report)
    settings = None
    if root is None and not report.problems:
        report.add(None, "", "the file is empty; it needs at least gateway, mqtt, buses and devices")
    elif root is not None:
        settings = _read(report, root, base_dir, source)
    problems = sorted(report.problems, key=lambda p: p.line or 0)
    return (settings if not problems else None), problems, root


def _read(report: Report, root: Node, base: Path, source: Path | None) -> Settings | None:
    """Every section, each read on after a problem in another, in the file's order of meaning:
    ``gateway.state_dir`` places the defaults of ``buffer`` and ``privacy``; devices name buses."""
    if not isinstance(root.value, dict):
        report.add(root.line, "", "the top level must be a mapping of sections "
                   "(gateway, mqtt, buffer, privacy, buses, devices)")
        return None
    top = Section(report, root, "", None,
                  ("gateway", "mqtt", "buffer", "privacy", "buses", "devices", "commands", "web"))
    gateway = read_gateway(top, base)
    mqtt = read_mqtt(report, top, base)
    state_dir = gateway.state_dir if gateway else DEFAULT_STATE_DIR
    buffer = read_buffer(top, base, state_dir)
    privacy, platform_key_given = read_privacy(report, top, base, state_dir)
    buses = read_buses(report, top)
    devices = read_devices(report, top, buses, platform_key_given)
    commands = read_commands(report, top, base)
    web = read_web(report, top, base, state_dir)
    if report.problems or gateway is None or mqtt is None or buses is None or devices is None:
        return None
    return Settings(gateway, mqtt, buffer, privacy, tuple(b for b in buses.values() if b), devices, source, commands,
                    web)
