"""Commands in Sparkplug B: what a host's NCMD or DCMD writes, as the command service's ``Inbound``
(``sparkplug.py`` is the dialect; docs/dialects.md, "Sparkplug B").

A host writes metrics its births declared, by alias (3.0) or by name. A DCMD metric becomes one
``device.write`` of the device the topic names: ``{"point", "value"}``; when that Sparkplug device
is a unit inside one of ours (``gate-1_1``: lane 1 of ``gate-1``), the target is our device and
``lane`` is added when the unit is a number, else ``sub`` (which ``device.write`` refuses, naming
it). Unsigned, so acted on only when ``commands.unsigned.sparkplug`` lists ``device.write``. A
String that holds our own signed command (JSON with ``sig``, CONTRACT section 6) is passed on as
signed bytes instead, whatever metric carried it; NCMD ``Node Control/Command`` is the metric
meant for that.

Ids: ``spb-{Sparkplug device}-{seq, else the payload timestamp}``, ``-{index}`` added when one DCMD
writes several metrics (one ``Inbound`` each, in payload order), so none is taken for a repeat.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Mapping

from .dialect import Inbound
from .sparkplug_metric import Slot, read_value

__all__ = ["written", "device_commands", "is_signed"]

log = logging.getLogger("edge_agent.uplink")


def written(message: Any, slots: Mapping[str, Slot], where: str) -> list[tuple[str, Slot | None, Any]]:
    """``(name, slot, value)`` of each metric a command payload writes; an alias no birth declared
    is skipped (logged), a name we never declared is kept (its slot None) for the service to refuse."""
    by_alias = {s.alias: s for s in slots.values()}
    out: list[tuple[str, Slot | None, Any]] = []
    for metric in message.metrics:
        if metric.HasField("name"):
            slot = slots.get(metric.name)
            out.append((metric.name, slot, read_value(metric, slot.datatype if slot else None)))
            continue
        slot = by_alias.get(metric.alias)
        if slot is None:
            log.warning("sparkplug: a command for %s writes alias %d, which no birth declared", where, metric.alias)
            continue
        out.append((slot.name, slot, read_value(metric, slot.datatype)))
    return out


def device_commands(device: str, target: str, sub: str | None, message: Any,
                    slots: Mapping[str, Slot]) -> list[Inbound]:
    """One ``Inbound`` per metric a DCMD to Sparkplug device ``device`` writes: our ``target``,
    and ``sub`` when that device is a unit of it (module docstring)."""
    stamp = message.seq if message.HasField("seq") else message.timestamp
    metrics = written(message, slots, device)
    found: list[Inbound] = []
    for i, (name, _, value) in enumerate(metrics):
        if is_signed(value):
            found.append(Inbound("sparkplug", signed=value.encode("utf-8")))
            continue
        args: dict[str, Any] = {"point": name, "value": value}
        if sub is not None:
            args.update({"lane": int(sub)} if sub.isdigit() else {"sub": sub})
        cmd_id = f"spb-{device}-{stamp}" + (f"-{i}" if len(metrics) > 1 else "")
        found.append(Inbound("sparkplug", unsigned={"id": cmd_id, "op": "device.write", "target": target,
                                                    "args": args}))
    return found


def is_signed(value: Any) -> bool:
    """Whether a written String holds our own signed command (CONTRACT section 6)."""
    if not isinstance(value, str) or '"sig"' not in value:
        return False
    try:
        obj = json.loads(value)
    except ValueError:
        return False
    return isinstance(obj, dict) and "sig" in obj
