"""The ``sparkplug`` dialect (``uplink/sparkplug.py``) with a fake link and fake rows. Its messages
are decoded twice: by our own pb2 and by a host built on another library, pysparkplug
(``support/spb_host.py --decode`` in ``tests/.spb-venv``, made by ``scripts/setup.sh``), which
resolves aliases from the births as a host does and encodes the NCMD/DCMD a host would send.
No broker here: the system tests run spb_host.py live against the agent (issue 14).
"""

from __future__ import annotations

import base64
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pytest

from edge_agent.field.registry import drivers
from edge_agent.model import DataClass, Event, Priority, Quality, Reading, Record
from edge_agent.privacy.stage import DEFAULT_ACTIONS
from edge_agent.settings import (BufferSettings, BusSettings, CommandSettings, DeviceSettings, GatewaySettings,
                                 MqttSettings, PrivacySettings, Settings, SparkplugSettings)
from edge_agent.uplink import sparkplug_b_pb2 as pb
from edge_agent.uplink import sparkplug_metric as spm
from support.dialects import FakeLink
from edge_agent.uplink.dialect import Message
from edge_agent.uplink.lanes import Batch
from edge_agent.uplink.sparkplug import SparkplugDialect

ROOT = Path(__file__).resolve().parents[2]
HOST_PY = ROOT / "tests" / ".spb-venv" / "bin" / "python"
HOST = ROOT / "tests" / "support" / "spb_host.py"
GW, SITE, TS = "gw-spb", "site-spb", 1732380000000
STATE = {"online": True, "gw": GW, "version": "0.1.0", "started": TS - 3600_000,
         "backlog": {"count": 12, "bytes": 960, "oldest_ts": None, "by_prio": {"critical": 0, "high": 0, "normal": 12}},
         "evicted": {"critical": 0, "high": 0, "normal": 0}, "devices": {"online": 3, "offline": 1, "unknown": 0},
         "clock": "synced"}


def settings(*, primary_host: str | None = None, privacy: dict[tuple[str, str], str] | None = None) -> Settings:
    buses = (BusSettings("field", "modbus-tcp", host="192.0.2.10", port=502),
             BusSettings("rs485", "modbus-rtu", serial="/dev/ttyUSB0"),
             BusSettings("lines", "json-lines", serial="/dev/ttyUSB1", baud=115200))
    overrides: dict[str, dict[str, str]] = {}
    for (dev, point), action in (privacy or {}).items():
        overrides.setdefault(dev, {})[point] = action
    devices = (DeviceSettings("river-1", "rs485", "qdy_level", 3, 5.0, privacy=overrides.get("river-1", {})),
               DeviceSettings("meter-7", "field", "eastron_meter", 7, 1.0, privacy=overrides.get("meter-7", {})),
               DeviceSettings("hub-1", "lines", "wearables_hub", None, 10.0),
               DeviceSettings("gate-1", "lines", "gate_controller", None, 10.0),
               DeviceSettings("water-1", "rs485", "cjt188_meter", "12345678901234", 60.0),
               DeviceSettings("spare-1", "rs485", "qdy_level", 9, 5.0, enabled=False))
    mqtt = MqttSettings("127.0.0.1", dialect="sparkplug", sparkplug=SparkplugSettings(primary_host=primary_host))
    return Settings(gateway=GatewaySettings(GW, SITE, Path("/tmp")), mqtt=mqtt,
                    buffer=BufferSettings(Path("/tmp/buffer.db")), privacy=PrivacySettings(), buses=buses,
                    devices=devices, commands=CommandSettings(unsigned={"sparkplug": ("device.write",)}))


@dataclass(frozen=True)
class Row:
    id: int
    prio: Priority
    body: dict[str, Any]
    kind: str


def records(*recs: Record, first_id: int = 100, lane: str = "live") -> Batch:
    rows = (Row(first_id + i, Priority.NORMAL, {"id": first_id + i, **r.to_wire()}, "record")
            for i, r in enumerate(recs))
    return Batch(lane, "record", tuple(rows))


def events(*evs: Event, first_id: int = 200, lane: str = "critical") -> Batch:
    return Batch(lane, "event", tuple(Row(first_id + i, e.prio, {"id": first_id + i, **e.to_wire()}, "event")
                                      for i, e in enumerate(evs)))


class Clock:
    def __init__(self, ms: int = TS) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def dialect(tmp_path: Path, clock: Clock | None = None, **kw: Any) -> SparkplugDialect:
    return SparkplugDialect(settings(**kw), bdseq_path=tmp_path / "sparkplug-bdseq", now_ms=clock or Clock(),
                            drivers=drivers())


def ours(message: Message) -> Any:
    return pb.Payload.FromString(message.payload)


def host(items: Sequence[Message | str]) -> list[dict[str, Any]]:
    """What pysparkplug makes of our messages, in order (a str item: a command for it to encode)."""
    if not HOST_PY.exists():
        pytest.fail("tests/.spb-venv is missing: run scripts/setup.sh (it installs pysparkplug there)")
    lines = [json.dumps({"command": i} if isinstance(i, str) else
                        {"topic": i.topic, "payload": base64.b64encode(i.payload).decode()}) for i in items]
    done = subprocess.run([str(HOST_PY), str(HOST), "--decode"], input="\n".join(lines) + "\n", text=True,
                          capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def kinds(messages: Sequence[Message]) -> list[str]:
    return [m.topic.split("/")[2] + ("/" + m.topic.split("/")[4] if m.topic.count("/") == 4 else "")
            for m in messages]


def born(tmp_path: Path, clock: Clock | None = None, **kw: Any) -> tuple[SparkplugDialect, FakeLink]:
    d, link = dialect(tmp_path, clock, **kw), FakeLink()
    d.will()
    d.births(link, STATE)
    return d, link


def metrics_by_name(decoded: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in decoded["metrics"]}


# -- the session: will, bdSeq, births --------------------------------------------------------------
def test_the_will_is_an_ndeath_with_bdseq_at_qos1_not_retained_and_no_seq(tmp_path: Path) -> None:
    will = dialect(tmp_path).will()
    assert will is not None and will.topic == f"spBv1.0/{SITE}/NDEATH/{GW}"
    assert (will.qos, will.retain) == (1, False)
    payload = ours(will)
    assert not payload.HasField("seq") and [m.name for m in payload.metrics] == ["bdSeq"]
    assert payload.metrics[0].datatype == spm.INT64 and payload.metrics[0].long_value == 0
    [decoded] = host([will])
    assert decoded["type"] == "NDEATH" and decoded["bdSeq"] == 0 and "error" not in decoded


def test_bdseq_grows_per_connection_survives_a_restart_and_wraps(tmp_path: Path) -> None:
    path = tmp_path / "sparkplug-bdseq"
    first = dialect(tmp_path)
    assert ours(first.will()).metrics[0].long_value == 0
    assert path.read_text() == "0\n"  # kept before the broker ever holds that will
    first.on_disconnect()
    assert ours(first.will()).metrics[0].long_value == 1 and path.read_text() == "1\n"
    # a kill -9 and a restart: the new process takes the next one, never the one the old will holds
    again, link = dialect(tmp_path), FakeLink()
    will = again.will()
    again.births(link, STATE)
    nbirth = link.published[0]
    assert ours(will).metrics[0].long_value == 2
    decoded = host([nbirth, will])
    assert decoded[0]["type"] == "NBIRTH" and decoded[0]["bdSeq"] == 2 == decoded[1]["bdSeq"]
    path.write_text("255\n")
    assert ours(dialect(tmp_path).will()).metrics[0].long_value == 0
    assert not list(tmp_path.glob("*.tmp"))


def test_births_come_first_then_data_and_the_host_resolves_every_alias(tmp_path: Path) -> None:
    d, link = born(tmp_path)
    assert d.ready()
    assert kinds(link.published) == ["NBIRTH", "DBIRTH/river-1", "DBIRTH/meter-7", "DBIRTH/hub-1", "DBIRTH/gate-1",
                                     "DBIRTH/water-1"]  # spare-1 is disabled
    data = d.data(records(Record("river-1", TS + 10, {"level_m": 1.23}),
                          Record("meter-7", TS + 20, {"voltage_V": 230.2, "power_W": None}, q={"power_W": "bad"}),
                          Record("river-1", TS + 30, {"level_m": 1.25})), TS + 40)
    assert kinds(data) == ["DDATA/river-1", "DDATA/meter-7"]  # one per device, records in order
    decoded = host([*link.published, *data])
    assert not [x for x in decoded if "error" in x]
    assert [x["seq"] for x in decoded] == list(range(8))
    nbirth = metrics_by_name(decoded[0])
    assert nbirth["Node Control/Rebirth"] == {**nbirth["Node Control/Rebirth"], "value": False, "datatype": "Boolean"}
    assert nbirth["Backlog/count"]["value"] == 12 and nbirth["Properties/version"]["value"] == "0.1.0"
    river = decoded[6]
    assert [(m["name"], m["value"], m["timestamp"], m["datatype"]) for m in river["metrics"]] == [
        ("level_m", 1.23, TS + 10, "Double"), ("level_m", 1.25, TS + 30, "Double")]
    meter = metrics_by_name(decoded[7])
    assert meter["voltage_V"]["datatype"] == "Float" and meter["voltage_V"]["value"] == pytest.approx(230.2)
    assert meter["power_W"]["is_null"] and meter["power_W"]["value"] is None
    assert decoded[7]["timestamp"] == TS + 40  # the payload's: when it was sent
    assert not any(m["is_historical"] for x in decoded[6:] for m in x["metrics"])
    dbirth = metrics_by_name(decoded[2])  # meter-7 declares every point with its datatype
    assert {n: m["datatype"] for n, m in dbirth.items() if not n.startswith("Event/")} == {
        n: "Float" for n in ("voltage_V", "current_A", "power_W", "apparent_power_VA", "reactive_power_var",
                             "power_factor", "frequency_Hz", "energy_import_kWh", "energy_export_kWh",
                             "energy_total_kWh")}
    assert not [m for m in ours(data[0]).metrics if m.HasField("name") or m.HasField("datatype")]  # by alias only


def test_aliases_are_unique_across_the_edge_node(tmp_path: Path) -> None:
    _, link = born(tmp_path)
    aliases = [m.alias for msg in link.published for m in ours(msg).metrics]
    assert len(aliases) == len(set(aliases))


def test_a_unit_is_a_device_of_its_own_born_once_with_every_point_of_its_driver(tmp_path: Path) -> None:
    d, link = born(tmp_path)
    readings = [Reading("hub-1", "battery_pct", 64, TS + 5, sub="B-00023"),
                Reading("hub-1", "hr_bpm", 72, TS + 5, sub="B-00023", data_class=DataClass.HEALTH)]
    data = d.data(records(Record.of(readings)), TS + 6)
    assert kinds(data) == ["DBIRTH/hub-1_B-00023", "DDATA/hub-1_B-00023"]
    again = d.data(records(Record("hub-1", TS + 7, {"battery_pct": 63, "wearer": "p1:6Q2W"}, sub="B-00023"),
                           Record("hub-1", TS + 7, {"battery_pct": 50}, sub="B-00024")), TS + 8)
    assert kinds(again) == ["DDATA/hub-1_B-00023", "DBIRTH/hub-1_B-00024", "DDATA/hub-1_B-00024"]
    decoded = host([*link.published, *data, *again])
    assert not [x for x in decoded if "error" in x]
    unit = {n: m["datatype"] for n, m in metrics_by_name(decoded[-5]).items()}
    assert unit == {"hr_bpm": "Double", "spo2_pct": "Double", "sbp_mmHg": "Double", "dbp_mmHg": "Double",
                    "temp_C": "Double", "battery_pct": "Double", "hub_ts": "Double", "wearer": "String",
                    "wearer_phone": "String"}  # wearer_name: a name, dropped by default
    assert [(m["name"], m["value"]) for m in decoded[-3]["metrics"]] == [("battery_pct", 63.0), ("wearer", "p1:6Q2W")]
    assert "Event/type" in metrics_by_name(decoded[3])  # events stay with the hub itself
    # a reconnect births the units met so far too, with their last values
    d.on_disconnect()
    link.published.clear()
    d.will()
    d.births(link, STATE)
    assert kinds(link.published)[-2:] == ["DBIRTH/hub-1_B-00023", "DBIRTH/hub-1_B-00024"]


def test_a_units_device_id_keeps_to_safe_characters_and_never_takes_another(tmp_path: Path) -> None:
    d, _ = born(tmp_path)
    first = d.data(records(Record("gate-1", TS + 1, {"barrier": "open"}, sub="a/b")), TS + 2)
    second = d.data(records(Record("gate-1", TS + 1, {"barrier": "open"}, sub="a+b")), TS + 2)
    assert kinds(first)[-1] == "DDATA/gate-1_a-b" and kinds(second)[-1] == "DDATA/gate-1_a-b-2"


def test_seq_is_continuous_over_every_message_and_wraps_after_255(tmp_path: Path) -> None:
    d, link = born(tmp_path)
    out = list(link.published)
    for i in range(300):
        out += d.data(records(Record("river-1", TS + i, {"level_m": i / 100})), TS + i)
    seqs = [ours(m).seq for m in out]
    assert seqs == [i % 256 for i in range(len(out))]
    assert len(host(out[:6] + out[-3:])) == 9


def test_backlog_rows_and_rows_older_than_the_birth_are_historical(tmp_path: Path) -> None:
    clock = Clock(TS + 1000)
    d, link = born(tmp_path, clock)
    backlog = d.data(records(Record("river-1", TS + 2000, {"level_m": 1.0}), lane="backlog"), TS + 3000)
    older = d.data(records(Record("river-1", TS + 500, {"level_m": 1.1})), TS + 3000)  # buffered before the birth
    live = d.data(records(Record("river-1", TS + 2500, {"level_m": 1.2})), TS + 3000)
    decoded = host([*link.published, *backlog, *older, *live])
    assert [x["metrics"][0]["is_historical"] for x in decoded[-3:]] == [True, True, False]


# -- the primary host's STATE ---------------------------------------------------------------------
def state_msg(online: bool, ts: int) -> bytes:
    return json.dumps({"online": online, "timestamp": ts}).encode()


def test_births_wait_for_the_primary_host_and_stop_while_it_is_offline(tmp_path: Path) -> None:
    clock = Clock()
    d, link = dialect(tmp_path, clock, primary_host="scada"), FakeLink()
    assert "spBv1.0/STATE/scada" in d.subscriptions()
    assert set(d.subscriptions()) >= {f"spBv1.0/{SITE}/NCMD/{GW}", f"spBv1.0/{SITE}/DCMD/{GW}/+"}
    will = d.will()
    d.births(link, STATE)
    assert link.published == [] and not d.ready()
    assert d.inbound("spBv1.0/STATE/scada", state_msg(True, TS), link) is None
    assert kinds(link.published)[0] == "NBIRTH" and d.ready() and link.wakes == 1
    first = len(link.published)
    clock.ms = TS + 5000
    d.inbound("spBv1.0/STATE/scada", state_msg(False, TS + 4000), link)
    assert not d.ready()
    with pytest.raises(RuntimeError, match="before the births"):
        d.data(records(Record("river-1", TS + 5000, {"level_m": 1.0})), TS + 5000)
    d.inbound("spBv1.0/STATE/scada", state_msg(True, TS + 1), link)  # older than the offline: ignored
    assert not d.ready() and len(link.published) == first
    clock.ms = TS + 9000
    d.inbound("spBv1.0/STATE/scada", state_msg(True, TS + 8000), link)
    assert d.ready() and kinds(link.published)[first] == "NBIRTH"
    waited = d.data(records(Record("river-1", TS + 5000, {"level_m": 1.0})), TS + 9001)  # buffered meanwhile
    decoded = host([*link.published[first:], waited[0], will])
    assert decoded[0]["seq"] == 0 and decoded[0]["bdSeq"] == decoded[-1]["bdSeq"] == 0  # same connection
    assert decoded[-2]["metrics"][0]["is_historical"] is True


def test_a_new_connection_waits_for_the_retained_state_again(tmp_path: Path) -> None:
    d, link = dialect(tmp_path, primary_host="scada"), FakeLink()
    d.will()
    d.births(link, STATE)
    d.inbound("spBv1.0/STATE/scada", state_msg(True, TS), link)
    assert d.ready()
    d.on_disconnect()
    assert not d.ready()
    link.published.clear()
    d.births(link, STATE)
    assert link.published == [] and not d.ready()
    d.inbound("spBv1.0/STATE/scada", state_msg(True, TS), link)  # the same retained STATE, delivered again
    assert d.ready() and ours(link.published[0]).metrics[0].long_value == 1


# -- commands --------------------------------------------------------------------------------------
def test_ncmd_rebirth_births_everything_again_with_the_same_bdseq(tmp_path: Path) -> None:
    d, link = born(tmp_path)
    d.data(records(Record("river-1", TS + 1, {"level_m": 1.0})), TS + 2)
    [cmd] = [x for x in host([*link.published, f"rebirth {SITE} {GW}"]) if x["type"] == "command"]
    before = len(link.published)
    assert d.inbound(cmd["topic"], base64.b64decode(cmd["payload"]), link) is None
    again = link.published[before:]
    assert kinds(again)[0] == "NBIRTH" and len(again) == before
    decoded = host(again)
    assert decoded[0]["seq"] == 0 and decoded[0]["bdSeq"] == 0
    assert metrics_by_name(decoded[1])["level_m"]["value"] == 1.0  # a DBIRTH carries the last values


def test_dcmd_becomes_device_write_inbound_by_alias(tmp_path: Path) -> None:
    d, link = born(tmp_path)
    lanes = d.data(records(Record("gate-1", TS + 1, {"barrier": "closed"}, sub="1"),
                           Record("gate-1", TS + 3, {"barrier": "closed"}, sub="2")), TS + 4)
    out = host([*link.published, *lanes, 'dcmd gate-1_1 barrier "open"'])
    cmd = out[-1]
    assert cmd["type"] == "command", cmd
    inbound = d.inbound(cmd["topic"], base64.b64decode(cmd["payload"]), link)
    assert inbound is not None and inbound.dialect == "sparkplug" and inbound.signed is None
    unsigned = dict(inbound.unsigned or {})
    assert unsigned["op"] == "device.write" and unsigned["target"] == "gate-1"
    assert unsigned["args"] == {"point": "barrier", "value": "open", "lane": 1}
    assert unsigned["id"].startswith("spb-gate-1_1-") and inbound.reply is None
    assert d.reply(inbound, {"id": unsigned["id"], "ok": True}) is None


def test_a_dcmd_of_several_metrics_is_one_inbound_each_and_a_signed_string_stays_signed(tmp_path: Path) -> None:
    d, link = born(tmp_path)
    birth = next(ours(m) for m in link.published if m.topic.endswith("/DBIRTH/" + GW + "/meter-7"))
    alias = {m.name: m.alias for m in birth.metrics}
    signed = json.dumps({"v": 1, "id": "c-1", "op": "agent.ping", "sig": "AAAA"})
    payload = pb.Payload(timestamp=TS, metrics=[pb.Payload.Metric(alias=alias["voltage_V"], float_value=1.5),
                                                pb.Payload.Metric(alias=alias["power_W"], float_value=-2.0),
                                                pb.Payload.Metric(name="note", string_value=signed)])
    topic = f"spBv1.0/{SITE}/DCMD/{GW}/meter-7"
    found = d.inbounds(topic, payload.SerializeToString(), link)
    assert [i.unsigned["args"] if i.unsigned else i.signed for i in found] == [
        {"point": "voltage_V", "value": 1.5}, {"point": "power_W", "value": -2.0}, signed.encode()]
    assert len({i.unsigned["id"] for i in found if i.unsigned}) == 2
    assert d.inbound(topic, payload.SerializeToString(), link) == found[0]


def test_commands_for_another_node_or_undecodable_are_ignored(tmp_path: Path) -> None:
    d, link = born(tmp_path)
    assert d.inbound(f"spBv1.0/{SITE}/DCMD/other-gw/meter-7", b"", link) is None
    assert d.inbound(f"spBv1.0/{SITE}/DCMD/{GW}/meter-7", b"\xff\xff\xff", link) is None


# -- events, device death, node state --------------------------------------------------------------
def test_events_are_ddata_of_their_device_and_offline_is_a_ddeath(tmp_path: Path) -> None:
    d, link = born(tmp_path)
    sos = Event("hub-1", "sos", Priority.CRITICAL, TS + 1, {"band": "B-00023", "wearer": "p1:6Q2W"})
    offline = Event("river-1", "offline", Priority.HIGH, TS + 2, {"state": "offline", "failed_polls": 3})
    out = d.data(events(sos, offline), TS + 3)
    assert kinds(out) == ["DDATA/hub-1", "DDATA/river-1", "DDEATH/river-1"]
    back = d.data(records(Record("river-1", TS + 10, {"level_m": 1.0})), TS + 11)
    assert kinds(back) == ["DBIRTH/river-1", "DDATA/river-1"]
    decoded = host([*link.published, *out, *back])
    assert not [x for x in decoded if "error" in x]
    event = metrics_by_name(decoded[-5])
    assert event["Event/type"]["value"] == "sos" and event["Event/prio"]["value"] == "critical"
    assert event["Event/id"]["value"] == 200 and event["Event/type"]["timestamp"] == TS + 1
    assert json.loads(event["Event/data"]["value"]) == {"band": "B-00023", "wearer": "p1:6Q2W"}
    assert decoded[-3]["type"] == "DDEATH" and decoded[-3]["seq"] == decoded[-4]["seq"] + 1


def test_a_device_going_offline_takes_its_units_along(tmp_path: Path) -> None:
    d, _ = born(tmp_path)
    d.data(records(Record("hub-1", TS + 1, {"battery_pct": 60}, sub="B-1"),
                   Record("hub-1", TS + 1, {"battery_pct": 61}, sub="B-2")), TS + 2)
    out = d.data(events(Event("hub-1", "offline", Priority.HIGH, TS + 3, {})), TS + 4)
    assert kinds(out) == ["DDATA/hub-1", "DDEATH/hub-1", "DDEATH/hub-1_B-1", "DDEATH/hub-1_B-2"]
    back = d.data(records(Record("hub-1", TS + 5, {"battery_pct": 59}, sub="B-1")), TS + 6)
    assert kinds(back) == ["DBIRTH/hub-1_B-1", "DDATA/hub-1_B-1"]


def test_older_rows_of_a_dead_device_are_born_for_and_it_dies_again(tmp_path: Path) -> None:
    d, _ = born(tmp_path)
    d.data(events(Event("river-1", "offline", Priority.HIGH, TS + 100, {})), TS + 101)
    late = d.data(records(Record("river-1", TS + 50, {"level_m": 1.0}), lane="backlog"), TS + 102)
    assert kinds(late) == ["DBIRTH/river-1", "DDATA/river-1", "DDEATH/river-1"]


def test_state_sends_ndata_with_the_node_metrics_that_changed_only(tmp_path: Path) -> None:
    d, link = born(tmp_path)
    assert d.state(STATE) == ()
    changed = {**STATE, "backlog": {**STATE["backlog"], "count": 3}, "evicted": {**STATE["evicted"], "normal": 7}}
    [ndata] = d.state(changed)
    decoded = host([*link.published, ndata])[-1]
    assert decoded["type"] == "NDATA" and decoded["seq"] == len(link.published)
    assert {m["name"]: m["value"] for m in decoded["metrics"]} == {"Backlog/count": 3, "Evicted/normal": 7}


def test_offline_is_an_ndeath_with_the_current_bdseq(tmp_path: Path) -> None:
    d, _ = born(tmp_path)
    [ndeath] = d.offline(TS + 99)
    assert ndeath.topic.endswith("/NDEATH/" + GW) and ours(ndeath).metrics[0].long_value == 0
    assert ours(ndeath).timestamp == TS + 99 and not d.ready()


# -- datatypes --------------------------------------------------------------------------------------
def test_privacy_decides_the_datatype_and_sealed_points_are_one_string(tmp_path: Path) -> None:
    d, link = born(tmp_path, privacy={("river-1", "level_m"): "mask", ("meter-7", "voltage_V"): "drop",
                                      ("meter-7", "current_A"): "seal", ("meter-7", "power_W"): "generalize"})
    births = {m.topic.rsplit("/", 1)[-1]: {x.name: x.datatype for x in ours(m).metrics} for m in link.published[1:]}
    assert births["river-1"]["level_m"] == spm.STRING
    assert "voltage_V" not in births["meter-7"] and "current_A" not in births["meter-7"]
    assert births["meter-7"]["sealed"] == spm.STRING and births["meter-7"]["power_W"] == spm.DOUBLE
    sealed = {"kid": "97d5", "ct": "QUJD"}
    [ddata] = d.data(records(Record("meter-7", TS + 1, {"power_W": 1200.0}, sealed=sealed)), TS + 2)
    decoded = metrics_by_name(host([*link.published, ddata])[-1])
    assert json.loads(decoded["sealed"]["value"]) == sealed and decoded["power_W"]["value"] == 1200.0


def test_an_output_without_a_type_is_settled_by_its_first_value(tmp_path: Path) -> None:
    d, link = born(tmp_path)
    water = {m.name: m for m in ours(next(m for m in link.published if m.topic.endswith("/water-1"))).metrics}
    assert water["battery_low"].datatype == spm.STRING and water["flow_total_m3"].datatype == spm.DOUBLE
    out = d.data(records(Record("water-1", TS + 1, {"flow_total_m3": 12.5, "valve": "open", "battery_low": True})),
                 TS + 2)
    assert kinds(out) == ["DBIRTH/water-1", "DDATA/water-1"]
    decoded = host([*link.published, *out])
    assert metrics_by_name(decoded[-2])["battery_low"]["datatype"] == "Boolean"
    assert metrics_by_name(decoded[-1])["battery_low"]["value"] is True
    assert kinds(d.data(records(Record("water-1", TS + 3, {"battery_low": False, "valve": "closed"})), TS + 4)) == [
        "DDATA/water-1"]


def test_a_value_that_fits_no_declaration_turns_its_metric_into_a_string(tmp_path: Path) -> None:
    d, link = born(tmp_path)
    out = d.data(records(Record("river-1", TS + 1, {"level_m": "n/a"})), TS + 2)
    assert kinds(out) == ["DBIRTH/river-1", "DDATA/river-1"]
    decoded = host([*link.published, *out])
    assert metrics_by_name(decoded[-2])["level_m"]["datatype"] == "String"
    assert decoded[-1]["metrics"][0]["value"] == "n/a"
    [later] = d.data(records(Record("river-1", TS + 3, {"level_m": 1.5})), TS + 4)  # a number now: as JSON text
    assert ours(later).metrics[0].string_value == "1.5"


def test_quality_rides_as_a_property_when_a_bad_value_is_kept(tmp_path: Path) -> None:
    d, _ = born(tmp_path)
    [ddata] = d.data(records(Record("river-1", TS + 1, {"level_m": 25.0}, q={"level_m": str(Quality.BAD)})), TS + 2)
    metric = ours(ddata).metrics[0]
    assert metric.double_value == 25.0 and list(metric.properties.keys) == ["Quality"]
    assert metric.properties.values[0].int_value == 0


def test_datatypes_of_register_points() -> None:
    from edge_agent.model import DType, Point, Reg
    assert spm.point_type(Point("a", Reg.HOLDING, 0, DType.INT16)) == spm.INT16
    assert spm.point_type(Point("a", Reg.HOLDING, 0, DType.INT16, scale=0.1)) == spm.DOUBLE
    assert spm.point_type(Point("a", Reg.HOLDING, 0, DType.UINT32)) == spm.UINT32
    assert spm.point_type(Point("a", Reg.COIL, 0, DType.BOOL)) == spm.BOOLEAN
    assert spm.point_type(Point("a", Reg.HOLDING, 0, DType.STRING, length=4)) == spm.STRING


@pytest.mark.parametrize("datatype, value", [(spm.INT8, -5), (spm.INT16, -32768), (spm.INT32, -1), (spm.INT64, -2**63),
                                             (spm.UINT32, 2**32 - 1), (spm.UINT64, 2**64 - 1), (spm.BOOLEAN, True)])
def test_values_go_in_and_out_of_the_protobuf_signed_as_declared(datatype: int, value: Any) -> None:
    metric = pb.Payload.Metric(datatype=datatype)
    spm.set_value(metric, datatype, value)
    assert spm.read_value(pb.Payload.Metric.FromString(metric.SerializeToString())) == value


def test_the_default_actions_are_the_privacy_stages() -> None:
    assert spm.DEFAULT_ACTIONS == DEFAULT_ACTIONS


def test_ids_that_would_break_a_topic_are_refused() -> None:
    s = settings()
    bad = Settings(gateway=GatewaySettings("gw/1", SITE, Path("/tmp")), mqtt=s.mqtt, buffer=s.buffer,
                   privacy=s.privacy, buses=s.buses, devices=s.devices)
    with pytest.raises(ValueError, match="edge node id"):
        SparkplugDialect(bad, bdseq_path=Path("/nonexistent/x"))
