"""The shape of the house, read from the source (an AST walk, nothing imported): no import circle,
also none behind an import inside a function; imports point down toward the floor; drivers and
simulators stand on the floor alone; nothing imports the daemon or the CLI.

``.venv/bin/python tests/support/imports.py`` prints the same graph's figures.
"""

from __future__ import annotations

import pytest

from support.imports import circles, graph

FLOOR = {"edge_agent", "edge_agent.model", "edge_agent.units", "edge_agent.clock", "edge_agent.settings",
         "edge_agent.errors", "edge_agent.crc16", "edge_agent.rules"}

# room -> the rooms it may import besides the floor (docs/architecture.md draws the same)
ALLOWED = {
    "drivers": set(),
    "sim": set(),  # independent implementations: no codec, scanner or driver of ours
    "privacy": set(),
    "buffer": set(),
    "uplink": set(),
    "web": set(),  # the technician's page: what the agent hands it (web/view.py), nothing else
    "field": {"drivers"},
    "commands": {"field", "privacy", "buffer"},
    "config": {"field", "privacy", "commands"},
    "agent": {"config", "field", "privacy", "buffer", "uplink", "commands", "web"},
    "tools": {"config", "field", "privacy", "buffer", "uplink", "commands", "drivers", "web"},
    "platform": {"privacy", "commands"},  # commands.signing: new_command signs
    "fleet": {"platform", "commands"},  # platform watch/send (issue 16): paho in fleet/broker.py only
    "cli": {"config", "field", "privacy", "buffer", "uplink", "commands", "agent", "tools", "sim", "drivers",
            "platform", "web", "fleet"},
}

GRAPH = graph()


def room(module: str) -> str:
    if module in FLOOR:
        return "floor"
    return module.split(".")[1]


def test_the_walk_sees_the_whole_house() -> None:
    assert {"edge_agent.model", "edge_agent.buffer.outbox", "edge_agent.drivers.qdy_level",
            "edge_agent.agent.daemon"} <= set(GRAPH)
    assert "edge_agent.model" in GRAPH["edge_agent.drivers.qdy_level"]


def test_no_import_circle_anywhere() -> None:
    found = circles(GRAPH)
    assert not found, "import circles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_every_module_lives_in_a_known_room() -> None:
    assert {room(m) for m in GRAPH} <= {"floor", *ALLOWED}


@pytest.mark.parametrize("name", sorted(ALLOWED) + ["floor"])
def test_imports_point_down(name: str) -> None:
    allowed = {"floor", name} | ALLOWED.get(name, set())
    wrong = sorted(f"{a} imports {b}" for a, targets in GRAPH.items() if room(a) == name
                   for b in targets if room(b) not in allowed)
    assert not wrong, f"{name} may import {sorted(allowed)} only:\n" + "\n".join(wrong)


def test_nothing_imports_the_daemon_or_the_cli() -> None:
    wiring = {m for m in GRAPH if room(m) == "agent"}
    wrong = sorted(f"{a} imports {b}" for a, targets in GRAPH.items() for b in targets
                   if (b == "edge_agent.cli") or (b in wiring and room(a) not in {"agent", "cli"}))
    assert not wrong, "\n".join(wrong)


def test_every_package_is_installed() -> None:
    """pyproject.toml lists the packages by name: a new room left out installs an agent that
    cannot start (scripts/install.sh caught edge_agent.fleet missing)."""
    import tomllib

    from support.paths import ROOT

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "edge_agent").rglob("__init__.py")}
    assert found - listed == set(), f"packages missing from pyproject.toml: {sorted(found - listed)}"
