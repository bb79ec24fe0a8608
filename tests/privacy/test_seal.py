"""Seal: round trips, the byte layout as documented, an independent implementation of the
docstring in both directions, refusal of wrong keys and tampering, platform key files, and the
``unseal`` tool."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from edge_agent.platform import (generate_platform_keypair, load_private_key, main, main_unseal, open_record,
                                 open_sealed, unseal_all)
from edge_agent.privacy.seal import PlatformKey, SealError, is_record_seal, is_sealed, seal, seal_record

from support.paths import ROOT

PRIVATE = X25519PrivateKey.generate()
KEY = PlatformKey(PRIVATE.public_key())


def raw(public: X25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@pytest.mark.parametrize("value", ["张三", "", 72, 36.6, -1, None, True, [1, "a", None], {"a": {"b": [1, 2.5]}},
                                   "x" * 4096, "11010519491231002X"])
def test_round_trip(value: Any) -> None:
    assert open_sealed(seal(value, KEY), PRIVATE) == value


def test_layout_and_kid() -> None:
    obj = seal({"hr_bpm": 131}, KEY)
    assert set(obj) == {"sealed", "kid"} and is_sealed(obj)
    assert obj["kid"] == hashlib.sha256(raw(PRIVATE.public_key())).hexdigest()[:16] == KEY.kid
    blob = base64.b64decode(obj["sealed"], validate=True)
    assert len(blob) == 32 + 12 + len(b'{"hr_bpm":131}') + 16


def _docstring_seal(value: Any, recipient: bytes, eph: X25519PrivateKey, nonce: bytes) -> dict[str, str]:
    """Sealing written from seal.py's docstring alone, with chosen randomness."""
    eph_raw = raw(eph.public_key())
    kid = hashlib.sha256(recipient).hexdigest()[:16]
    shared = eph.exchange(X25519PublicKey.from_public_bytes(recipient))
    key = HKDF(hashes.SHA256(), 32, salt=eph_raw + recipient, info=b"edge-agent seal v1").derive(shared)
    plaintext = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    blob = eph_raw + nonce + AESGCM(key).encrypt(nonce, plaintext, kid.encode("ascii"))
    return {"sealed": base64.b64encode(blob).decode("ascii"), "kid": kid}


def _docstring_open(obj: dict[str, str], private: X25519PrivateKey) -> Any:
    blob = base64.b64decode(obj["sealed"])
    recipient = raw(private.public_key())
    shared = private.exchange(X25519PublicKey.from_public_bytes(blob[:32]))
    key = HKDF(hashes.SHA256(), 32, salt=blob[:32] + recipient, info=b"edge-agent seal v1").derive(shared)
    return json.loads(AESGCM(key).decrypt(blob[32:44], blob[44:], obj["kid"].encode("ascii")))


def test_the_docstring_is_enough_to_interoperate() -> None:
    eph = X25519PrivateKey.from_private_bytes(bytes(range(32)))
    obj = _docstring_seal({"wearer": "张三", "hr": 131}, KEY.raw, eph, b"\x01" * 12)
    assert open_sealed(obj, PRIVATE) == {"wearer": "张三", "hr": 131}
    assert _docstring_open(seal(["p1:ABC", 22.817], KEY), PRIVATE) == ["p1:ABC", 22.817]


def test_fresh_ephemeral_key_and_nonce_per_value() -> None:
    blobs = [base64.b64decode(seal("same", KEY)["sealed"]) for _ in range(20)]
    assert len({b[:32] for b in blobs}) == 20 and len({b[32:44] for b in blobs}) == 20


def test_wrong_key_is_refused() -> None:
    obj = seal("secret", KEY)
    with pytest.raises(SealError, match="sealed for key"):
        open_sealed(obj, X25519PrivateKey.generate())
    other = X25519PrivateKey.generate()
    relabelled = {"sealed": obj["sealed"], "kid": PlatformKey(other.public_key()).kid}
    with pytest.raises(SealError, match="does not open"):
        open_sealed(relabelled, other)


@pytest.mark.parametrize("offset", [0, 31, 32, 43, 44, -17, -1], ids=["eph0", "eph31", "nonce0", "nonce11",
                                                                    "ct0", "tag0", "tag15"])
def test_tampering_is_refused(offset: int) -> None:
    obj = seal({"a": 1}, KEY)
    blob = bytearray(base64.b64decode(obj["sealed"]))
    blob[offset] ^= 0x01
    with pytest.raises(SealError):
        open_sealed({"sealed": base64.b64encode(bytes(blob)).decode(), "kid": obj["kid"]}, PRIVATE)


@pytest.mark.parametrize("bad", [
    {"sealed": "AAAA", "kid": KEY.kid},  # too short
    {"sealed": "not base64!", "kid": KEY.kid},
    {"sealed": base64.b64encode(b"\x00" * 80).decode(), "kid": KEY.kid},  # low-order point
    {"sealed": "AAAA"}, "a string", {"sealed": 1, "kid": KEY.kid},
])
def test_malformed_is_refused(bad: Any) -> None:
    with pytest.raises(SealError):
        open_sealed(bad, PRIVATE)


def test_platform_key_files(tmp_path: Path) -> None:
    b64 = tmp_path / "raw.pub"
    b64.write_text(base64.b64encode(KEY.raw).decode() + "\n")
    pem = tmp_path / "key.pem"
    pem.write_bytes(PRIVATE.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    assert PlatformKey.load(b64).kid == PlatformKey.load(pem).kid == KEY.kid
    assert repr(KEY) == f"PlatformKey(kid={KEY.kid})"
    ed = tmp_path / "ed.pem"
    ed.write_bytes(Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    short = tmp_path / "short.pub"
    short.write_text(base64.b64encode(b"x" * 31).decode())
    garbage = tmp_path / "garbage.pub"
    garbage.write_text("hello world")
    for path, message in ((ed, "X25519"), (short, "31 bytes"), (garbage, "base64"),
                          (tmp_path / "absent.pub", "does not exist")):
        with pytest.raises(SealError, match=message) as info:
            PlatformKey.load(path)
        assert str(path) in str(info.value)


def test_generate_platform_keypair(tmp_path: Path) -> None:
    private_path, public_path = generate_platform_keypair(tmp_path / "platform")
    assert stat.S_IMODE(os.stat(private_path).st_mode) == 0o600
    private = load_private_key(private_path)
    assert open_sealed(seal(7, PlatformKey.load(public_path)), private) == 7
    assert main(["keygen", str(tmp_path / "platform")]) == 1  # never overwrites


# -- a record's seal (wire v2): one per record, its points to seal together ------------------------
def test_a_record_seal_is_the_same_crypto_under_kid_and_ct() -> None:
    points = {"hr_bpm": 131, "spo2_pct": 97, "wearer_phone": "13812341234"}
    obj = seal_record(points, KEY)
    assert list(obj) == ["kid", "ct"] and is_record_seal(obj) and not is_sealed(obj) and obj["kid"] == KEY.kid
    plaintext = json.dumps(points, separators=(",", ":")).encode()
    assert len(base64.b64decode(obj["ct"], validate=True)) == 32 + 12 + len(plaintext) + 16
    # what the docstring says: open it as a field seal under its other key names
    assert _docstring_open({"sealed": obj["ct"], "kid": obj["kid"]}, PRIVATE) == points


def test_open_record_merges_the_sealed_points_into_vals() -> None:
    record = {"id": 7, "dev": "hub-1", "sub": "B-1", "ts": 1, "vals": {"battery_pct": 64}, "q": {"hr_bpm": "bad"},
              "sealed": seal_record({"hr_bpm": None, "spo2_pct": 97}, KEY), "clk": "unsynced"}
    opened = open_record(record, PRIVATE)
    assert opened == {"id": 7, "dev": "hub-1", "sub": "B-1", "ts": 1,
                      "vals": {"battery_pct": 64, "hr_bpm": None, "spo2_pct": 97}, "q": {"hr_bpm": "bad"},
                      "clk": "unsynced"}
    assert open_record({"dev": "d", "ts": 1, "vals": {"a": 1}}, PRIVATE) == {"dev": "d", "ts": 1, "vals": {"a": 1}}
    with pytest.raises(SealError, match="sealed for key"):
        open_record(record, X25519PrivateKey.generate())
    with pytest.raises(SealError, match="not a record seal"):
        open_record({**record, "sealed": seal({"a": 1}, KEY)}, PRIVATE)
    with pytest.raises(SealError, match="object of points"):
        open_record({**record, "sealed": seal_record([1, 2], KEY)}, PRIVATE)  # type: ignore[arg-type]


def test_unseal_opens_a_v2_telemetry_payload_record_by_record() -> None:
    payload = {"v": 2, "gw": "gw-1", "sent": 2, "recs": [
        {"id": 1, "dev": "hub-1", "ts": 1, "vals": {"battery_pct": 64}, "sealed": seal_record({"hr_bpm": 72}, KEY)},
        {"id": 2, "dev": "hub-1", "ts": 1, "vals": {}, "sealed": seal_record({"hr_bpm": 80}, PlatformKey(
            X25519PrivateKey.generate().public_key()))},
        {"id": 3, "dev": "gate-1", "ts": 1, "vals": {"phone": seal("13812341234", KEY)}},  # a migrated v1 row
    ]}
    failures: list[str] = []
    out = unseal_all(payload, PRIVATE, failures)
    assert out["recs"][0]["vals"] == {"battery_pct": 64, "hr_bpm": 72} and "sealed" not in out["recs"][0]
    assert out["recs"][1] == payload["recs"][1]  # another key's seal is kept, and named
    assert out["recs"][2]["vals"] == {"phone": "13812341234"}
    assert len(failures) == 1 and failures[0].startswith("$.recs[1].sealed: sealed for key")


def test_unseal_tool(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    private_path, public_path = generate_platform_keypair(tmp_path)
    key = PlatformKey.load(public_path)
    payload = {"v": 1, "events": [{"id": 5, "data": {"wearer": seal({"name": "张三"}, key), "hr": seal(131, key)}}]}
    (tmp_path / "p.json").write_text(json.dumps(payload))
    assert main_unseal(["--key", str(private_path), str(tmp_path / "p.json")]) == 0
    opened = json.loads(capsys.readouterr().out)
    assert opened["events"][0]["data"] == {"wearer": {"name": "张三"}, "hr": 131}

    payload["events"][0]["data"]["other"] = seal(1, KEY)  # for a key this tool does not hold
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(payload)))
    assert main_unseal(["--key", str(private_path)]) == 1
    out, err = capsys.readouterr()
    assert json.loads(out)["events"][0]["data"]["other"] == payload["events"][0]["data"]["other"]
    assert "$.events[0].data.other" in err and "sealed for key" in err


def test_unseal_as_a_module(tmp_path: Path) -> None:
    private_path, public_path = generate_platform_keypair(tmp_path)
    doc = json.dumps({"x": seal("胸闷", PlatformKey.load(public_path))})
    done = subprocess.run([sys.executable, "-m", "edge_agent.platform", "unseal", "--key", str(private_path)],
                          input=doc, capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"x": "胸闷"}
