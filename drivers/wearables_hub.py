"""Wearables hub: the project's reference line protocol (CONTRACT section 7).

Wire facts: serial 115200 8N1 (or TCP through a converter). The hub talks unprompted, one UTF-8
JSON object per ``\\n``-terminated line, at most 4096 bytes::

    {"t": "vitals", "band": "B-00017", "wearer": {"id_no": "...", "name": "...", "phone": "..."},
     "hr": 72, "spo2": 97, "sbp": 120, "dbp": 79, "temp": 36.6, "bat": 81, "ts": 1732380000}
    {"t": "sos" | "fall" | "off_wrist", "band": "...", "wearer": {...}, "lat": 22.817, "lon": 108.366, "ts": ...}

``ts`` is the hub's clock in seconds (a value above 1e11 is taken as milliseconds, as some
firmware sends). It may be missing or wrong, so every reading and event is stamped with the
gateway's receive time, and the hub's clock travels beside it as ``hub_ts`` (ms).

A bad frame is counted and skipped, named by its line number and reason, never by its content
(it may be personal data): not UTF-8, not JSON (NaN and Infinity are not JSON), not an object,
an unknown ``t``, no band, longer than 4096 bytes. A field of the wrong type spoils that value
only: a reading becomes ``val=None, q=bad``, an event field is left out.

Outputs, per band (``sub``): ``hr_bpm``, ``spo2_pct``, ``sbp_mmHg``, ``dbp_mmHg``, ``temp_C``
(health), ``battery_pct``, ``hub_ts`` (telemetry), ``wearer``, ``wearer_phone`` (identifier),
``wearer_name`` (name). Events, critical, type = ``t``: ``band``, ``wearer``, ``wearer_phone``,
``wearer_name``, ``lat``/``lon`` (location), ``hub_ts``, ``hr_bpm`` (the band's last good heart
rate, when known).

The streaming half (the wait for lines, bad-frame accounting, and a result that collects what
any thread read until the next ``poll()`` hands it over) is ``_jsonlines.JsonLineReader``,
which the gate controller builds on too.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any, Callable

from edge_agent.model import DataClass, Driver, Event, Output, Priority, Quality, Reading

from ._jsonlines import BadFrame, JsonLineReader, clock_ms, number

__all__ = ["DRIVER", "OUTPUTS", "HubReader", "reader"]

MAX_BANDS = 1000  # bands whose last heart rate is remembered; the least recently heard is forgotten
_EVENT_TYPES = ("sos", "fall", "off_wrist")




OUTPUTS = (
    Output("hr_bpm", valid=(20, 250), data_class=DataClass.HEALTH),
    Output("spo2_pct", valid=(50, 100), data_class=DataClass.HEALTH),
    Output("sbp_mmHg", valid=(50, 260), data_class=DataClass.HEALTH),
    Output("dbp_mmHg", valid=(30, 160), data_class=DataClass.HEALTH),
    Output("temp_C", valid=(30, 43), data_class=DataClass.HEALTH),
    Output("battery_pct", valid=(0, 100)),
    Output("hub_ts", valid=(0, 4102444800000)),  # the hub's clock, ms: before 1970 or past 2100 is nonsense
    Output("wearer", data_class=DataClass.IDENTIFIER),
    Output("wearer_phone", data_class=DataClass.IDENTIFIER),
    Output("wearer_name", data_class=DataClass.NAME),
)
_OUTPUT = {o.name: o for o in OUTPUTS}
MEASURES = (("hr", "hr_bpm"), ("spo2", "spo2_pct"), ("sbp", "sbp_mmHg"), ("dbp", "dbp_mmHg"),
            ("temp", "temp_C"), ("bat", "battery_pct"))
WEARER = (("id_no", "wearer"), ("phone", "wearer_phone"), ("name", "wearer_name"))
EVENT_CLASSES = {
    "band": DataClass.TELEMETRY, "wearer": DataClass.IDENTIFIER, "wearer_phone": DataClass.IDENTIFIER,
    "wearer_name": DataClass.NAME, "lat": DataClass.LOCATION, "lon": DataClass.LOCATION,
    "hub_ts": DataClass.TELEMETRY, "hr_bpm": DataClass.HEALTH,
}


def band_of(value: Any) -> str | None:
    """The band label (a string of 1..64 characters, or an integer), None when unusable."""
    if isinstance(value, str) and 0 < len(value.strip()) <= 64:
        return value.strip()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _judged(name: str, value: Any) -> tuple[Any, Quality]:
    valid = _OUTPUT[name].valid
    if value is None:
        return None, Quality.BAD
    if valid is not None and not valid[0] <= value <= valid[1]:
        return value, Quality.BAD  # kept, as a Modbus reading out of range is: the platform sees it
    return value, Quality.GOOD


def _position(lat: Any, lon: Any) -> bool:
    lat, lon = number(lat), number(lon)
    return lat is not None and lon is not None and -90 <= lat <= 90 and -180 <= lon <= 180


class HubReader(JsonLineReader):
    """Readings per band from ``vitals``; a critical event, at once, from ``sos``/``fall``/``off_wrist``."""

    def __init__(self, device: Any, link: Any, clock: Callable[[], float] = time.time) -> None:
        super().__init__(device, link, clock)
        self.last_hr: OrderedDict[str, int | float] = OrderedDict()  # band -> last good hr_bpm

    def handle(self, obj: dict[str, Any], ts_ms: int) -> bool:
        kind = obj.get("t")
        if kind != "vitals" and kind not in _EVENT_TYPES:
            raise BadFrame("unknown message type")
        band = band_of(obj.get("band"))
        if band is None:
            raise BadFrame("no band")
        if kind == "vitals":
            self.add(readings=self.vitals(obj, band, ts_ms))
            return False
        self.add(events=[self.event(kind, obj, band, ts_ms)])
        return True

    def _reading(self, name: str, value: Any, band: str, ts_ms: int) -> Reading:
        val, q = _judged(name, value)
        return Reading(self.name, name, val, ts_ms, q, data_class=_OUTPUT[name].data_class, sub=band)

    def vitals(self, obj: dict[str, Any], band: str, ts_ms: int) -> list[Reading]:
        out = [self._reading(name, number(obj[key]), band, ts_ms)
               for key, name in MEASURES if obj.get(key) is not None]
        if obj.get("ts") is not None:
            out.append(self._reading("hub_ts", clock_ms(obj["ts"]), band, ts_ms))
        wearer = obj.get("wearer")
        if isinstance(wearer, dict):
            for key, name in WEARER:
                value = wearer.get(key)
                if value is not None and value != "":
                    out.append(self._reading(name, value if isinstance(value, str) else None, band, ts_ms))
        elif wearer is not None:  # the hub sent something, but not a wearer record
            out.append(self._reading("wearer", None, band, ts_ms))
        hr = next((r for r in out if r.pt == "hr_bpm" and r.q is Quality.GOOD), None)
        if hr is not None:
            self._remember(band, hr.val)
        return out

    def _remember(self, band: str, hr: int | float) -> None:
        self.last_hr[band] = hr
        self.last_hr.move_to_end(band)
        while len(self.last_hr) > MAX_BANDS:
            self.last_hr.popitem(last=False)

    def event(self, kind: str, obj: dict[str, Any], band: str, ts_ms: int) -> Event:
        data: dict[str, Any] = {"band": band}
        wearer = obj.get("wearer")
        if isinstance(wearer, dict):
            data.update((name, wearer[key]) for key, name in WEARER
                        if isinstance(wearer.get(key), str) and wearer[key])
        if _position(obj.get("lat"), obj.get("lon")):
            data["lat"], data["lon"] = obj["lat"], obj["lon"]
        hub_ts = clock_ms(obj.get("ts"))
        if hub_ts is not None:
            data["hub_ts"] = hub_ts
        hr = number(obj.get("hr"))  # a band may send its heart rate with the alarm
        if hr is None or _judged("hr_bpm", hr)[1] is not Quality.GOOD:
            hr = self.last_hr.get(band)
        if hr is not None:
            data["hr_bpm"] = hr
        return Event(self.name, kind, Priority.CRITICAL, ts_ms, data, classes=dict(EVENT_CLASSES))


def reader(device: Any, link: Any, clock: Callable[[], float] = time.time) -> HubReader:
    return HubReader(device, link, clock)


DRIVER = Driver(id="wearables_hub", protocol="json-lines", reader=reader, streaming=True, outputs=OUTPUTS,
                summary="wearables hub (reference JSON-line protocol): vitals per band, SOS/fall/off-wrist")
