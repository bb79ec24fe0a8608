"""Device families, one module each, installed as ``edge_agent.drivers``.

A module declares ``DRIVER = Driver(...)`` using only ``edge_agent.model``; the registry
finds it by walking this package.
"""
