"""``platform.decode_payload``: a telemetry or events payload read the same whichever way the
gateway sent it (JSON, or with ``mqtt.compress`` the xz stream the uplink makes), told apart by
the first byte; anything else, a damaged or truncated stream, or one inflating past the limit,
is a ``PayloadError`` naming why. ``unseal`` takes either form. (Seals: tests/privacy.)"""

from __future__ import annotations

import json
import lzma
from pathlib import Path

import pytest

from edge_agent.platform import PayloadError, decode_payload, generate_platform_keypair, main_unseal
from edge_agent.uplink.payload import Payloads

DOC = {"v": 2, "gw": "gw-001", "sent": 1732380000123,
       "recs": [{"id": 1000 + i, "dev": "meter-7", "ts": 1732380000000 + i * 1000,
                 "vals": {"energy_kWh": 1234.56 + i, "power_kW": None}, "q": {"power_kW": "bad"}} for i in range(40)]}
PLAIN, _ = Payloads().encode(DOC)
PACKED, _ = Payloads(compress=True).encode(DOC)


def test_json_and_its_xz_stream_decode_to_the_same_object() -> None:
    assert PLAIN[:1] == b"{" and PACKED[:6] == b"\xfd7zXZ\x00" and len(PACKED) < len(PLAIN)
    assert decode_payload(PLAIN) == decode_payload(PACKED) == DOC
    assert decode_payload(bytearray(PACKED)) == decode_payload(memoryview(PLAIN)) == DOC  # as paho may hand them


@pytest.mark.parametrize("data, why", [
    (b"", "an empty payload"),
    (b"[1, 2]", "neither JSON nor xz (first byte 0x5b)"),
    (b" {}", "neither JSON nor xz (first byte 0x20)"),
    (b"\x78\x9c" + b"zlib", "neither JSON nor xz (first byte 0x78)"),  # zlib is not what gateways send
    (PACKED[:-20], "cut short"),
    (PACKED[:12] + bytes(len(PACKED) - 12), "does not decompress"),
    (PACKED + b"{}", "2 byte(s) after the xz stream"),
    (b'{"a": 1', "not valid UTF-8 JSON"),
    (b"{\xff}", "not valid UTF-8 JSON"),
    (lzma.compress(b"[1, 2]", format=lzma.FORMAT_XZ), "a JSON list, not an object"),
])
def test_anything_else_is_refused_with_its_reason(data: bytes, why: str) -> None:
    with pytest.raises(PayloadError, match=why.replace("(", r"\(").replace(")", r"\)")):
        decode_payload(data)


def test_a_stream_inflating_past_the_limit_is_refused() -> None:
    bomb = lzma.compress(b'{"pad": "' + b" " * 5_000_000 + b'"}', format=lzma.FORMAT_XZ)
    assert len(bomb) < 2000
    with pytest.raises(PayloadError, match="more than 1,000,000 bytes"):
        decode_payload(bomb, max_bytes=1_000_000)
    assert decode_payload(bomb)["pad"] == " " * 5_000_000  # the default limit, 64 MiB, lets it through


def test_unseal_reads_a_compressed_payload_as_it_came_off_the_wire(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    key, _ = generate_platform_keypair(tmp_path / "keys")
    (tmp_path / "msg.xz").write_bytes(PACKED)
    assert main_unseal(["--key", str(key), str(tmp_path / "msg.xz")]) == 0
    assert json.loads(capsys.readouterr().out) == DOC


def test_the_platform_api_is_one_import() -> None:
    """Issue 16: ``edge_agent.platform`` decodes, de-duplicates, tracks gaps, unseals and verifies
    results, all from one import."""
    from edge_agent.platform import Tracker, load_private_key, new_command, open_record, verify_result

    assert callable(load_private_key) and callable(open_record) and callable(new_command) and callable(verify_result)
    tracker = Tracker("edge/v1")
    body = {"v": 2, "gw": "gw-1", "sent": 1, "recs": [{"id": i, "dev": "d", "ts": 1, "vals": {"x": i}} for i in (1, 2, 4)]}
    payload = json.dumps(body).encode()
    assert [r["id"] for r in tracker.feed("edge/v1/s/gw-1/telemetry", payload)] == [1, 2, 4]
    assert tracker.feed("edge/v1/s/gw-1/telemetry", payload) == []  # duplicates are gone
    (gw,) = tracker.snapshot()
    assert (gw["missing"], gw["duplicates"], gw["gaps"]) == (1, 3, [[3, 3, False]])
