"""The pure helpers of bench/compare_thingsboard.py (bench/_cmp_values.py): a value names the
read that served it, payloads of both gateways and both of our wire versions are counted, the
simulator's log is read back, arrivals are matched to reads, and losses near a kill are told
apart from the others. The bench itself runs on demand, never in the suite."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import _cmp_values as cv  # noqa: E402

EDGE = "edge/v1/bench/gw-bench/telemetry"
TB = "v1/gateway/telemetry"


def test_a_value_names_its_read() -> None:
    for unit in (1, 7, 20):
        for reg in (0, 5, 19):
            values = {cv.value_of(unit, reg, seq) for seq in range(1, 5001)}
            assert len(values) == 5000  # no two reads of one register answer alike
            for seq in (1, 2, 777, 65535, 65536):
                assert cv.seq_of(unit, reg, cv.value_of(unit, reg, seq)) == seq
    assert cv.value_of(3, 4, 1) != cv.value_of(3, 5, 1) != cv.value_of(4, 4, 1)


def test_names_map_both_ways() -> None:
    assert (cv.dev_name(7), cv.point_name(13)) == ("dev07", "r13")
    assert (cv.unit_of("dev07"), cv.reg_of("r13")) == (7, 13)
    assert cv.unit_of("meter-1") is None and cv.reg_of("level_m") is None


def test_values_in_edge_v2_v1_and_thingsboard_payloads() -> None:
    v2 = {"v": 2, "gw": "g", "sent": 1, "recs": [
        {"id": 5, "dev": "dev01", "ts": 100, "vals": {"r0": 1, "r1": 2}},
        {"id": 6, "dev": "dev02", "ts": 101, "vals": {"r0": None}, "q": {"r0": "bad"}}]}
    got = cv.values_in(EDGE, json.dumps(v2).encode())
    assert [(v.dev, v.point, v.value) for v in got] == [("dev01", "r0", 1), ("dev01", "r1", 2), ("dev02", "r0", None)]
    assert got[0].context == got[1].context != got[2].context
    v1 = {"v": 1, "readings": [{"id": 9, "dev": "dev03", "pt": "r4", "val": 44, "ts": 7, "q": "good"}]}
    assert [(v.dev, v.point, v.value, v.context) for v in cv.values_in(EDGE, json.dumps(v1))] == \
        [("dev03", "r4", 44, (9, 7))]
    tb = {"dev01": [{"ts": 1, "values": {"r0": 3, "r1": 4}}, {"ts": 2, "values": {"r0": 5}}], "dev02": {"r9": 6}}
    assert [(v.dev, v.point, v.value, v.context) for v in cv.values_in(TB, json.dumps(tb))] == \
        [("dev01", "r0", 3, (1,)), ("dev01", "r1", 4, (1,)), ("dev01", "r0", 5, (2,)), ("dev02", "r9", 6, (None,))]


def test_values_in_an_xz_payload() -> None:
    import lzma

    doc = {"v": 2, "recs": [{"id": 1, "dev": "dev01", "ts": 5, "vals": {"r0": 7}}]}
    packed = lzma.compress(json.dumps(doc).encode(), format=lzma.FORMAT_XZ)
    assert [(v.dev, v.point, v.value) for v in cv.values_in(EDGE, packed)] == [("dev01", "r0", 7)]


@pytest.mark.parametrize("topic", ["edge/v1/bench/gw-bench/state", "edge/v1/bench/gw-bench/events",
                                   "v1/gateway/attributes", "v1/gateway/connect", "v1/devices/me/telemetry"])
def test_other_topics_carry_no_values(topic: str) -> None:
    assert not cv.is_data_topic(topic)
    assert cv.values_in(topic, b"{not even json") == []


def test_parse_served_reads_range_and_register_lines() -> None:
    served = cv.parse_served(["10.0 1 0 3 1", "10.5 1 1 1 2", "11.0 1 0 3 2,3,2", "truncated line"])
    assert served.request_times == [10.0, 10.5, 11.0]
    assert served.times[(1, 0)] == [10.0, 11.0]
    assert served.times[(1, 1)] == [10.0, 10.5, 11.0]
    assert served.when(1, 1, 3) == 11.0 and served.when(1, 1, 4) is None
    assert sorted(served.between(10.2, 11.0)) == [(1, 1, 2, 10.5)]
    assert served.requests_between(10.0, 11.0) == 2
    with pytest.raises(ValueError, match="register 0: read 5 after 0"):
        cv.parse_served(["1.0 2 0 1 5"])


def _tb_message(dev: str, ts: int, vals: dict[str, int]) -> bytes:
    return json.dumps({dev: [{"ts": ts, "values": vals}]}).encode()


def test_match_counts_bytes_duplicates_and_foreign_values() -> None:
    served = cv.parse_served(["1.0 1 0 2 1", "2.0 1 0 2 2"])
    first = _tb_message("dev01", 10, {"r0": cv.value_of(1, 0, 1), "r1": cv.value_of(1, 1, 1)})
    again = _tb_message("dev01", 10, {"r0": cv.value_of(1, 0, 1)})  # identical duplicate
    changed = _tb_message("dev01", 11, {"r1": cv.value_of(1, 1, 1)})  # a duplicate with another ts
    stranger = _tb_message("dev01", 12, {"r0": cv.value_of(1, 0, 9), "temp": 3})  # never served / not ours
    messages = [(1.5, TB, first), (1.6, "v1/gateway/connect", b'{"device":"dev01"}'), (2.5, TB, again),
                (2.6, TB, changed), (2.7, TB, stranger)]
    d = cv.match(messages, served)
    assert d.first_arrival == {(1, 0, 1): 1.5, (1, 1, 1): 1.5}
    assert (d.duplicates, d.different_duplicates, d.foreign, d.values) == (2, 1, 2, 6)
    assert d.messages == 4 and d.payload_bytes == len(first) + len(again) + len(changed) + len(stranger)


def test_outcome_excuses_only_the_last_20_ms_before_a_kill() -> None:
    window = [(1, 0, 1, 1.0), (1, 0, 2, 4.0), (1, 0, 3, 4.99), (1, 0, 4, 5.05), (1, 0, 5, 7.0)]
    delivery = cv.Delivery(first_arrival={(1, 0, 1): 1.25})
    out = cv.outcome(window, delivery, kills=[5.0, 8.0])
    assert out.latencies == [0.25]
    assert out.lost_near_kill == 2  # served 10 ms before the kill, and just after it
    assert out.lost == 2 and out.kills_losing == 2  # 4.0 (charged to the kill at 5.0) and 7.0 (at 8.0)
    assert out.lost_ages == [1.0, 1.0]
    assert cv.outcome(window, delivery).lost == 4  # no kills: nothing is excused


def test_match_reads_our_sparkplug_dialect_by_the_aliases_of_its_births() -> None:
    """DDATA metrics carry aliases only: the device's DBIRTH names them, as a host resolves them."""
    from edge_agent.uplink import sparkplug_b_pb2 as pb

    def payload(*metrics: tuple[str | None, int, int]) -> bytes:
        msg = pb.Payload(timestamp=1, seq=0)
        for name, alias, value in metrics:
            m = msg.metrics.add(alias=alias, timestamp=100, datatype=6, int_value=value)
            if name:
                m.name = name
        return msg.SerializeToString()

    base = "spBv1.0/bench/{}/gw-bench/dev01"
    served = cv.parse_served(["1.0 1 0 1 1", "2.0 1 0 1 2"])
    birth = payload(("r0", 1, cv.value_of(1, 0, 1)))
    data = payload((None, 1, cv.value_of(1, 0, 2)))
    assert cv.is_data_topic(base.format("DDATA")) and not cv.is_data_topic(base.format("DBIRTH"))
    delivery = cv.match([(1.0, base.format("DBIRTH"), birth), (2.0, base.format("DDATA"), data)], served)
    assert (delivery.messages, delivery.values, delivery.foreign) == (1, 1, 0)
    assert delivery.payload_bytes == len(data)
