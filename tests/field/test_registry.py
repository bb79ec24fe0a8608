"""Driver declarations are checked before any I/O: every shipped driver is sound, and each kind
of unsound declaration is named."""

import pytest

from edge_agent.model import DType, Driver, Output, Point, Reg
from edge_agent.field.registry import DriverError, _check, drivers, point_problems


def test_shipped_drivers_are_found_and_sound():
    found = drivers()
    assert {"modbus_generic", "qdy_level", "eastron_meter"} <= set(found)
    for driver in found.values():
        assert point_problems(driver.points, driver.max_block) == []
        if driver.decode is None:
            assert not any(p.internal for p in driver.points), driver.id


@pytest.mark.parametrize("points, expected", [
    ((Point("a", Reg.HOLDING, 0, DType.INT32), Point("b", Reg.HOLDING, 1, DType.INT16)),
     "b: overlaps a in holding registers (0..1 and 1..1)"),
    ((Point("a", Reg.HOLDING, 0, DType.INT16), Point("a", Reg.INPUT, 0, DType.INT16)), "a: declared twice"),
    ((Point("s", Reg.HOLDING, 0, DType.STRING),), "s: a string needs length"),
    ((Point("n", Reg.HOLDING, 0, DType.INT16, length=2),), "n: length only applies to strings"),
    ((Point("c", Reg.COIL, 0, DType.INT16),), "c: a coil holds single bits"),
    ((Point("f", Reg.HOLDING, 0, DType.BOOL),), "f: a bool in a holding register needs bit"),
    ((Point("w", Reg.INPUT, 0, DType.INT16, writable=True),), "w: reg: input is read-only"),
    ((Point("big", Reg.HOLDING, 65535, DType.INT32),), "big: spans past address 65535"),
])
def test_unsound_declarations_are_named(points, expected):
    assert any(expected in p for p in point_problems(points)), point_problems(points)


def test_two_bools_in_one_register_do_not_overlap():
    points = (Point("x", Reg.HOLDING, 5, DType.BOOL, bit=0), Point("y", Reg.HOLDING, 5, DType.BOOL, bit=7))
    assert point_problems(points) == []


def test_point_wider_than_max_block():
    assert any("max_block is 1" in p for p in point_problems((Point("v", Reg.INPUT, 0, DType.FLOAT32),), 1))


def test_a_bad_driver_stops_start_up_with_its_name():
    bad = Driver(id="broken", points=(Point("a", Reg.HOLDING, 0, DType.INT32), Point("b", Reg.HOLDING, 1, DType.INT16)))
    with pytest.raises(DriverError, match="driver broken .*b: overlaps a"):
        _check(bad, "edge_agent.drivers.broken")
    with pytest.raises(DriverError, match="DRIVER must be"):
        _check(object(), "edge_agent.drivers.thing")  # type: ignore[arg-type]


def test_outputs_declare_class_and_range():
    qdy = drivers()["qdy_level"]
    assert qdy.outputs == (Output("level_m", valid=(-1.0, 20.0)),)
