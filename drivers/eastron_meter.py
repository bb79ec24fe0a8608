"""Eastron SDM120/SDM230-type single-phase energy meter.

Datasheet facts: Modbus RTU (or TCP through a converter), input registers (function 04),
every quantity an IEEE-754 float32, big-endian words, at even 0-based addresses.
0x0000 voltage V, 0x0006 current A, 0x000C active power W, 0x0012 apparent power VA,
0x0018 reactive power var, 0x001E power factor, 0x0046 frequency Hz, 0x0048 import active
energy kWh, 0x004A export active energy kWh, 0x0156 total active energy kWh.
With the default merge gap this is three requests per poll: 0x0000-0x001F, 0x0046-0x004B,
0x0156-0x0157.
Outputs: voltage_V, current_A, power_W, apparent_power_VA, reactive_power_var, power_factor,
frequency_Hz, energy_import_kWh, energy_export_kWh, energy_total_kWh.
"""

from edge_agent.model import Driver, DType, Point, Reg


def _f32(name: str, address: int, valid: tuple[float, float] | None = None) -> Point:
    return Point(name, Reg.INPUT, address, DType.FLOAT32, valid=valid)


POINTS = (
    _f32("voltage_V", 0x0000, (0.0, 400.0)),
    _f32("current_A", 0x0006, (-100.0, 100.0)),
    _f32("power_W", 0x000C, (-25000.0, 25000.0)),
    _f32("apparent_power_VA", 0x0012),
    _f32("reactive_power_var", 0x0018),
    _f32("power_factor", 0x001E, (-1.0, 1.0)),
    _f32("frequency_Hz", 0x0046, (45.0, 65.0)),
    _f32("energy_import_kWh", 0x0048, (0.0, 1e9)),
    _f32("energy_export_kWh", 0x004A, (0.0, 1e9)),
    _f32("energy_total_kWh", 0x0156, (0.0, 1e9)),
)
DRIVER = Driver(id="eastron_meter", points=POINTS, default_interval="10s",
                summary="Eastron SDM-type energy meter, float32 input registers")
