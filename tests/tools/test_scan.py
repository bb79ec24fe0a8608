"""``edge-agent scan`` against simulated devices on a virtual RS-485 line: found at their baud
rate only, refusals and exceptions counted as devices, garbage and collisions named, and the
port checks (absent, busy, --force) as one line with the right exit code.

A pty ignores the baud rate, so ``BaudCable`` models it: a byte crosses only when both ends are
set to the same rate, and arrives garbled otherwise, as on a real line. (Linux ptys also clear
the parity bit of their settings, so parity is not modelled.)
"""

from __future__ import annotations

import fcntl
import io
import os
import pty
import select
import subprocess
import sys
import termios
import threading
import time
import tty
from typing import Iterator

import pytest

from edge_agent.tools import scan
from edge_agent.cli import main
from edge_agent.drivers import dlt645_codec as dlt
from edge_agent.tools.scan_probe import (FOUND, GARBAGE, Scanner, ScanPlan, classify_dlt645, classify_modbus, crc16,
                                   modbus_request)
from edge_agent.sim.byteserver import ByteServer
from edge_agent.sim.devices import LevelSensor
from edge_agent.sim.meters import Dlt645Bus, Dlt645Meter
from edge_agent.sim.modbus import ModbusSimulator
from support.agent import cli

FAST = "0.05"  # per-probe timeout where silence is the expected outcome (a pty answers in ~1 ms)


class BaudCable:
    """Two raw ptys bridged like ``PtyPair``: ``a`` is the scanner's end, ``b`` the devices'.

    Unlike ``PtyPair``, no end is held open here, so the busy-port check sees only the holders a
    test makes; and bytes cross intact only when both ends are set to the same baud rate (read
    from the ptys' settings). ``echo``: ``a`` also hears what it sends, as through an RS-485
    adapter that echoes.
    """

    def __init__(self, *, echo: bool = False) -> None:
        self._masters, paths = [], []
        for _ in range(2):
            master, slave = pty.openpty()
            tty.setraw(slave)
            paths.append(os.ttyname(slave))
            os.close(slave)
            os.set_blocking(master, False)
            self._masters.append(master)
        self.a, self.b = paths
        self.echo = echo
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._pump, name="baud-cable", daemon=True)
        self._thread.start()

    def _same_baud(self) -> bool:
        try:
            speeds = [termios.tcgetattr(m)[5] for m in self._masters]
        except termios.error:
            return False
        return speeds[0] == speeds[1]

    def _pump(self) -> None:
        ma, mb = self._masters
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([ma, mb], [], [], 0.05)
            except (OSError, ValueError):
                return
            for src in ready:
                try:
                    data = os.read(src, 4096)
                except BlockingIOError:
                    continue
                except OSError:  # nobody has that end open (EIO): wait for someone to open it
                    time.sleep(0.01)
                    continue
                if not self._same_baud():
                    data = bytes((b ^ 0x5A) for b in data[::2])  # the wrong rate: fewer, wrong bytes
                self._write(mb if src == ma else ma, data)
                if self.echo and src == ma:
                    self._write(ma, data)

    @staticmethod
    def _write(fd: int, data: bytes) -> None:
        try:
            os.write(fd, data)
        except OSError:
            pass  # nobody listens on that end: the bytes fall on the floor, as on a real line

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1)
        for fd in self._masters:
            os.close(fd)


@pytest.fixture
def cable() -> Iterator[BaudCable]:
    c = BaudCable()
    yield c
    c.close()


@pytest.fixture
def modbus(cable: BaudCable) -> Iterator[ModbusSimulator]:
    """Units 3 and 17 at 19200 8N1; unit 5 refuses every read with exception 2; unit 9 answers garbage."""
    units = {3: LevelSensor(), 17: LevelSensor(address=17), 5: LevelSensor(), 9: LevelSensor()}
    units[5].set_faults(exception=2)
    units[9].set_faults(garbage=True)
    sim = ModbusSimulator(units)
    sim.serve_serial(cable.b, baud=19200)
    yield sim
    sim.stop()


def plan(port: str, **kw) -> ScanPlan:
    base = dict(port=port, protocol="modbus-rtu", bauds=(19200,), parity="N", stop_bits=1,
                ids=tuple(range(1, 6)), timeout_s=float(FAST))
    return ScanPlan(**{**base, **kw})  # type: ignore[arg-type]


def no_progress(done: int, baud: int, found: int) -> None:
    pass


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert lines[0].startswith("edge-agent scan: "), lines[0]
    return lines[0]


# -- Modbus RTU -----------------------------------------------------------------------------------

def test_units_are_found_at_their_baud_rate_only(cable: BaudCable, modbus: ModbusSimulator) -> None:
    out = cli("scan", "--port", cable.a, "--baud", "9600,19200", "--ids", "1-4,10-20", "--timeout", FAST)
    assert out.returncode == 0, out.stderr
    rows = [line.split() for line in out.stdout.splitlines() if line.startswith("modbus-rtu")]
    assert [(r[1], r[2], r[3]) for r in rows] == [("19200", "8N1", "3"), ("19200", "8N1", "17")]
    assert all("read reply (value not shown)" in line for line in out.stdout.splitlines()
               if line.startswith("modbus-rtu"))
    assert "2 device(s) answered" in out.stdout and "30 probe(s)" in out.stdout
    # not a TTY here: plain progress lines, the last one at 100 %
    assert "edge-agent scan: 100% 30/30 probes, 19200 baud, 2 found" in out.stderr
    assert "Traceback" not in out.stderr


def test_an_exception_reply_is_a_device_and_garbage_is_a_note(cable: BaudCable, modbus: ModbusSimulator) -> None:
    scanner = Scanner(plan(cable.a, ids=(3, 5, 9, 11)))
    found = scanner.run(no_progress)
    assert [(f.address, f.answer) for f in found] == [
        ("3", "read reply (value not shown)"), ("5", "exception 2 (illegal data address)")]
    assert len(scanner.notes) == 1
    assert "19200 baud 8N1: something answered garbage to 1 probe(s) (unit 9)" in scanner.notes[0]
    assert "wrong baud rate or parity" in scanner.notes[0]
    assert scanner.probes == 4


def test_stop_at_first(cable: BaudCable, modbus: ModbusSimulator) -> None:
    scanner = Scanner(plan(cable.a, bauds=(19200, 9600), ids=tuple(range(1, 21)), stop_at_first=True))
    assert [f.address for f in scanner.run(no_progress)] == ["3"]
    assert scanner.probes == 3


def test_an_adapter_that_echoes_is_not_mistaken_for_a_device() -> None:
    c = BaudCable(echo=True)
    sim = ModbusSimulator({3: LevelSensor()})
    sim.serve_serial(c.b, baud=19200)
    try:
        scanner = Scanner(plan(c.a, ids=(2, 3, 4)))
        assert [f.address for f in scanner.run(no_progress)] == ["3"]
        assert scanner.notes == []  # the echo alone is silence, not garbage
    finally:
        sim.stop()
        c.close()


def test_a_late_answer_still_counts_once(cable: BaudCable) -> None:
    slow = LevelSensor()
    slow.set_faults(delay_s=0.16)  # answers after the 0.1 s timeout, during the next probe
    sim = ModbusSimulator({2: slow})
    sim.serve_serial(cable.b, baud=19200)
    try:
        found = Scanner(plan(cable.a, ids=(2, 3, 4), timeout_s=0.1)).run(no_progress)
    finally:
        sim.stop()
    assert [f.address for f in found] == ["2"]
    assert "late or to a request for unit 3: raise --timeout" in found[0].answer


def test_classify_modbus_frames() -> None:
    reply = modbus_request(7)[:2] + b"\x02\x12\x34"
    crc = scan_crc(reply)
    assert classify_modbus(7, reply + crc).kind == FOUND
    assert classify_modbus(7, reply + bytes([crc[0] ^ 1, crc[1]])).kind == GARBAGE
    assert classify_modbus(7, b"\x07\x03").kind == GARBAGE  # cut short
    assert classify_modbus(7, b"").kind == "silence"


def scan_crc(body: bytes) -> bytes:
    value = crc16(body)
    return bytes([value & 0xFF, value >> 8])


def test_nothing_found_is_exit_1_saying_what_was_tried(cable: BaudCable) -> None:
    out = cli("scan", "--port", cable.a, "--baud", "9600", "--ids", "1-3", "--timeout", FAST)
    assert out.returncode == 1 and out.stdout == ""
    line = [x for x in out.stderr.splitlines() if "%" not in x]
    assert len(line) == 1 and "Traceback" not in out.stderr
    assert line[0] == (f"edge-agent scan: nothing answered on {cable.a}: tried modbus-rtu ids 1-3 at 9600 "
                       "baud 8N1, 0.05 s per probe; check the wiring (A/B swapped?), power, termination "
                       "and --parity")


# -- usage and the port ---------------------------------------------------------------------------

@pytest.mark.parametrize("args,says", [
    (["--ids", "5-3"], "--ids 5-3: range 5-3 runs backwards (did you mean 3-5?)"),
    (["--ids", "0-10"], "--ids 0-10: 0-10 is outside 1-247 (0 is broadcast: nobody answers it)"),
    (["--ids", "1,x"], "--ids 1,x: 'x' is not an id or a range like 1-247"),
    (["--ids", "1-300"], "--ids 1-300: 1-300 is outside 1-247"),
    (["--baud", "9600,fast"], "--baud 9600,fast: 'fast' is not a baud rate such as 9600"),
    (["--timeout", "10 parsecs"], "--timeout 10 parsecs: unknown time unit 'parsecs'"),
    (["--protocol", "dlt645", "--ids", "1-5"], "--ids is for modbus-rtu"),
    (["--baud", "9601"], "--baud 9601: 9601 is not a serial rate a bus can use (1200, 2400, 4800, 9600, 19200, "
                         "38400, 57600, 115200; did you mean 9600?)"),
    (["--ids", ""], "--ids : '' is not an id or a range like 1-247"),
    (["--port", ""], "--port is empty: name the serial port, e.g. /dev/ttyUSB0"),
])
def test_bad_usage_is_exit_2_with_one_line(args: list[str], says: str) -> None:
    out = cli("scan", "--port", "/dev/ttyUSB-absent", *args)
    assert out.returncode == 2
    assert says in one_line(out.stderr)


def test_parse_ids_and_back() -> None:
    ids = scan.parse_ids("1,5,10-20, 3")
    assert ids == (1, 3, 5, *range(10, 21))
    assert scan.format_ids(ids) == "1,3,5,10-20"
    assert scan.parse_timeout("100ms") == pytest.approx(0.1) and scan.parse_timeout("0.5") == 0.5


def test_absent_port_is_one_line(tmp_path) -> None:
    out = cli("scan", "--port", str(tmp_path / "ttyUSB9"), "--ids", "1")
    assert out.returncode == 1
    assert f"serial port {tmp_path / 'ttyUSB9'} not found" in one_line(out.stderr)
    out = cli("scan", "--port", str(tmp_path))  # exists, but no serial device
    assert out.returncode == 1 and "is not a serial device" in one_line(out.stderr)


def test_no_permission_names_the_group(cable: BaudCable, monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(scan.os, "open", refuse)  # the tests run as root, which no mode bit stops
    problem, _ = scan.port_problem(cable.a)
    group = scan.grp.getgrgid(scan.os.stat(cable.a).st_gid).gr_name
    assert problem == (f"no permission to open {cable.a}: add your user to the '{group}' group "
                       f"(sudo usermod -aG {group} $USER, then log in again), or run as root")


@pytest.fixture
def holder(cable: BaudCable, tmp_path) -> Iterator[subprocess.Popen]:
    """A process holding the scanner's end open, its command line dressed as the daemon's."""
    script = tmp_path / "edge-agent"
    script.write_text("import os, sys, time\n"
                      "fd = os.open(os.environ['PORT'], os.O_RDWR | os.O_NOCTTY)\n"
                      "print('ready', flush=True)\n"
                      "time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, str(script), "run", "-c", "/etc/gw.yaml"],
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PORT": cable.a})
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    yield proc
    proc.kill()
    proc.wait()
    proc.stdout.close()


def test_busy_port_is_refused_naming_the_process(cable: BaudCable, modbus: ModbusSimulator,
                                                  holder: subprocess.Popen) -> None:
    before = len(modbus.requests)
    out = cli("scan", "--port", cable.a, "--baud", "19200", "--ids", "3")
    assert out.returncode == 1
    line = one_line(out.stderr)
    assert f"serial port {cable.a} is in use by PID {holder.pid} (" in line
    assert "edge-agent run -c /etc/gw.yaml)" in line
    assert line.endswith("stop it first (systemctl stop edge-agent), or scan anyway with --force")
    assert len(modbus.requests) == before  # refused before a byte was sent


def test_force_scans_a_busy_port_and_says_so(cable: BaudCable, modbus: ModbusSimulator,
                                             holder: subprocess.Popen) -> None:
    out = cli("scan", "--port", cable.a, "--baud", "19200", "--ids", "3", "--force")
    assert out.returncode == 0, out.stderr
    assert f"edge-agent scan: warning: serial port {cable.a} is in use by PID {holder.pid}" in out.stderr
    assert "scanning anyway (--force)" in out.stderr
    assert "modbus-rtu  19200  8N1" in out.stdout


def test_a_port_locked_by_another_program_is_busy(cable: BaudCable, capsys) -> None:
    fd = os.open(cable.a, os.O_RDWR | os.O_NOCTTY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as pyserial's exclusive=True (pymodbus, the daemon) does
    try:
        assert scan.port_problem(cable.a) == (None, True)
        assert main(["scan", "--port", cable.a, "--ids", "1"]) == 1  # our own fd: not in holders()
    finally:
        os.close(fd)
    assert one_line(capsys.readouterr().err) == (f"edge-agent scan: serial port {cable.a} is locked by another "
                                                 "program: close that program, or scan anyway with --force")


def test_holders_sees_this_process_only_through_others(cable: BaudCable) -> None:
    fd = os.open(cable.a, os.O_RDWR | os.O_NOCTTY)
    try:
        assert scan.holders(cable.a) == []  # our own descriptors are not "another program"
    finally:
        os.close(fd)


# -- DL/T 645 -------------------------------------------------------------------------------------

def meter_line(cable: BaudCable, *addresses: str, **faults: object) -> ByteServer:
    """DL/T 645 meters at 2400 8E1 (the project's simulator: several answering the wildcard
    read at once collide, their bytes ANDed as on a real line)."""
    meters = [Dlt645Meter(address) for address in addresses]
    for meter in meters:
        meter.set_faults(**faults)
    server = ByteServer(Dlt645Bus(meters))
    server.serve_serial(cable.b, baud=2400, parity="E")
    return server


def test_one_meter_is_found_by_its_address_at_2400_8e1(cable: BaudCable) -> None:
    with meter_line(cable, "123456789012"):
        out = cli("scan", "--port", cable.a, "--protocol", "dlt645", "--timeout", "0.2")
    assert out.returncode == 0, out.stderr
    rows = [line.split() for line in out.stdout.splitlines() if line.startswith("dlt645")]
    assert [r[:4] for r in rows] == [["dlt645", "2400", "8E1", "123456789012"]]
    assert "read-address reply (93)" in out.stdout
    notes = [line for line in out.stdout.splitlines() if line.startswith("note:")]
    assert notes == [f"note: {cable.a} carries no parity bits (a pseudo-terminal?): parity E was not tested there"]
    assert "4/4 probes" in out.stderr


def test_two_meters_collide_and_the_note_says_what_to_do(cable: BaudCable) -> None:
    with meter_line(cable, "123456789012", "000000001234"):
        out = cli("scan", "--port", cable.a, "--protocol", "dlt645", "--baud", "2400", "--timeout", "0.2")
    assert out.returncode == 1
    assert "note: 2400 baud 8E1: something answered garbage to the wildcard read: several meters " \
           "answering at once (a collision)" in out.stdout
    assert "read each meter's 12-digit address from its name plate" in out.stdout
    assert "nothing answered" in out.stderr


def test_a_meter_behind_an_echoing_adapter(cable: BaudCable) -> None:
    with meter_line(cable, "000000001234", echo=True):
        scanner = Scanner(plan(cable.a, protocol="dlt645", bauds=(2400,), parity="E", timeout_s=0.2))
        found = scanner.run(no_progress)
    assert [(f.address, f.framing) for f in found] == [("000000001234", "8E1")]
    assert not any("garbage" in note for note in scanner.notes)


def test_meters_answering_one_after_another_are_all_listed() -> None:
    one, two = dlt.encode_address_reply("123456789012"), dlt.encode_address_reply("000000001234", wake=4)
    outcomes = classify_dlt645(one + two)
    assert [(o.kind, o.address) for o in outcomes] == [(FOUND, "123456789012"), (FOUND, "000000001234")]
    outcomes = classify_dlt645(b"\x00" + one)  # a turnaround glitch before a good frame
    assert [o.kind for o in outcomes] == [GARBAGE, FOUND]


# -- progress -------------------------------------------------------------------------------------

def test_progress_on_a_terminal_redraws_one_line() -> None:
    out = io.StringIO()
    bar = scan.ProgressBar(100, out, tty=True)
    bar(1, 9600, 0)
    bar(100, 19200, 2)
    bar.close()
    text = out.getvalue()
    assert text.startswith("\r[....................] 1/100 probes, 9600 baud, 0 found, ETA ")
    assert "\r[####################] 100/100 probes, 19200 baud, 2 found\x1b[K\n" in text


def test_progress_in_a_log_is_about_ten_lines() -> None:
    out = io.StringIO()
    bar = scan.ProgressBar(1729, out, tty=False)
    for done in range(1, 1730):
        bar(done, 9600, 0)
    lines = out.getvalue().splitlines()
    assert len(lines) == 10 and lines[-1].startswith("edge-agent scan: 100% 1729/1729 probes")
    assert "\r" not in out.getvalue()
