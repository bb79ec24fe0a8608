"""QDY30A-type RS-485 hydrostatic level transmitter (flood warning).

Datasheet facts: Modbus RTU, 9600 8N1, default address 1. Holding 0x0003 = number of decimals
(0..3), holding 0x0004 = level as int16 in the configured unit (metres here), so
level = raw * 10^-decimals. Both are read in one request (0x0003..0x0004).
A decimals value outside 0..3 means a misconfigured or faulty transmitter: the level is then
published with quality ``bad``.
Outputs: ``level_m`` (float, metres).
"""

from typing import Any

from edge_agent.model import Driver, DType, Output, Point, Reg


def decode(raw: dict[str, Any]) -> dict[str, Any]:
    decimals = raw.get("decimals")
    level = raw.get("level_raw")
    if decimals is None or level is None:
        return {}
    if not 0 <= decimals <= 3:
        return {"level_m": None}
    return {"level_m": round(level * 10.0 ** -decimals, decimals)}


POINTS = (
    Point("decimals", Reg.HOLDING, 0x0003, DType.UINT16, internal=True),
    Point("level_raw", Reg.HOLDING, 0x0004, DType.INT16, internal=True),
)
DRIVER = Driver(id="qdy_level", points=POINTS, default_interval="5s", decode=decode,
                outputs=(Output("level_m", valid=(-1.0, 20.0)),),
                summary="QDY30A-type water level, metres")
