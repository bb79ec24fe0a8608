"""Argument helpers shared by the ``simulate`` verbs (modbus, dlt645/cjt188, hub/gate).

They live apart so each verb's module imports them, and ``sim/cli.py`` imports the verbs:
nothing imports back into ``cli``.
"""

from __future__ import annotations

import argparse
import difflib
import inspect
from typing import Any, NoReturn, Sequence

__all__ = ["suggest", "coerce", "parse_hostport", "one_line_error", "fmt_address"]


def suggest(word: str, choices: Sequence[str]) -> str:
    """`` (did you mean 'x'?)`` for a near miss, else `` (one of: a, b, c)``."""
    close = [c for c in choices if word and c.startswith(word)] or difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else f" (one of: {', '.join(choices)})"


def coerce(text: str, default: Any, what: str) -> Any:
    """``text`` typed by an option's ``default`` (bool, int with 0x/0o/0b, float)."""
    kind = type(default) if default is not None and default is not inspect.Parameter.empty else None
    if kind is bool:
        if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise argparse.ArgumentTypeError(f"{what}: {text!r} is not true or false")
        return text.lower() in ("true", "1", "yes")
    try:
        if kind is None:  # no default to go by (e.g. seed=None): an integer if it looks like one
            return int(text) if text.lstrip("-").isdigit() else float(text)
        if kind is int:  # 0x0B reads as hex; 08 stays eight
            return int(text, 0) if text.lower().startswith(("0x", "0o", "0b")) else int(text)
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what}: {text!r} is not {'an integer' if kind is int else 'a number'}") from None


def parse_hostport(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:502`` for IPv6); port 0 picks a free one."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT, e.g. 127.0.0.1:5020")
    return host, int(port)


def one_line_error(parser: argparse.ArgumentParser) -> None:
    """Bad usage prints one line (``PROG: error: ...``) and exits 2, without argparse's usage block."""
    def error(message: str) -> NoReturn:
        parser.exit(2, f"{parser.prog}: error: {message}\n")
    parser.error = error  # type: ignore[method-assign]


def fmt_address(address: tuple[str, int]) -> str:
    """``host:port``, with brackets around an IPv6 host."""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
