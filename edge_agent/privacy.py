"""The one stage every value passes before it is buffered, logged or sent.

This first version knows two actions, ``keep`` and ``drop``: telemetry and health are kept,
every other class (identifiers, names, locations, free text) is dropped, whatever the config
asks, until pseudonyms, masks, generalisation and seals land. Dropping is the contract's
safest action, so no configuration can make this stage leak a raw value.
"""

from __future__ import annotations

from typing import Iterable

from .model import DataClass, Reading
from .settings import PrivacySettings

__all__ = ["Privacy", "DEFAULT_ACTIONS"]

DEFAULT_ACTIONS: dict[DataClass, str] = {
    DataClass.TELEMETRY: "keep",
    DataClass.HEALTH: "keep",
    DataClass.IDENTIFIER: "pseudonymize",
    DataClass.NAME: "drop",
    DataClass.LOCATION: "generalize",
    DataClass.FREE_TEXT: "mask",
}
_KEEPABLE = {DataClass.TELEMETRY, DataClass.HEALTH}


class Privacy:
    """Transforms readings per their data class; pure (no I/O, no logging of values)."""

    def __init__(self, settings: PrivacySettings) -> None:
        self.actions = {**DEFAULT_ACTIONS, **settings.actions}

    def action_for(self, data_class: DataClass) -> str:
        action = self.actions[data_class]
        if action == "keep" and data_class in _KEEPABLE:
            return "keep"
        return "drop"

    def apply(self, readings: Iterable[Reading]) -> list[Reading]:
        return [r for r in readings if self.action_for(r.data_class) == "keep"]
