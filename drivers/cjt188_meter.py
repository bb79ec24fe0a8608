"""CJ/T 188-2004 water, gas and heat meter: one read-data request (DI 901F) per poll.

Wire facts (codec: ``cjt188_codec``): RS-485 (or M-Bus through a converter), 2400 8E1 by
default; a request is ``FE*wake 68 T A*7 01 03 DI SER CS 16``, T the meter type (10 cold
water, 11 hot water, 20 heat, 30 gas). The meter answers 81 with its totals, clock and status,
or C1 (an error reply with its status). The request's DI goes ``90 1F`` (the 2004 text) or
``1F 90`` (many meters, and the 2018 revision) as ``di_order`` says; replies in either order
are accepted. SER, a sequence byte, changes with every request and must come back in the
reply, so a late answer to an earlier attempt is never taken for the current one.

Options: ``meter_type`` cold_water | hot_water | gas | heat, ``di_order`` "90 1F" | "1F 90",
``wake`` 0..4 FE bytes before the request (battery meters sleep: the preamble wakes them).

Behaviour, as ``dlt645_meter`` (both use ``_meter``'s reply scanning and retry loop): retries
on silence or an unusable answer (the error names the last frame skipped: the echo of our
request, another meter's reply, a bad checksum, another meter type); a C1 error reply marks every
output ``val=None, q=bad`` with an error string; a value the codec cannot decode (not BCD, an
unknown unit) does the same. Error strings never carry a value or a frame's bytes.

Outputs: water and gas meters ``flow_total_m3`` (the meter's running total), ``flow_settlement_m3``
(the total on the last settlement day), ``valve`` ("open", "closed" or "abnormal"),
``battery_low`` (bool); heat meters ``heat_total_kWh`` and ``heat_settlement_kWh`` (converted
from the meter's unit, e.g. GJ or MWh).
"""

from __future__ import annotations

import time
from typing import Any, Callable

from edge_agent.errors import LinkError, NoResponse, bug_location
from edge_agent.model import Driver, Option, Output, PollResult, Reading

from . import cjt188_codec as cjt
from ._meter import ReplyScanner, ask, attempts_text, make_reading, reason_for

__all__ = ["DRIVER", "OUTPUTS", "METER_TYPES", "Cjt188Reader", "reader"]

METER_TYPES = {"cold_water": 0x10, "hot_water": 0x11, "heat": 0x20, "gas": 0x30}

_WATER = (
    Output("flow_total_m3", valid=(0.0, 999999.99)),
    Output("flow_settlement_m3", valid=(0.0, 999999.99)),
    Output("valve"),
    Output("battery_low"),
)
_HEAT = (
    Output("heat_total_kWh", valid=(0.0, 1e10)),
    Output("heat_settlement_kWh", valid=(0.0, 1e10)),
)
OUTPUTS = _WATER + _HEAT
_VALID = {o.name: o.valid for o in OUTPUTS}


def _values(reading: cjt.WaterReading | cjt.HeatReading) -> dict[str, Any]:
    """The published values of a decoded reply, by output name."""
    if isinstance(reading, cjt.HeatReading):
        return {"heat_total_kWh": reading.heat_kWh, "heat_settlement_kWh": reading.settlement_heat_kWh}
    return {"flow_total_m3": reading.flow_m3, "flow_settlement_m3": reading.settlement_flow_m3,
            "valve": reading.valve, "battery_low": reading.battery_low}


class Cjt188Reader:
    """Polls one meter. Holds no link state: every meter of a bus shares one ``ByteLink``."""

    def __init__(self, device: Any, link: Any, clock: Callable[[], float] = time.time) -> None:
        self.device, self.link, self.clock = device, link, clock
        options = device.options
        self.meter_type = METER_TYPES[str(options.get("meter_type", "cold_water"))]
        self.di_order = str(options.get("di_order", "90 1F"))
        self.wake = int(options.get("wake", 4))
        self.outputs = _HEAT if self.meter_type >> 4 == 2 else _WATER
        self._ser = 0
        self.label = f"{device.name}: read data (DI 901F)"

    def _decode(self, frame: bytes, ser: int) -> cjt.WaterReading | cjt.HeatReading:
        return cjt.decode_read_reply(frame, expect_address=self.device.address, expect_type=self.meter_type,
                                     expect_ser=ser)

    def _attempt(self) -> tuple[bytes, ReplyScanner]:
        """A request with the next SER, and the scanner that takes only the reply carrying it."""
        self._ser = ser = (self._ser + 1) & 0xFF

        def judge(frame: bytes, parsed: cjt.Frame) -> str | None:
            if not parsed.is_reply:
                return "the echo of our own request"
            try:
                self._decode(frame, ser)
            except (cjt.MeterError, cjt.BadBCD, cjt.UnknownUnit):  # ours: the identity checks come first
                return None
            except cjt.FrameError as exc:
                return reason_for(exc)
            return None
        request = cjt.encode_read(self.device.address, self.meter_type, ser=ser, di_order=self.di_order,
                                  wake=self.wake)
        return request, ReplyScanner(cjt.frame_length_needed, cjt.decode_frame, judge)

    def poll(self) -> PollResult:
        """One read of the meter. Never raises for anything the meter or the link does."""
        result = PollResult()
        try:
            with self.link.lock:
                frame = ask(self.link, self._attempt, device="meter", timeout_s=self.device.timeout_s,
                            retries=self.device.retries, result=result)
            values = _values(self._decode(frame, self._ser))
        except LinkError as exc:
            result.errors.append(f"{self.label}: {exc}")
            return result
        except NoResponse as exc:
            result.errors.append(f"{self.label}: {exc} ({attempts_text(self.device.retries)})")
            return result
        except cjt.MeterError:
            return self._all_bad(result, "meter answered with an error reply (C1)")
        except (cjt.BadBCD, cjt.UnknownUnit) as exc:
            return self._all_bad(result, f"meter answered {reason_for(exc)}")
        except Exception as exc:  # a bug, not the meter
            result.errors.append(f"{self.label}: unexpected {bug_location(exc)}")
            return result
        result.answered = True
        ts = int(self.clock() * 1000)  # one frame, one stamp: the poll is one record
        result.readings.extend(self._reading(name, value, ts) for name, value in values.items())
        return result

    def _all_bad(self, result: PollResult, why: str) -> PollResult:
        result.answered = True
        result.errors.append(f"{self.label}: {why}")
        ts = int(self.clock() * 1000)
        result.readings.extend(self._reading(o.name, None, ts) for o in self.outputs)
        return result

    def _reading(self, name: str, value: Any, ts: int) -> Reading:
        return make_reading(self.device.name, name, value, ts, _VALID[name])


def reader(device: Any, link: Any, clock: Callable[[], float] = time.time) -> Cjt188Reader:
    return Cjt188Reader(device, link, clock)


DRIVER = Driver(
    id="cjt188_meter", protocol="cjt188", reader=reader, outputs=OUTPUTS, default_interval="5min",
    summary="CJ/T 188-2004 water, gas or heat meter: totals, settlement-day totals, valve, battery",
    options=(
        Option("meter_type", "cold_water", tuple(METER_TYPES),
               "the T byte: 10 cold water, 11 hot water, 20 heat, 30 gas"),
        Option("di_order", "90 1F", ("90 1F", "1F 90"), "byte order of DI 901F in our request; replies may use either"),
        Option("wake", 4, (0, 1, 2, 3, 4), "FE wake-up bytes sent before the request"),
    ),
)
