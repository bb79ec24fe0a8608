"""The wearables hub driver: what each line means (fed to the reader directly), the streaming
poll against our hub simulator over a paced pty pair at 115200 through the agent's own
``open_link``/``make_reader``, and bounded memory under an endless line."""

from __future__ import annotations

import json
import socket
import threading
import time
import tracemalloc
from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.privacy import geohash
from edge_agent.config.schema import parse_settings
from edge_agent.drivers import _jsonlines
from edge_agent.drivers import wearables_hub as hub
from edge_agent.privacy.keys import KeyRing
from edge_agent.model import DataClass, Priority, Quality
from edge_agent.privacy.stage import Privacy
from edge_agent.privacy.pseudonym import pseudonymize
from edge_agent.field.readers import make_reader, open_link
from edge_agent.field.registry import get_driver
from edge_agent.settings import DeviceSettings, PrivacySettings
from edge_agent.sim.byteserver import ByteServer
from edge_agent.sim.hub import HubSim
from edge_agent.sim.ptypair import PtyPair
from support.waiting import poll_until
from support.residents import residents

NOW = 1_732_380_005.25  # the gateway's clock in these tests
PERSON = residents(1, seed=7)[0]
WEARER = {"id_no": PERSON.id_no, "name": PERSON.name, "phone": PERSON.mobile}
DEVICE = DeviceSettings(name="hub-1", bus="wb", driver="wearables_hub", address=None, interval_s=1.0)


def reader() -> hub.HubReader:
    return hub.HubReader(DEVICE, link=None, clock=lambda: NOW)


def line(**fields) -> bytes:
    return json.dumps(fields, ensure_ascii=False).encode() + b"\n"


def vitals(**over) -> bytes:
    fields = {"t": "vitals", "band": "B-00017", "wearer": WEARER, "hr": 72, "spo2": 97, "sbp": 120, "dbp": 79,
              "temp": 36.6, "bat": 81, "ts": 1732380000}
    fields.update(over)
    return line(**{k: v for k, v in fields.items() if v is not ...})


def take(*lines: bytes):
    r = reader()
    for raw in lines:
        r.take(raw.rstrip(b"\n"))
    return r, r.collect()


def by_point(result) -> dict:
    return {x.pt: x for x in result.readings}


# -- lines -> readings and events ----------------------------------------------------------------
def test_vitals_become_readings_of_the_band_with_their_classes():
    _, result = take(vitals())
    got = by_point(result)
    assert {p: r.val for p, r in got.items()} == {
        "hr_bpm": 72, "spo2_pct": 97, "sbp_mmHg": 120, "dbp_mmHg": 79, "temp_C": 36.6, "battery_pct": 81,
        "hub_ts": 1732380000000, "wearer": PERSON.id_no, "wearer_phone": PERSON.mobile, "wearer_name": PERSON.name}
    assert all(r.sub == "B-00017" and r.dev == "hub-1" and r.q is Quality.GOOD for r in got.values())
    assert all(r.ts == int(NOW * 1000) for r in got.values())  # the gateway's receive time, not the hub's
    assert {p: r.data_class for p, r in got.items() if r.data_class is not DataClass.TELEMETRY} == {
        "hr_bpm": DataClass.HEALTH, "spo2_pct": DataClass.HEALTH, "sbp_mmHg": DataClass.HEALTH,
        "dbp_mmHg": DataClass.HEALTH, "temp_C": DataClass.HEALTH, "wearer": DataClass.IDENTIFIER,
        "wearer_phone": DataClass.IDENTIFIER, "wearer_name": DataClass.NAME}
    assert result.answered and result.bad_frames == 0 and result.errors == []


@pytest.mark.parametrize("ts, expected", [(..., None), (1732380000123, 1732380000123), (1732380000.5, 1732380000500)])
def test_hub_clock_missing_in_seconds_or_in_ms(ts, expected):
    _, result = take(vitals(ts=ts))
    hub_ts = by_point(result).get("hub_ts")
    assert (hub_ts and hub_ts.val) == expected


@pytest.mark.parametrize("field, value, point", [
    ("hr", 400, "hr_bpm"), ("spo2", 120, "spo2_pct"), ("temp", 12.0, "temp_C"), ("bat", -3, "battery_pct"),
    ("ts", -5, "hub_ts"),
])
def test_nonsense_is_bad_but_kept(field, value, point):
    _, result = take(vitals(**{field: value}))
    got = by_point(result)[point]
    assert got.q is Quality.BAD and got.val == value * (1000 if field == "ts" else 1)
    assert sum(r.q is Quality.BAD for r in result.readings) == 1


@pytest.mark.parametrize("field, value, point", [
    ("hr", "72", "hr_bpm"), ("spo2", True, "spo2_pct"), ("temp", [36.6], "temp_C"), ("bat", {"v": 1}, "battery_pct"),
    ("ts", "yesterday", "hub_ts"), ("wearer", "someone", "wearer"), ("hr", 10**30, "hr_bpm"), ("ts", 10**20, "hub_ts"),
    ("wearer", {"id_no": 11010519, "name": PERSON.name}, "wearer"),
])
def test_a_value_of_the_wrong_type_spoils_that_reading_only(field, value, point):
    _, result = take(vitals(**{field: value}))
    got = by_point(result)[point]
    assert got.q is Quality.BAD and got.val is None
    assert result.bad_frames == 0 and by_point(result)["sbp_mmHg"].q is Quality.GOOD


def test_absent_values_are_not_reported():
    _, result = take(vitals(spo2=..., temp=None, wearer={"id_no": PERSON.id_no, "phone": ""}))
    assert set(by_point(result)) == {"hr_bpm", "sbp_mmHg", "dbp_mmHg", "battery_pct", "hub_ts", "wearer"}


@pytest.mark.parametrize("kind", ["sos", "fall", "off_wrist"])
def test_alarms_are_critical_events_carrying_the_last_heart_rate(kind):
    alarm = line(t=kind, band="B-00017", wearer=WEARER, lat=22.817, lon=108.366, ts=1732380003)
    _, result = take(vitals(band="B-00001", hr=60), vitals(hr=131), alarm)
    (event,) = result.events
    assert (event.dev, event.type, event.prio, event.ts) == ("hub-1", kind, Priority.CRITICAL, int(NOW * 1000))
    assert event.data == {"band": "B-00017", "wearer": PERSON.id_no, "wearer_name": PERSON.name,
                          "wearer_phone": PERSON.mobile, "lat": 22.817, "lon": 108.366, "hub_ts": 1732380003000,
                          "hr_bpm": 131}
    assert event.classes == {"band": DataClass.TELEMETRY, "wearer": DataClass.IDENTIFIER,
                             "wearer_phone": DataClass.IDENTIFIER, "wearer_name": DataClass.NAME,
                             "lat": DataClass.LOCATION, "lon": DataClass.LOCATION, "hub_ts": DataClass.TELEMETRY,
                             "hr_bpm": DataClass.HEALTH}


def test_an_alarm_with_unusable_fields_still_arrives_without_them():
    _, result = take(line(t="sos", band=17, wearer={"id_no": 5, "name": ["x"]}, lat="north", lon=108.3, ts=None))
    (event,) = result.events
    assert event.data == {"band": "17"} and event.prio is Priority.CRITICAL
    _, result = take(line(t="fall", band="B-1", lat=95.0, lon=108.3))  # a latitude past the pole
    assert result.events[0].data == {"band": "B-1"}


def test_a_bad_heart_rate_is_not_remembered():
    _, result = take(vitals(hr=72), vitals(hr=400), line(t="sos", band="B-00017"))
    assert result.events[0].data["hr_bpm"] == 72


def test_band_memory_is_bounded():
    r, _ = take(*(vitals(band=f"B-{i:05d}", hr=60 + i % 50) for i in range(hub.MAX_BANDS + 500)))
    assert len(r.last_hr) == hub.MAX_BANDS
    assert "B-00000" not in r.last_hr and f"B-{hub.MAX_BANDS + 499:05d}" in r.last_hr  # the oldest forgotten
    r.take(vitals(band="B-00000").rstrip())
    assert len(r.last_hr) == hub.MAX_BANDS


# -- bad frames ---------------------------------------------------------------------------------
SECRET = PERSON.mobile.encode()  # planted in each bad line: it must never reach an error string


@pytest.mark.parametrize("raw, reason", [
    (b"\xff\xfegarbage " + SECRET, "not UTF-8"),
    (b"junk " + SECRET, "not JSON"),
    (b'{"t":"vitals","band":"' + SECRET + b'","hr":7', "not JSON"),
    (b'{"t":"vitals","band":"' + SECRET + b'","hr":NaN}', "not JSON"),
    (b"[" * 4000, "not JSON"),  # nested past Python's recursion limit
    (b"{\"t\":\"vitals\",\"band\":\"B-1\",\"pad\":\"" + b"x" * 4100 + b"\"}", "longer than 4096 bytes"),
    (b'{"t":"vitals","band":"B-1","name":"' + SECRET + b'\xff"}', "not UTF-8"),
    (b'["vitals","' + SECRET + b'"]', "not a JSON object"),
    (b'{"t":"chat","band":"B-1","text":"' + SECRET + b'"}', "unknown message type"),
    (b'{"band":"B-1","hr":72}', "unknown message type"),
    (b'{"t":"vitals","hr":72,"phone":"' + SECRET + b'"}', "no band"),
    (b'{"t":"sos","band":""}', "no band"),
    (b'{"t":"sos","band":true}', "no band"),
    (b"", "not JSON"),
])
def test_bad_lines_are_counted_and_named_without_content(raw, reason):
    r, result = take(vitals(), raw, vitals(band="B-2"))
    assert result.bad_frames == 1 and len(result.readings) == 20 and result.answered
    assert result.bad_frame_notes == [f"line 2: {reason}"] and result.errors == []  # not a failure
    assert SECRET.decode() not in " ".join(result.bad_frame_notes)


def test_a_flood_of_bad_lines_names_the_first_few_and_counts_the_rest():
    _, result = take(*[b"x"] * 12)
    assert result.bad_frames == 12 and result.errors == []
    assert result.bad_frame_notes == [f"line {n}: not JSON" for n in range(1, _jsonlines.MAX_NOTES_PER_POLL + 1)]


def test_only_bad_frames_for_an_interval_fail_the_poll_silence_and_good_frames_do_not():
    """A bad frame among good ones is no failure; bad frames and nothing good for the device's
    interval is (a wrong baud rate); a good frame ends it at once; silence is not a failure."""
    r = hub.HubReader(DeviceSettings(name="hub-1", bus="wb", driver="wearables_hub", address=None,
                                     interval_s=0.2), link=None, clock=lambda: NOW)
    r.take(b"junk")
    assert r.collect().answered  # the interval's grace from the start
    time.sleep(0.25)
    r.take(b"junk")
    garbled = r.collect()
    assert not garbled.answered and garbled.bad_frames == 1
    assert garbled.errors == ["hub-1: nothing usable for 200ms, only bad frames "
                              "(a wrong baud rate, or a protocol variant this driver does not speak?)"]
    assert not r.collect().answered  # the silence after garbage within the interval: still nothing usable
    r.take(vitals().rstrip(b"\n"))
    r.take(b"junk")
    assert (lambda x: x.answered and x.errors == [] and x.bad_frames == 1)(r.collect())
    time.sleep(0.25)
    assert (lambda x: x.answered and x.errors == [])(r.collect())  # quiet, not offline


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
                    max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(t=st.sampled_from(["vitals", "sos", "fall", "off_wrist", "x"]), band=JSON,
       fields=st.dictionaries(st.sampled_from(["hr", "spo2", "sbp", "dbp", "temp", "bat", "ts", "wearer", "lat",
                                               "lon"]), JSON))
def test_any_json_object_is_used_or_skipped_never_raises(t, band, fields):
    r, result = take(line(t=t, band=band, **fields))
    assert result.bad_frames + len(result.events) + (1 if result.readings else 0) <= 1
    json.dumps([e.data for e in result.events])  # what the privacy stage gets is plain JSON


# -- privacy, as the daemon applies it after the driver ------------------------------------------
def test_the_privacy_stage_turns_an_sos_into_pseudonyms_and_a_geohash():
    ring = KeyRing({1: bytes(range(32))})
    privacy = Privacy(PrivacySettings(), ring, today=date(2026, 1, 1))
    _, result = take(vitals(hr=131), line(t="sos", band="B-00017", wearer=WEARER, lat=22.817, lon=108.366, ts=1))
    data = privacy.apply_event(result.events[0]).data
    assert data == {"band": "B-00017", "wearer": pseudonymize(PERSON.id_no, ring, "id"),
                    "wearer_phone": pseudonymize(PERSON.mobile, ring, "phone"),
                    "geohash": geohash.encode(22.817, 108.366, 6), "hub_ts": 1000,
                    "hr_bpm": 131}
    kept = {r.pt: r.val for r in privacy.apply_readings(result.readings)}
    assert "wearer_name" not in kept and kept["wearer"].startswith("p1:") and kept["hr_bpm"] == 131


# -- over a paced pty pair at 115200, through the agent's own link and reader ---------------------
def hub_settings(serial: str):
    return parse_settings(f"""
gateway: {{id: gw-test, site: test}}
mqtt: {{host: 127.0.0.1}}
buses:
  - {{name: wb, protocol: json-lines, serial: {serial}, baud: 115200}}
devices:
  - {{name: hub-1, bus: wb, driver: wearables_hub}}
""")


@pytest.fixture
def hub_on_pty():
    sim = HubSim(4, vitals_every_s=0.4, seed=11)
    server = ByteServer(sim)
    with PtyPair(baud=115200) as pair:
        server.serve_serial(pair.b, baud=115200)
        s = hub_settings(pair.a)
        link = open_link(s.bus("wb"))
        device = s.device("hub-1")
        yield sim, make_reader(device, get_driver(device.driver), link)
        link.close()
        server.stop()


def test_simulated_hub_over_a_pty_gives_readings_per_band_and_critical_alarms(hub_on_pty):
    sim, r = hub_on_pty
    assert r.link.settings.baud == 115200
    got = poll_until(r, lambda rs: {x.sub for p in rs for x in p.readings} >= {b.band for b in sim.bands})
    readings = [x for p in got for x in p.readings]
    assert all(x.q is Quality.GOOD for x in readings), [x for x in readings if x.q is not Quality.GOOD]
    assert {x.val for x in readings if x.pt == "wearer"} <= {p.id_no for p in sim.people}
    for kind in ("sos", "fall", "off_wrist"):
        sim.trigger(kind, band=1)
        start = time.monotonic()
        result = poll_until(r, lambda rs: any(p.events for p in rs))[-1]
        assert time.monotonic() - start < 0.45  # handed on as it arrives, not after the 0.5 s wait
        (event,) = result.events
        assert event.type == kind and event.prio is Priority.CRITICAL
        assert event.data["wearer"] == sim.people[1].id_no and event.data["band"] == "B-00002"
        assert "hr_bpm" in event.data and {"lat", "lon", "hub_ts"} <= set(event.data)
    assert all(p.answered and p.bad_frames == 0 for p in got)


def test_simulated_broken_lines_are_counted_and_skipped(hub_on_pty):
    sim, r = hub_on_pty
    for kind in ("garbage", "bad_json", "long_line", "bad_utf8"):
        sim.inject(kind)
    sim.trigger("sos")
    got = poll_until(r, lambda rs: sum(p.bad_frames for p in rs) >= 4 and any(p.events for p in rs))
    assert sum(p.bad_frames for p in got) == 4
    assert sum(len(p.events) for p in got) == 1 and all(p.answered for p in got)
    assert all(p.errors == [] for p in got)
    reasons = [e.split(": ", 1)[1] for p in got for e in p.bad_frame_notes]
    assert len(reasons) == 4 and set(reasons) <= {"not UTF-8", "not JSON", "longer than 4096 bytes"}
    assert reasons.count("longer than 4096 bytes") == 1 and "not UTF-8" in reasons  # bad_utf8 at least


def test_a_silent_hub_is_quiet_not_offline(hub_on_pty):
    sim, r = hub_on_pty
    sim.set_faults(silence=True)
    time.sleep(0.2)
    r.poll()  # whatever was on the way
    start = time.monotonic()
    result = r.poll()
    assert result.answered and result.readings == [] and result.errors == []
    assert 0.4 <= time.monotonic() - start < 1.0


def test_an_absent_port_is_not_answered_and_not_spun_on(tmp_path):
    s = hub_settings(str(tmp_path / "ttyUSB9"))
    device = s.device("hub-1")
    r = make_reader(device, get_driver(device.driver), open_link(s.bus("wb")))
    start = time.monotonic()
    results = [r.poll() for _ in range(3)]
    assert time.monotonic() - start >= 3 * _jsonlines.WAIT_S * 0.9  # waits out its poll: the worker calls again at once
    assert all(not x.answered for x in results)
    assert "not found" in results[0].errors[0] and results[0].errors[0].startswith("hub-1: bus wb")


# -- memory stays bounded under a line that never ends ---------------------------------------------
def test_a_megabyte_without_newline_does_not_grow_the_process():
    endless = b"x" * 1_000_000
    after = vitals()
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            time.sleep(0.3)  # after the link's open(), which discards what is already waiting
            view = memoryview(endless)  # slices of a view copy nothing: only the reader's memory is traced
            for i in range(0, len(endless), 65536):
                conn.sendall(view[i:i + 65536])
            conn.sendall(b"\n" + after)
            time.sleep(2)

    sender = threading.Thread(target=serve, daemon=True)
    sender.start()
    s = parse_settings(f"""
gateway: {{id: gw-test, site: test}}
mqtt: {{host: 127.0.0.1}}
buses: [{{name: wb, protocol: json-lines, host: 127.0.0.1, port: {port}}}]
devices: [{{name: hub-1, bus: wb, driver: wearables_hub}}]
""")
    device = s.device("hub-1")
    link = open_link(s.bus("wb"))
    r = make_reader(device, get_driver(device.driver), link)
    link.open()  # connecting imports codecs (idna) once: not what is measured
    tracemalloc.start()
    try:
        got = poll_until(r, lambda rs: any(p.readings for p in rs), timeout=20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        link.close()
        listener.close()
    assert sum(p.bad_frames for p in got) == 1
    assert [e for p in got for e in p.bad_frame_notes] == ["line 1: longer than 4096 bytes"]
    assert {x.pt for p in got for x in p.readings} >= {"hr_bpm", "wearer"}
    assert peak < 64 * 1024, f"peak {peak} bytes traced while 1 MB streamed through"
