"""Bus timing: registers/s over a wire-timed serial line vs the wire limit (on demand, not a test).

    .venv/bin/python bench/bench_bus_timing.py [--quick] [--repeat 3] [--no-dlt645]

Modbus RTU at 9600 8N1. The line is a ``PtyPair(9600)`` (each chunk is delayed by its bytes'
time on the wire, 10 bits a byte; one pump for both directions, as RS-485 is half duplex), our
own simulator (``ModbusSimulator.serve_serial``) on one end, the agent's ``ModbusBus`` (pymodbus
sync RTU client) on the other, all in this process (a simulator in a separate process measured
the same within 1%). Unit 1 maps holding 0..249; unit 2 is a QDY level sensor. Cases:

  (a) ``ModbusBus.read`` of 125 holding registers, back to back;
  (b) ``DeviceReader.poll`` of a ``modbus_generic`` device of 250 uint16 points (config text
      through ``parse_settings``): the planner makes it 2 requests of 125; what the daemon gets;
  (c) small reads, where per-request overhead weighs most: ``ModbusBus.read`` of 2 and 1
      registers, and ``DeviceReader.poll`` of a ``qdy_level`` device (holding 3+2);
  then what moves the figure: ``gap: 10ms`` on the bus (config/example.yaml's); a device that
  answers only after 3.5 characters of silence (as one that frames requests by silence must;
  our simulator frames them by length and answers within ~0.2 ms); without ``--quick``, a
  sweep of N.
  (d) DL/T 645-2007 at 2400 8E1 (11 bits a byte) over ``ByteLink.transact``: one energy DI
      raw, and ``Dlt645Reader.poll`` of a single-phase meter (8 DIs), our ``Dlt645Bus``
      simulator behind ``ByteServer.serve_serial``.

Wire limit, Modbus, a read of N registers: request 8 bytes, response 5 + 2N, and the
3.5-character silence RTU requires between frames, twice per transaction:
    N / ((8 + 5 + 2N) + 2 * 3.5) character times, a character = 10 bits / baud.
DL/T 645 has no such silence rule: its limit is the request and reply bytes alone (4 FE
wake-up bytes each way included, as the driver and the simulated meter send them).
Second baseline, measured on the same line in the same run: a length-aware raw pyserial client
that writes each request and returns the moment the reply's bytes are in, with no silence at
all: the ceiling of this simulated line and simulator. Each case: k operations back to back,
timed as a whole; median of ``--repeat`` interleaved runs. Goal: (a) >= 90% of the wire limit.
"""

from __future__ import annotations

import argparse
import dataclasses
import struct
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

from _common import median, summary

import serial

from edge_agent.field.bus import ModbusBus
from edge_agent.config.schema import parse_settings
from edge_agent.drivers import dlt645_codec as dlt
from edge_agent.drivers.dlt645_meter import select_dis
from edge_agent.field.link import ByteLink
from edge_agent.model import Reg
from edge_agent.field.poll import DeviceReader
from edge_agent.field.registry import get_driver
from edge_agent.settings import BusSettings, DeviceSettings
from edge_agent.sim.byteserver import ByteServer
from edge_agent.sim.devices import DeviceModel, LevelSensor
from edge_agent.sim.meters import Dlt645Bus, Dlt645Meter
from edge_agent.sim.modbus import ModbusSimulator, crc16, rtu_frame
from edge_agent.sim.ptypair import PtyPair

GOAL = 0.90
BLOCK_UNIT, QDY_UNIT = 1, 2
BLOCK = list(range(1000, 1250))  # unit 1's holding 0..249; a value tells its address
GAP_S = 0.010  # config/example.yaml's gap
METER = "000000000101"
WAKE = 4  # FE bytes before each frame: the driver's default, and the simulated meter's

Frames = tuple[tuple[bytes, int], ...]  # (request, reply length) per transaction of one operation
Op = Callable[[], None]

MODBUS_CONFIG = """\
gateway: {{id: gw-bench, site: bench, state_dir: /nonexistent}}
mqtt: {{host: 127.0.0.1}}
buses:
  - {{name: rs485-1, protocol: modbus-rtu, serial: {path}, baud: {baud}, timeout: 1s}}
devices:
  - name: plc-1
    bus: rs485-1
    driver: modbus_generic
    address: {block_unit}
    points:
{points}
  - {{name: river-1, bus: rs485-1, driver: qdy_level, address: {qdy_unit}}}
"""

# 8E1 as DL/T 645 runs; the pty pair times 11 bits a byte (a pty itself carries no parity bit).
DLT_CONFIG = """\
gateway: {{id: gw-bench, site: bench, state_dir: /nonexistent}}
mqtt: {{host: 127.0.0.1}}
buses:
  - {{name: meters-1, protocol: dlt645, serial: {path}, baud: {baud}, parity: E, timeout: 1s}}
devices:
  - {{name: elec-101, bus: meters-1, driver: dlt645_meter, address: "{meter}"}}
"""


# -- the lines ------------------------------------------------------------------------------
class ModbusLine:
    """9600 8N1 (or ``baud``), both Modbus units on it, and the settings the agent reads them with."""

    bits, silence_chars = 10, 2 * 3.5  # bits a byte; characters of silence per transaction

    def __init__(self, baud: int = 9600) -> None:
        self.baud = baud
        block = DeviceModel()
        block.set(Reg.HOLDING, 0, BLOCK)
        self.pair = PtyPair(baud=baud, bits_per_byte=self.bits)
        self.sim = ModbusSimulator({BLOCK_UNIT: block, QDY_UNIT: LevelSensor(level_m=1.23)})
        self.sim.serve_serial(self.pair.b, baud=baud)
        points = "\n".join(f"      - {{name: r{i:03d}, reg: holding, address: {i}, type: uint16}}" for i in range(250))
        settings = parse_settings(MODBUS_CONFIG.format(path=self.pair.a, baud=baud, block_unit=BLOCK_UNIT,
                                                       qdy_unit=QDY_UNIT, points=points))
        self.bus_settings = settings.bus("rs485-1")
        self.devices: dict[str, DeviceSettings] = {d.name: d for d in settings.devices}

    def set_delay(self, units: set[Any], delay_s: float) -> None:
        for unit in units:
            self.sim.set_faults(unit, delay_s=delay_s)

    def raw_port(self) -> serial.Serial:
        return serial.Serial(self.pair.a, baudrate=self.baud, timeout=1.0, exclusive=True)

    def close(self) -> None:
        self.sim.stop()
        self.pair.close()


class DltLine:
    """2400 8E1, one single-phase DL/T 645-2007 meter."""

    bits, silence_chars = 11, 0.0

    def __init__(self, baud: int = 2400) -> None:
        self.baud = baud
        self.meter = Dlt645Meter(METER, reply_wake=WAKE, wander=0.0)
        self.pair = PtyPair(baud=baud, bits_per_byte=self.bits)
        self.server = ByteServer(Dlt645Bus([self.meter]))
        self.server.serve_serial(self.pair.b, baud=baud)  # parity: see DLT_CONFIG
        settings = parse_settings(DLT_CONFIG.format(path=self.pair.a, baud=baud, meter=METER))
        self.bus_settings = settings.bus("meters-1")
        self.devices = {d.name: d for d in settings.devices}

    def set_delay(self, units: set[Any], delay_s: float) -> None:
        if delay_s:
            self.meter.set_faults(delay_s=delay_s)

    def raw_port(self) -> serial.Serial:
        return serial.Serial(self.pair.a, baudrate=self.baud, timeout=1.0, exclusive=True)

    def close(self) -> None:
        self.server.stop()
        self.pair.close()


Line = ModbusLine | DltLine


# -- the agent's side ---------------------------------------------------------------------
def bus_read(unit: int, n: int) -> Callable[[Line, BusSettings], tuple[Op, Callable[[], None]]]:
    def make(line: Line, settings: BusSettings) -> tuple[Op, Callable[[], None]]:
        bus = ModbusBus(settings)
        expect = BLOCK[:n]

        def op() -> None:
            if bus.read(unit, Reg.HOLDING, 0, n) != expect:
                raise RuntimeError(f"unit {unit} answered other values than the simulator holds")
        return op, bus.close
    return make


def modbus_poll(device: str, driver: str, expect: int) -> Callable[[Line, BusSettings], tuple[Op, Callable[[], None]]]:
    def make(line: Line, settings: BusSettings) -> tuple[Op, Callable[[], None]]:
        bus = ModbusBus(settings)
        reader = DeviceReader(line.devices[device], get_driver(driver), bus)
        return _checked(device, reader.poll, expect), bus.close
    return make


def dlt_transact(di: int) -> Callable[[Line, BusSettings], tuple[Op, Callable[[], None]]]:
    def make(line: Line, settings: BusSettings) -> tuple[Op, Callable[[], None]]:
        link = ByteLink(settings)
        request = dlt.encode_read(METER, di, wake=WAKE)

        def op() -> None:
            reply = link.transact(request, dlt.frame_length_needed, device="meter")
            dlt.decode_read_reply(reply, expect_address=METER, expect_di=di)
        return op, link.close
    return make


def dlt_poll(device: str, expect: int) -> Callable[[Line, BusSettings], tuple[Op, Callable[[], None]]]:
    def make(line: Line, settings: BusSettings) -> tuple[Op, Callable[[], None]]:
        link = ByteLink(settings)
        reader = get_driver("dlt645_meter").reader(line.devices[device], link)
        return _checked(device, reader.poll, expect), link.close
    return make


def _checked(device: str, poll: Callable[[], Any], expect: int) -> Op:
    def op() -> None:
        result = poll()
        if result.errors or len(result.readings) != expect:
            raise RuntimeError(f"{device}: {len(result.readings)} readings, errors {result.errors[:2]}")
    return op


# -- the cases ------------------------------------------------------------------------------
@dataclass
class Case:
    label: str
    line: str  # "modbus" or "dlt645"
    frames: Frames  # what one operation puts on the wire, for the raw client and the wire limit
    per_op: int  # registers (Modbus) or values (DL/T 645) one operation reads
    ops: int  # operations timed back to back per run
    agent: Callable[[Line, BusSettings], tuple[Op, Callable[[], None]]]  # -> (one operation, close)
    units: tuple[int, ...] = ()
    gap_s: float = 0.0
    turnaround_s: float = 0.0  # the device answers this long after the request's last byte
    agent_s: list[float] = dataclasses.field(default_factory=list)  # elapsed per run
    raw_s: list[float] = dataclasses.field(default_factory=list)


def modbus_frames(*reads: tuple[int, int, int]) -> Frames:
    return tuple((rtu_frame(unit, struct.pack(">BHH", 3, address, count)), 5 + 2 * count)
                 for unit, address, count in reads)


def dlt_frames(*dis: int) -> Frames:
    return tuple((dlt.encode_read(METER, di, wake=WAKE), WAKE + 16 + dlt.DI_TABLE[di].size) for di in dis)


def raw_op(port: serial.Serial, frames: Frames) -> Op:
    """The baseline client: write, read exactly the reply's length, check it is one (CRC or CS)."""
    def op() -> None:
        for request, size in frames:
            port.write(request)
            reply = port.read(size)
            if len(reply) != size:
                raise RuntimeError(f"raw client: {len(reply)} of {size} bytes")
            if reply[0] == 0xFE:  # a DL/T 645 reply (WAKE FE bytes first); else Modbus RTU
                dlt.decode_frame(reply)
            elif crc16(reply[:-2]) != struct.unpack("<H", reply[-2:])[0]:
                raise RuntimeError("raw client: bad CRC")
    return op


def cases(quick: bool, dlt645: bool) -> list[Case]:
    big, small = (4, 30) if quick else (12, 150)  # at 9600 a 125-register read takes ~0.28 s, 2 registers ~26 ms
    silence = 3.5 * 10 / 9600
    b, q = BLOCK_UNIT, QDY_UNIT
    out = [
        Case("(a) ModbusBus.read 125", "modbus", modbus_frames((b, 0, 125)), 125, big, bus_read(b, 125), (b,)),
        Case("(b) poll 250 points (2 x 125)", "modbus", modbus_frames((b, 0, 125), (b, 125, 125)), 250,
             max(2, big // 2), modbus_poll("plc-1", "modbus_generic", 250), (b,)),
        Case("(c) ModbusBus.read 2", "modbus", modbus_frames((b, 0, 2)), 2, small, bus_read(b, 2), (b,)),
        Case("(c) poll qdy_level (3+2)", "modbus", modbus_frames((q, 3, 2)), 2, small,
             modbus_poll("river-1", "qdy_level", 1), (q,)),
        Case("(c) ModbusBus.read 1", "modbus", modbus_frames((b, 0, 1)), 1, small, bus_read(b, 1), (b,)),
        Case("    read 125, gap 10ms", "modbus", modbus_frames((b, 0, 125)), 125, big, bus_read(b, 125), (b,),
             gap_s=GAP_S),
        Case("    read 2, gap 10ms", "modbus", modbus_frames((b, 0, 2)), 2, small, bus_read(b, 2), (b,), gap_s=GAP_S),
        Case("    read 125, device waits 3.5 ch", "modbus", modbus_frames((b, 0, 125)), 125, big, bus_read(b, 125),
             (b,), turnaround_s=silence),
        Case("    read 2, device waits 3.5 ch", "modbus", modbus_frames((b, 0, 2)), 2, small, bus_read(b, 2), (b,),
             turnaround_s=silence),
    ]
    if not quick:
        out += [Case(f"    read {n} (sweep)", "modbus", modbus_frames((b, 0, n)), n,
                     max(big, 2000 // (20 + 2 * n)), bus_read(b, n), (b,)) for n in (4, 8, 16, 32, 64)]
    if dlt645:
        dis = select_dis(2007, 1)  # what a poll of a single-phase 2007 meter asks (the driver defaults), in order
        out += [
            Case("(d) ByteLink.transact 1 DI", "dlt645", dlt_frames(0x00000000), 1, 6 if quick else 20,
                 dlt_transact(0x00000000)),
            Case(f"(d) Dlt645Reader.poll ({len(dis)} DIs)", "dlt645", dlt_frames(*dis), len(dis), 1 if quick else 3,
                 dlt_poll("elec-101", len(dis))),
        ]
    return out


def run_case(line: Line, case: Case) -> None:
    line.set_delay(set(case.units), case.turnaround_s)
    try:
        op, close = case.agent(line, dataclasses.replace(line.bus_settings, gap_s=case.gap_s))
        try:
            case.agent_s.append(timed(op, case.ops))
        finally:
            close()  # the port is opened exclusively: one client at a time
        port = line.raw_port()
        try:
            case.raw_s.append(timed(raw_op(port, case.frames), case.ops))
        finally:
            port.close()
        time.sleep(4 * line.bits / line.baud)  # let the line go quiet before the next client
    finally:
        line.set_delay(set(case.units), 0.0)


def timed(op: Op, k: int) -> float:
    op()  # warm-up: opens the port; the first request after a change of device or client
    t0 = time.perf_counter()
    for _ in range(k):
        op()
    return time.perf_counter() - t0


def report(case: Case, line: Line) -> tuple[float, float]:
    """Prints the case's row; returns (measured, wire limit) in registers or values per second."""
    char = line.bits / line.baud
    on_wire = sum(len(req) + size for req, size in case.frames) * char
    limit = case.per_op / (on_wire + len(case.frames) * line.silence_chars * char)
    requests = case.ops * len(case.frames)
    rate = case.ops * case.per_op / median(case.agent_s)
    raw_rate = case.ops * case.per_op / median(case.raw_s)
    per_req = median(case.agent_s) / requests
    over = (median(case.agent_s) - case.ops * on_wire) / requests
    d = 1 if limit >= 10 else 2  # DL/T 645 reads ~5 values/s
    print(f"{case.label:<34} {case.ops:>4} {per_req * 1e3:>7.2f} {rate:>7.{d}f} {limit:>6.{d}f} {rate / limit:>6.0%} "
          f"{over * 1e3:>7.2f} ms {raw_rate:>10.{d}f} {rate / raw_rate:>9.0%}", flush=True)
    return rate, limit


def header(title: str, unit: str) -> None:
    print(title)
    print(f"{'case':<34} {'ops':>4} {'ms/req':>7} {unit + '/s':>7} {'wire':>6} {'ratio':>6} "
          f"{'over bytes':>10} {'raw ' + unit + '/s':>10} {'agent/raw':>9}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer operations, one run, no sweep of N")
    ap.add_argument("--repeat", type=int, default=None, help="runs per case, median shown (default 3)")
    ap.add_argument("--no-dlt645", action="store_true", help="Modbus only")
    args = ap.parse_args()
    repeat = args.repeat or (1 if args.quick else 3)
    todo = cases(args.quick, not args.no_dlt645)
    lines: dict[str, Line] = {}
    try:
        lines["modbus"] = ModbusLine(9600)
        if not args.no_dlt645:
            lines["dlt645"] = DltLine(2400)
        print(f"over a wire-timed pty (PtyPair), our simulators, median of {repeat}; ratio = measured / wire limit; "
              "raw = length-aware pyserial client on the same line, no silence; over bytes = ms/request - bytes' time")
        for _ in range(repeat):  # interleaved, so drift on a shared machine hits every case
            for case in todo:
                run_case(lines[case.line], case)
        modbus = lines["modbus"]
        char = modbus.bits / modbus.baud
        header(f"Modbus RTU {modbus.baud} 8N1, ModbusBus (pymodbus sync RTU); 1 character = {char * 1e3:.3f} ms; "
               "wire limit = N / ((13 + 2N + 7) characters)", "regs")
        first = None
        for case in todo:
            if case.line == "modbus":
                figures = report(case, modbus)
                first = first or figures
        print(f"  the wire limit allows 2 x 3.5 characters = {7 * char * 1e3:.2f} ms over the bytes; pymodbus polls "
              f"the port every 4 characters ({4 * char * 1e3:.2f} ms) and ends a frame after one poll with no new byte")
        if "dlt645" in lines:
            dl = lines["dlt645"]
            header(f"DL/T 645-2007 {dl.baud} 8E1, ByteLink.transact; 1 character = {dl.bits / dl.baud * 1e3:.3f} ms; "
                   f"wire limit = bytes only (request + reply, {WAKE} FE each), no silence rule", "vals")
            for case in todo:
                if case.line == "dlt645":
                    report(case, dl)
    finally:
        for line in lines.values():
            line.close()
    rate, limit = first  # type: ignore[misc]
    summary(f"{rate:.1f} registers/s: ModbusBus.read of 125 holding registers back to back, 9600 8N1",
            f"{limit:.1f} registers/s: the wire limit (request + response + 2 x 3.5 characters of silence)",
            f"{rate / limit:.0%} of the wire limit", f">= {GOAL:.0%} of the wire limit", rate >= GOAL * limit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
