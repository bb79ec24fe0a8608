"""One poll of one device: planned reads -> decoded values -> readings with quality.

The reader talks to any object with ``ModbusBus``' shape (``lock``, ``read(device_id, reg,
address, count, *, timeout_s)``) and the bus exceptions, so tests swap in a fake at this seam;
it never imports pymodbus. The scheduler owns timing; this module owns what one round means:

- each planned request runs under the bus lock, retried on ``NoResponse`` up to the device's
  ``retries`` (the bus itself never retries);
- ``DeviceFault``: the request's published points become ``val=None, q=bad``; the device is
  alive, so the poll still counts as answered;
- ``NoResponse`` after the retries: no readings for those points (silence is not a value);
- ``LinkError``: the rest of the round is skipped, ``answered`` is False;
- a value outside the point's ``valid`` range is published ``bad`` but kept; NaN/inf and
  None become ``val=None, q=bad``; internal points are never published;
- one stamp per poll: every reading of a round carries the time its last answer arrived (when
  all its values were known), so the round becomes one record (``model.group_readings``
  groups by device and time). Stamped per request, a round of three requests on Modbus TCP
  (1-2 ms apart) became one to three records at random, a point list that changed from one
  record to the next and the record's overhead paid up to three times.

Error strings name the device, the request (table, address, count) and the cause, never a
register value (values may be personal data); a failing decode hook is reported by its
exception type and location only, for the same reason.

``write`` is the device's one write path (a command's ``device.write``): through the bus's
``write(device_id, point, value, *, timeout_s)``, then, where the table can be read (coil,
holding register), a read-back compared to the value written, to the point's resolution.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable

from ..errors import DeviceFault, LinkError, NoResponse, bug_location
from ..model import DataClass, Driver, DType, Point, PollResult, Quality, Reading, Reg
from .plan import ReadRequest, plan_reads
from .registers import decode_value
from ..settings import DeviceSettings

__all__ = ["DeviceReader"]


def _judge(value: Any, valid: tuple[float, float] | None) -> tuple[Any, Quality]:
    if value is None:
        return None, Quality.BAD
    if isinstance(value, float) and not math.isfinite(value):
        return None, Quality.BAD
    if valid is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not valid[0] <= value <= valid[1]:
            return value, Quality.BAD
    return value, Quality.GOOD


class DeviceReader:
    """Reads one device through its driver; the plan is computed once, at construction."""

    def __init__(self, device: DeviceSettings, driver: Driver, bus: Any,
                 clock: Callable[[], float] = time.time) -> None:
        self.device, self.driver, self.bus, self.clock = device, driver, bus, clock
        self.points: tuple[Point, ...] = tuple(device.points if driver.points_from_config else driver.points)
        self.plan: list[ReadRequest] = plan_reads(
            self.points, max_block=device.max_block or driver.max_block, merge_gap=device.merge_gap)
        self._meta: dict[str, tuple[tuple[float, float] | None, DataClass]] = {
            p.name: (p.valid, p.data_class) for p in self.points if not p.internal}
        self._meta.update({o.name: (o.valid, o.data_class) for o in driver.outputs})

    def _label(self, request: ReadRequest) -> str:
        return f"{self.device.name}: read {request.reg} {request.address}+{request.count} (unit {self.device.address})"

    def _read(self, request: ReadRequest, result: PollResult) -> list[Any]:
        """One request with retries on silence; raises the last NoResponse, or Link/DeviceFault."""
        attempts = max(0, self.device.retries) + 1
        with self.bus.lock:
            attempt = 0
            while True:
                attempt += 1
                result.requests += 1
                try:
                    return self.bus.read(self.device.address, request.reg, request.address, request.count,
                                         timeout_s=self.device.timeout_s)
                except NoResponse:
                    if attempt >= attempts:
                        raise

    def write(self, point: str, value: Any, **extra: Any) -> str:
        """Write ``value`` to ``point``; what the read-back showed: ``"match"``, or ``"not_readable"``
        (input registers and discrete inputs cannot be read back). ``PermissionError`` for a point
        not declared writable; ``ValueError`` for an argument a Modbus write does not take or a value
        the point cannot hold; ``DeviceFault`` when the read-back differs (the device did not take
        the value); the bus's ``NoResponse``/``DeviceFault``/``LinkError`` as they come."""
        dev = self.device
        if extra:
            raise ValueError(f"a Modbus write takes only point and value, not {', '.join(sorted(extra))}")
        found = next((p for p in self.points if p.name == point), None)
        if found is None or not found.writable:
            raise PermissionError(f"{dev.name}: point {point} is not writable")
        with self.bus.lock:  # the read-back follows the write, with no poll between
            self.bus.write(dev.address, found, value, timeout_s=dev.timeout_s)
            if found.reg not in (Reg.COIL, Reg.HOLDING):
                return "not_readable"
            raw = self.bus.read(dev.address, found.reg, found.address, found.count, timeout_s=dev.timeout_s)
        if not _same(found, value, decode_value(found, raw)):
            raise DeviceFault("read_back", f"{dev.name}: {point} reads back differently after the write "
                                           "(the device did not take the value)")
        return "match"

    def _reading(self, name: str, value: Any, ts: int) -> Reading:
        valid, data_class = self._meta[name]
        val, q = _judge(value, valid)
        return Reading(dev=self.device.name, pt=name, val=val, ts=ts, q=q, data_class=data_class)

    def poll(self) -> PollResult:
        """One round over the plan. Never raises for anything the device or link does."""
        result = PollResult()
        values: dict[str, Any] = {}
        stamps: dict[str, int] = {}
        faulted: dict[str, int] = {}  # published name -> when the device refused its request
        for request in self.plan:
            try:
                raw = self._read(request, result)
            except LinkError as exc:
                result.errors.append(f"{self._label(request)}: {exc}")
                result.answered = False
                break
            except DeviceFault as exc:
                result.answered = True
                result.errors.append(f"{self._label(request)}: device answered {exc}")
                ts = int(self.clock() * 1000)
                faulted.update((p.name, ts) for p in request.points if not p.internal)
                if self.driver.decode is not None:  # its outputs may depend on what was refused
                    faulted.update((o.name, ts) for o in self.driver.outputs)
                continue
            except NoResponse as exc:
                tries = max(0, self.device.retries) + 1
                result.errors.append(f"{self._label(request)}: {exc} ({tries} attempt{'s' if tries > 1 else ''})")
                continue
            except Exception as exc:  # a bug, not the device: report it and carry on with the round
                result.errors.append(f"{self._label(request)}: unexpected {bug_location(exc)}")
                continue
            result.answered = True
            ts = int(self.clock() * 1000)
            for point in request.points:
                offset = point.address - request.address
                try:
                    values[point.name] = decode_value(point, raw[offset:offset + point.count])
                except Exception as exc:  # a declaration bug must not stop the other points
                    result.errors.append(f"{self._label(request)}: cannot decode {point.name}: {bug_location(exc)}")
                    continue
                stamps[point.name] = ts
        ts = max((*stamps.values(), *faulted.values()), default=0)  # the round's one stamp
        published = self._publish(result, values, ts)
        result.readings.extend(Reading(dev=self.device.name, pt=name, val=None, ts=ts, q=Quality.BAD,
                                       data_class=self._meta[name][1])
                               for name in faulted if name not in published)
        return result

    def _publish(self, result: PollResult, values: dict[str, Any], ts: int) -> set[str]:
        """Readings for the values read (through the decode hook, if any), stamped ``ts``;
        returns their names."""
        if not values:
            return set()
        if self.driver.decode is None:
            readings = [self._reading(p.name, values[p.name], ts)
                        for p in self.points if p.name in values and not p.internal]
            result.readings.extend(readings)
            return {r.pt for r in readings}
        try:
            outputs = self.driver.decode(dict(values))
            if not isinstance(outputs, dict):
                raise TypeError("decode hook must return a dict")
        except Exception as exc:
            result.errors.append(f"{self.device.name}: decode hook of driver {self.driver.id} failed: {bug_location(exc)}")
            return set()
        internal = {p.name for p in self.points if p.internal}
        done: set[str] = set()
        for name, value in outputs.items():
            if name not in self._meta or name in internal:
                result.errors.append(f"{self.device.name}: driver {self.driver.id} decode returned {name!r}, "
                                     "which is neither a published point nor a declared output; dropped")
                continue
            result.readings.append(self._reading(name, value, ts))
            done.add(name)
        return done


def _same(point: Point, written: Any, read: Any) -> bool:
    """Whether a read-back value is what was written, to the point's resolution."""
    if point.reg.is_bit or point.dtype is DType.BOOL:
        return bool(read) == bool(written)
    if point.dtype is DType.STRING:
        return isinstance(read, str) and read == str(written).rstrip(" ").split("\x00")[0]
    if not isinstance(read, (int, float)) or isinstance(read, bool):
        return False
    step = abs(point.scale) if point.scale else 1.0
    if point.dtype in (DType.FLOAT32, DType.FLOAT64):
        return math.isclose(float(read), float(written), rel_tol=1e-6, abs_tol=1e-9 + step * 1e-6)
    return abs(float(read) - float(written)) <= step / 2 + 1e-9
