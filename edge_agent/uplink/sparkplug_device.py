"""The Sparkplug devices of our edge node and the metrics each declares (``sparkplug.py`` is the
dialect; docs/dialects.md, "Sparkplug B").

- A configured, enabled device is a Sparkplug device of the same name, declaring its driver's
  points (``sparkplug_metric.declared``), ``sealed`` when some point is sealed, then the event
  metrics ``Event/type``, ``Event/prio``, ``Event/id``, ``Event/data``. A streaming device (hub,
  gate) declares only the event metrics: its points belong to its units.
- A unit inside a device (a record's ``sub``: a band on a hub, a lane of a gate) is a Sparkplug
  device of its own, ``{device}_{sub}`` (``hub-1_B-00023``, ``gate-1_1``), met in data and
  declaring every point of its device's driver. As metrics of the hub instead, each new band would
  birth the hub again with every band so far: 1,000 bands met one per batch cost some 160 MB of
  DBIRTHs that way, and 0.2 MB as devices. ``sub``'s characters other than letters, digits, ``_``
  and ``-`` become ``-`` (hosts choke on others); ``-2``, ``-3``... is added should the id be
  taken (by a configured device or another unit).
- A device the config does not have (rows buffered before it was removed) is learned from data.
Aliases are unique across the edge node (node metrics included, as Sparkplug 3.0 requires) and
kept for the run. Not thread-safe: the dialect calls it under its lock.
"""

from __future__ import annotations

import re
from typing import Any, Iterator, Mapping

from ..model import Driver
from ..settings import Settings
from .sparkplug_metric import DEFAULT_ACTIONS, INT64, STRING, Declared, Slot, declared, natural

__all__ = ["Device", "Devices", "EVENT_METRICS", "SEALED"]

EVENT_METRICS = (("Event/type", STRING), ("Event/prio", STRING), ("Event/id", INT64), ("Event/data", STRING))
SEALED = "sealed"
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


class Device:
    """A Sparkplug device: a configured device, or a unit inside one (``parent``, ``sub``)."""

    def __init__(self, name: str, templates: Mapping[str, Declared], sealed: bool = False) -> None:
        self.name, self.templates, self.sealed = name, dict(templates), sealed
        self.slots: dict[str, Slot] = {}
        self.last: dict[str, tuple[int, Any]] = {}  # metric -> (ts, value) most recently measured
        self.born = self.dead = self.configured = False
        self.dead_ts = 0
        self.parent: str | None = None
        self.sub: str | None = None
        self.units: list[str] = []  # its units' device ids, in the order they appeared


class Devices:
    def __init__(self, settings: Settings, drivers: Mapping[str, Driver] | None) -> None:
        self._aliases = 0
        self._by_name: dict[str, Device] = {}
        self._units: dict[tuple[str, str], str] = {}  # (device, sub) -> the unit's device id
        self._reserved = {d.name for d in settings.devices}  # a unit's id never takes one of these
        actions = {**DEFAULT_ACTIONS, **settings.privacy.actions}
        for device in settings.devices:
            if not device.enabled:
                continue
            driver = (drivers or {}).get(device.driver)
            templates, sealed = declared(device, driver, actions, settings.privacy_overrides)
            own = {} if driver is None or driver.streaming else dict(templates)  # a hub's points: its units'
            if own and sealed:
                own[SEALED] = Declared(STRING)
            self._add(device.name, templates, own, sealed=sealed).configured = True

    def __iter__(self) -> Iterator[Device]:
        """Configured devices in config order, then the units and learned devices as they were met."""
        return iter(self._by_name.values())

    def get(self, name: str) -> Device | None:
        return self._by_name.get(name)

    def slot(self, name: str, datatype: int, guessed: bool = False) -> Slot:
        """A new metric with the next alias."""
        self._aliases += 1
        return Slot(name, self._aliases - 1, datatype, guessed)

    def known(self, name: str) -> Device:
        return self._by_name.get(name) or self._add(name, {})

    def unit(self, name: str, sub: str) -> Device:
        """The Sparkplug device of unit ``sub`` inside device ``name`` (module docstring)."""
        unit = self._units.get((name, sub))
        if unit is not None:
            return self._by_name[unit]
        parent = self.known(name)
        base = unit = f"{name}_{_UNSAFE.sub('-', sub)}"
        n = 1
        while unit in self._by_name or unit in self._reserved:
            n += 1
            unit = f"{base}-{n}"
        own = {**parent.templates, **({SEALED: Declared(STRING)} if parent.sealed else {})}
        dev = self._add(unit, parent.templates, own, events=False)
        dev.parent, dev.sub, dev.configured = name, sub, parent.configured
        parent.units.append(unit)
        self._units[(name, sub)] = unit
        return dev

    def slot_of(self, dev: Device, point: str, value: Any) -> tuple[Slot, bool]:
        """The metric of ``point`` on ``dev``; True when it is new (the device must be born again)."""
        slot = dev.slots.get(point)
        if slot is not None:
            return slot, False
        decl = dev.templates.get(point) or Declared(natural(value) if value is not None else STRING, value is None)
        slot = dev.slots[point] = self.slot(point, decl.datatype, decl.guessed)
        return slot, True

    def _add(self, name: str, templates: Mapping[str, Declared], own: Mapping[str, Declared] | None = None, *,
             sealed: bool = False, events: bool = True) -> Device:
        """A device and its first metrics: ``own`` (declaration order), then the event metrics."""
        dev = self._by_name[name] = Device(name, templates, sealed)
        for point, decl in (own or {}).items():
            dev.slots[point] = self.slot(point, decl.datatype, decl.guessed)
        for metric, datatype in EVENT_METRICS if events else ():
            dev.slots[metric] = self.slot(metric, datatype)
        return dev
