"""The one stage every reading and event passes before it is buffered, logged or sent.

Pure: no I/O and no logging while applying (keys are loaded once, by ``Privacy.load``), so it
can sit in front of the buffer, the ``read``/``tail`` commands and the log filter alike, and
whatever it returns may be written anywhere. Contract section 5 defines the actions; the
choices this module makes where the contract leaves room:

Actions by class (``privacy.actions`` over these defaults)::

    identifier -> pseudonymize   name -> drop         location -> generalize
    free_text  -> scan           health -> keep       telemetry -> keep

Scanning. Every string value is scanned for resident IDs, mobiles and plates (``pii_scan``),
whatever its class and action, *except* the output of ``pseudonymize`` and ``seal`` (a token
or ciphertext holds nothing to find). This is the stricter reading of the contract ("every
string value, declared or not"): ``keep`` on a string means keep the text, not the ID number
someone typed into it. A hit is replaced as the ``identifier`` action would replace it: a
pseudonym (the same token as the declared value gives: normalisation is shared), a mask, a
generalisation; ``drop`` leaves ``<id>``/``<phone>``/``<plate>``; ``keep`` leaves it; ``seal``
seals the whole string. Numbers are never scanned: a point never changes type, and an energy
counter may well read 13812341234.

``free_text`` applies its action to what the scan finds: ``scan`` and ``keep`` replace hits as
``identifier`` would, ``pseudonymize``/``mask``/``generalize`` replace hits that way; ``drop``
and ``seal`` take the whole value.

``generalize``: a resident ID or a ``YYYY-MM-DD`` date -> ten-year age band (``"70-79"``,
``"100+"``) at the reference date; a position (``{"lat", "lon"}``, ``"lat,lon"``, ``[lat, lon]``,
or sibling ``lat``/``lon`` fields of one event, both of class location) -> a geohash of
``geohash_length`` (sibling fields become one ``geohash`` field); a lone latitude or longitude
-> rounded to 2 decimals (~1.1 km); a phone -> its 3-digit operator prefix; a plate -> its
province and issuing letter (``苏D``); a name -> its surname; other numbers -> 2
significant digits. What has no coarser form (an address, a card UID) is dropped.

``mask`` (display masks): phone ``138****1234``; 18-digit ID ``110105********002X`` (region
kept, birth date and more hidden); 15-digit ID ``130503******001``; plate: province, letter and
first character, stars, last character (``苏D4***0``, ``陕A1****D``); name: the surname and one
star per other character (``张*``, ``欧阳**``); anything else: first and last character around
stars (details in ``pseudonym``).

Per-point overrides: ``overrides`` maps ``(device, point)`` to an action that replaces the
point's class action for that device's readings (config: ``devices[].privacy``). An override
changes the action only: the scan of strings still replaces hits as ``identifier``'s action
would, so ``keep`` on one point keeps its text, not an ID number inside it.

Records (wire v2): ``apply_records`` turns the readings of one poll into the records the buffer
stores. ``seal`` is applied per record, not per value: the record's points to seal are sealed
together, once, as ``{point: value}`` into the record's ``sealed`` (``{"kid", "ct"}``), so a
record with three sealed points carries one 60-byte envelope, not three. An event's fields to
seal, and a text whose scan hits are sealed (identifier's action ``seal``), keep the per-value
``{"sealed", "kid"}``. ``apply_readings`` (one reading at a time, a seal per value) serves
callers that look at single values.

Keys: ``load`` reads ``key_file`` only when some action (a class's or an override) is
``pseudonymize``, and ``platform_key_file`` when it is set.

Without a key: a value to pseudonymize is dropped and a hit in text becomes a placeholder; a
value to seal is dropped. Never raw. ``warnings`` says so, for the daemon to log at start-up.
"""

from __future__ import annotations

import math
import re
from dataclasses import replace
from datetime import date
from typing import Any, Callable, Iterable, Mapping

from . import geohash
from .keys import KeyRing, load_keyring
from ..model import DataClass, Event, Quality, Reading, Record, group_readings
from .pii_scan import PLACEHOLDERS, Kind, find, scan, scrub
from .pseudonym import age_band, birth_date, kind_of, mask, normalise, pseudonymize, surname
from .seal import PlatformKey, seal, seal_record
from ..settings import PRIVACY_ACTIONS, PrivacySettings

__all__ = ["Privacy", "DEFAULT_ACTIONS", "ACTIONS", "DROP"]

DEFAULT_ACTIONS: dict[DataClass, str] = {
    DataClass.TELEMETRY: "keep",
    DataClass.HEALTH: "keep",
    DataClass.IDENTIFIER: "pseudonymize",
    DataClass.NAME: "drop",
    DataClass.LOCATION: "generalize",
    DataClass.FREE_TEXT: "scan",
}
ACTIONS = (*PRIVACY_ACTIONS, "scan")  # scan: free_text's default, never written in a config
_LAT_KEYS, _LON_KEYS = ("lat", "latitude"), ("lon", "lng", "longitude")
_PAIR = re.compile(r"\s*(-?\d{1,3}(?:\.\d+)?)\s*,\s*(-?\d{1,3}(?:\.\d+)?)\s*")
_DATE = re.compile(r"\s*(\d{4})-(\d{2})-(\d{2})\s*")


class _Drop:
    def __repr__(self) -> str:
        return "DROP"


DROP: Any = _Drop()  # what apply_value returns for a value that must not be sent at all


class Privacy:
    """Applies the configured action of each data class to readings, events and single values.

    Holds no state that changes after construction, so one instance serves every bus worker
    thread at once. ``today`` (a date, or a callable giving one) is the reference for age bands;
    default: the system date at the time of the call.
    """

    def __init__(self, settings: PrivacySettings, keys: KeyRing | None = None,
                 platform_key: PlatformKey | None = None, *, today: date | Callable[[], date] | None = None,
                 overrides: Mapping[tuple[str, str], str] | None = None) -> None:
        unknown = {str(c): a for c, a in settings.actions.items() if a not in ACTIONS}
        unknown.update({f"{d}.{p}": a for (d, p), a in (overrides or {}).items() if a not in ACTIONS})
        if unknown:
            raise ValueError(f"unknown privacy action(s) {unknown}; use one of {', '.join(ACTIONS)}")
        self.overrides: dict[tuple[str, str], str] = dict(overrides or {})
        if not 1 <= settings.geohash_length <= 12:
            raise ValueError(f"geohash_length {settings.geohash_length} is outside 1..12")
        self.actions: dict[DataClass, str] = {**DEFAULT_ACTIONS, **settings.actions}
        self.geohash_length = settings.geohash_length
        self.keys, self.platform_key = keys, platform_key
        self._today = today
        self.warnings: tuple[str, ...] = tuple(self._warnings())

    @classmethod
    def load(cls, settings: PrivacySettings, **kw: Any) -> "Privacy":
        """Read the key files the settings name (start-up I/O); KeyFileError / SealError when unusable.

        The pseudonym key is read only when an action (``kw["overrides"]`` included) needs it."""
        used = set({**DEFAULT_ACTIONS, **settings.actions}.values()) | set((kw.get("overrides") or {}).values())
        keys = load_keyring(settings.key_file) if settings.key_file and "pseudonymize" in used else None
        platform_key = PlatformKey.load(settings.platform_key_file) if settings.platform_key_file else None
        return cls(settings, keys, platform_key, **kw)

    def _warnings(self) -> Iterable[str]:
        used = set(self.actions.values()) | set(self.overrides.values())
        if self.keys is None and "pseudonymize" in used:  # identifier's action also serves every scan
            yield ("no pseudonym key (privacy.key_file): values to pseudonymize are dropped, and identifiers "
                   "found in text become <id>/<phone>/<plate>; 'edge-agent keys init -c CONFIG' creates the key")
        if self.platform_key is None and "seal" in used:
            yield "no platform key (privacy.platform_key_file): values to seal are dropped"

    def today(self) -> date:
        if self._today is None:
            return date.today()
        return self._today() if callable(self._today) else self._today

    def action_for(self, data_class: DataClass) -> str:
        """The action applied to ``data_class`` (``scan`` is free_text's default: keep, hits replaced)."""
        return self.actions[DataClass(data_class)]

    # -- readings and events ---------------------------------------------------------------
    def apply_readings(self, readings: Iterable[Reading]) -> list[Reading]:
        """Readings with their values transformed; a dropped value removes its reading. A value
        to seal is sealed on its own here; the buffer's path is ``apply_records``."""
        out: list[Reading] = []
        overrides = self.overrides
        for r in readings:
            action = overrides.get((r.dev, r.pt)) if overrides else None
            val = self.apply_value(r.val, r.data_class, field=r.pt, action=action)
            if val is DROP:
                continue
            if r.sub is not None:  # a band or lane label is a string like any other: scanned
                sub = self.apply_value(r.sub, DataClass.FREE_TEXT, field="sub")
                if sub is not r.sub:
                    r = replace(r, sub=None if sub is DROP else sub)
            out.append(r if val is r.val else replace(r, val=val))
        return out

    apply = apply_readings  # the earlier name

    def apply_records(self, readings: Iterable[Reading]) -> list[Record]:
        """The readings of one poll as the records the buffer stores (``model.group_readings``:
        one per device, unit and time), each value transformed as ``apply_readings`` would,
        except ``seal``: a record's points to seal are gathered into ``{point: value}`` and
        sealed once, into the record's ``sealed`` (without a platform key they are dropped).
        A dropped point is absent from ``vals`` and ``q``; a record left with no point at all
        is not returned. A ``None`` value (a bad reading) has nothing to hide: it stays in
        ``vals`` whatever the action, as ``apply_value`` keeps it."""
        out: list[Record] = []
        overrides, actions = self.overrides, self.actions
        for group in group_readings(readings):
            vals: dict[str, Any] = {}
            hidden: dict[str, Any] = {}
            for r in group:
                action = overrides.get((r.dev, r.pt)) if overrides else None
                if (action or actions[r.data_class]) == "seal" and r.val is not None:
                    hidden[r.pt] = r.val
                    continue
                val = self.apply_value(r.val, r.data_class, field=r.pt, action=action)
                if val is not DROP:
                    vals[r.pt] = val
            sealed = self._seal_record(hidden) if hidden else None
            if not vals and sealed is None:
                continue
            first = group[0]
            kept = vals.keys() | (hidden.keys() if sealed is not None else set())
            q = {r.pt: str(r.q) for r in group if r.q is not Quality.GOOD and r.pt in kept}
            sub = first.sub
            if sub is not None:  # a band or lane label is a string like any other: scanned
                sub = self.apply_value(sub, DataClass.FREE_TEXT, field="sub")
                sub = None if sub is DROP else sub
            out.append(Record(dev=first.dev, ts=first.ts, vals=vals, q=q, sub=sub,
                              clk_synced=first.clk_synced, sealed=sealed))
        return out

    def apply_event(self, event: Event) -> Event:
        """The event with its data transformed per ``event.classes`` (dotted paths; others free_text)."""
        return replace(event, data=self._walk(event.data, event.classes, ""))

    def _walk(self, data: dict[str, Any], classes: dict[str, DataClass], prefix: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        pair = self._position_pair(data, classes, prefix)
        for key, value in data.items():
            path = f"{prefix}{key}"
            if pair is not None and key in pair:
                if key == pair[0]:
                    out["geohash"] = geohash.encode(data[pair[0]], data[pair[1]], self.geohash_length)
                continue
            result = self._walk_value(value, classes.get(path), classes, path, str(key))
            if result is not DROP:
                out[key] = result
        return out

    def _walk_value(self, value: Any, cls: DataClass | None, classes: dict[str, DataClass], path: str, key: str) -> Any:
        if cls is None and isinstance(value, dict):
            return self._walk(value, classes, path + ".")
        if cls is None and isinstance(value, list):
            items = (self._walk_value(v, None, classes, path, key) for v in value)
            return [v for v in items if v is not DROP]
        return self.apply_value(value, cls or DataClass.FREE_TEXT, field=key)

    def _position_pair(self, data: dict[str, Any], classes: dict[str, DataClass],
                       prefix: str) -> tuple[str, str] | None:
        if self.action_for(DataClass.LOCATION) != "generalize":
            return None
        lat = next((k for k in _LAT_KEYS if k in data), None)
        lon = next((k for k in _LON_KEYS if k in data), None)
        if lat is None or lon is None or any(classes.get(prefix + k) != DataClass.LOCATION for k in (lat, lon)):
            return None
        return (lat, lon) if _position(data[lat], data[lon]) else None

    # -- one value ---------------------------------------------------------------------------
    def apply_value(self, value: Any, data_class: DataClass, *, field: str | None = None,
                    action: str | None = None) -> Any:
        """``value`` as it may leave the gateway, or ``DROP``. ``field`` (a point or key name) is a
        hint; ``action`` (an override) replaces the class's action."""
        if not isinstance(data_class, DataClass):
            data_class = DataClass(data_class)
        action = action or self.actions[data_class]
        if action == "drop":
            return DROP
        if value is None or (action in ("keep", "scan") and isinstance(value, (int, float))):
            return value  # the common case (telemetry numbers): nothing to scan
        if action == "seal":
            return self._seal(value)
        if data_class is DataClass.FREE_TEXT:
            return self._free_text(value, action)
        if action == "pseudonymize":
            return self._leaves(value, lambda v: self._pseudonym(v, kind_of(v, field)))
        if action == "mask":
            return self._leaves(value, lambda v: self._mask(v, data_class, field))
        if action == "generalize":
            return self._generalize(value, data_class, field)
        return self._leaves(value, self._scanned)  # keep / scan

    def _leaves(self, value: Any, fn: Callable[[Any], Any]) -> Any:
        if isinstance(value, dict):
            items = ((k, self._leaves(v, fn)) for k, v in value.items())
            return {k: v for k, v in items if v is not DROP}
        if isinstance(value, (list, tuple)):
            return [v for v in (self._leaves(x, fn) for x in value) if v is not DROP]
        return None if value is None else fn(value)

    def _seal(self, value: Any) -> Any:
        if self.platform_key is None:
            return DROP
        try:
            return seal(value, self.platform_key)
        except (TypeError, ValueError):  # not JSON: nothing to send rather than something raw
            return DROP

    def _seal_record(self, points: dict[str, Any]) -> dict[str, str] | None:
        if self.platform_key is None:
            return None
        try:
            return seal_record(points, self.platform_key)
        except (TypeError, ValueError):  # not JSON: nothing to send rather than something raw
            return None

    def _pseudonym(self, value: Any, kind: str | None) -> Any:
        if isinstance(value, bool):
            return value
        return DROP if self.keys is None else pseudonymize(value, self.keys, kind)

    def _mask(self, value: Any, data_class: DataClass, field: str | None) -> Any:
        if isinstance(value, bool):
            return value
        text = value if isinstance(value, str) else str(value)
        if data_class is DataClass.NAME:
            return mask(text, name=True)
        return self._scanned(mask(text, kind_of(text, field)))

    def _free_text(self, value: Any, action: str) -> Any:
        hit_action = self.actions[DataClass.IDENTIFIER] if action in ("keep", "scan") else action
        return self._leaves(value, lambda v: self._scanned(v, hit_action) if isinstance(v, str) else v)

    # -- scanning ----------------------------------------------------------------------------
    def _scanned(self, text: Any, hit_action: str | None = None) -> Any:
        """``text`` with each identifier found replaced per ``hit_action`` (default: identifier's)."""
        if not isinstance(text, str):
            return text
        hit_action = hit_action or self.actions[DataClass.IDENTIFIER]
        if hit_action == "seal":
            return text if next(find(text), None) is None else (
                self._seal(text) if self.platform_key is not None else scan(text, _placeholder))
        return scan(text, lambda kind, found: self._replace_hit(kind, found, hit_action))

    def _replace_hit(self, kind: Kind, found: str, action: str) -> str:
        if action in ("keep", "scan"):
            return found
        if action == "pseudonymize" and self.keys is not None:
            return pseudonymize(found, self.keys, kind)
        if action == "mask":
            return mask(found, kind)
        if action == "generalize":
            general = self._generalize_identifier(found, kind)
            if general is not DROP:
                return general
        return PLACEHOLDERS[kind]

    def scan_text(self, text: str) -> Any:
        """A free-text string as the uplink would send it (a str, or a sealed object)."""
        return self._free_text(text, self.actions[DataClass.FREE_TEXT])

    def scrub(self, text: str) -> str:
        """For log lines and exception messages: identifiers -> ``<id>``/``<phone>``/``<plate>``,
        runs of more than 8 bytes in hex or bytes-repr form -> ``<bytes>``. Needs no key."""
        return scrub(text)

    # -- generalize ----------------------------------------------------------------------------
    def _generalize(self, value: Any, data_class: DataClass, field: str | None) -> Any:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and (m := _DATE.fullmatch(value)):
            try:
                band = age_band(date(*map(int, m.groups())), self.today())
            except ValueError:
                band = None
            return DROP if band is None else band
        if data_class is DataClass.LOCATION:
            return self._generalize_location(value)
        if isinstance(value, (dict, list, tuple)):
            return self._leaves(value, lambda v: self._generalize(v, data_class, field))
        if data_class is DataClass.IDENTIFIER:
            return self._generalize_identifier(value, kind_of(value, field))
        if data_class is DataClass.NAME:
            family = surname(value) if isinstance(value, str) else ""
            return family or DROP
        if isinstance(value, (int, float)):
            return _two_digits(value)
        return self._scanned(value)

    def _generalize_identifier(self, value: Any, kind: str | None) -> Any:
        if not isinstance(value, str):
            return DROP
        if kind == "id":
            born = birth_date(normalise(value, "id"))
            band = age_band(born, self.today()) if born else None
            return DROP if band is None else band
        if kind == "phone":
            return normalise(value, "phone")[:3]
        if kind == "plate":
            return normalise(value, "plate")[:2]
        return DROP

    def _generalize_location(self, value: Any) -> Any:
        lat = lon = None
        if isinstance(value, dict):
            lat = next((value[k] for k in _LAT_KEYS if k in value), None)
            lon = next((value[k] for k in _LON_KEYS if k in value), None)
        elif isinstance(value, (list, tuple)) and len(value) == 2:
            lat, lon = value
        elif isinstance(value, str) and (m := _PAIR.fullmatch(value)):
            lat, lon = float(m.group(1)), float(m.group(2))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return round(float(value), 2)
        if _position(lat, lon):
            return geohash.encode(float(lat), float(lon), self.geohash_length)  # type: ignore[arg-type]
        return DROP


def _position(lat: Any, lon: Any) -> bool:
    ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (lat, lon))
    return ok and -90 <= lat <= 90 and -180 <= lon <= 180


def _two_digits(x: int | float) -> int | float:
    if isinstance(x, bool) or not math.isfinite(x) or x == 0:
        return x
    digits = 2 - int(math.floor(math.log10(abs(x)))) - 1
    return round(x, digits) if isinstance(x, float) else int(round(x, digits))


def _placeholder(kind: Kind, found: str) -> str:
    return PLACEHOLDERS[kind]

