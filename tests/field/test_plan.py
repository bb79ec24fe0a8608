"""The request planner, case by case: each case lists the exact requests expected."""

from __future__ import annotations

import pytest

from edge_agent.model import DType, Point, Reg
from edge_agent.field.plan import ReadRequest, plan_reads
from edge_agent.field.registry import get_driver


def h(name: str, address: int, dtype: DType = DType.UINT16, **kw: object) -> Point:
    return Point(name, Reg.HOLDING, address, dtype, **kw)  # type: ignore[arg-type]


def i(name: str, address: int, dtype: DType = DType.UINT16, **kw: object) -> Point:
    return Point(name, Reg.INPUT, address, dtype, **kw)  # type: ignore[arg-type]


def c(name: str, address: int) -> Point:
    return Point(name, Reg.COIL, address, DType.BOOL)


def d(name: str, address: int) -> Point:
    return Point(name, Reg.DISCRETE, address, DType.BOOL)


def shape(requests: list[ReadRequest]) -> list[tuple[str, int, int, list[str]]]:
    return [(str(r.reg), r.address, r.count, [p.name for p in r.points]) for r in requests]


CASES = {
    "contiguous": (
        [h("a", 0), h("b", 1), h("c", 2, DType.FLOAT32)], {},
        [("holding", 0, 4, ["a", "b", "c"])]),
    "gap under the limit": (
        [h("a", 0), h("b", 5)], {},
        [("holding", 0, 6, ["a", "b"])]),
    "gap exactly the limit": (
        [h("a", 0), h("b", 9)], {},  # filler 1..8 = 8 registers
        [("holding", 0, 10, ["a", "b"])]),
    "gap one over the limit": (
        [h("a", 0), h("b", 10)], {},
        [("holding", 0, 1, ["a"]), ("holding", 10, 1, ["b"])]),
    "merge_gap 0 merges only adjacent": (
        [h("a", 0), h("b", 1), h("c", 3)], {"merge_gap": 0},
        [("holding", 0, 2, ["a", "b"]), ("holding", 3, 1, ["c"])]),
    "125-register cap": (
        [h("a", 0), h("b", 124)], {"merge_gap": 200},
        [("holding", 0, 125, ["a", "b"])]),
    "point crossing the cap starts a new request": (
        [h("a", 0), h("b", 124, DType.UINT32)], {"merge_gap": 200},
        [("holding", 0, 1, ["a"]), ("holding", 124, 2, ["b"])]),
    "max_block above 125 is capped": (
        [h("a", 0), h("b", 125)], {"merge_gap": 200, "max_block": 250},
        [("holding", 0, 1, ["a"]), ("holding", 125, 1, ["b"])]),
    "max_block smaller than 125": (
        [h("a", 0), h("b", 2), h("c", 4), h("d", 6)], {"max_block": 4},
        [("holding", 0, 3, ["a", "b"]), ("holding", 4, 3, ["c", "d"])]),
    "mixed tables in fixed order": (
        [i("ir", 0), h("hr", 0), d("di", 0), c("co", 0)], {},
        [("coil", 0, 1, ["co"]), ("discrete", 0, 1, ["di"]), ("holding", 0, 1, ["hr"]), ("input", 0, 1, ["ir"])]),
    "bit tables merge up to merge_gap*16 bits": (
        [c("a", 0), c("b", 129), c("x", 259)], {},  # filler 128 then 129
        [("coil", 0, 130, ["a", "b"]), ("coil", 259, 1, ["x"])]),
    "bit tables cap at 2000, max_block does not apply": (
        [d("a", 0), d("b", 1999), d("c", 2000)], {"merge_gap": 200, "max_block": 10},
        [("discrete", 0, 2000, ["a", "b"]), ("discrete", 2000, 1, ["c"])]),
    "two bools in one register share a request": (
        [h("on", 7, DType.BOOL, bit=0), h("alarm", 7, DType.BOOL, bit=3)], {"merge_gap": 0},
        [("holding", 7, 1, ["on", "alarm"])]),
    "overlap inside a wide point": (
        [h("s", 10, DType.STRING, length=4), h("flag", 11, DType.BOOL, bit=1)], {"merge_gap": 0},
        [("holding", 10, 4, ["s", "flag"])]),
    "unsorted input": (
        [i("c", 40), i("a", 0), i("b", 4, DType.FLOAT32)], {},
        [("input", 0, 6, ["a", "b"]), ("input", 40, 1, ["c"])]),
    "empty": ([], {}, []),
}


@pytest.mark.parametrize("points,kw,expected", CASES.values(), ids=list(CASES))
def test_plan(points: list[Point], kw: dict, expected: list) -> None:
    assert shape(plan_reads(points, **kw)) == expected


def test_every_request_respects_its_cap_and_covers_its_points() -> None:
    points = [h(f"p{n}", n * 3, DType.FLOAT64) for n in range(100)]
    requests = plan_reads(points, max_block=60)
    assert sorted(p.name for r in requests for p in r.points) == sorted(p.name for p in points)
    for r in requests:
        assert r.count <= 60
        assert all(r.address <= p.address and p.end <= r.end for p in r.points)


def test_eastron_meter_is_three_requests() -> None:
    driver = get_driver("eastron_meter")
    assert [(str(r.reg), r.address, r.count) for r in plan_reads(driver.points, merge_gap=8)] == [
        ("input", 0x0000, 0x20), ("input", 0x0046, 6), ("input", 0x0156, 2)]


def test_qdy_level_is_one_request() -> None:
    driver = get_driver("qdy_level")
    assert shape(plan_reads(driver.points)) == [("holding", 3, 2, ["decimals", "level_raw"])]


@pytest.mark.parametrize("kw", [{"max_block": 0}, {"merge_gap": -1}])
def test_nonsense_limits_are_refused(kw: dict) -> None:
    with pytest.raises(ValueError):
        plan_reads([h("a", 0)], **kw)


def test_point_wider_than_max_block_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="wide"):
        plan_reads([h("wide", 0, DType.FLOAT64)], max_block=2)
