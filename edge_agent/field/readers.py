"""Which link a bus needs and which reader polls a device on it: the one place that knows.

A Modbus bus gets a ``bus.ModbusBus`` (pymodbus) and its devices a ``poll.DeviceReader``
working from register points; any other protocol gets a ``link.ByteLink`` and the reader its
driver builds (``Driver.reader``). The daemon and ``edge-agent read`` both come through here,
so a device is polled the same way by either.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from ..model import Driver
from ..settings import BusSettings, DeviceSettings

__all__ = ["open_link", "make_reader"]


def open_link(bus: BusSettings) -> Any:
    """The link object for ``bus`` (not yet connected: links open lazily, on first use)."""
    if bus.is_modbus:
        from .bus import ModbusBus
        return ModbusBus(bus)
    from .link import ByteLink
    return ByteLink(bus)


def make_reader(device: DeviceSettings, driver: Driver, link: Any,
                clock: Callable[[], float] = time.time) -> Any:
    """An object whose ``poll()`` returns a ``model.PollResult`` for ``device``."""
    if driver.protocol == "modbus":
        from .poll import DeviceReader
        return DeviceReader(device, driver, link, clock)
    if driver.reader is None:
        raise TypeError(f"driver {driver.id} ({driver.protocol}) has no reader")
    return driver.reader(device, link, clock)
