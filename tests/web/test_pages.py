"""The technician's pages (``web/pages.py``) and plots (``web/plots.py``) from a fake ``WebView``:
every page renders without a script, every value is escaped (a ``<script>`` in a device name, a
value, an error text, event data), no raw personal value of the synthetic residents appears once
their readings passed the real privacy stage, plots with points, thresholds and none, and 404s."""

from __future__ import annotations

import base64
import copy
import hashlib
import re
import xml.etree.ElementTree as ET
from datetime import date
from html.parser import HTMLParser
from typing import Any, Mapping, Sequence

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from edge_agent.model import DataClass, Event, Priority, Reading
from edge_agent.privacy.keys import KeyRing
from edge_agent.privacy.seal import PlatformKey
from edge_agent.privacy.stage import Privacy
from edge_agent.settings import PrivacySettings
from edge_agent.web import plots
from edge_agent.web.pages import CSP, CSS, route
from support.residents import residents

NOW = 1732380000000  # 2024-11-23T16:40:00Z
EVIL = "<script>alert(1)</script>"
STATUS: dict[str, Any] = {
    "source": "daemon", "gateway": "gw-001", "site": "pump-station-3",
    "daemon": {"pid": 4242, "version": "0.1.0", "started": NOW - 7_200_000, "uptime_s": 7200.0},
    "buffer": "/var/lib/edge-agent/buffer.db", "max_bytes": 512 * 1024**2, "pending": 1234, "pending_bytes": 98_765,
    "oldest_pending_ts": NOW - 600_000, "pending_by_prio": {"critical": 1, "high": 33, "normal": 1200},
    "retained_sent": 5000, "last_sent_at": NOW - 2000, "file_bytes": 3 * 1024**2, "next_id": 6235,
    "evicted": {"critical": 0, "high": 0, "normal": 17}, "write_errors": 0,
    "uplink": {"broker": "broker.example:8883", "connected": True, "last_publish": NOW - 1500, "reconnects": 2,
               "last_error": "connection lost <b>", "published_items": 5001, "acked_items": 5000},
    "drain": {"rate_per_s": 41.5, "window_s": 60.0, "eta_s": 29.7},
    "devices": [
        {"name": "river-1", "bus": "rs485", "polls": 1440, "answered_polls": 1440, "errors": 0, "bad_frames": 0,
         "events": 0, "last_good_ms": NOW - 4000, "last_error": None, "last_error_ms": None, "state": "online"},
        {"name": "hub-1", "bus": "lines", "polls": 900, "answered_polls": 900, "errors": 0, "bad_frames": 3,
         "events": 2, "last_good_ms": NOW - 1000, "last_error": None, "last_error_ms": None, "state": "online"},
        {"name": EVIL, "bus": "lines", "polls": 5, "answered_polls": 0, "errors": 5, "bad_frames": 0, "events": 0,
         "last_good_ms": None, "last_error": "no answer <img src=x onerror=alert(2)>", "last_error_ms": NOW - 9000,
         "state": "offline"}],
    "device_counts": {"online": 2, "offline": 1, "unknown": 0},
    "clock": {"synced": True, "source": "adjtimex", "detail": "synchronised", "unsynced_items": 0},
    "key_in_use": {"active_version": 2, "fingerprint": "3f9a6c01d2e4"},
    "process": {"cpu_s": 12.34, "cpu_pct": 1.7, "rss_bytes": 31 * 1024**2},
    "disk_free_bytes": 7 * 1024**3,
}
PEOPLE = residents(4, seed=15)


def protected() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The hub's and the gate's records and events, as the real privacy stage makes them from
    synthetic residents (pseudonyms, masks, drops, a seal, scanned free text)."""
    privacy = Privacy(PrivacySettings(actions={DataClass.HEALTH: "seal"}), KeyRing({1: bytes(range(32))}),
                      PlatformKey(X25519PrivateKey.generate().public_key()), today=date(2024, 11, 23))
    readings = []
    for i, p in enumerate(PEOPLE):
        band = f"B-{i:05d}"
        readings += [Reading("hub-1", "wearer_id", p.id_no, NOW - 5000, data_class=DataClass.IDENTIFIER, sub=band),
                     Reading("hub-1", "wearer_name", p.name, NOW - 5000, data_class=DataClass.NAME, sub=band),
                     Reading("hub-1", "hr_bpm", 60 + i, NOW - 5000, data_class=DataClass.HEALTH, sub=band),
                     Reading("hub-1", "battery_pct", 80 - i, NOW - 5000, sub=band),
                     Reading("hub-1", "note", f"call {p.mobile} at {p.address}", NOW - 5000,
                             data_class=DataClass.FREE_TEXT, sub=band)]
    records = [r.to_wire() for r in privacy.apply_records(readings)]
    events = [privacy.apply_event(Event("gate-1", "passage", Priority.NORMAL, NOW - 3000,
                                        {"plate": p.plate, "card": p.id_no, "owner": p.name, "lane": 1},
                                        classes={"plate": DataClass.IDENTIFIER, "card": DataClass.IDENTIFIER,
                                                 "owner": DataClass.NAME})).to_wire() for p in PEOPLE]
    return records, events


class FakeView:
    def __init__(self, status: Mapping[str, Any] = STATUS, *, empty: bool = False) -> None:
        self._status = status
        hub_records, gate_events = protected()
        self.records: dict[str, list[Mapping[str, Any]]] = {} if empty else {
            "river-1": [{"dev": "river-1", "ts": NOW - 4000, "vals": {"level_m": 2.41, "temp_C": None},
                         "q": {"temp_C": "bad"}}],
            "hub-1": hub_records,
            EVIL: [{"dev": EVIL, "ts": NOW - 9000, "vals": {"text": EVIL, EVIL: 1}, "clk": "unsynced"}]}
        self.series = {} if empty else {
            ("river-1", "level_m"): [(NOW - 3_600_000 + i * 10_000, 1.0 + i / 200) for i in range(360)],
            ("river-1", "temp_C"): [], (EVIL, EVIL): [(NOW - 60_000, 1.0), (NOW - 30_000, 2.0)]}
        self._events = [] if empty else gate_events + [
            {"dev": "river-1", "type": "alarm", "prio": "critical", "ts": NOW - 1000,
             "data": {"state": "raised", "point": "level_m", "value": 2.41, "threshold": 2.4, "note": EVIL}},
            {"dev": EVIL, "type": EVIL, "prio": "high", "ts": NOW - 500, "data": {}, "clk": "unsynced"}]
        self._audit = [] if empty else [
            {"seq": 1, "ts": NOW - 50_000, "kind": "cli", "actor": "local:tech", "cmd_id": None, "op": None,
             "target": None, "outcome": "done", "code": None, "detail": "keys init", "verified": True, "problem": None,
             "chain": "BROKEN: row 2: its content does not match its hash (edited)"},
            {"seq": 2, "ts": NOW - 40_000, "kind": "command", "actor": "platform-1", "cmd_id": "c-1",
             "op": "device.write", "target": EVIL, "outcome": "rejected", "code": "not_writable", "detail": EVIL,
             "verified": False, "problem": "row 2: its content does not match its hash (edited)",
             "chain": "BROKEN: row 2: its content does not match its hash (edited)"}]

    def status(self) -> dict[str, Any]:
        return copy.deepcopy(dict(self._status))

    def last_records(self, device: str) -> Sequence[Mapping[str, Any]]:
        return self.records.get(device, [])

    def history(self, device: str, point: str, seconds: float) -> Sequence[tuple[int, float]]:
        return [(t, v) for t, v in self.series.get((device, point), []) if t >= NOW - seconds * 1000]

    def points(self, device: str) -> Sequence[str]:
        return [p for d, p in self.series if d == device]

    def backlog_history(self, seconds: float) -> Sequence[tuple[int, int]]:
        return [] if not self.series else [(NOW - 3_000_000 + i * 5000, 1000 + i) for i in range(600)]

    def thresholds(self, device: str, point: str) -> Sequence[tuple[str, float]]:
        return [("level_high > 2.4", 2.4), ("level_high clears ≤ 2.3", 2.3)] if point == "level_m" else []

    def events(self, limit: int) -> Sequence[Mapping[str, Any]]:
        return self._events[::-1][:limit]

    def audit(self, limit: int) -> Sequence[Mapping[str, Any]]:
        return self._audit[-limit:]


def get(path: str, view: Any = None, **query: str) -> Any:
    return route(path, {k: [v] for k, v in query.items()}, view or FakeView(), now_ms=NOW)


def html(path: str, view: Any = None, **query: str) -> str:
    answer = get(path, view, **query)
    assert answer is not None and answer.status == 200 and answer.content_type == "text/html; charset=utf-8"
    text = answer.body.decode("utf-8")
    Strict().check(text)
    return text


class Strict(HTMLParser):
    """Fails on a script, an event handler attribute, or a tag left open (void elements aside)."""

    VOID = {"meta", "br", "input", "img", "link", "hr"}

    def check(self, text: str) -> None:
        self.stack: list[str] = []
        self.feed(text)
        self.close()
        assert self.stack == [], f"unclosed {self.stack}"

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        assert tag != "script" and not any(name.startswith("on") for name, _ in attrs), (tag, attrs)
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        assert tag != "script" and not any(name.startswith("on") for name, _ in attrs), (tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, (tag, self.stack[-5:])
        self.stack.pop()


PAGES = ["/", "/devices", "/devices/river-1", "/devices/hub-1", "/devices/%3Cscript%3Ealert%281%29%3C%2Fscript%3E",
         "/events", "/audit"]


@pytest.mark.parametrize("path", PAGES)
def test_every_page_renders_for_a_phone_without_a_script_with_every_value_escaped(path: str) -> None:
    text = html(path)
    assert text.startswith("<!doctype html>") and '<meta name="viewport" content="width=device-width' in text
    assert "gw-001" in text and "pump-station-3" in text
    assert "<script" not in text and "<img" not in text and "lost <b>" not in text
    assert text.count("<style>") == 1 and "http://" not in text.replace("http://www.w3.org/2000/svg", "")


def test_the_evil_device_name_value_and_error_show_as_text() -> None:
    devices = html("/devices")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in devices
    assert "no answer &lt;img src=x onerror=alert(2)&gt;" in devices
    assert 'href="/devices/%3Cscript%3Ealert%281%29%3C%2Fscript%3E"' in devices
    page = html("/devices/%3Cscript%3Ealert%281%29%3C%2Fscript%3E")
    assert "&quot;&lt;script&gt;alert(1)&lt;/script&gt;&quot;" in page  # the value, as its JSON
    assert "<polyline" in page and "&lt;script&gt;" in page.split("<svg", 1)[1]  # the point's plot title
    assert "&lt;script&gt;" in html("/events") and "&lt;script&gt;" in html("/audit")


def test_the_overview_shows_what_the_issue_lists() -> None:
    text = html("/")
    for shown in ("connected", "broker.example:8883", "Reconnects</dt><dd>2", "connection lost &lt;b&gt;",
                  "5001 / 5000", "<td class=n>1200</td>", "<td class=n>17</td>", "41.5 rows/s", "ETA</dt><dd>29s",
                  "96.5 KiB", "3.0 MiB of 512.0 MiB cap", "<meter", "7.0 GiB", "synchronised", "v2 <code>3f9a6c01d2e4",
                  "0.1.0", "2h00m", "1.7%", "31.0 MiB", "2 online, 1 offline, 0 unknown", "2024-11-23 16:30:00Z",
                  '<meta http-equiv="refresh" content="10">'):
        assert shown in text, shown
    assert '<polyline class="series"' in text  # the backlog plot


def test_the_overview_of_an_agent_without_uplink_or_numbers_yet() -> None:
    bare = dict(STATUS, uplink=None, pending=0, pending_by_prio={"critical": 0, "high": 0, "normal": 0},
                oldest_pending_ts=None, drain={"rate_per_s": None, "window_s": 0.0, "eta_s": 0.0}, key_in_use=None,
                clock={"synced": False, "source": "adjtimex", "detail": "not synchronised", "unsynced_items": 3},
                process={"cpu_s": 0.1, "cpu_pct": None, "rss_bytes": None}, disk_free_bytes=None, last_sent_at=None)
    text = html("/", FakeView(bare, empty=True))
    for shown in ("not running", "never", "not measured yet", "nothing waits", "none configured",
                  "NOT synchronised", "3 items marked unsynced", "no data yet"):
        assert shown in text, shown


def test_a_device_page_shows_its_records_as_on_the_wire_and_plots_with_thresholds() -> None:
    text = html("/devices/river-1")
    assert "<code>2.41</code>" in text and "<code>null</code>" in text and '<span class="bad">bad</span>' in text
    assert "&quot;q&quot;: {&quot;temp_C&quot;: &quot;bad&quot;}" in text  # the wire body, under details
    assert text.count("<svg") == 2 and text.count('<polyline class="series"') == 1 and "no data yet" in text
    assert text.count('class="threshold"') == 2 and "level_high &gt; 2.4</text>" in text
    assert "<b>last hour</b>" in text and 'href="/devices/river-1?span=24h"' in text
    assert "<b>last 24 h</b>" in html("/devices/river-1", span="24h")


def test_sealed_points_show_as_sealed_and_no_raw_personal_value_appears_anywhere() -> None:
    view = FakeView()
    hub = html("/devices/hub-1", view)
    assert hub.count("<code>&lt;sealed&gt;</code>") == len(PEOPLE) and "unit B-00000" in hub
    assert "<code>4 unit(s)</code>" in html("/devices", view)
    texts = [html(p, view) for p in PAGES] + [get("/metrics", view).body.decode()]
    raw = [v for p in PEOPLE for v in (p.id_no, p.name, p.mobile, p.plate, p.address)]
    raw += [p.mobile[:3] + " " + p.mobile[3:7] for p in PEOPLE]  # not even partly
    for text in texts:
        found = [v for v in raw if v in text]
        assert not found, found
    assert "hr_bpm" not in hub  # sealed health: inside the seal, not beside it
    assert re.search(r"p1:[A-Z2-7]{8,}", html("/events", view))  # the plates and cards as pseudonyms


def test_events_and_audit_tables() -> None:
    events = html("/events")
    assert events.index("&lt;script&gt;") < events.index("raised")  # newest first
    assert '<span class="bad">critical</span>' in events and "clk unsynced" in events
    assert html("/events", n="1").count("<tr>") == 2  # head + 1
    audit = html("/audit")
    assert "Hash chain: BROKEN: row 2" in audit and '<span class="ok">✓</span>' in audit
    assert "✗ row 2: its content does not match its hash (edited)" in audit and "rejected not_writable" in audit
    assert audit.index("device.write") < audit.index("keys init")  # newest first
    empty = html("/audit", FakeView(empty=True))
    assert "No audit log yet" in empty and "No event since" in html("/events", FakeView(empty=True))
    view = FakeView()
    view._audit = [{"error": "commands.db: not a command ledger <x>"}]
    assert "cannot be read: commands.db: not a command ledger &lt;x&gt;" in html("/audit", view)


def test_plots_as_svg_files() -> None:
    answer = get("/plot/river-1/level_m.svg")
    assert answer.status == 200 and answer.content_type == "image/svg+xml; charset=utf-8"
    svg = ET.fromstring(answer.body)
    assert svg.get("viewBox") == "0 0 600 220"
    ns = "{http://www.w3.org/2000/svg}"
    [line] = svg.iter(ns + "polyline")
    assert int(line.get("data-points")) == 360 and len(line.get("points").split()) == 360
    assert len([el for el in svg.iter(ns + "line") if el.get("class") == "threshold"]) == 2
    day = ET.fromstring(get("/plot/river-1/level_m.svg", span="24h").body)
    assert "last 24h" in day.find(ns + "title").text
    empty = ET.fromstring(get("/plot/river-1/temp_C.svg").body)
    assert empty.find(ns + "title").text.endswith("no data yet")
    assert ET.fromstring(get("/plot/backlog.svg", span="24h").body).find(ns + "polyline") is not None
    evil = get("/plot/%3Cscript%3Ealert%281%29%3C%2Fscript%3E/%3Cscript%3Ealert%281%29%3C%2Fscript%3E.svg")
    assert b"<script" not in evil.body and ET.fromstring(evil.body) is not None


@pytest.mark.parametrize("path", ["/nope", "/devices/nobody", "/plot/river-1/nope.svg", "/plot/nobody/x.svg",
                                  "/plot/river-1/level_m", "/devices/river-1/more", "/plot"])
def test_what_is_not_there_is_404(path: str) -> None:
    assert get(path) is None


def test_metrics_are_routed() -> None:
    answer = get("/metrics")
    assert answer.content_type == "text/plain; version=0.0.4; charset=utf-8"
    assert b'edge_agent_device_up{device="river-1"} 1' in answer.body


def test_the_stylesheet_is_the_only_thing_the_policy_allows() -> None:
    answer = get("/")
    digest = base64.b64encode(hashlib.sha256(CSS.encode()).digest()).decode()
    assert answer.headers["Content-Security-Policy"] == CSP and f"style-src 'sha256-{digest}'" in CSP
    assert "default-src 'none'" in CSP and "script-src" not in CSP
    assert f"<style>{CSS}</style>" in answer.body.decode() and "style=" not in answer.body.decode()
    assert answer.headers["Cache-Control"] == "no-store"


# -- plots.py on its own -------------------------------------------------------------------------
def test_downsampling_keeps_at_most_600_points_and_every_spike() -> None:
    series = [(NOW - 86_400_000 + i * 1000, 1.0) for i in range(86_400)]
    series[40_000] = (series[40_000][0], 99.0)
    series[70_000] = (series[70_000][0], -5.0)
    out = plots.downsample(series)
    assert len(out) <= 600 and max(v for _, v in out) == 99.0 and min(v for _, v in out) == -5.0
    assert out == sorted(out) and plots.downsample(series[:10]) == series[:10]


@pytest.mark.parametrize("value, text", [(3, "3"), (3.0, "3"), (1.23, "1.23"), (0.0042, "0.0042"), (4.2e-6, "4.2e-06"),
                                         (12345.6, "12,346"), (123456, "123,456"), (2.5e9, "2.5e+09"),
                                         (-0.5, "-0.5"), (float("nan"), "nan")])
def test_numbers_read_like_a_technician_writes_them(value: float, text: str) -> None:
    assert plots.number(value) == text


def test_a_gap_breaks_the_line_and_a_lone_sample_is_a_dot() -> None:
    series = [(NOW - 3_000_000 + i * 10_000, float(i)) for i in range(30)]
    series += [(NOW - 1_000_000 + i * 10_000, float(i)) for i in range(30)] + [(NOW - 10_000, 5.0)]
    svg = plots.line_plot(series, title="level_m", span_s=3600, now_ms=NOW)
    assert svg.count("<polyline") == 2 and svg.count("<circle") == 1


def test_a_flat_series_and_a_far_threshold_both_fit() -> None:
    svg = plots.line_plot([(NOW - 60_000, 0.3), (NOW, 0.3)], title="level_m", span_s=3600, now_ms=NOW,
                          thresholds=[("flood > 3", 3.0)])
    root = ET.fromstring(svg)
    ys = [float(el.get("y1")) for el in root.iter("{http://www.w3.org/2000/svg}line") if el.get("class") == "threshold"]
    assert ys and all(26 <= y <= 196 for y in ys)
    assert "min 0.3 · max 0.3 · last 0.3" in svg and ">flood &gt; 3</text>" in svg
