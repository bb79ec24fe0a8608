"""edge-agent: field devices -> privacy -> SQLite outbox -> MQTT, on a community gateway."""

__version__ = "0.1.0"
