"""Test helpers with real parts (a mosquitto broker, MQTT subscribers); imported as ``support.*``."""
