"""The ``mqtt`` section's ``compress`` (issue 13): off by default (the contract's JSON), true turns
xz on, anything else is a problem on its line (the exact line is the folder case
``cases/mqtt_compress_not_a_boolean``)."""

from __future__ import annotations

import pytest

from edge_agent.config.schema import ConfigError, parse_settings

CONFIG = "gateway: {{id: gw-1, site: s1}}\nmqtt: {{host: h{extra}}}\nbuses: []\ndevices: []\n"


def test_compress_is_off_unless_set() -> None:
    assert parse_settings(CONFIG.format(extra="")).mqtt.compress is False
    assert parse_settings(CONFIG.format(extra=", compress: false")).mqtt.compress is False
    assert parse_settings(CONFIG.format(extra=", compress: true")).mqtt.compress is True


@pytest.mark.parametrize("value, named", [("gzip", "a string ('gzip')"), ('"true"', "a string ('true')"),
                                          ("1", "an integer (1)"), ("[xz]", "a list")])
def test_compress_takes_true_or_false_only(value: str, named: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_settings(CONFIG.format(extra=f", compress: {value}"))
    assert str(raised.value).splitlines() == [
        f"<string>:2: mqtt.compress: expected true (telemetry and events as xz) or false, got {named}"]
