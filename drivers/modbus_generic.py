"""Any Modbus device: its points are declared in the device's config entry.

Use it for PLCs, relay boards (a barrier on a writable coil) and devices that have no driver
of their own yet. Each point names its table, 0-based address, type, byte/word order, scale,
offset, valid range, data class and whether it may be written; see docs/configuration.md.
Outputs: whatever the config declares.
"""

from edge_agent.model import Driver

DRIVER = Driver(id="modbus_generic", points=(), default_interval="10s", points_from_config=True,
                summary="points declared in the config")
