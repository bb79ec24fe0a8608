"""Finds the drivers in ``edge_agent.drivers`` and rejects unsound declarations at start-up.

Each driver module exposes ``DRIVER``. A declaration error (overlapping registers, a type that
does not fit its length, a duplicate name) is a bug in the driver or in the config's point
list; it must stop start-up with a message naming the point, not corrupt readings at 3 a.m.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache
from typing import Iterable

from ..errors import StartupError
from ..model import DRIVER_PROTOCOLS, DType, Driver, Point

__all__ = ["drivers", "get_driver", "point_problems", "DriverError"]


class DriverError(StartupError):
    """A driver module is missing ``DRIVER`` or declares unsound points."""


def point_problems(points: Iterable[Point], max_block: int | None = None) -> list[str]:
    """Every problem of a point list: each point alone, duplicate names, overlaps."""
    points = tuple(points)
    found: list[str] = []
    seen: set[str] = set()
    for point in points:
        found.extend(point.problems())
        if point.name in seen:
            found.append(f"{point.name}: declared twice")
        seen.add(point.name)
        if max_block is not None and not point.reg.is_bit and point.count > max_block:
            found.append(f"{point.name}: spans {point.count} registers but max_block is {max_block}")
    by_table = sorted(points, key=lambda p: (p.reg, p.address, p.bit or 0))
    for a, b in zip(by_table, by_table[1:]):
        if a.reg != b.reg or b.address >= a.end:
            continue
        both_bits = (a.dtype is DType.BOOL and b.dtype is DType.BOOL and not a.reg.is_bit
                     and a.address == b.address and a.bit != b.bit)
        if not both_bits:
            found.append(f"{b.name}: overlaps {a.name} in {a.reg} registers "
                         f"({a.address}..{a.end - 1} and {b.address}..{b.end - 1})")
    return found


def _check(driver: Driver, module: str) -> Driver:
    if not isinstance(driver, Driver):
        raise DriverError(f"{module}: DRIVER must be an edge_agent.model.Driver")
    problems = point_problems(driver.points, driver.max_block)
    if driver.protocol not in DRIVER_PROTOCOLS:
        problems.append(f"protocol {driver.protocol!r} is not one of {', '.join(DRIVER_PROTOCOLS)}")
    elif driver.protocol != "modbus" and (driver.reader is None or driver.points or not driver.outputs):
        problems.append("a non-Modbus driver needs a reader and outputs, and declares no register points")
    if problems:
        raise DriverError(f"driver {driver.id} ({module}): " + "; ".join(problems))
    return driver


@lru_cache(maxsize=1)
def drivers() -> dict[str, Driver]:
    """All drivers by id, checked. Cached: declarations do not change while running."""
    from .. import drivers as package

    found: dict[str, Driver] = {}
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        driver = getattr(module, "DRIVER", None)
        if driver is None:
            continue  # a shared codec module, not a device family
        driver = _check(driver, module.__name__)
        if driver.id in found:
            raise DriverError(f"driver id {driver.id!r} is declared by two modules")
        found[driver.id] = driver
    return found


def get_driver(driver_id: str) -> Driver:
    return drivers()[driver_id]
