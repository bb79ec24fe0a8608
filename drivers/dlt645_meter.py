"""DL/T 645 electricity meter (2007, or 1997 for older meters): one read per DI, in turn.

Wire facts (codec: ``dlt645_codec``): RS-485, 2400 8E1 by default; a request is
``FE*wake 68 A*6 68 11 04 DI CS 16``; the meter answers 91 (value), B1 (value continues: fetch
the rest with 12 + DI + sequence byte until a 92), or D1 with one error byte. A read takes about
0.2 s at 2400 baud, so a single-phase meter with every quantity costs ~1.6 s of bus time per
poll, a three-phase one ~2.4 s: on a busy line prefer ``quantities: energy``.

Options: ``version`` 2007 | 1997 (1997 has only the energies this codec decodes), ``phases``
1 | 3 (a single-phase meter has no B/C phase, so they are not asked), ``quantities`` all |
energy, ``wake`` 0..4 FE bytes before each request.

Behaviour, mirroring ``poll.DeviceReader``:
- every DI is its own transaction under the link's lock, retried on silence or an unusable
  answer up to the device's ``retries``; the link is shared by every meter on the bus, so the
  reader keeps no state on it;
- the answer is looked for in what arrives: wake-up bytes, noise, the echo of our own request
  (RS-485 adapters with local echo) and frames from other meters or for another DI are skipped;
  if our reply never comes, the error names the last thing skipped (``bad checksum``, ...);
- D1 with the "no requested data" bit: the meter does not have that DI. Logged once at WARNING,
  then not asked again while the reader lives (a daemon restart asks again). If every DI is
  such, the first is still asked each poll, so the poll still tells whether the meter is alive;
- any other error reply: ``val=None, q=bad`` and an error naming the reasons;
- a value outside its ``valid`` range is published ``bad`` but kept.

Error strings name the device, the DI and the cause, never a value or a frame's bytes.

Outputs: energy_total_kWh, energy_import_kWh, energy_export_kWh, voltage_a_V, voltage_b_V,
voltage_c_V, current_a_A, current_b_A, current_c_A, power_kW, power_factor, frequency_Hz.

The reply scanning and the retry loop are ``_meter``'s, shared with ``cjt188_meter``.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

from edge_agent.errors import LinkError, NoResponse, bug_location
from edge_agent.model import Driver, Option, Output, PollResult, Reading

from . import dlt645_codec as dlt
from ._meter import ReplyScanner, ask, attempts_text, make_reading, one_stamp, reason_for

__all__ = ["DRIVER", "OUTPUTS", "Dlt645Reader", "select_dis", "reader"]

log = logging.getLogger(__name__)

MAX_FOLLOW_UPS = 16  # 12-requests after one B1; a meter that never says "last frame" is cut off

OUTPUTS = (
    Output("energy_total_kWh", valid=(-799999.99, 799999.99)),  # combined: signed (DL/T 645-2007 A.1)
    Output("energy_import_kWh", valid=(0.0, 999999.99)),
    Output("energy_export_kWh", valid=(0.0, 999999.99)),
    Output("voltage_a_V", valid=(0.0, 500.0)),
    Output("voltage_b_V", valid=(0.0, 500.0)),
    Output("voltage_c_V", valid=(0.0, 500.0)),
    Output("current_a_A", valid=(-100.0, 100.0)),
    Output("current_b_A", valid=(-100.0, 100.0)),
    Output("current_c_A", valid=(-100.0, 100.0)),
    Output("power_kW", valid=(-70.0, 70.0)),
    Output("power_factor", valid=(-1.0, 1.0)),
    Output("frequency_Hz", valid=(45.0, 65.0)),
)
_VALID = {o.name: o.valid for o in OUTPUTS}

_ENERGY = ("energy_total_kWh", "energy_import_kWh", "energy_export_kWh")
_BC_PHASE = ("voltage_b_V", "voltage_c_V", "current_b_A", "current_c_A")


# -- DL/T 645 ------------------------------------------------------------------------------------

def select_dis(version: int, phases: int, quantities: str = "all") -> list[int]:
    """The DIs to read, in a stable order: the codec's table filtered by the options."""
    dis = [di for di, fmt in dlt.DI_TABLE.items() if fmt.version == version]
    if phases == 1:
        dis = [di for di in dis if dlt.DI_TABLE[di].point not in _BC_PHASE]
    if quantities == "energy":
        dis = [di for di in dis if dlt.DI_TABLE[di].point in _ENERGY]
    return dis


class _ValueProblem(Exception):
    """The meter answered, but the value cannot be used; the message is a reason without values."""


class Dlt645Reader:
    """Polls one meter. Holds no link state: every meter of a bus shares one ``ByteLink``."""

    def __init__(self, device: Any, link: Any, clock: Callable[[], float] = time.time) -> None:
        self.device, self.link, self.clock = device, link, clock
        options = device.options
        self.version = int(options.get("version", 2007))
        self.wake = int(options.get("wake", 4))
        self.dis = select_dis(self.version, int(options.get("phases", 1)), str(options.get("quantities", "all")))
        self.unsupported: set[int] = set()

    def _di_text(self, di: int) -> str:
        return f"{di:08X}" if self.version == 2007 else f"{di:04X}"

    def _label(self, di: int) -> str:
        return f"{self.device.name}: read DI {self._di_text(di)} ({dlt.DI_TABLE[di].point})"

    def _due(self) -> list[int]:
        due = [di for di in self.dis if di not in self.unsupported]
        return due or self.dis[:1]  # all unsupported: still ask one, to know the meter is alive

    # -- one DI ---------------------------------------------------------------------------
    def _scanner(self, di: int, seq: int | None) -> ReplyScanner:
        def judge(frame: bytes, parsed: dlt.Frame) -> str | None:
            if not parsed.is_reply:
                return "the echo of our own request"
            try:
                data = dlt.decode_read_data(frame, expect_address=self.device.address, expect_di=di,
                                            version=self.version)
            except dlt.MeterError:  # from our meter: the address is checked first
                return None
            except dlt.FrameError as exc:
                return reason_for(exc)
            if seq is not None and data.seq != seq:
                return "a reply with another sequence number"
            return None
        return ReplyScanner(dlt.frame_length_needed, dlt.decode_frame, judge)

    def _ask(self, request: bytes, di: int, seq: int | None, result: PollResult) -> dlt.ReadData:
        raw = ask(self.link, lambda: (request, self._scanner(di, seq)), device="meter",
                  timeout_s=self.device.timeout_s, retries=self.device.retries, result=result)
        return dlt.decode_read_data(raw, expect_address=self.device.address, expect_di=di, version=self.version)

    def _read(self, di: int, result: PollResult) -> float:
        """The value of ``di``, its B1 follow-ups fetched; MeterError, NoResponse, LinkError or _ValueProblem."""
        address = self.device.address
        with self.link.lock:  # the follow-ups belong to this read: no other meter in between
            part = self._ask(dlt.encode_read(address, di, wake=self.wake, version=self.version), di, None, result)
            payload, seq = part.payload, 0
            while part.more_follows:
                seq += 1
                if self.version != 2007:
                    raise _ValueProblem("a multi-frame reply, which 1997 reads do not fetch")
                if seq > MAX_FOLLOW_UPS:
                    raise _ValueProblem(f"more than {MAX_FOLLOW_UPS} follow-up frames")
                part = self._ask(dlt.encode_read_next(address, di, seq, wake=self.wake), di, seq, result)
                payload += part.payload
        try:
            return dlt.decode_value(di, payload)
        except dlt.FrameError as exc:
            raise _ValueProblem("a value of the wrong length for its DI" if isinstance(exc, dlt.BadLength)
                                else reason_for(exc)) from None

    # -- one round ------------------------------------------------------------------------
    def poll(self) -> PollResult:
        """One round over the DIs due. Never raises for anything the meter or the link does."""
        result = PollResult()
        for di in self._due():
            label, name = self._label(di), dlt.DI_TABLE[di].point
            try:
                value = self._read(di, result)
            except LinkError as exc:
                result.errors.append(f"{label}: {exc}")
                result.answered = False
                break
            except dlt.MeterError as exc:
                result.answered = True
                self._refused(di, exc, result)
                continue
            except NoResponse as exc:
                result.errors.append(f"{label}: {exc} ({attempts_text(self.device.retries)})")
                continue
            except _ValueProblem as exc:
                result.answered = True
                result.errors.append(f"{label}: meter answered {exc}")
                result.readings.append(self._reading(name, None))
                continue
            except Exception as exc:  # a bug, not the meter: report it and go on with the round
                result.errors.append(f"{label}: unexpected {bug_location(exc)}")
                continue
            result.answered = True
            self.unsupported.discard(di)  # the last DI asked as a heartbeat may have data again
            result.readings.append(self._reading(name, value))
        return one_stamp(result)  # a DI a frame, one record a round

    def _reading(self, name: str, value: float | None) -> Reading:
        return make_reading(self.device.name, name, value, int(self.clock() * 1000), _VALID[name])

    def _refused(self, di: int, exc: dlt.MeterError, result: PollResult) -> None:
        """An error reply: "no data" retires the DI (said once); anything else is a bad reading."""
        if exc.bits & 0x02:  # 2007: no requested data; 1997: bad data identifier
            if di not in self.unsupported:
                self.unsupported.add(di)
                log.warning("device %s: the meter has no %s (DI %s, error reply '%s'); not asked again "
                            "until the agent restarts", self.device.name, dlt.DI_TABLE[di].point,
                            self._di_text(di), dlt.MeterError(0x02, self.version).reasons[0])
            return
        reasons = ", ".join(exc.reasons) or "no reason given"
        result.errors.append(f"{self._label(di)}: meter answered with an error reply ({reasons})")
        result.readings.append(self._reading(dlt.DI_TABLE[di].point, None))


def reader(device: Any, link: Any, clock: Callable[[], float] = time.time) -> Dlt645Reader:
    return Dlt645Reader(device, link, clock)


DRIVER = Driver(
    id="dlt645_meter", protocol="dlt645", reader=reader, outputs=OUTPUTS, default_interval="30s",
    summary="DL/T 645-2007/1997 electricity meter: energies, voltages, currents, power, PF, frequency",
    options=(
        Option("version", 2007, (2007, 1997), "protocol edition the meter speaks; 1997 reads the energies only"),
        Option("phases", 1, (1, 3), "3 also reads phases B and C"),
        Option("quantities", "all", ("all", "energy"), "energy: only the energy registers (fewer reads per poll)"),
        Option("wake", 4, (0, 1, 2, 3, 4), "FE wake-up bytes sent before each request"),
    ),
)
