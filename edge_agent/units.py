"""Durations and sizes as people write them in YAML: ``500ms``, ``10s``, ``7d``, ``512MiB``.

A bare number is refused on purpose: ``interval: 60`` could mean seconds or milliseconds, and
guessing wrong polls a meter 1000 times too often. The error suggests the likely fix.
"""

from __future__ import annotations

import re

__all__ = ["parse_duration", "parse_size", "format_duration", "format_size"]

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE_UNITS = {
    "B": 1,
    "KB": 1000, "MB": 1000**2, "GB": 1000**3, "TB": 1000**4,
    "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "TiB": 1024**4,
}
_NUMBER_UNIT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")


def parse_seconds(text: str) -> float:
    """Seconds from a bare number (``0.1``) or a duration (``100ms``), as command-line flags take
    them; ValueError naming the expected forms otherwise."""
    try:
        return float(text)
    except ValueError:
        return parse_duration(text)


def parse_duration(text: object) -> float:
    """Return seconds for ``'500ms'``, ``'10s'``, ``'5m'``, ``'2h'``, ``'7d'``; ValueError otherwise."""
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise ValueError(f"expected a duration such as '10s', got {type(text).__name__}")
    if isinstance(text, (int, float)):
        raise ValueError(f"has no time unit (did you mean '{text}s'?)")
    match = _NUMBER_UNIT.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration; write a number and a unit, e.g. '10s' or '500ms'")
    number, unit = float(match.group(1)), match.group(2)
    if not unit:
        raise ValueError(f"has no time unit (did you mean '{match.group(1)}s'?)")
    if unit not in _DURATION_UNITS:
        raise ValueError(f"unknown time unit {unit!r}; use one of {', '.join(_DURATION_UNITS)}")
    return number * _DURATION_UNITS[unit]


def parse_size(text: object) -> int:
    """Return bytes for ``'512MiB'``, ``'64KB'``, ``'1GiB'``; ValueError otherwise."""
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise ValueError(f"expected a size such as '512MiB', got {type(text).__name__}")
    if isinstance(text, (int, float)):
        raise ValueError(f"has no size unit (did you mean '{text}B' or '{text}MiB'?)")
    match = _NUMBER_UNIT.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a size; write a number and a unit, e.g. '512MiB'")
    number, unit = float(match.group(1)), match.group(2)
    if not unit:
        raise ValueError(f"has no size unit (did you mean '{match.group(1)}MiB'?)")
    folded = {k.lower(): k for k in _SIZE_UNITS}
    if unit not in _SIZE_UNITS:
        hint = folded.get(unit.lower())
        extra = f" (did you mean '{match.group(1)}{hint}'?)" if hint else f"; use one of {', '.join(_SIZE_UNITS)}"
        raise ValueError(f"unknown size unit {unit!r}{extra}")
    return int(number * _SIZE_UNITS[unit])


def format_duration(seconds: float) -> str:
    """Short human form for status output: ``950ms``, ``42s``, ``3m12s``, ``5h4m``, ``2d3h``."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"


def format_size(n: int) -> str:
    """Binary units, one decimal: ``1.5 MiB``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"
