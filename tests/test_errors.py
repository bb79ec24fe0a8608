"""One error tree: every exception edge-agent defines derives from ``EdgeAgentError``, through the
branch ``errors.py`` draws for it, and the CLI prints any of them as one line (exit 1).

The walk imports every module of ``edge_agent`` and ``edge_agent.drivers``. Not in the tree,
as ``errors.py`` says: private signals (``_Name``), caught in their own module, and the drivers'
frame decoding reasons (``ValueError``s that never leave a driver)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import subprocess
import sys

import pytest

import edge_agent
from edge_agent import cli, errors
from edge_agent.errors import EdgeAgentError


def _modules() -> list:
    import edge_agent.drivers as drivers

    found = []
    for package in (edge_agent, drivers):
        found.append(package)
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            found.append(importlib.import_module(info.name))
    return found


def _exceptions() -> dict[str, type[BaseException]]:
    """Every exception class defined in the package, by name, except the two documented kinds."""
    out: dict[str, type[BaseException]] = {}
    for module in _modules():
        for name, obj in vars(module).items():
            if not (inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == module.__name__):
                continue
            if name.startswith("_"):
                continue  # a private signal
            if module.__name__.startswith("edge_agent.drivers.") and issubclass(obj, ValueError) \
                    and not issubclass(obj, EdgeAgentError):
                continue  # a frame decoding reason, turned into NoResponse or a bad frame in the driver
            out[f"{module.__name__}.{name}"] = obj
    return out


EXCEPTIONS = _exceptions()


def _drawn_parents() -> dict[str, str]:
    """``name -> parent`` as the tree at the top of errors.py draws it."""
    lines = errors.__doc__.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "EdgeAgentError")
    stack = [(lines[start].index("E"), "EdgeAgentError")]
    parents: dict[str, str] = {}
    for line in lines[start + 1:]:
        if not line.strip():
            break
        m = re.match(r"^([ |]*)\+-- (\w+)", line)
        if m is None:
            continue  # the continuation of a description
        column = len(m.group(1))
        while stack[-1][0] >= column:
            stack.pop()
        parents[m.group(2)] = stack[-1][1]
        stack.append((column, m.group(2)))
    return parents


def test_the_walk_finds_the_package_s_exceptions() -> None:
    names = {cls.__name__ for cls in EXCEPTIONS.values()}
    assert {"ConfigError", "KeyFileError", "BufferCorrupt", "LinkError", "CommandRejected", "CliFailure"} <= names


@pytest.mark.parametrize("where", sorted(EXCEPTIONS))
def test_every_exception_derives_from_edge_agent_error(where: str) -> None:
    assert issubclass(EXCEPTIONS[where], EdgeAgentError), f"{where} is outside the tree: derive it from its branch"


@pytest.mark.parametrize("where", sorted(EXCEPTIONS))
def test_the_tree_in_errors_py_draws_each_exception_under_its_parent(where: str) -> None:
    cls = EXCEPTIONS[where]
    if cls is EdgeAgentError:
        return  # the root the tree starts from
    drawn = _drawn_parents()
    assert cls.__name__ in drawn, f"{where} is not drawn in the tree at the top of errors.py"
    parent = next(b for b in cls.__bases__ if issubclass(b, EdgeAgentError))
    assert drawn[cls.__name__] == parent.__name__


def test_the_branches_are_the_floor_s_and_builtin_bases_are_kept() -> None:
    for branch in ("ConfigurationError", "StartupError", "BusError", "BufferError", "CommandError"):
        assert getattr(errors, branch).__bases__ == (EdgeAgentError,)
    valueerrors = {cls.__name__ for cls in EXCEPTIONS.values() if issubclass(cls, ValueError)}
    assert valueerrors == {"LineTooLong", "UsageError", "PayloadError"}  # caught as ValueError where raised
    from edge_agent.buffer.outbox import BufferError
    assert BufferError is errors.BufferError


def test_errors_imports_no_room() -> None:
    code = ("import sys, edge_agent.errors; "
            "print(sorted(m for m in sys.modules if m.startswith('edge_agent.') and m != 'edge_agent.errors'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_cli_prints_any_of_them_as_one_line_with_the_real_config(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def verb(args) -> int:
        raise errors.StartupError("key file k.key does not exist; 'edge-agent keys init -c CONFIG' creates it")

    monkeypatch.setattr(cli, "cmd_check", verb)
    assert cli.main(["check", "-c", "site/gw.yaml"]) == 1
    assert capsys.readouterr().err == \
        "edge-agent: key file k.key does not exist; 'edge-agent keys init -c site/gw.yaml' creates it\n"
