"""Modbus RTU bus timing: registers/s over a wire-timed serial line vs the wire limit (on demand, not a test).

    .venv/bin/python bench/bench_bus_timing.py [--quick] [--repeat 3] [--baud 9600]

The line is a ``PtyPair(baud)`` (each chunk is delayed by its bytes' time on the wire, 8N1,
10 bits a byte; one pump for both directions, as RS-485 is half duplex), our own simulator
(``ModbusSimulator.serve_serial``) on one end, the agent's ``ModbusBus`` (pymodbus sync RTU
client) on the other, all in this process (a simulator in a separate process measured the same
within 1%). Unit 1 maps holding 0..249; unit 2 is a QDY level sensor. Cases:

  (a) ``ModbusBus.read`` of 125 holding registers, back to back;
  (b) ``DeviceReader.poll`` of a ``modbus_generic`` device of 250 uint16 points (config text
      through ``parse_settings``): the planner makes it 2 requests of 125; what the daemon gets;
  (c) small reads, where per-request overhead weighs most: ``ModbusBus.read`` of 2 and 1
      registers, and ``DeviceReader.poll`` of a ``qdy_level`` device (holding 3+2);
  then, to show what moves the figure: ``gap: 10ms`` on the bus (config/example.yaml's), a
  device that answers only after 3.5 characters of silence (as one that frames requests by
  silence must; the simulator frames them by length and answers within ~0.2 ms), and, without
  ``--quick``, a sweep of N.

Wire limit for a read of N registers: request 8 bytes, response 5 + 2N, and the 3.5-character
silence RTU requires between frames, twice per transaction:
    N / ((8 + 5 + 2N) + 2 * 3.5) character times, a character = 10 bits / baud.
Second baseline, measured on the same line in the same run: a length-aware raw pyserial client
that writes the request and returns the moment the 5 + 2N reply bytes are in, with no silence
at all: the ceiling of this simulated line and simulator. Each case: k transactions back to
back, timed as a whole; median of ``--repeat`` interleaved runs. Goal: (a) >= 90% of the wire
limit.
"""

from __future__ import annotations

import argparse
import dataclasses
import struct
import sys
import time
from dataclasses import dataclass
from typing import Callable

from _common import median, summary

import serial

from edge_agent.bus import ModbusBus
from edge_agent.config import parse_settings
from edge_agent.model import Reg
from edge_agent.poll import DeviceReader
from edge_agent.registry import get_driver
from edge_agent.settings import BusSettings, DeviceSettings
from edge_agent.sim.devices import DeviceModel, LevelSensor
from edge_agent.sim.modbus import ModbusSimulator, crc16, rtu_frame
from edge_agent.sim.ptypair import PtyPair

GOAL = 0.90
BLOCK_UNIT, QDY_UNIT = 1, 2
BLOCK = list(range(1000, 1250))  # unit 1's holding 0..249; a value tells its address
GAP_S = 0.010  # config/example.yaml's gap

CONFIG = """\
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


def char_s(baud: int) -> float:
    return 10 / baud  # 8N1: start, 8 data, stop


def wire_s(n: int, baud: int) -> float:
    """One read of n registers on the wire: request, response and 2 x 3.5 characters of silence."""
    return (8 + 5 + 2 * n + 2 * 3.5) * char_s(baud)


def bytes_s(n: int, baud: int) -> float:
    """The bytes alone, no silence."""
    return (8 + 5 + 2 * n) * char_s(baud)


@dataclass
class Case:
    label: str
    reads: tuple[tuple[int, int, int], ...]  # (unit, address, count) per operation, in order
    ops: int  # operations timed back to back per run
    agent: Callable[["Line", BusSettings], Callable[[], None]]  # (line, bus settings) -> one operation
    gap_s: float = 0.0
    turnaround_s: float = 0.0  # the device answers this long after the request's last byte
    agent_s: list[float] = dataclasses.field(default_factory=list)  # elapsed per run
    raw_s: list[float] = dataclasses.field(default_factory=list)

    @property
    def registers(self) -> int:
        return sum(count for _, _, count in self.reads)

    @property
    def n(self) -> int:
        return self.reads[0][2]  # every case here reads one size


class Line:
    """The simulated RS-485 line with both units on it, and the settings the agent reads it with."""

    def __init__(self, baud: int) -> None:
        self.baud = baud
        self.block = DeviceModel()
        self.block.set(Reg.HOLDING, 0, BLOCK)
        self.pair = PtyPair(baud=baud, bits_per_byte=10)
        self.sim = ModbusSimulator({BLOCK_UNIT: self.block, QDY_UNIT: LevelSensor(level_m=1.23)})
        self.sim.serve_serial(self.pair.b, baud=baud)
        points = "\n".join(f"      - {{name: r{i:03d}, reg: holding, address: {i}, type: uint16}}" for i in range(250))
        settings = parse_settings(CONFIG.format(path=self.pair.a, baud=baud, block_unit=BLOCK_UNIT,
                                                qdy_unit=QDY_UNIT, points=points))
        self.bus_settings = settings.bus("rs485-1")
        self.devices: dict[str, DeviceSettings] = {d.name: d for d in settings.devices}

    def close(self) -> None:
        self.sim.stop()
        self.pair.close()


# -- the agent's side ---------------------------------------------------------------------
def bus_read(unit: int, n: int) -> Callable[[Line, BusSettings], Callable[[], None]]:
    def make(line: Line, settings: BusSettings) -> Callable[[], None]:
        bus = ModbusBus(settings)
        expect = BLOCK[:n]

        def op() -> None:
            if bus.read(unit, Reg.HOLDING, 0, n) != expect:
                raise RuntimeError(f"unit {unit} answered other values than the simulator holds")
        op.close = bus.close  # type: ignore[attr-defined]
        return op
    return make


def poll(device: str, driver: str, expect: int) -> Callable[[Line, BusSettings], Callable[[], None]]:
    def make(line: Line, settings: BusSettings) -> Callable[[], None]:
        bus = ModbusBus(settings)
        reader = DeviceReader(line.devices[device], get_driver(driver), bus)

        def op() -> None:
            result = reader.poll()
            if result.errors or len(result.readings) != expect:
                raise RuntimeError(f"{device}: {len(result.readings)} readings, errors {result.errors[:2]}")
        op.close = bus.close  # type: ignore[attr-defined]
        return op
    return make


# -- the baseline: a raw, length-aware client ---------------------------------------------
def raw_client(line: Line, reads: tuple[tuple[int, int, int], ...]) -> tuple[Callable[[], None], serial.Serial]:
    port = serial.Serial(line.pair.a, baudrate=line.baud, timeout=1.0, exclusive=True)
    frames = [(rtu_frame(unit, struct.pack(">BHH", 3, address, count)), 5 + 2 * count) for unit, address, count in reads]

    def op() -> None:
        for request, size in frames:
            port.write(request)
            reply = port.read(size)
            if len(reply) != size or crc16(reply[:-2]) != struct.unpack("<H", reply[-2:])[0]:
                raise RuntimeError(f"raw client: {len(reply)} of {size} bytes, or a bad CRC")
    return op, port


def timed(op: Callable[[], None], k: int) -> float:
    op()  # warm-up: opens the port, and the first request after a device change
    t0 = time.perf_counter()
    for _ in range(k):
        op()
    return time.perf_counter() - t0


def run_case(line: Line, case: Case) -> None:
    char = char_s(line.baud)
    units = {unit for unit, _, _ in case.reads}
    for unit in units:
        line.sim.set_faults(unit, delay_s=case.turnaround_s)
    try:
        settings = dataclasses.replace(line.bus_settings, gap_s=case.gap_s)
        op = case.agent(line, settings)
        try:
            case.agent_s.append(timed(op, case.ops))
        finally:
            op.close()  # type: ignore[attr-defined]  # the port is opened exclusively: one client at a time
        raw, port = raw_client(line, case.reads)
        try:
            case.raw_s.append(timed(raw, case.ops))
        finally:
            port.close()
        time.sleep(4 * char)  # let the line go quiet before the next client
    finally:
        for unit in units:
            line.sim.set_faults(unit, delay_s=0.0)


def cases(quick: bool, baud: int) -> list[Case]:
    big_ops, small = (4, 30) if quick else (12, 150)  # at 9600 a 125-register read takes ~0.28 s, 2 registers ~26 ms
    silence = 3.5 * char_s(baud)
    out = [
        Case("(a) ModbusBus.read 125", ((BLOCK_UNIT, 0, 125),), big_ops, bus_read(BLOCK_UNIT, 125)),
        Case("(b) poll 250 points (2 x 125)", ((BLOCK_UNIT, 0, 125), (BLOCK_UNIT, 125, 125)), max(2, big_ops // 2),
             poll("plc-1", "modbus_generic", 250)),
        Case("(c) ModbusBus.read 2", ((BLOCK_UNIT, 0, 2),), small, bus_read(BLOCK_UNIT, 2)),
        Case("(c) poll qdy_level (3+2)", ((QDY_UNIT, 3, 2),), small, poll("river-1", "qdy_level", 1)),
        Case("(c) ModbusBus.read 1", ((BLOCK_UNIT, 0, 1),), small, bus_read(BLOCK_UNIT, 1)),
        Case("    read 125, gap 10ms", ((BLOCK_UNIT, 0, 125),), big_ops, bus_read(BLOCK_UNIT, 125), gap_s=GAP_S),
        Case("    read 2, gap 10ms", ((BLOCK_UNIT, 0, 2),), small, bus_read(BLOCK_UNIT, 2), gap_s=GAP_S),
        Case("    read 125, device waits 3.5 ch", ((BLOCK_UNIT, 0, 125),), big_ops, bus_read(BLOCK_UNIT, 125),
             turnaround_s=silence),
        Case("    read 2, device waits 3.5 ch", ((BLOCK_UNIT, 0, 2),), small, bus_read(BLOCK_UNIT, 2),
             turnaround_s=silence),
    ]
    if not quick:
        out += [Case(f"    read {n} (sweep)", ((BLOCK_UNIT, 0, n),), max(big_ops, 3000 // (20 + 2 * n)),
                     bus_read(BLOCK_UNIT, n)) for n in (4, 8, 16, 32, 64)]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer transactions, one run, no sweep of N")
    ap.add_argument("--repeat", type=int, default=None, help="runs per case, median shown (default 3)")
    ap.add_argument("--baud", type=int, default=9600, help="line speed, 8N1 (default 9600)")
    args = ap.parse_args()
    repeat = args.repeat or (1 if args.quick else 3)
    baud = args.baud
    char = char_s(baud)
    todo = cases(args.quick, baud)
    print(f"Modbus RTU at {baud} 8N1 over a wire-timed pty: our simulator <-> ModbusBus (pymodbus sync RTU); "
          f"median of {repeat}")
    print(f"1 character = {char * 1e3:.3f} ms; wire limit = N / ((13 + 2N + 7) characters); "
          f"raw = length-aware pyserial client on the same line, no silence")
    print(f"{'case':<34} {'ops':>4} {'ms/req':>7} {'regs/s':>7} {'wire':>6} {'ratio':>6} "
          f"{'over bytes':>10} {'raw regs/s':>10} {'agent/raw':>9}", flush=True)
    line = Line(baud)
    try:
        for _ in range(repeat):  # interleaved, so drift on a shared machine hits every case
            for case in todo:
                run_case(line, case)
        for case in todo:
            requests = case.ops * len(case.reads)
            per_req = median(case.agent_s) / requests
            rate = case.ops * case.registers / median(case.agent_s)
            raw_rate = case.ops * case.registers / median(case.raw_s)
            limit = case.n / wire_s(case.n, baud)
            over = per_req - bytes_s(case.n, baud)
            print(f"{case.label:<34} {case.ops:>4} {per_req * 1e3:>7.2f} {rate:>7.1f} {limit:>6.1f} "
                  f"{rate / limit:>6.0%} {over * 1e3:>7.2f} ms {raw_rate:>10.1f} {rate / raw_rate:>9.0%}", flush=True)
    finally:
        line.close()
    print(f"over bytes = ms/request - (13 + 2N) characters: what the wire limit allows for is "
          f"2 x 3.5 = {7 * char * 1e3:.2f} ms; pymodbus polls the port every 4 characters "
          f"({4 * char * 1e3:.2f} ms) and ends a frame after one poll with no new byte")
    a = todo[0]
    rate = a.ops * a.registers / median(a.agent_s)
    limit = a.n / wire_s(a.n, baud)
    summary(f"{rate:.1f} registers/s: ModbusBus.read of 125 holding registers back to back, {baud} 8N1",
            f"{limit:.1f} registers/s: the wire limit (request + response + 2 x 3.5 characters of silence)",
            f"{rate / limit:.0%} of the wire limit", f">= {GOAL:.0%} of the wire limit", rate >= GOAL * limit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
