"""The ``privacy`` section and devices' overrides: the actions a config may name are the ones the
privacy stage applies, from one definition (``settings.PRIVACY_ACTIONS``)."""

from __future__ import annotations

import pytest

from edge_agent import settings
from edge_agent.config import privacy as config_privacy
from edge_agent.config.schema import ConfigError, parse_settings
from edge_agent.model import DataClass
from edge_agent.privacy import stage
from edge_agent.settings import PRIVACY_ACTIONS, PrivacySettings

TOP = """\
gateway: {id: gw-001, site: demo-site}
mqtt: {host: 127.0.0.1}
buses: []
devices: []
"""


def test_one_definition_of_the_actions_serves_the_config_and_the_stage() -> None:
    assert config_privacy.PRIVACY_ACTIONS is settings.PRIVACY_ACTIONS
    # the stage adds only free_text's default, which a config cannot write
    assert stage.ACTIONS == (*settings.PRIVACY_ACTIONS, "scan")
    assert set(stage.DEFAULT_ACTIONS.values()) <= set(stage.ACTIONS)


@pytest.mark.parametrize("action", PRIVACY_ACTIONS)
def test_every_action_the_config_accepts_the_stage_applies(action: str, tmp_path) -> None:
    extra = f"  platform_key_file: {tmp_path}/platform.pub\n" if action == "seal" else ""
    s = parse_settings(TOP + f"privacy:\n  actions: {{telemetry: {action}}}\n" + extra)
    assert s.privacy.actions == {DataClass.TELEMETRY: action}
    stage.Privacy(PrivacySettings(actions=s.privacy.actions))  # no "unknown privacy action"


def test_scan_is_a_default_not_an_action_to_write() -> None:
    with pytest.raises(ConfigError) as raised:
        parse_settings(TOP + "privacy:\n  actions: {free_text: scan}\n", source="gw.yaml")
    assert str(raised.value) == ("gw.yaml:6: privacy.actions.free_text: unknown action 'scan'; "
                                 "use one of keep, pseudonymize, mask, generalize, drop, seal")
