"""Signed commands from the fleet tools, and results checked against their command."""

from __future__ import annotations

import base64

import pytest

from edge_agent.commands.signing import verify_signature
from edge_agent.platform.result import Outcome, new_command, verify_result
from edge_agent.platform import PayloadError


@pytest.fixture(scope="module")
def key():
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.generate()


def test_new_commands_are_signed_with_fresh_ids_and_a_lifetime(key):
    a = new_command("agent.ping", key, kid="k1", ttl_ms=10_000, now_ms=1000)
    b = new_command("agent.ping", key, kid="k1")
    assert a["id"] != b["id"] and a["kid"] == "k1"
    assert (a["v"], a["op"], a["target"], a["args"], a["iat"], a["exp"]) == (1, "agent.ping", None, {}, 1000, 11_000)
    assert verify_signature(a, base64.b64decode(a["sig"]), key.public_key())


def test_results_ok_and_error(key):
    cmd = new_command("device.poll", key, target="river-1")
    ok = verify_result({"v": 1, "id": cmd["id"], "ok": True, "ts": 5, "data": {"requested": True}}, cmd)
    assert ok == Outcome(True, data={"requested": True})
    bad = verify_result({"v": 1, "id": cmd["id"], "ok": False, "ts": 5,
                         "error": {"code": "unknown_op", "message": "no such op"}}, cmd)
    assert bad == Outcome(False, "unknown_op", "no such op")


@pytest.mark.parametrize("result", [
    [], {"v": 1, "id": "c-other", "ok": True}, {"v": 2, "id": "ID", "ok": True}, {"v": 1, "id": "ID", "ok": "yes"},
    {"v": 1, "id": "ID", "ok": False}, {"v": 1, "id": "ID", "ok": False, "error": {"code": 3, "message": "x"}},
    {"v": 1, "id": "ID", "ok": True, "error": {"code": "x", "message": "y"}}])
def test_a_result_of_another_command_or_shape_is_refused(result):
    cmd = {"id": "ID"}
    with pytest.raises(PayloadError):
        verify_result(result, cmd)
