"""The op table: one row per op of ``settings.OPS``, in its order, each with its target kind, its
args check and its handler; a table that drifts from the floor's names refuses to load. What each
row does to a command (messages, codes, audit details) is proven through the service in
test_service.py."""

from __future__ import annotations

import importlib
from typing import Any

import pytest

from edge_agent import settings
from edge_agent.commands import optable
from edge_agent.commands.optable import OP_TABLE
from edge_agent.commands.types import Command, CommandRejected


def cmd(op: str, target: str | None = None, **args: Any) -> Command:
    return Command(id="c-1", op=op, target=target, args=args, iat=0, exp=1, signer="k")


def test_one_row_per_op_in_the_floors_order() -> None:
    assert tuple(OP_TABLE) == settings.OPS
    assert {name for name, op in OP_TABLE.items() if op.device} == {"device.poll", "device.write"}
    assert settings.CommandSettings().ops == tuple(o for o in settings.OPS if o != "config.apply")


class Ops:
    """Records which CommandOps method a row runs, with what."""

    def __getattr__(self, method: str) -> Any:
        return lambda *args: (method, args)


@pytest.mark.parametrize("command, expected", [
    (cmd("agent.ping"), ("ping", ())),
    (cmd("device.poll", "boiler"), ("poll", ("boiler",))),
    (cmd("device.write", "gate-1", point="barrier", value="open", lane=2),
     ("write", ("gate-1", "barrier", "open", {"point": "barrier", "value": "open", "lane": 2}))),
    (cmd("buffer.replay", from_id=3), ("replay", ({"from_id": 3}, "c-1"))),
])
def test_each_row_runs_its_op(command: Command, expected: tuple) -> None:
    assert OP_TABLE[command.op].run(Ops(), command) == expected  # type: ignore[arg-type]


def test_config_apply_runs_the_apply_op_with_the_whole_command() -> None:
    command = cmd("config.apply", config="gateway: {}")
    assert OP_TABLE["config.apply"].run(Ops(), command) == ("apply", (command,))  # type: ignore[arg-type]


@pytest.mark.parametrize("command, modbus, message", [
    (cmd("agent.ping", f=1), None, "agent.ping takes no args, not f"),
    (cmd("config.apply", config="x", force=True), None, "config.apply takes only config, not force"),
    (cmd("buffer.replay", from_id=9, to_id=3), None, "buffer.replay: from_id is after to_id"),
    (cmd("device.write", "b", point="p", value=1, lane=1), True, "a Modbus write takes only point and value, not lane"),
    (cmd("device.write", "g", point="p", value=1, speed=9), False,
     "device.write takes point, value and lane, not speed"),
])
def test_each_row_checks_its_args(command: Command, modbus: bool | None, message: str) -> None:
    with pytest.raises(CommandRejected) as caught:
        OP_TABLE[command.op].check_args(command, modbus)
    assert (caught.value.code, caught.value.message) == ("bad_request", message)


def test_audit_details_name_what_is_written_but_not_a_value_that_may_be_personal() -> None:
    write = OP_TABLE["device.write"]
    assert write.summary(cmd("device.write", "g", point="barrier", value="open", lane=2)) == "barrier=open lane 2"
    assert write.summary(cmd("device.write", "g", point="label", value="桂A12345")) == "label=(value)"
    assert write.done_detail(cmd("device.write", "b", point="relay", value=True),
                             {"read_back": "match"}) == "relay=true read back: match"
    replay = OP_TABLE["buffer.replay"]
    assert replay.done_detail(cmd("buffer.replay", from_id=5), {"rows": 2, "first_id": 5, "last_id": 6}) == \
        "replaying 2 row(s) ids 5..6"
    assert OP_TABLE["agent.ping"].done_detail(cmd("agent.ping"), {}) == "agent.ping"


def test_a_table_that_drifts_from_the_floors_names_refuses_to_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "OPS", settings.OPS + ("device.reboot",))
    try:
        with pytest.raises(RuntimeError, match="add the op to both, in the same order"):
            importlib.reload(optable)
    finally:
        monkeypatch.undo()
        importlib.reload(optable)
