"""DeviceReader: real drivers against pymodbus' server, and a fake bus at our own seam where
the point is counting (retries, link loss)."""

from __future__ import annotations

import math
import struct
import threading
from typing import Any, Callable, Iterator

import pytest
from support.modbus_server import ModbusTestServer

from edge_agent.field.bus import DeviceFault, LinkError, ModbusBus, NoResponse
from edge_agent.model import DataClass, DType, Driver, Output, Point, Quality, Reg
from edge_agent.field.poll import DeviceReader
from edge_agent.field.registry import get_driver
from edge_agent.settings import BusSettings, DeviceSettings
from edge_agent.sim.ptypair import PtyPair


def f32(value: float) -> list[int]:
    hi, lo = struct.unpack(">HH", struct.pack(">f", value))
    return [hi, lo]


def device(driver: str, address: int = 1, **kw: Any) -> DeviceSettings:
    return DeviceSettings(name=f"{driver}-dev", bus="lan-1", driver=driver, address=address, interval_s=5.0, **kw)


class Clock:
    """Gateway time that moves 1 s per look, so which request's time a stamp is shows."""

    def __init__(self, start: float = 1_732_380_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def block(values: dict[int, float]) -> list[int]:
    """One contiguous input table (zeros between), as a real meter answers filler registers."""
    words = [0] * (max(values) + 2)
    for address, value in values.items():
        words[address:address + 2] = f32(value)
    return words


def by_name(result: Any) -> dict[str, Any]:
    return {r.pt: r for r in result.readings}


EASTRON = {0x00: 230.2, 0x06: 5.25, 0x0C: 1150.0, 0x12: 1200.0, 0x18: -80.5, 0x1E: 0.96,
           0x46: 50.0, 0x48: 12345.6, 0x4A: 0.0, 0x156: 12345.6}
GENERIC_POINTS = (
    Point("temperature_C", Reg.HOLDING, 0, DType.INT16, scale=0.1, valid=(-40.0, 85.0)),
    Point("counter", Reg.HOLDING, 1, DType.UINT32, word_order="little"),
    Point("pump_on", Reg.HOLDING, 3, DType.BOOL, bit=0),
    Point("alarm", Reg.HOLDING, 3, DType.BOOL, bit=4),
    Point("serial_no", Reg.HOLDING, 4, DType.STRING, length=3, data_class=DataClass.IDENTIFIER),
    Point("calibration", Reg.HOLDING, 7, DType.UINT16, internal=True),
    Point("humidity_pct", Reg.INPUT, 0, DType.UINT16, scale=0.1, valid=(0.0, 100.0)),
    Point("relay", Reg.COIL, 2, DType.BOOL),
    Point("missing", Reg.HOLDING, 60, DType.UINT16),
)
UNITS = {
    1: {"holding": {3: [2], 4: [123]}},  # qdy_level: 2 decimals, raw 123
    2: {"input": {0: block(EASTRON)}},
    3: {"holding": {0: [0xFFF6, 0x0002, 0x0001, 0b10001, 0x4142, 0x4344, 0x2000, 77], 60: [1]},
        "input": {0: [1234]}, "coil": {0: [False, False, True]}},
    4: {"holding": {3: [0], 4: [25]}},  # qdy_level out of range: 25 m
    5: {"holding": {3: [9], 4: [25]}},  # qdy_level with a nonsense decimals register
    6: {"input": {0: [0x7FC0, 0x0000]}},  # a float32 NaN
    7: {"holding": {4: [0, 0, 0, 0, 0, 0, 200]}, "coil": {0: [False]}},  # written by the write tests
}


@pytest.fixture(scope="module")
def server() -> Iterator[ModbusTestServer]:
    with ModbusTestServer(UNITS) as srv:
        yield srv


@pytest.fixture
def bus(server: ModbusTestServer) -> Iterator[ModbusBus]:
    b = ModbusBus(BusSettings("lan-1", "modbus-tcp", host="127.0.0.1", port=server.port, timeout_s=1.0))
    yield b
    b.close()


def test_qdy_level_decimals_then_level(bus: ModbusBus) -> None:
    clock = Clock()
    reader = DeviceReader(device("qdy_level", 1), get_driver("qdy_level"), bus, clock=clock)
    assert len(reader.plan) == 1
    result = reader.poll()
    assert result.errors == [] and result.answered and result.requests == 1
    (reading,) = result.readings  # decimals and level_raw are internal
    assert (reading.dev, reading.pt, reading.val, reading.q) == ("qdy_level-dev", "level_m", 1.23, Quality.GOOD)
    assert reading.ts == int(clock.now * 1000)
    assert reading.data_class is DataClass.TELEMETRY


@pytest.mark.parametrize("unit,value", [(4, 25.0), (5, None)])
def test_qdy_level_out_of_range_or_misconfigured_is_bad(bus: ModbusBus, unit: int, value: float | None) -> None:
    result = DeviceReader(device("qdy_level", unit), get_driver("qdy_level"), bus).poll()
    (reading,) = result.readings
    assert (reading.val, reading.q) == (value, Quality.BAD)


def test_eastron_meter_float32_in_three_requests(bus: ModbusBus) -> None:
    driver = get_driver("eastron_meter")
    clock = Clock()
    result = DeviceReader(device("eastron_meter", 2), driver, bus, clock=clock).poll()
    assert result.errors == [] and result.requests == 3
    values = {r.pt: r.val for r in result.readings}
    assert values == {p.name: EASTRON[p.address] for p in driver.points}
    assert all(r.q is Quality.GOOD for r in result.readings)
    stamps = {r.ts for r in result.readings}
    assert stamps == {int(clock.now * 1000)}  # one stamp per poll, its last answer's: one record


def test_generic_points_from_config(bus: ModbusBus) -> None:
    reader = DeviceReader(device("modbus_generic", 3, points=GENERIC_POINTS), get_driver("modbus_generic"), bus)
    assert [(str(r.reg), r.address, r.count) for r in reader.plan] == [
        ("coil", 2, 1), ("holding", 0, 8), ("holding", 60, 1), ("input", 0, 1)]
    result = reader.poll()
    assert result.errors == [] and result.requests == 4
    got = {name: (r.val, r.q) for name, r in by_name(result).items()}
    assert got == {
        "temperature_C": (-1.0, Quality.GOOD), "counter": (0x00010002, Quality.GOOD),
        "pump_on": (True, Quality.GOOD), "alarm": (True, Quality.GOOD), "serial_no": ("ABCD", Quality.GOOD),
        "humidity_pct": (123.4, Quality.BAD), "relay": (True, Quality.GOOD), "missing": (1, Quality.GOOD),
    }
    assert by_name(result)["serial_no"].data_class is DataClass.IDENTIFIER


def test_exception_reply_marks_that_requests_points_bad(server: ModbusTestServer, bus: ModbusBus) -> None:
    points = GENERIC_POINTS[:1] + (Point("nowhere_a", Reg.HOLDING, 40, DType.UINT16),
                                   Point("nowhere_b", Reg.HOLDING, 41, DType.UINT16, internal=True))
    result = DeviceReader(device("modbus_generic", 3, points=points), get_driver("modbus_generic"), bus).poll()
    got = {name: (r.val, r.q) for name, r in by_name(result).items()}
    assert got == {"temperature_C": (-1.0, Quality.GOOD), "nowhere_a": (None, Quality.BAD)}
    assert result.answered
    (error,) = result.errors
    assert error.startswith("modbus_generic-dev: read holding 40+2 (unit 3): device answered exception 2")


def test_absent_unit_is_bad_not_silent(bus: ModbusBus) -> None:
    result = DeviceReader(device("eastron_meter", 42), get_driver("eastron_meter"), bus).poll()
    assert len(result.readings) == 10 and all(r.val is None and r.q is Quality.BAD for r in result.readings)
    assert len(result.errors) == 3 and all("exception 4" in e for e in result.errors)


def test_nan_is_bad_with_no_value(bus: ModbusBus) -> None:
    points = (Point("flow_m3h", Reg.INPUT, 0, DType.FLOAT32),)
    (reading,) = DeviceReader(device("modbus_generic", 6, points=points), get_driver("modbus_generic"), bus).poll().readings
    assert reading.val is None and reading.q is Quality.BAD


def test_silent_device_over_rtu_gives_no_readings() -> None:
    with PtyPair() as pair:
        bus = ModbusBus(BusSettings("rs485-1", "modbus-rtu", serial=pair.a, timeout_s=0.1))
        try:
            result = DeviceReader(device("qdy_level", 1, retries=1), get_driver("qdy_level"), bus).poll()
        finally:
            bus.close()
    assert result.readings == [] and not result.answered and result.requests == 2
    (error,) = result.errors
    assert error.startswith("qdy_level-dev: read holding 3+2 (unit 1): bus rs485-1: device 1 did not answer")
    assert error.endswith("(2 attempts)")


# -- at our own seam: a fake bus ------------------------------------------------------------
class FakeBus:
    """Answers from ``script``: a list of exceptions/values consumed one per read."""

    def __init__(self, script: list[Any], default: Callable[[Reg, int, int], list] | None = None) -> None:
        self.lock = threading.RLock()
        self.script = list(script)
        self.default = default or (lambda reg, address, count: [0] * count)
        self.calls: list[tuple[int, Reg, int, int, float | None]] = []

    def read(self, device_id: int, reg: Reg, address: int, count: int, *, timeout_s: float | None) -> list:
        assert self.lock._is_owned()  # type: ignore[attr-defined]  # the reader holds the bus
        self.calls.append((device_id, reg, address, count, timeout_s))
        step = self.script.pop(0) if self.script else None
        if isinstance(step, BaseException):
            raise step
        return step if step is not None else self.default(reg, address, count)


def test_retries_are_counted_and_only_for_silence() -> None:
    bus = FakeBus([NoResponse("silent"), NoResponse("silent"), [2, 123]])
    result = DeviceReader(device("qdy_level", retries=2, timeout_s=0.3), get_driver("qdy_level"), bus).poll()
    assert result.requests == 3 and result.errors == []
    assert [r.val for r in result.readings] == [1.23]
    assert {c[4] for c in bus.calls} == {0.3}  # the device's own timeout, every attempt

    bus = FakeBus([NoResponse("silent")] * 5)
    result = DeviceReader(device("qdy_level", retries=2), get_driver("qdy_level"), bus).poll()
    assert result.requests == 3 and not result.answered and result.readings == []

    bus = FakeBus([DeviceFault(6)])  # a refusal is an answer: not retried
    result = DeviceReader(device("qdy_level", retries=2), get_driver("qdy_level"), bus).poll()
    assert result.requests == 1 and result.answered
    assert [(r.pt, r.val, r.q) for r in result.readings] == [("level_m", None, Quality.BAD)]


def test_link_error_stops_the_round() -> None:
    bus = FakeBus([[1, 2, 3, 4, 5, 6, 7, 8], LinkError("bus lan-1: cannot connect to 10.0.0.9:502: no route to host")])
    points = GENERIC_POINTS
    result = DeviceReader(device("modbus_generic", points=points), get_driver("modbus_generic"), bus).poll()
    assert len(bus.calls) == 2 and result.requests == 2  # coil ok, holding link lost, no more
    assert not result.answered
    assert result.errors == ["modbus_generic-dev: read holding 0+8 (unit 1): bus lan-1: cannot connect to 10.0.0.9:502: no route to host"]
    assert [r.pt for r in result.readings] == ["relay"]


SECRET = 0x1F2E


def _boom(raw: dict[str, Any]) -> dict[str, Any]:
    raise ValueError(f"cannot handle {raw['code']}")


def test_decode_hook_failure_is_an_error_without_values() -> None:
    driver = Driver(id="vendor_x", points=(Point("code", Reg.HOLDING, 0, DType.UINT16, internal=True),),
                    decode=_boom, outputs=(Output("code_text"),))
    result = DeviceReader(device("vendor_x"), driver, FakeBus([[SECRET]])).poll()
    assert result.readings == [] and result.answered
    (error,) = result.errors
    assert error.startswith("vendor_x-dev: decode hook of driver vendor_x failed: ValueError at test_poll.py:")
    assert str(SECRET) not in error and hex(SECRET) not in error


def test_decode_hook_outputs_take_their_declared_class_and_range() -> None:
    def decode(raw: dict[str, Any]) -> dict[str, Any]:
        return {"wearer_id": f"W{raw['tag']}", "hr_bpm": raw["hr"], "undeclared": 1}

    driver = Driver(id="vendor_y", decode=decode,
                    points=(Point("tag", Reg.HOLDING, 0, DType.UINT16, internal=True),
                            Point("hr", Reg.HOLDING, 1, DType.UINT16, internal=True)),
                    outputs=(Output("wearer_id", data_class=DataClass.IDENTIFIER),
                             Output("hr_bpm", valid=(20, 250), data_class=DataClass.HEALTH)))
    result = DeviceReader(device("vendor_y"), driver, FakeBus([[17, 300]])).poll()
    got = {r.pt: (r.val, r.q, r.data_class) for r in result.readings}
    assert got == {"wearer_id": ("W17", Quality.GOOD, DataClass.IDENTIFIER),
                   "hr_bpm": (300, Quality.BAD, DataClass.HEALTH)}
    (error,) = result.errors
    assert "'undeclared'" in error and "dropped" in error


def test_max_block_from_device_overrides_driver() -> None:
    reader = DeviceReader(device("eastron_meter", max_block=8), get_driver("eastron_meter"), FakeBus([]))
    assert max(r.count for r in reader.plan) <= 8
    result = reader.poll()
    assert result.requests == len(reader.plan) and all(math.isclose(r.val, 0.0) for r in result.readings)


# -- write: the device's one write path (a command's device.write) ----------------------------------
SETPOINT = Point("setpoint_C", Reg.HOLDING, 10, DType.INT16, scale=0.1, writable=True)
RELAY = Point("relay", Reg.COIL, 0, DType.BOOL, writable=True)
LEVEL = Point("level_m", Reg.HOLDING, 4, DType.INT16, scale=0.001)


def writer(bus: Any, unit: int = 7) -> DeviceReader:
    return DeviceReader(device("modbus_generic", unit, points=(SETPOINT, RELAY, LEVEL)),
                        get_driver("modbus_generic"), bus)


def test_a_write_reaches_the_device_and_is_read_back(server: ModbusTestServer, bus: ModbusBus) -> None:
    reader = writer(bus)
    assert reader.write("setpoint_C", 21.5) == "match"
    assert reader.write("relay", True) == "match"
    assert bus.read(7, Reg.HOLDING, 10, 1) == [215] and bus.read(7, Reg.COIL, 0, 1)[0] is True
    got = {r.pt: r.val for r in reader.poll().readings}
    assert got["setpoint_C"] == 21.5 and got["relay"] is True


class StuckBus(FakeBus):
    """Takes every write and forgets it: the read-back shows the old value."""

    def __init__(self) -> None:
        super().__init__([], default=lambda reg, address, count: [200] * count)
        self.writes: list[tuple[int, str, Any]] = []

    def write(self, device_id: int, point: Point, value: Any, *, timeout_s: float | None = None) -> None:
        self.writes.append((device_id, point.name, value))


def test_a_write_the_device_did_not_take_is_a_device_fault_naming_no_value() -> None:
    bus = StuckBus()
    with pytest.raises(DeviceFault) as caught:
        writer(bus).write("setpoint_C", 25)
    assert str(caught.value) == ("modbus_generic-dev: setpoint_C reads back differently after the write "
                                 "(the device did not take the value)")
    assert bus.writes == [(7, "setpoint_C", 25)] and [c[1:4] for c in bus.calls] == [(Reg.HOLDING, 10, 1)]
    assert "25" not in str(caught.value) and "200" not in str(caught.value)


def test_what_a_modbus_write_refuses_before_the_bus() -> None:
    bus = StuckBus()
    with pytest.raises(PermissionError, match="^modbus_generic-dev: point level_m is not writable$"):
        writer(bus).write("level_m", 1)
    with pytest.raises(PermissionError, match="point nope is not writable"):
        writer(bus).write("nope", 1)
    with pytest.raises(ValueError, match="^a Modbus write takes only point and value, not lane$"):
        writer(bus).write("setpoint_C", 20, lane=1)
    assert bus.writes == [] and bus.calls == []
