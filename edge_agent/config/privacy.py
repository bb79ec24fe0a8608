"""The ``privacy`` section and each device's ``privacy`` overrides: what happens to personal data.

Called by ``schema`` (the section) and ``devices`` (a device's ``privacy: {point: action}``);
problems go to the same ``Report``. ``seal`` needs the platform's public key, so either place
naming it without ``privacy.platform_key_file`` is a problem. Key files are only named here:
``run`` loads them (``privacy.stage.Privacy.load``) and refuses to start without them. No I/O.
"""

from __future__ import annotations

from pathlib import Path

from ..model import DataClass, Driver, Point
from ..settings import PRIVACY_ACTIONS, PrivacySettings
from .gateway import DEFAULT_STATE_DIR
from .source import Report, Section, choice, did_you_mean, integer, path

__all__ = ["PRIVACY_ACTIONS", "read_privacy", "read_device_privacy"]


def read_privacy(report: Report, top: Section, base: Path, state_dir: Path) -> tuple[PrivacySettings, bool]:
    """``privacy:`` (every default when absent, the key in ``state_dir``), and whether
    ``platform_key_file`` is written: the devices' ``seal`` overrides need it."""
    default_key = (state_dir or DEFAULT_STATE_DIR) / "keys" / "pseudonym.key"
    s = top.section("privacy", ("key_file", "platform_key_file", "actions", "geohash_length"),
                    secrets={"key": "key_file", "platform_key": "platform_key_file"})
    platform_key_given = bool(s and s.given("platform_key_file"))
    if s is None:
        return PrivacySettings(key_file=default_key), platform_key_given
    classes = [str(c) for c in DataClass]
    a = s.section("actions", classes, noun="data class")
    actions = {DataClass(k): a.get(k, choice(PRIVACY_ACTIONS, "action"))
               for k in (a.values if a else ()) if k in classes}
    if "seal" in actions.values() and not platform_key_given:
        cls = next(c for c, v in actions.items() if v == "seal")
        report.add(a.line_of(str(cls)) if a else None, s.sub("platform_key_file"),
                   f"required because privacy.actions.{cls} is seal")
    # key_file has a default (pseudonymize is identifier's default action), so no rule here:
    # 'edge-agent run' refuses to start while the file is missing or loosely permitted.
    return PrivacySettings(key_file=s.get("key_file", path(base), default_key),
                           platform_key_file=s.get("platform_key_file", path(base), None),
                           actions={k: v for k, v in actions.items() if v is not None},
                           geohash_length=s.get("geohash_length", integer(1, 12), 6)), platform_key_given


def read_device_privacy(report: Report, s: Section, driver: Driver | None, points: tuple[Point, ...],
                        known: list[str] | None, platform_key_given: bool) -> dict[str, str]:
    """``privacy: {point: action}``: one point's action over its class's. ``known`` is None
    when the driver or the point list is broken (already reported): names are not checked."""
    if not s.given("privacy"):
        return {}
    node = s.values["privacy"]
    given = list(node.value) if isinstance(node.value, dict) else []
    p = Section.of(report, node, s.sub("privacy"), s.line_of("privacy"), given, noun="point")
    if p is None:
        return {}
    declared = driver.points if driver and not driver.points_from_config else points
    internal = {q.name for q in declared if q.internal}
    out: dict[str, str] = {}
    for name in p.values:
        if known is not None and name not in known:
            if name in internal:
                why = f"'{name}' is an internal point: it is never published, so it needs no action"
            else:
                why = f"unknown point '{name}'" + (did_you_mean(name, known) or
                                                   f" (the device publishes: {', '.join(known) or 'nothing'})")
            report.add(p.values[name].line, p.sub(name), why)
            continue
        action = p.get(name, choice(PRIVACY_ACTIONS, "action"))
        if action == "seal" and not platform_key_given:
            report.add(p.line_of(name), "privacy.platform_key_file", f"required because {p.sub(name)} is seal")
        if action is not None:
            out[name] = action
    return out
