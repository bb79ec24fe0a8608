"""YAML that remembers where each value was written, and typed reading of it.

``yaml.safe_load`` forgets line numbers, so an error could only say "port is wrong", not
``site.yaml:14: mqtt.port: ...``. Here the file is composed into nodes (SafeLoader: no
arbitrary objects), each value keeps its 1-based line, duplicate keys are caught (safe_load
silently keeps the last one), and ``Section`` reads a mapping field by field, turning every
mistake into a ``Problem`` instead of stopping at the first one. The edge-agent schema
itself lives in ``schema`` and its section readers; nothing here knows about it.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import yaml

from ..units import parse_duration, parse_size

__all__ = [
    "Problem", "Report", "Node", "compose", "plain", "Section", "REQUIRED", "did_you_mean", "describe",
    "integer", "number", "boolean", "string", "host", "identifier", "choice", "duration", "size", "path",
    "number_pair",
]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config file, located for an editor: ``FILE:LINE: key.path: message``.

    A ``warning`` (``FILE:LINE: key.path: warning: message``) does not make the config unusable
    by itself: ``check`` reports it and exits 0, ``check --strict`` fails on it."""

    file: str
    line: int | None
    path: str
    message: str
    warning: bool = False

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        message = f"warning: {self.message}" if self.warning else self.message
        return f"{where}: {self.path}: {message}" if self.path else f"{where}: {message}"


class Report:
    """Collects problems for one file, so that a check lists all of them, not just the first."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[Problem] = []

    def add(self, line: int | None, path: str, message: str) -> None:
        self.problems.append(Problem(self.file, line, path, message))

    def mark(self) -> int:
        return len(self.problems)

    def since(self, mark: int) -> bool:
        """True when a problem was added after ``mark``: the part just read is unusable."""
        return len(self.problems) > mark


@dataclass
class Node:
    """A YAML value with the line it starts on. ``value`` is a scalar, ``dict[str, Node]`` or
    ``list[Node]``; mappings also keep each key's own line for errors about the key itself."""

    value: Any
    line: int
    key_lines: dict[str, int] | None = None


def plain(node: Node) -> Any:
    """The value without line numbers, for a converter that takes a whole list or mapping."""
    if isinstance(node.value, dict):
        return {k: plain(v) for k, v in node.value.items()}
    if isinstance(node.value, list):
        return [plain(v) for v in node.value]
    return node.value


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def compose(text: str, report: Report) -> Node | None:
    """Parse one YAML document into nodes; syntax errors and duplicate keys go to ``report``."""
    loader = None
    try:
        loader = yaml.SafeLoader(text)  # checks the characters first: a NUL or ESC raises here
        root = loader.get_single_node()
        return None if root is None else _Converter(loader, report).convert(root, "")
    except yaml.MarkedYAMLError as exc:
        report.add(*_syntax(exc))
    except yaml.reader.ReaderError as exc:  # a control character YAML does not allow (a pasted colour code)
        line = text.count("\n", 0, exc.position) + 1
        hint = " (an escape: a terminal colour code copied with the text?)" if exc.character == 0x1B else ""
        report.add(line, "", f"control character {exc.character:#04x} is not allowed in YAML: delete it{hint}")
    except yaml.YAMLError as exc:  # anything else, reported without a mark
        report.add(None, "", f"YAML error: {exc}")
    except RecursionError:
        report.add(None, "", "nested too deeply to read (hundreds of levels of brackets)")
    finally:
        if loader is not None:
            loader.dispose()
    return None


def _syntax(exc: yaml.MarkedYAMLError) -> tuple[int | None, str, str]:
    """Line and text of a parser error, naming where an unclosed bracket or quote began."""
    mark = exc.problem_mark or exc.context_mark
    problem, context = exc.problem or "", exc.context or ""
    if context.startswith("while") and exc.context_mark and mark and exc.context_mark.line != mark.line:
        context += f" started on line {exc.context_mark.line + 1}"
    if problem.startswith("but "):
        detail = f"{context} {problem}"
    else:
        detail = f"{problem} ({context})" if context and problem else problem or context or "invalid YAML"
    return (mark.line + 1 if mark else None), "", f"YAML syntax error: {detail}"


class _Converter:
    _MERGE = "tag:yaml.org,2002:merge"

    def __init__(self, loader: yaml.SafeLoader, report: Report) -> None:
        self.loader, self.report = loader, report
        self.memo: dict[int, Node] = {}  # anchors: convert a shared node once
        self.open: set[int] = set()  # the nodes being converted: an alias to one of them is a cycle

    def convert(self, node: yaml.Node, path: str) -> Node:
        line = node.start_mark.line + 1
        if id(node) in self.open:  # an alias inside its own anchor: a value that contains itself
            self.report.add(line, path, "this value contains itself (an alias inside its own anchor); "
                                        "write the value out")
            return Node(None, line)
        if id(node) in self.memo:
            return self.memo[id(node)]
        self.open.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                out = self.memo[id(node)] = Node({}, line, {})
                self._mapping(node, out, path)
            elif isinstance(node, yaml.SequenceNode):
                out = self.memo[id(node)] = Node([], line)
                out.value.extend(self.convert(child, f"{path}[{i}]") for i, child in enumerate(node.value))
            else:
                out = self.memo[id(node)] = Node(self._scalar(node, path), line)
        finally:
            self.open.discard(id(node))
        return out

    def _scalar(self, node: yaml.Node, path: str) -> Any:
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.MarkedYAMLError as exc:
            self.report.add(node.start_mark.line + 1, path, f"cannot read this value: {exc.problem}")
            return node.value  # the raw text: reported once, not again as missing
        except (ValueError, KeyError, TypeError, OverflowError):  # a standard tag on text it cannot read
            tag = str(node.tag).rsplit(":", 1)[-1]
            self.report.add(node.start_mark.line + 1, path,
                            f"cannot read {node.value!r} as !!{tag}: remove the tag or correct the value")
            return node.value

    def _mapping(self, node: yaml.MappingNode, out: Node, path: str) -> None:
        first_line: dict[str, int] = {}
        for key_node, _ in node.value:
            if key_node.tag != self._MERGE and isinstance(key_node, yaml.ScalarNode):
                key, line = str(key_node.value), key_node.start_mark.line + 1
                if key in first_line:
                    self.report.add(line, _join(path, key), f"duplicate key '{key}' (first at line {first_line[key]})")
                first_line.setdefault(key, line)
        self.loader.flatten_mapping(node)  # '<<: *defaults' merges; explicit keys come last and win
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            key = self._scalar(key_node, path) if isinstance(key_node, yaml.ScalarNode) else None
            if not isinstance(key, str):
                raw = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
                self.report.add(line, _join(path, str(raw)), f"key {raw!r} is not a plain name; quote it or rename it")
                continue
            out.value[key] = self.convert(value_node, _join(path, key))
            out.key_lines[key] = line  # type: ignore[index]


# --- typed reading -----------------------------------------------------------------------

REQUIRED: Any = object()
Convert = Callable[[Any], Any]


def did_you_mean(word: str, options: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest option, or ``""``; case slips count as close."""
    options = list(options)
    folded = [o for o in options if o.lower() == word.lower()]
    close = folded or difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def describe(value: Any) -> str:
    """How a wrong value is named in a message: ``a string ('9600')``, ``a list``, ``null``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({value!r})"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"


def integer(lo: int, hi: int, why: str = "") -> Convert:
    def convert(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer, got {describe(value)}")
        if not lo <= value <= hi:
            raise ValueError(f"{value} is outside {lo}..{hi}" + (f" ({why})" if why else ""))
        return value
    return convert


def number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        hint = ""
        if isinstance(value, str) and re.fullmatch(r"[-+]?\d+(\.\d*)?[eE][-+]?\d+", value.strip()):
            hint = f"; YAML 1.1 reads this exponent form as text: write {float(value)!r}"
        raise ValueError(f"expected a number, got {describe(value)}{hint}")
    return float(value)


def number_pair(value: Any) -> tuple[float, float]:
    if not isinstance(value, list) or len(value) != 2:
        got = f"a list of {len(value)}" if isinstance(value, list) else describe(value)
        raise ValueError(f"expected [low, high], two numbers, got {got}")
    return number(value[0]), number(value[1])


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {describe(value)}")
    return value


def string(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {describe(value)}")
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def host(value: Any) -> str:
    """A host name or address as a link or the broker is given it: no scheme, path or spaces."""
    text = string(value)
    if "://" in text or "/" in text or " " in text.strip():
        raise ValueError(f"{text!r} is not a host name or address (no scheme, path or spaces; the port is separate)")
    return text.strip()


_IDENT = re.compile(r"[A-Za-z0-9_.-]+")


def identifier(why: str = "") -> Convert:
    """A name that ends up in topics, logs and file names: letters, digits, ``_ . -`` only."""
    def convert(value: Any) -> str:
        text = string(value)
        if not _IDENT.fullmatch(text):
            raise ValueError(f"{text!r} may only use letters, digits, '_', '.' and '-'" + (f" ({why})" if why else ""))
        return text
    return convert


def choice(options: Sequence[Any], noun: str) -> Convert:
    """One of a fixed set; integers must be integers, strings get a did-you-mean."""
    def convert(value: Any) -> Any:
        if all(isinstance(o, int) for o in options):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"expected an integer, got {describe(value)}")
            if value not in options:
                raise ValueError(f"{value} is not a supported {noun}; use one of {', '.join(map(str, options))}")
            return value
        if not isinstance(value, str):
            raise ValueError(f"expected a {noun} ({', '.join(options)}), got {describe(value)}")
        if value not in options:
            hint = did_you_mean(value, options) or f"; use one of {', '.join(options)}"
            raise ValueError(f"unknown {noun} {value!r}{hint}")
        return value
    return convert


_HINT_UNITS = (("s", 1.0), ("ms", 0.001), ("m", 60.0), ("h", 3600.0), ("d", 86400.0))


def duration(lo: float, hi: float) -> Convert:
    def convert(value: Any) -> float:
        bare = _bare_number(value)
        if bare is not None:  # the hint names a unit that fits the range: 'commit_interval: 200' -> '200ms'
            unit = next((u for u, f in _HINT_UNITS if lo <= bare * f <= hi), "s")
            raise ValueError(f"has no time unit (did you mean '{str(value).strip()}{unit}'?)")
        seconds = parse_duration(value)
        if not lo <= seconds <= hi:
            raise ValueError(f"{value} is outside {_seconds(lo)}..{_seconds(hi)}")
        return seconds
    return convert


def _bare_number(value: Any) -> float | None:
    """A number written without a unit (``200``, ``"0.5"``), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    try:
        number = float(value) if isinstance(value, str) and value.strip() else None
    except ValueError:
        return None
    return number if number is not None and math.isfinite(number) else None


def _seconds(s: float) -> str:
    for unit, factor in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if s >= factor and s % factor == 0:
            return f"{int(s // factor)}{unit}"
    return f"{s * 1000:g}ms" if s else "0s"


def size(lo: int) -> Convert:
    def convert(value: Any) -> int:
        n = parse_size(value)
        if n < lo:
            raise ValueError(f"{value} is below the minimum of {lo // 1024**2}MiB")
        return n
    return convert


def path(base_dir: Path) -> Convert:
    """A file or directory; a relative one is taken from the config file's own directory."""
    def convert(value: Any) -> Path:
        p = Path(string(value))
        return p if p.is_absolute() else base_dir / p
    return convert


class Section:
    """Located, typed access to one mapping; reports unknown keys (with a suggestion) up front.

    ``line`` is where the mapping is introduced (its key, or its list item); a missing key is
    reported there. ``secrets`` maps an inline-secret key to the ``*_file`` key to use instead.
    """

    def __init__(self, report: Report, node: Node, path: str, line: int | None,
                 allowed: Sequence[str], secrets: dict[str, str] | None = None, noun: str = "key") -> None:
        self.report, self.node, self.path, self.line = report, node, path, line
        self.values: dict[str, Node] = node.value
        for key, key_line in (node.key_lines or {}).items():
            if key in allowed:
                continue
            if secrets and key in secrets:
                report.add(key_line, self.sub(key),
                           f"secrets are read from files, never written inline: use {secrets[key]}")
                continue
            hint = did_you_mean(key, allowed) or f" (expected one of: {', '.join(allowed)})"
            report.add(key_line, self.sub(key), f"unknown {noun} '{key}'{hint}")

    @classmethod
    def of(cls, report: Report, node: Node, path: str, line: int | None, allowed: Sequence[str],
           **kwargs: Any) -> "Section | None":
        if not isinstance(node.value, dict):
            report.add(node.line, path, f"expected a mapping, got {describe(node.value)}")
            return None
        return cls(report, node, path, line, allowed, **kwargs)

    def sub(self, key: str) -> str:
        return _join(self.path, key)

    def given(self, key: str) -> bool:
        """Present with a non-null value (``key:`` alone means "use the default")."""
        node = self.values.get(key)
        return node is not None and node.value is not None

    def line_of(self, key: str) -> int | None:
        """The value's line; the key's when the value is null; the section's when absent."""
        if self.given(key):
            return self.values[key].line
        return (self.node.key_lines or {}).get(key, self.line)

    def key_line(self, key: str) -> int | None:
        """The key's own line (``gateway:``), the section's when absent: where a mapping is
        introduced, so a key missing inside it is reported there (its value starts at its first
        key, which may be a comment's length further down)."""
        return (self.node.key_lines or {}).get(key, self.line)

    def get(self, key: str, convert: Convert, default: Any = REQUIRED) -> Any:
        """The converted value, ``default`` when absent or null, None when missing or invalid."""
        if not self.given(key):
            if default is REQUIRED:
                self.report.add(self.line_of(key), self.sub(key),
                                "required key has no value" if key in self.values else "required key is missing")
                return None
            return default
        node = self.values[key]
        try:
            return convert(plain(node))
        except ValueError as exc:
            self.report.add(node.line, self.sub(key), str(exc))
            return None

    def section(self, key: str, allowed: Sequence[str], required: bool = False, **kwargs: Any) -> "Section | None":
        if not self.given(key):
            if required:
                self.get(key, string)  # reports the missing key
            return None
        return Section.of(self.report, self.values[key], self.sub(key), self.key_line(key), allowed, **kwargs)

    def items(self, key: str, required: bool = False) -> list[Node] | None:
        if not self.given(key):
            if required:
                what = "required key has no value (write [] for none)" if key in self.values else \
                    "required key is missing"
                self.report.add(self.line_of(key), self.sub(key), what)
            return None
        node = self.values[key]
        if not isinstance(node.value, list):
            self.report.add(node.line, self.sub(key), f"expected a list, got {describe(node.value)}")
            return None
        return node.value
