"""Sparkplug B metrics: the datatype of each published point, and values in and out of the
protobuf ``Metric`` (``sparkplug.py`` is the dialect; docs/dialects.md, "Sparkplug B").

Why a module of its own: which datatype a DBIRTH declares is decided from three declarations
that live elsewhere (the driver's points and outputs, the device's config, the privacy action of
each point), and a datatype, once declared, must fit every value sent under it.

Datatypes:
- a register point: its ``DType`` (int16 -> Int16, float32 -> Float, string -> String, bool ->
  Boolean, ...); a scaled or offset integer or float32 becomes a Double, as ``registers`` makes
  it a float;
- a computed output (no type of its own in ``model.Output``): Double when it has a valid range
  (it is a number), else a guess, String, settled by its first value (a bool makes it Boolean, a
  number Double): a guessed metric is declared again once, in a device rebirth;
- after privacy: pseudonymize and mask give a String, generalize a String (text) or a Double (a
  number to two significant digits); drop and seal leave no metric of their own (a record's
  sealed points travel as one String metric ``sealed``).
A value that does not fit its declared datatype (a bug, or a point whose declaration is wrong)
turns that metric into a String carrying the value as JSON, declared in a device rebirth: a
value is never dropped, and a metric changes type at most twice per run.

Integers: Sparkplug keeps Int8..Int32 in ``int_value`` (uint32) and Int64 in ``long_value``
(uint64), negative ones as two's complement (Eclipse Tahu does the same).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping

from ..model import DataClass, DType, Driver, Point
from ..settings import DeviceSettings

__all__ = ["INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64", "FLOAT", "DOUBLE",
           "BOOLEAN", "STRING", "DATETIME", "TYPE_NAMES", "DEFAULT_ACTIONS", "Declared", "Slot", "point_type",
           "declared", "natural", "fits", "set_value", "read_value"]

# sparkplug_b.proto's DataType, the ones the gateway sends
INT8, INT16, INT32, INT64, UINT8, UINT16, UINT32, UINT64 = 1, 2, 3, 4, 5, 6, 7, 8
FLOAT, DOUBLE, BOOLEAN, STRING, DATETIME = 9, 10, 11, 12, 13
TYPE_NAMES = {INT8: "Int8", INT16: "Int16", INT32: "Int32", INT64: "Int64", UINT8: "UInt8", UINT16: "UInt16",
              UINT32: "UInt32", UINT64: "UInt64", FLOAT: "Float", DOUBLE: "Double", BOOLEAN: "Boolean",
              STRING: "String", DATETIME: "DateTime"}

_RANGE = {INT8: (-2**7, 2**7 - 1), INT16: (-2**15, 2**15 - 1), INT32: (-2**31, 2**31 - 1),
          INT64: (-2**63, 2**63 - 1), UINT8: (0, 2**8 - 1), UINT16: (0, 2**16 - 1), UINT32: (0, 2**32 - 1),
          UINT64: (0, 2**64 - 1), DATETIME: (0, 2**64 - 1)}
_BITS = {INT8: 32, INT16: 32, INT32: 32, UINT8: 32, UINT16: 32, UINT32: 32,
         INT64: 64, UINT64: 64, DATETIME: 64}  # width of the protobuf field that carries it
_SIGNED = (INT8, INT16, INT32, INT64)
_OF_DTYPE = {DType.INT16: INT16, DType.UINT16: UINT16, DType.INT32: INT32, DType.UINT32: UINT32,
             DType.INT64: INT64, DType.UINT64: UINT64, DType.FLOAT32: FLOAT, DType.FLOAT64: DOUBLE,
             DType.STRING: STRING, DType.BOOL: BOOLEAN}

# privacy.stage.DEFAULT_ACTIONS (the uplink may not import privacy: tests/test_house.py; a test keeps them equal)
DEFAULT_ACTIONS: dict[DataClass, str] = {
    DataClass.TELEMETRY: "keep", DataClass.HEALTH: "keep", DataClass.IDENTIFIER: "pseudonymize",
    DataClass.NAME: "drop", DataClass.LOCATION: "generalize", DataClass.FREE_TEXT: "scan",
}


@dataclass(frozen=True)
class Declared:
    """What a point's metric is declared as; ``guessed``: the first value may still change it."""

    datatype: int
    guessed: bool = False


@dataclass
class Slot:
    """One metric of one birth: name, alias (unique across the edge node), datatype."""

    name: str
    alias: int
    datatype: int
    guessed: bool = False
    loose: bool = False  # a String that carries any value as JSON (after a value that fit nothing)

    def settle(self, value: Any) -> bool:
        """Make the declaration fit ``value``; True when it changed (the device must be born again)."""
        if value is None or fits(value, self.datatype, loose=self.loose):
            self.guessed = self.guessed and value is None
            return False
        if self.guessed:
            self.datatype, self.guessed = natural(value), False
            self.loose = not fits(value, self.datatype)
        else:
            self.datatype, self.loose = STRING, True
        return True


def point_type(point: Point) -> int:
    """A register point's datatype: its own, or Double when scaled (``registers`` makes it a float)."""
    if (point.scale != 1 or point.offset != 0) and point.dtype not in (DType.STRING, DType.BOOL, DType.FLOAT64):
        return DOUBLE
    return _OF_DTYPE[point.dtype]


def _after_privacy(action: str, base: Declared) -> Declared | None:
    if action in ("drop", "seal"):
        return None
    if action in ("pseudonymize", "mask"):
        return Declared(STRING)
    if action == "generalize":  # text -> coarser text; a number -> two significant digits
        return Declared(STRING) if base.datatype in (STRING, BOOLEAN) else Declared(DOUBLE)
    return base


def declared(device: DeviceSettings, driver: Driver | None, actions: Mapping[DataClass, str],
             overrides: Mapping[tuple[str, str], str]) -> tuple[dict[str, Declared], bool]:
    """``{point: Declared}`` of what ``device`` publishes, in declaration order, after privacy,
    and whether any of its points is sealed (then its records carry ``sealed``)."""
    if driver is None:
        return {}, False
    found: list[tuple[str, DataClass, Declared]] = []
    points = device.points if driver.points_from_config else driver.points
    found += [(p.name, p.data_class, Declared(point_type(p))) for p in points if not p.internal]
    found += [(o.name, o.data_class, Declared(DOUBLE) if o.valid is not None else Declared(STRING, guessed=True))
              for o in driver.outputs]
    out: dict[str, Declared] = {}
    sealed = False
    for name, data_class, base in found:
        action = overrides.get((device.name, name)) or actions.get(data_class) or DEFAULT_ACTIONS[data_class]
        sealed = sealed or action == "seal"
        after = _after_privacy(action, base)
        if after is not None:
            out.setdefault(name, after)
    return out, sealed


def natural(value: Any) -> int:
    """The datatype a value of unknown declaration is sent as."""
    if isinstance(value, bool):
        return BOOLEAN
    if isinstance(value, int):
        return INT64 if _RANGE[INT64][0] <= value <= _RANGE[INT64][1] else STRING
    if isinstance(value, float):
        return DOUBLE
    return STRING


def fits(value: Any, datatype: int, *, loose: bool = False) -> bool:
    if datatype == STRING:
        return loose or isinstance(value, str)
    if isinstance(value, bool):
        return datatype == BOOLEAN
    if isinstance(value, int):
        if datatype in (FLOAT, DOUBLE):
            return True
        low_high = _RANGE.get(datatype)
        return low_high is not None and low_high[0] <= value <= low_high[1]
    return isinstance(value, float) and datatype in (FLOAT, DOUBLE)


def set_value(metric: Any, datatype: int, value: Any) -> None:
    """Put ``value`` (it ``fits``) into the protobuf metric's value field for ``datatype``."""
    if datatype == STRING:
        metric.string_value = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False,
                                                                              separators=(",", ":"), default=str)
    elif datatype == BOOLEAN:
        metric.boolean_value = value
    elif datatype == FLOAT:
        metric.float_value = value
    elif datatype == DOUBLE:
        metric.double_value = value
    elif _BITS[datatype] == 32:
        metric.int_value = value & 0xFFFFFFFF
    else:
        metric.long_value = value & 0xFFFFFFFFFFFFFFFF


def read_value(metric: Any, datatype: int | None = None) -> Any:
    """The value of a protobuf metric (a host's NCMD/DCMD), signed as its datatype says."""
    if metric.is_null:
        return None
    field = metric.WhichOneof("value")
    if field is None or field not in ("int_value", "long_value", "float_value", "double_value",
                                      "boolean_value", "string_value"):
        return None
    value = getattr(metric, field)
    datatype = datatype or metric.datatype
    if field in ("int_value", "long_value") and datatype in _SIGNED:
        bits = 64 if field == "long_value" else 32
        width = 64 if datatype == INT64 else {INT8: 8, INT16: 16, INT32: 32}[datatype]
        value &= (1 << bits) - 1
        value &= (1 << width) - 1
        if value >= 1 << (width - 1):
            value -= 1 << width
    return value
