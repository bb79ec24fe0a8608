"""The side-by-side bench's Modbus TCP simulator: 20 units x 20 holding registers, a new value
on every read, every served value logged with the time it was served.

It is our own ``edge_agent.sim.modbus.ModbusSimulator`` (the server behind ``edge-agent
simulate modbus``, no pymodbus) with one device model of its own, ``CountingUnit``: each read
of a register advances that register's sequence number and answers ``value_of(unit, reg,
seq)`` (``_cmp_values``), a uint16 that looks random but names exactly one read. The log, one
line per request served, is what lets the bench count the values a gateway lost and the time
each one took from the simulator to the subscriber, for any gateway, without trusting its
own figures::

    <CLOCK_MONOTONIC s> <unit> <first register> <count> <seq>[,<seq>...]

(one seq when every register of the request had the same one, as in a range read, else one
per register). CLOCK_MONOTONIC is shared by every process on the machine, so the subscriber's
arrival times compare with it directly.

As a script (the bench starts it in the project's venv, one simulator per run)::

    python bench/_cmp_sim.py LOG [--units 20] [--registers 20]

prints ``modbus TCP on 127.0.0.1:PORT`` once it listens, serves until SIGTERM or SIGINT,
flushes the log and exits 0.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Sequence, TextIO

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # after PYTHONPATH: the bench may run an exported revision (--edge-at)

from _cmp_values import value_of  # noqa: E402

from edge_agent.model import Reg  # noqa: E402
from edge_agent.sim.devices import DeviceModel  # noqa: E402
from edge_agent.sim.modbus import ModbusSimulator  # noqa: E402

__all__ = ["ServedLog", "CountingUnit", "main"]

FLUSH_EVERY_S = 0.2


class ServedLog:
    """One line per request served, written from the server's threads, flushed every 0.2 s."""

    def __init__(self, out: TextIO) -> None:
        self._out, self._lock = out, threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._flusher, daemon=True, name="served-log")
        self._thread.start()

    def write(self, unit: int, address: int, seqs: Sequence[int]) -> None:
        now = time.monotonic()
        text = str(seqs[0]) if all(s == seqs[0] for s in seqs) else ",".join(map(str, seqs))
        with self._lock:
            self._out.write(f"{now:.6f} {unit} {address} {len(seqs)} {text}\n")

    def _flusher(self) -> None:
        while not self._stop.wait(FLUSH_EVERY_S):
            with self._lock:
                self._out.flush()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        with self._lock:
            self._out.flush()


class CountingUnit(DeviceModel):
    """``registers`` holding registers whose every read answers a new, traceable value."""

    def __init__(self, unit: int, registers: int, log: ServedLog) -> None:
        super().__init__()
        self.unit, self.registers, self.log = unit, registers, log
        self._seq = [0] * registers

    def read(self, table: Reg, address: int, count: int) -> list[int] | None:
        if table is not Reg.HOLDING or address < 0 or address + count > self.registers:
            return None  # exception 02, as an unmapped address
        with self._lock:
            seqs = []
            for reg in range(address, address + count):
                self._seq[reg] += 1
                seqs.append(self._seq[reg])
            # logged under the lock so that one register's lines are in the order served
            self.log.write(self.unit, address, seqs)
        return [value_of(self.unit, address + i, s) for i, s in enumerate(seqs)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="_cmp_sim.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("log", type=Path)
    parser.add_argument("--units", type=int, default=20)
    parser.add_argument("--registers", type=int, default=20)
    args = parser.parse_args(argv)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    with open(args.log, "w", buffering=1 << 20) as out:
        log = ServedLog(out)
        sim = ModbusSimulator({u: CountingUnit(u, args.registers, log) for u in range(1, args.units + 1)})
        try:
            host, port = sim.serve_tcp("127.0.0.1", 0)
            print(f"modbus TCP on {host}:{port}", flush=True)
            while not done.wait(0.5):
                pass
        finally:
            sim.stop()
            log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
