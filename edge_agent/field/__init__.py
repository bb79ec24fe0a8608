"""The field side: driver registry, request plans, Modbus and byte links, polling, scheduling, health, alarms."""
