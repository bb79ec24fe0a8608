"""The verifier: every rejection class with its code, the order of the checks, what enters the
replay cache, and hypothesis fuzzing (arbitrary bytes, arbitrary JSON, and any change to a
signed command) proving that nothing but ``CommandRejected`` ever leaves ``verify``."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.commands.types import Command, CommandRejected
from edge_agent.commands.verify import CommandVerifier, VerifierError
from edge_agent.commands.ledger import Ledger
from edge_agent.settings import CommandSettings, TrustedKey
from edge_agent.commands.signing import generate, key_id, sign

NOW_MS = 1_732_380_000_000
PERSONAL = "13812345678"  # a mobile number: must never be echoed into a rejection message

KEY_A = Ed25519PrivateKey.generate()
KEY_B = Ed25519PrivateKey.generate()
STRANGER = Ed25519PrivateKey.generate()


def command(**over) -> dict:
    cmd = {"v": 1, "id": "c-1", "op": "device.write", "target": "gate-1",
           "args": {"point": "barrier", "value": "open"}, "iat": NOW_MS - 1000, "exp": NOW_MS + 59_000}
    cmd.update(over)
    return cmd


def wire(obj: dict) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode("utf-8")


@pytest.fixture
def ledger(tmp_path: Path):
    with Ledger(tmp_path / "commands.db") as opened:
        yield opened


@pytest.fixture
def verifier(ledger: Ledger) -> CommandVerifier:
    return CommandVerifier({"a": KEY_A.public_key(), "b": KEY_B.public_key()}, ledger, max_bytes=4096,
                           max_skew_s=300, max_lifetime_s=3600, clock=lambda: NOW_MS / 1000)


def rejected(verifier: CommandVerifier, payload: bytes) -> CommandRejected:
    with pytest.raises(CommandRejected) as info:
        verifier.verify(payload)
    assert PERSONAL not in info.value.message
    return info.value


def test_a_signed_command_verifies_with_kid_or_by_trying_every_key(verifier: CommandVerifier) -> None:
    cmd = verifier.verify(wire(sign(command(), KEY_A, "a")))
    assert isinstance(cmd, Command)
    assert (cmd.id, cmd.op, cmd.target, cmd.args, cmd.signer) == ("c-1", "device.write", "gate-1",
                                                                  {"point": "barrier", "value": "open"}, "a")
    assert (cmd.iat, cmd.exp) == (NOW_MS - 1000, NOW_MS + 59_000) and cmd.raw["kid"] == "a"
    assert verifier.verify(wire(sign(command(id="c-2"), KEY_B))).signer == "b"  # no kid: the key that verifies
    # key order, spacing and \u escapes on the wire do not matter: the values are what is signed
    signed = sign(command(id="c-3", target="大门-1"), KEY_A)
    shuffled = json.dumps(dict(reversed(list(signed.items()))), indent=2, ensure_ascii=True).encode()
    assert verifier.verify(shuffled).target == "大门-1"
    ping = sign({k: v for k, v in command(id="c-4", op="agent.ping").items() if k not in ("target", "args")},
                KEY_A)  # both may be absent
    verified = verifier.verify(wire(ping))
    assert (verified.target, verified.args) == (None, {})
    assert verifier.verify(wire(sign(command(id="c-5", op="agent.ping", target=None, args={}), KEY_A))).args == {}


def test_too_large_is_refused_before_parsing(verifier: CommandVerifier) -> None:
    big = b"{" + b"x" * 5000  # not even JSON: the size alone refuses it
    err = rejected(verifier, big)
    assert (err.code, err.cmd_id) == ("too_large", None)
    assert err.message == "payload is 5001 bytes, more than the 4096 allowed"
    signed = wire(sign(command(args={"note": "y" * 4000}), KEY_A))
    assert rejected(verifier, signed).code == "too_large"
    assert verifier.ledger.seen_count() == 0


BAD_REQUESTS = [
    (b"\xff\xfe{}", "not UTF-8"),
    (b"{\"v\": 1,", "not valid JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b"", "not valid JSON"),
    (b"{\"v\": 1, \"v\": 1}", "appears twice"),
    (b"{\"v\": NaN}", "NaN is not a JSON number"),
    (b"{\"v\": 1e999}", "out of range"),
    (b'{"args": ' + b"[" * 40 + b"]" * 40 + b"}", "nested deeper than 32"),
    (b'{"args": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
    (b"{\"v\": " + b"9" * 5000 + b"}", "not valid JSON"),  # more digits than Python converts
]


@pytest.mark.parametrize("payload, says", BAD_REQUESTS)
def test_malformed_payloads_are_bad_request(verifier: CommandVerifier, payload: bytes, says: str) -> None:
    verifier.max_bytes = 1024**2  # room for the deep and the long ones
    err = rejected(verifier, payload)
    assert err.code == "bad_request" and says in err.message, err.message


SCHEMA = [
    ({"v": 2}, "field 'v' must be 1"),
    ({"v": True}, "field 'v' must be 1"),
    ({"v": 1.0}, "field 'v' must be 1"),
    ({"id": ""}, "field 'id'"),
    ({"id": "x" * 65}, "field 'id'"),
    ({"id": "c 1"}, "field 'id'"),
    ({"id": 7}, "field 'id'"),
    ({"op": None}, "field 'op' must be a string"),
    ({"target": 5}, "field 'target'"),
    ({"args": [PERSONAL]}, "field 'args' must be an object"),
    ({"iat": 1.5}, "field 'iat' must be an integer"),
    ({"exp": "soon"}, "field 'exp' must be an integer"),
    ({"exp": 2**53}, "field 'exp' must be an integer"),
    ({"iat": -1}, "field 'iat' must be an integer"),
    ({"kid": 3}, "field 'kid' must be a string"),
    ({"phone": PERSONAL}, "unknown field 'phone'"),
    ({"args": {"note": "\ud800"}}, "lone surrogate"),
]


@pytest.mark.parametrize("change, says", SCHEMA)
def test_schema_violations_are_bad_request_even_when_signed(verifier: CommandVerifier, change: dict, says: str) -> None:
    obj = command(**change)
    try:
        obj = sign(obj, KEY_A)
    except UnicodeEncodeError:  # the lone surrogate cannot even be signed: send it as a raw \u escape
        obj["sig"] = "A" * 88
    err = rejected(verifier, json.dumps(obj).encode())
    assert err.code == "bad_request" and says in err.message, err.message
    assert verifier.ledger.seen_count() == 0


def test_missing_fields_and_bad_sig_encoding_are_bad_request(verifier: CommandVerifier) -> None:
    for name in ("v", "id", "op", "iat", "exp", "sig"):
        obj = sign(command(), KEY_A)
        del obj[name]
        err = rejected(verifier, wire(obj))
        assert (err.code, err.message) == ("bad_request", f"field '{name}' is missing")
    err = rejected(verifier, wire({**command(), "sig": "not base64!"}))
    assert (err.code, err.message, err.cmd_id) == ("bad_request", "field 'sig' is not valid base64", "c-1")


def test_unknown_key_and_bad_signature(verifier: CommandVerifier) -> None:
    err = rejected(verifier, wire(sign(command(), KEY_A, "retired-2024")))
    assert (err.code, err.message, err.cmd_id) == ("unknown_key", "key id 'retired-2024' is not a trusted key", "c-1")
    assert rejected(verifier, wire(sign(command(), STRANGER))).code == "bad_signature"
    err = rejected(verifier, wire(sign(command(), STRANGER, "a")))  # claims a trusted key id
    assert (err.code, err.message) == ("bad_signature", "signature does not verify with key 'a'")
    err = rejected(verifier, wire(sign(command(), KEY_B, "a")))  # signed by b, labelled a: only a is tried
    assert err.code == "bad_signature"
    tampered = sign(command(), KEY_A, "a")
    tampered["args"] = {"point": "barrier", "value": "close"}
    assert rejected(verifier, wire(tampered)).code == "bad_signature"
    relabelled = sign(command(), KEY_A, "a")
    relabelled["kid"] = "b"  # kid is signed: it cannot be changed either
    assert rejected(verifier, wire(relabelled)).code == "bad_signature"
    short = sign(command(), KEY_A)
    short["sig"] = base64.b64encode(base64.b64decode(short["sig"])[:63]).decode()
    assert rejected(verifier, wire(short)).code == "bad_signature"
    assert verifier.ledger.seen_count() == 0  # nothing unsigned reached the replay cache


@pytest.mark.parametrize("iat, exp, code, says", [
    (NOW_MS - 120_000, NOW_MS - 60_000, "expired", "exp is 60s in the past"),
    (NOW_MS - 120_000, NOW_MS, "expired", "exp is 0ms in the past"),
    (NOW_MS + 301_000, NOW_MS + 360_000, "not_yet_valid", "iat is 301s in the future"),
    (NOW_MS + 10_000, NOW_MS + 5_000, "bad_request", "exp must be after iat"),
    (NOW_MS - 1000, NOW_MS + 3_600_000, "bad_request", "more than the 3600s a command may live"),
])
def test_times(verifier: CommandVerifier, iat: int, exp: int, code: str, says: str) -> None:
    err = rejected(verifier, wire(sign(command(iat=iat, exp=exp), KEY_A, "a")))
    assert (err.code, err.signer, err.cmd_id) == (code, "a", "c-1") and says in err.message, err.message
    assert verifier.ledger.seen_count() == 0


def test_clock_skew_within_the_limit_is_accepted(verifier: CommandVerifier) -> None:
    assert verifier.verify(wire(sign(command(iat=NOW_MS + 300_000, exp=NOW_MS + 360_000), KEY_A))).id == "c-1"


def test_unknown_op_after_the_signature(verifier: CommandVerifier) -> None:
    err = rejected(verifier, wire(sign(command(op="shell.exec"), KEY_A)))
    assert (err.code, err.signer) == ("unknown_op", "a") and "'shell.exec'" in err.message
    assert rejected(verifier, wire(sign(command(op="shell.exec"), STRANGER))).code == "bad_signature"


def test_replay_is_refused_and_junk_never_uses_up_an_id(verifier: CommandVerifier, tmp_path: Path) -> None:
    forged = {**command(), "sig": base64.b64encode(bytes(64)).decode()}
    assert rejected(verifier, wire(forged)).code == "bad_signature"
    assert rejected(verifier, wire(sign(command(exp=NOW_MS - 1), KEY_A))).code == "expired"
    good = wire(sign(command(), KEY_A))
    assert verifier.verify(good).id == "c-1"  # the forgery and the expired copy did not burn "c-1"
    err = rejected(verifier, good)
    assert (err.code, err.message, err.signer) == ("replayed", "this command id was already received", "a")
    other = wire(sign(command(args={"point": "barrier", "value": "close"}), KEY_B))  # same id, new content
    assert rejected(verifier, other).code == "replayed"
    verifier.ledger.close()
    with Ledger(tmp_path / "commands.db") as reopened:  # a restart of the agent
        again = CommandVerifier(verifier.keys, reopened, max_bytes=4096, max_skew_s=300, max_lifetime_s=3600,
                                clock=verifier.clock)
        assert rejected(again, good).code == "replayed"


def test_a_ledger_that_fails_refuses_the_command(verifier: CommandVerifier) -> None:
    verifier.ledger.close()
    err = rejected(verifier, wire(sign(command(), KEY_A)))
    assert (err.code, err.signer) == ("internal", "a") and "refused to be safe" in err.message


def test_from_settings_loads_trusted_keys_and_names_a_missing_file(tmp_path: Path, ledger: Ledger) -> None:
    _, pub1, kid1 = generate(tmp_path / "one")
    _, pub2, _ = generate(tmp_path / "two")
    settings = CommandSettings(keys=(TrustedKey("platform-2026", pub1), TrustedKey("", pub2)))
    verifier = CommandVerifier.from_settings(settings, ledger)
    derived = key_id(verifier.keys[next(k for k in verifier.keys if k != "platform-2026")])
    assert sorted(verifier.keys) == sorted(["platform-2026", derived]) and kid1 != "platform-2026"
    assert (verifier.max_bytes, verifier.max_skew_ms, verifier.max_lifetime_ms) == (16 * 1024, 300_000, 3_600_000)
    missing = CommandSettings(keys=(TrustedKey("k", tmp_path / "absent.pub"),))
    with pytest.raises(VerifierError, match=f"^commands.keys: command public key file {tmp_path / 'absent.pub'} "
                                            "does not exist$"):
        CommandVerifier.from_settings(missing, ledger)
    with pytest.raises(VerifierError, match="listed twice"):
        CommandVerifier.from_settings(CommandSettings(keys=(TrustedKey("k", pub1), TrustedKey("k", pub2))), ledger)


# -- fuzzing -----------------------------------------------------------------------------------------

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20)
field_names = st.sampled_from(["v", "id", "op", "target", "args", "iat", "exp", "sig", "kid"]) | st.text(max_size=6)


@FUZZ
@given(payload=st.binary(max_size=600))
def test_fuzz_arbitrary_bytes_only_ever_reject(verifier: CommandVerifier, payload: bytes) -> None:
    with pytest.raises(CommandRejected) as info:
        verifier.verify(payload)
    assert info.value.code != "internal", info.value.message


@FUZZ
@given(obj=st.dictionaries(field_names, json_values, max_size=10))
def test_fuzz_arbitrary_json_objects_only_ever_reject(verifier: CommandVerifier, obj: dict) -> None:
    with pytest.raises(CommandRejected) as info:
        verifier.verify(json.dumps(obj).encode())
    assert info.value.code != "internal", info.value.message


@FUZZ
@given(name=st.sampled_from(["v", "id", "op", "target", "args", "iat", "exp", "kid"]), value=json_values,
       drop=st.booleans())
def test_fuzz_any_change_to_a_signed_command_is_refused(verifier: CommandVerifier, name: str, value, drop: bool) -> None:
    signed = sign(command(id="c-fuzz"), KEY_A, "a")
    changed = dict(signed)
    if drop:
        changed.pop(name)
    else:
        changed[name] = value
    if changed == signed:
        return
    with pytest.raises(CommandRejected) as info:
        verifier.verify(json.dumps(changed).encode())
    assert info.value.code in ("bad_request", "bad_signature", "unknown_key"), info.value.code
    assert verifier.ledger.seen_count() == 0
