"""Privacy: every action on every class, the defaults, events with nested data, pseudonyms and
their keys, masks, generalisation, seals, and the guarantee that no raw value gets through."""

from __future__ import annotations

import base64
import json
import re
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from support.paths import TESTS
from support.residents import residents

from edge_agent.privacy import geohash
from edge_agent.privacy.keys import KeyFileError, KeyRing
from edge_agent.model import DataClass, Event, Priority, Quality, Reading, Record
from edge_agent.platform import open_record, open_sealed
from edge_agent.privacy.stage import DEFAULT_ACTIONS, DROP, Privacy
from edge_agent.privacy.pseudonym import mask, normalise, pseudonymize, token
from edge_agent.privacy.seal import PlatformKey, SealError, is_sealed
from edge_agent.settings import PrivacySettings

VECTORS = json.loads((TESTS / "vectors" / "pii.json").read_text(encoding="utf-8"))
KEY1, KEY2, OTHER = bytes(range(32)), bytes(range(32, 64)), bytes(range(64, 96))
RING = KeyRing({1: KEY1})
RING2 = KeyRing({1: KEY1, 2: KEY2})
PLATFORM_PRIVATE = X25519PrivateKey.generate()
PLATFORM = PlatformKey(PLATFORM_PRIVATE.public_key())
TODAY = date(2024, 11, 23)
ID, PHONE, PLATE = "11010519491231002X", "13812341234", "苏D40000"
TOKEN = re.compile(r"p[0-9]+:[A-Z2-7]{26}")
C = DataClass


def privacy(actions: dict[str, str] | None = None, keys: KeyRing | None = RING,
            platform: PlatformKey | None = PLATFORM, **kw: Any) -> Privacy:
    settings = PrivacySettings(actions={C(k): v for k, v in (actions or {}).items()}, **kw)
    return Privacy(settings, keys, platform, today=TODAY)


def p1(value: str) -> str:
    return pseudonymize(value, RING)


# -- defaults and the action table ---------------------------------------------------------------
def test_defaults() -> None:
    p = privacy()
    assert {c: p.action_for(c) for c in C} == {
        C.IDENTIFIER: "pseudonymize", C.NAME: "drop", C.LOCATION: "generalize", C.FREE_TEXT: "scan",
        C.HEALTH: "keep", C.TELEMETRY: "keep"} == DEFAULT_ACTIONS
    assert privacy({"name": "mask"}).action_for(C.NAME) == "mask"
    assert p.warnings == ()


def test_unknown_action_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown privacy action"):
        privacy({"name": "hide"})


VALUES = {C.IDENTIFIER: ID, C.NAME: "张三", C.LOCATION: {"lat": 22.817, "lon": 108.366},
          C.FREE_TEXT: f"3栋2单元501室, 联系电话{PHONE}", C.HEALTH: 72, C.TELEMETRY: 1.23}
EXPECTED: dict[tuple[C, str], Any] = {
    (C.IDENTIFIER, "keep"): ID, (C.IDENTIFIER, "pseudonymize"): p1(ID), (C.IDENTIFIER, "mask"): "110105********002X",
    (C.IDENTIFIER, "generalize"): "70-79",
    (C.NAME, "keep"): "张三", (C.NAME, "pseudonymize"): p1("张三"), (C.NAME, "mask"): "张*", (C.NAME, "generalize"): "张",
    (C.LOCATION, "keep"): VALUES[C.LOCATION], (C.LOCATION, "generalize"): "wkj1cc",
    (C.LOCATION, "mask"): {"lat": "2****7", "lon": "1*****6"},
    (C.FREE_TEXT, "keep"): f"3栋2单元501室, 联系电话{p1(PHONE)}",
    (C.FREE_TEXT, "scan"): f"3栋2单元501室, 联系电话{p1(PHONE)}",
    (C.FREE_TEXT, "pseudonymize"): f"3栋2单元501室, 联系电话{p1(PHONE)}",
    (C.FREE_TEXT, "mask"): "3栋2单元501室, 联系电话138****1234",
    (C.FREE_TEXT, "generalize"): "3栋2单元501室, 联系电话138",
    (C.HEALTH, "keep"): 72, (C.HEALTH, "pseudonymize"): p1("72"), (C.HEALTH, "mask"): "7*", (C.HEALTH, "generalize"): 72,
    (C.TELEMETRY, "keep"): 1.23, (C.TELEMETRY, "mask"): "1**3", (C.TELEMETRY, "generalize"): 1.2,
    (C.TELEMETRY, "pseudonymize"): p1("1.23"), (C.LOCATION, "pseudonymize"): {"lat": p1("22.817"), "lon": p1("108.366")},
}


@pytest.mark.parametrize("action", ["keep", "pseudonymize", "mask", "generalize", "drop", "seal"])
@pytest.mark.parametrize("cls", list(C))
def test_each_action_on_each_class(cls: C, action: str) -> None:
    value = VALUES[cls]
    out = privacy({str(cls): action}).apply_value(value, cls)
    if action == "drop":
        assert out is DROP
    elif action == "seal":
        assert is_sealed(out) and open_sealed(out, PLATFORM_PRIVATE) == value
    else:
        assert out == EXPECTED[cls, action]


def test_free_text_scan_replaces_hits_as_identifier_would() -> None:
    text = f"ID {ID}, tel +86 138-1234-1234, car 苏D·40000"
    expect = {"pseudonymize": f"ID {p1(ID)}, tel {p1(PHONE)}, car {p1(PLATE)}",
              "mask": "ID 110105********002X, tel 138****1234, car 苏D4***0",
              "generalize": "ID 70-79, tel 138, car 苏D",
              "drop": "ID <id>, tel <phone>, car <plate>",
              "keep": text}
    for action, want in expect.items():
        assert privacy({"identifier": action}).apply_value(text, C.FREE_TEXT) == want, action
    sealed = privacy({"identifier": "seal"}).apply_value(text, C.FREE_TEXT)
    assert open_sealed(sealed, PLATFORM_PRIVATE) == text  # a string carrying a hit is sealed whole
    plain = "no identifiers here 123"
    assert privacy({"identifier": "seal"}).apply_value(plain, C.FREE_TEXT) == plain


def test_every_string_is_scanned_whatever_its_class() -> None:
    p = privacy()
    assert p.apply_value(f"note: call {PHONE}", C.HEALTH) == f"note: call {p1(PHONE)}"
    assert p.apply_value(f"fw {PHONE}", C.TELEMETRY) == f"fw {p1(PHONE)}"
    assert p.apply_value(f"{PHONE}", C.TELEMETRY) == p1(PHONE)
    assert p.apply_value(13812341234, C.TELEMETRY) == 13812341234  # numbers keep their type
    assert p.apply_value({"a": [f"x{ID}", 5]}, C.HEALTH) == {"a": [f"x{p1(ID)}", 5]}


def test_declared_and_scanned_values_give_the_same_token() -> None:
    p = privacy()
    for raw in (PHONE, "+86 138 1234 1234", "0086-138-1234-1234", "１３８１２３４１２３４"):
        assert p.apply_value(raw, C.IDENTIFIER) == p1(PHONE)
        assert p.apply_value(f"电话{raw}。", C.FREE_TEXT) == f"电话{p1(PHONE)}。"


# -- pseudonyms -------------------------------------------------------------------------------------
def test_hmac_vector() -> None:
    v = VECTORS["hmac_sha256"]
    digest = bytes.fromhex(v["hex"])
    want = base64.b32encode(digest[:16]).decode().rstrip("=")
    assert token(v["key_utf8"].encode("utf-8"), v["message"]) == want
    assert len(want) == 26


def test_pseudonym_stable_per_key_and_version() -> None:
    a = pseudonymize(ID, RING)
    assert a == pseudonymize(ID, KeyRing({1: KEY1})) and TOKEN.fullmatch(a) and a.startswith("p1:")
    rotated = pseudonymize(ID, RING2)
    assert rotated.startswith("p2:") and rotated[3:] != a[3:]
    assert pseudonymize(ID, RING2, version=1) == a
    other = pseudonymize(ID, KeyRing({1: OTHER}))
    assert other.startswith("p1:") and other != a
    assert privacy(keys=RING2).apply_value(ID, C.IDENTIFIER) == rotated


@pytest.mark.parametrize("same", [
    (PHONE, "+8613812341234", "+86 138 1234 1234", "0086-138-1234-1234", " 138-1234-1234 ", "8613812341234"),
    (ID, "11010519491231002x", f"  {ID} "),
    (PLATE, "苏D 40000", "苏D·40000", "苏d40000"),
    ("B-00017", " B-00017\t"),
])
def test_normalisation(same: tuple[str, ...]) -> None:
    assert len({normalise(v) for v in same}) == 1
    assert len({pseudonymize(v, RING) for v in same}) == 1


def test_without_keys_nothing_raw_leaves() -> None:
    p = privacy(keys=None, platform=None)
    assert p.apply_value(ID, C.IDENTIFIER) is DROP
    assert p.apply_value(f"tel {PHONE}", C.FREE_TEXT) == "tel <phone>"
    assert privacy({"health": "seal"}, platform=None).apply_value(72, C.HEALTH) is DROP
    assert any("privacy.key_file" in w for w in p.warnings)
    assert any("platform_key_file" in w for w in privacy({"health": "seal"}, platform=None).warnings)


# -- masks and generalisation -------------------------------------------------------------------------
@pytest.mark.parametrize("case", VECTORS["masks"], ids=lambda c: c["in"])
def test_mask_vectors(case: dict) -> None:
    assert mask(case["in"]) == case["mask"]
    assert privacy({"identifier": "mask"}).apply_value(case["in"], C.IDENTIFIER) == case["mask"]


@pytest.mark.parametrize("raw,masked", [
    ("+86 138 1234 1234", "138****1234"), (ID, "110105********002X"), ("130503670401001", "130503******001"),
    ("苏D·40000", "苏D4***0"), ("04A1B2C3", "0******3"), ("AB", "A*"), ("A", "*")])
def test_masks(raw: str, masked: str) -> None:
    assert mask(raw) == masked


@pytest.mark.parametrize("name,masked,family", [("张三", "张*", "张"), ("欧阳娜娜", "欧阳**", "欧阳"),
                                               ("欧阳娜", "欧阳*", "欧阳"), ("欧阳", "欧*", "欧"), ("李", "*", "李"),
                                               ("王小明", "王**", "王")])
def test_names(name: str, masked: str, family: str) -> None:
    assert privacy({"name": "mask"}).apply_value(name, C.NAME) == masked
    assert privacy({"name": "generalize"}).apply_value(name, C.NAME) == family


@pytest.mark.parametrize("value,band", [
    (ID, "70-79"),  # born 1949-12-31: 74 on 2024-11-23
    ("440524188001010014", "100+"), ("130503670401001", "50-59"),  # legacy: 1967-04-01
    ("1949-11-23", "70-79"), ("1949-11-24", "70-79"), ("2014-11-23", "10-19"), ("2014-11-24", "0-9")])
def test_generalize_age_band(value: str, band: str) -> None:
    assert privacy({"identifier": "generalize"}).apply_value(value, C.IDENTIFIER) == band


def test_generalize_drops_what_has_no_coarser_form() -> None:
    p = privacy({"identifier": "generalize"})
    assert p.apply_value("2030-01-01", C.IDENTIFIER) is DROP  # birth in the future
    assert p.apply_value("04A1B2C3", C.IDENTIFIER) is DROP
    assert p.apply_value(PHONE, C.IDENTIFIER) == "138" and p.apply_value("陕A12345D", C.IDENTIFIER) == "陕A"
    assert privacy().apply_value("3栋2单元501室", C.LOCATION) is DROP


def test_generalize_location_to_geohash() -> None:
    p = privacy(geohash_length=8)
    want = geohash.encode(22.817, 108.366, 8)
    for value in ({"lat": 22.817, "lon": 108.366}, {"latitude": 22.817, "lng": 108.366}, "22.817,108.366",
                  " 22.817 , 108.366 ", [22.817, 108.366]):
        assert p.apply_value(value, C.LOCATION) == want
    assert p.apply_value(22.81731, C.LOCATION) == 22.82 and p.apply_value(108.366, C.LOCATION) == 108.37
    assert privacy().apply_value({"lat": 22.817, "lon": 108.366}, C.LOCATION) == want[:6]
    lat_lo, lat_hi, lon_lo, lon_hi = geohash.bounds(want)
    assert lat_lo <= 22.817 <= lat_hi and lon_lo <= 108.366 <= lon_hi


@pytest.mark.parametrize("lat,lon,code", [(57.64911, 10.40744, "u4pruydqqvj"), (42.6, -5.6, "ezs42"),
                                          (-25.382708, -49.265506, "6gkzwgjzn820"), (0.0, 0.0, "s0000000")])
def test_geohash_vectors(lat: float, lon: float, code: str) -> None:
    assert geohash.encode(lat, lon, len(code)) == code


# -- readings and events ---------------------------------------------------------------------------
def reading(pt: str, val: Any, cls: C) -> Reading:
    return Reading("hub-1", pt, val, 1732380000000, Quality.GOOD, True, cls)


def test_apply_readings_drops_and_transforms() -> None:
    level = reading("level_m", 1.23, C.TELEMETRY)
    readings = [level, reading("wearer_name", "张三", C.NAME), reading("wearer_id", ID, C.IDENTIFIER),
                reading("lat", 22.8173, C.LOCATION), reading("hr_bpm", 72, C.HEALTH)]
    out = privacy().apply_readings(readings)
    assert [r.pt for r in out] == ["level_m", "wearer_id", "lat", "hr_bpm"]
    assert out[0] is level
    assert out[1] == replace(readings[2], val=p1(ID)) and out[2].val == 22.82 and out[3].val == 72
    assert privacy().apply(readings) == out  # the name the daemon calls


def test_per_point_overrides_replace_the_class_action_for_one_device() -> None:
    p = Privacy(PrivacySettings(), RING, PLATFORM, today=TODAY,
                overrides={("hub-1", "wearer_name"): "mask", ("hub-1", "note"): "keep", ("hub-1", "hr_bpm"): "seal"})
    readings = [reading("wearer_name", "张三", C.NAME), reading("note", f"电话{PHONE}", C.FREE_TEXT),
                reading("hr_bpm", 72, C.HEALTH), replace(reading("wearer_name", "李四", C.NAME), dev="hub-2")]
    name, note, hr = p.apply_readings(readings)  # hub-2's name keeps its class action: drop
    assert name.val == "张*" and note.val == f"电话{p1(PHONE)}"  # keep keeps the text, not the phone in it
    assert open_sealed(hr.val, PLATFORM_PRIVATE) == 72
    with pytest.raises(ValueError, match="hub-1.x"):
        Privacy(PrivacySettings(), RING, overrides={("hub-1", "x"): "hide"})


# -- records: a poll's readings as the buffer stores them -----------------------------------------
def band(pt: str, val: Any, cls: C, sub: str | None = "B-1", q: Quality = Quality.GOOD, ts: int = 1732380000000
         ) -> Reading:
    return Reading("hub-1", pt, val, ts, q, True, cls, sub)


def test_apply_records_groups_a_poll_and_seals_each_records_points_once() -> None:
    p = privacy({"health": "seal"})
    poll = [band("battery_pct", 64, C.TELEMETRY), band("hr_bpm", 131, C.HEALTH), band("wearer_name", "张三", C.NAME),
            band("spo2_pct", 97, C.HEALTH), band("wearer_id", ID, C.IDENTIFIER),
            band("hr_bpm", 88, C.HEALTH, sub="B-2"), band("temp_C", None, C.HEALTH, sub="B-2", q=Quality.BAD),
            band("battery_pct", 12, C.TELEMETRY, sub="B-2", q=Quality.STALE)]
    one, two = p.apply_records(poll)
    assert (one.dev, one.sub, one.ts, one.clk_synced) == ("hub-1", "B-1", 1732380000000, True)
    assert one.vals == {"battery_pct": 64, "wearer_id": p1(ID)} and one.q == {}  # the name dropped: absent
    assert list(one.sealed) == ["kid", "ct"] and one.sealed["kid"] == PLATFORM.kid  # one envelope, two points
    assert open_record(one.to_wire(), PLATFORM_PRIVATE)["vals"] == {
        "battery_pct": 64, "wearer_id": p1(ID), "hr_bpm": 131, "spo2_pct": 97}
    # a bad value (None) has nothing to hide: it stays in vals, its quality in q
    assert two.vals == {"temp_C": None, "battery_pct": 12} and two.q == {"temp_C": "bad", "battery_pct": "stale"}
    assert open_record(two.to_wire(), PLATFORM_PRIVATE)["vals"] == {"temp_C": None, "battery_pct": 12, "hr_bpm": 88}
    wire = json.dumps([r.to_wire() for r in (one, two)], ensure_ascii=False)
    assert "131" not in wire and "张" not in wire and ID not in wire


def test_apply_records_without_a_platform_key_drops_the_points_to_seal() -> None:
    p = privacy({"health": "seal"}, platform=None)
    records = p.apply_records([band("battery_pct", 64, C.TELEMETRY), band("hr_bpm", 131, C.HEALTH, q=Quality.BAD),
                               band("hr_bpm", 70, C.HEALTH, sub="B-2")])
    assert records == [Record("hub-1", 1732380000000, {"battery_pct": 64}, sub="B-1")]  # B-2 had nothing left


def test_apply_records_keeps_what_apply_readings_does_per_value() -> None:
    """Every action but seal gives each value exactly what ``apply_readings`` gives it; the
    record adds the grouping, the quality map and the one seal."""
    p = Privacy(PrivacySettings(), RING, PLATFORM, today=TODAY,
                overrides={("hub-1", "wearer_name"): "mask", ("hub-1", "note"): "keep", ("hub-1", "hr_bpm"): "seal"})
    readings = [band("wearer_name", "张三", C.NAME), band("note", f"电话{PHONE}", C.FREE_TEXT),
                band("hr_bpm", 72, C.HEALTH), band("lat", 22.8173, C.LOCATION), band("level_m", 1.5, C.TELEMETRY),
                replace(band("wearer_name", "李四", C.NAME), dev="hub-2")]
    (record,) = p.apply_records(readings)  # hub-2's name keeps its class action (drop): no record for it
    per_value = {r.pt: r.val for r in p.apply_readings(readings) if r.dev == "hub-1" and r.pt != "hr_bpm"}
    assert record.vals == per_value == {"wearer_name": "张*", "note": f"电话{p1(PHONE)}", "lat": 22.82,
                                        "level_m": 1.5}
    assert open_record(record.to_wire(), PLATFORM_PRIVATE)["vals"]["hr_bpm"] == 72


def test_apply_records_scans_the_unit_label_and_keeps_the_clock_mark() -> None:
    p = privacy()
    (record,) = p.apply_records([replace(band("battery_pct", 64, C.TELEMETRY, sub=PHONE), clk_synced=False)])
    assert record.sub == p1(PHONE) and not record.clk_synced and record.to_wire()["clk"] == "unsynced"


def test_load_reads_the_pseudonym_key_only_when_an_action_needs_it(tmp_path: Path) -> None:
    absent = PrivacySettings(key_file=tmp_path / "absent.key", actions={C.IDENTIFIER: "mask"})
    assert Privacy.load(absent).keys is None  # nothing pseudonymizes: no key needed, none read
    with pytest.raises(KeyFileError, match="does not exist"):
        Privacy.load(absent, overrides={("gate-1", "card_no"): "pseudonymize"})
    with pytest.raises(KeyFileError, match="does not exist"):
        Privacy.load(PrivacySettings(key_file=tmp_path / "absent.key"))  # the default action


SOS = Event("hub-1", "sos", Priority.CRITICAL, 1732380000000, data={
    "band": "B-00017", "wearer": {"id_no": ID, "name": "张三", "phone": "+86 138 1234 1234"},
    "lat": 22.817, "lon": 108.366, "note": f"家属电话{PHONE}", "extra": {"contacts": [{"tel": PHONE}, "x"]}},
    classes={"wearer.id_no": C.IDENTIFIER, "wearer.name": C.NAME, "wearer.phone": C.IDENTIFIER,
             "lat": C.LOCATION, "lon": C.LOCATION})


def test_event_nested_data_with_dotted_classes() -> None:
    out = privacy().apply_event(SOS)
    assert out.data == {"band": "B-00017", "wearer": {"id_no": p1(ID), "phone": p1(PHONE)}, "geohash": "wkj1cc",
                        "note": f"家属电话{p1(PHONE)}", "extra": {"contacts": [{"tel": p1(PHONE)}, "x"]}}
    wire = out.to_wire()
    assert "classes" not in wire and wire["data"] is out.data
    assert SOS.data["wearer"]["id_no"] == ID  # the input is not modified


def test_event_field_drop_and_other_actions() -> None:
    p = privacy({"identifier": "drop", "location": "mask"})
    data = p.apply_event(SOS).data
    assert data["wearer"] == {} and data["lat"] == "2****7" and "geohash" not in data
    assert data["note"] == "家属电话<phone>"
    whole = replace(SOS, classes={"wearer": C.IDENTIFIER})
    assert privacy().apply_event(whole).data["wearer"] == {"id_no": p1(ID), "name": p1("张三"), "phone": p1(PHONE)}
    sealed = privacy({"identifier": "seal"}).apply_event(whole).data["wearer"]
    assert open_sealed(sealed, PLATFORM_PRIVATE) == SOS.data["wearer"]


def test_undeclared_lat_lon_are_free_text_numbers() -> None:
    data = privacy().apply_event(replace(SOS, classes={})).data
    assert data["lat"] == 22.817 and data["wearer"]["name"] == "张三"  # undeclared: kept (strings scanned)
    assert data["wearer"]["id_no"] == p1(ID)  # ... but scanned


# -- seal through privacy --------------------------------------------------------------------------
def test_seal_round_trip_and_failures() -> None:
    p = privacy({"health": "seal"})
    value = {"hr_bpm": 131, "spo2": 0.97, "note": "胸闷"}
    a, b = p.apply_value(value, C.HEALTH), p.apply_value(value, C.HEALTH)
    assert open_sealed(a, PLATFORM_PRIVATE) == value == open_sealed(b, PLATFORM_PRIVATE)
    assert a != b and base64.b64decode(a["sealed"])[:32] != base64.b64decode(b["sealed"])[:32]
    with pytest.raises(SealError):
        open_sealed(a, X25519PrivateKey.generate())
    blob = bytearray(base64.b64decode(a["sealed"]))
    blob[-1] ^= 1
    with pytest.raises(SealError):
        open_sealed({"sealed": base64.b64encode(bytes(blob)).decode(), "kid": a["kid"]}, PLATFORM_PRIVATE)


def test_scrub() -> None:
    assert privacy(keys=None).scrub(f"bad frame from {PHONE}: 01 03 04 00 0a 00 0b 1c 2d") == \
        "bad frame from <phone>: <bytes>"


# -- nothing raw anywhere --------------------------------------------------------------------------
PEOPLE = residents(150, seed=99)


def _raw_values(r: Any) -> list[str]:
    return [r.id_no, r.mobile, r.plate, r.name, r.address, str(r.lat), str(r.lon), r.born.isoformat()]


@pytest.mark.parametrize("actions", [
    {},
    {"identifier": "mask", "name": "mask", "location": "mask", "free_text": "mask"},
    {"identifier": "generalize", "name": "generalize", "free_text": "generalize"},
    {"identifier": "seal", "name": "seal", "location": "seal", "free_text": "seal"},
    {"identifier": "drop", "name": "pseudonymize", "location": "drop", "free_text": "keep"},
], ids=lambda a: ",".join(f"{k}={v}" for k, v in a.items()) or "defaults")
def test_no_raw_value_in_any_output(actions: dict[str, str]) -> None:
    p = privacy(actions)
    dumps = []
    for r in PEOPLE:
        event = Event("hub-1", "sos", Priority.CRITICAL, 1, data={
            "wearer": {"id_no": r.id_no, "name": r.name, "phone": r.mobile}, "lat": r.lat, "lon": r.lon,
            "pos": f"{r.lat},{r.lon}", "born": r.born.isoformat(), "address": r.address,
            "note": f"车{r.plate}，电话{r.mobile}，证件{r.id_no}"},  # names in free text cannot be found
            classes={"wearer.id_no": C.IDENTIFIER, "wearer.name": C.NAME, "wearer.phone": C.IDENTIFIER,
                     "lat": C.LOCATION, "lon": C.LOCATION, "pos": C.LOCATION, "born": C.IDENTIFIER,
                     "address": C.LOCATION})
        readings = [reading("plate", r.plate, C.IDENTIFIER), reading("name", r.name, C.NAME),
                    reading("lat", r.lat, C.LOCATION), reading("lon", r.lon, C.LOCATION),
                    reading("address", r.address, C.FREE_TEXT), reading("phone", r.mobile, C.IDENTIFIER)]
        out_event, out_readings = p.apply_event(event), p.apply_readings(readings)
        out_records = p.apply_records(readings)
        dumps.append(json.dumps([out_event.to_wire(), [x.to_wire() for x in out_readings],
                                 [x.to_wire() for x in out_records]], ensure_ascii=False))
        dumps.append(repr(out_event) + repr(out_readings) + str(out_event) + repr(out_records))
        text = "\n".join(dumps[-2:])
        for raw in _raw_values(r):
            assert raw not in text, (raw, text)
