"""Two devices at one address on one link: an error at the second, naming the first.

Two devices at one address answer the same requests (or one answers for both), so their
readings mix and their replies collide on RS-485. What counts as the same place:

- the same **link**: a serial port as written (``/dev/ttyUSB0``), or a host (case-folded) and
  port. Two buses that name one link share it; no path is resolved and no name looked up
  (``check`` does no I/O), so ``/dev/serial/by-id/...`` and ``/dev/ttyUSB0`` count as two;
- the same **protocol** on it, and the same **address** as the device is sent it: a Modbus
  device id (serial, RTU over TCP) or unit id (modbus-tcp); a DL/T 645 or CJ/T 188 meter
  address after zero-fill to the standard's width (``"101"`` is ``"000000000101"``), which
  ``devices.meter_address`` has already done, exactly as the drivers fill it on the wire;
- **enabled** devices only: a device with ``enabled: false`` is not polled, so an old entry
  kept disabled beside its replacement is not a clash.

Called by ``devices`` after every device is read; devices whose bus or address has problems
(already reported) are skipped.
"""

from __future__ import annotations

from typing import Sequence

from ..settings import BusSettings, DeviceSettings
from .source import Report, Section

__all__ = ["report_address_clashes"]

_WHY = "two devices at one address answer the same requests: give each its own"


def report_address_clashes(report: Report, devices: Sequence[tuple[Section, DeviceSettings]],
                           buses: dict[str, BusSettings | None] | None) -> None:
    """One problem per device whose (link, protocol, address) an earlier enabled device holds."""
    first: dict[tuple[object, ...], tuple[Section, DeviceSettings, BusSettings]] = {}
    for s, device in devices:
        bus = (buses or {}).get(device.bus)
        if bus is None or device.address is None or device.enabled is not True:
            continue
        key = (_link(bus), bus.protocol, device.address)
        if key not in first:
            first[key] = (s, device, bus)
            continue
        s0, device0, bus0 = first[key]
        where = f" on bus '{bus0.name}'"
        if bus0.name != bus.name:
            where += f", the same {_link_text(bus)}"
        noun = "unit id" if bus.link == "tcp" else "address"
        report.add(s.line_of("address"), s.sub("address"),
                   f"{noun} {_shown(s, device.address)} is already used by {device0.name} "
                   f"(line {s0.line_of('address')}{_written(s0, device0.address)}){where}; {_WHY}")


def _link(bus: BusSettings) -> tuple[object, ...]:
    """What identifies the wire: the serial port as written, or host and port (the host case-folded)."""
    return ("serial", bus.serial) if bus.serial else ("tcp", (bus.host or "").lower(), bus.port)


def _link_text(bus: BusSettings) -> str:
    return f"serial port ({bus.serial})" if bus.serial else f"host and port ({bus.host}:{bus.port})"


def _raw(s: Section) -> object:
    return s.values["address"].value


def _shown(s: Section, address: int | str) -> str:
    """The address as the second device wrote it, with the zero-filled form when that differs."""
    if isinstance(address, int):
        return str(address)
    raw = str(_raw(s)).strip()
    return f'"{raw}"' if raw == address else f'"{raw}" ("{address}" after zero-fill)'


def _written(s: Section, address: int | str) -> str:
    """``, written "101"`` when the first device wrote its meter address without the zeros."""
    raw = str(_raw(s)).strip()
    return "" if isinstance(address, int) or raw == address else f', written "{raw}"'
