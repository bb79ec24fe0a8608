"""The simulators' own DL/T 645 frames (sim/frames645.py), checked against the standard: every
shared vector parsed and rebuilt byte for byte, signed values, the 1997 and address replies
worked out by hand; and the sim package imports none of the agent's drivers, so a codec bug
cannot cancel itself out between a driver and the simulator it is tested against."""

from __future__ import annotations

import ast
import json

import pytest

from edge_agent.drivers import dlt645_codec as driver
from edge_agent.sim import frames645 as f645

from support.paths import ROOT, TESTS

VECTORS = json.loads((TESTS / "vectors" / "dlt645.json").read_text(encoding="utf-8"))
METER = "123456789012"


def _split(hex_text: str) -> tuple[bytes, int]:
    """The frame from its first 68, and how many FE bytes came before it."""
    raw = bytes.fromhex(hex_text)
    body = raw.lstrip(b"\xfe")
    return body, len(raw) - len(body)


@pytest.mark.parametrize("case", VECTORS, ids=lambda c: c["what"])
def test_vector_parses_and_is_rebuilt_byte_exact(case: dict) -> None:
    body, wake = _split(case["hex"])
    raw = bytes.fromhex(case["hex"])
    assert f645.frame_length(body[:9]) is None  # header not in yet
    assert f645.frame_length(body[:10]) == len(body)
    frame = f645.parse(body)
    if "value" in case:
        di = int(case["di"], 16)
        assert (frame.address, frame.control, frame.is_reply) == (METER, 0x91, True)
        assert frame.data == di.to_bytes(4, "little") + f645.encode_value(di, case["value"])
        assert f645.reply(METER, di, case["value"], wake=wake) == raw
    elif "error" in case:
        assert (frame.address, frame.control, frame.data) == (METER, 0xD1, bytes([case["error"]]))
        assert f645.error_reply(METER, case["error"], wake=wake) == raw
    else:  # requests: the simulator parses them; rebuilding shows nothing was lost
        assert not frame.is_reply
        assert f645.build(frame.address, frame.control, frame.data, wake=wake) == raw


def test_vector_meanings() -> None:
    """What the vectors' descriptions say: DI0 first, the wildcard, the 1997 two-byte DI."""
    read = f645.parse(_split(VECTORS[0]["hex"])[0])
    assert (read.address, read.control, read.data) == (METER, 0x11, bytes([0x00, 0x00, 0x01, 0x00]))
    assert f645.parse(_split(VECTORS[2]["hex"])[0]).data[4:] == bytes([0x01, 0x22])  # 220.1 V: 2201 LSB first
    wildcard = f645.parse(_split(VECTORS[4]["hex"])[0])
    assert (wildcard.address, wildcard.control, wildcard.data) == (f645.WILDCARD, 0x13, b"")
    old = f645.parse(_split(VECTORS[5]["hex"])[0])
    assert (old.address, old.control, old.data) == (METER, 0x01, bytes([0x10, 0x90]))


def test_signed_values_carry_the_sign_in_the_top_bit() -> None:
    assert f645.encode_value(0x02020100, -5.123) == bytes.fromhex("235180")  # 005123 -> 23 51 00, sign set
    assert f645.encode_value(0x02020100, 5.123) == bytes.fromhex("235100")
    assert f645.encode_value(0x02060000, -0.95) == bytes.fromhex("5089")  # 0950 -> 50 09, sign set
    assert f645.encode_value(0x02030000, 12.3456) == bytes.fromhex("563412")
    with pytest.raises(ValueError, match="sign bit"):  # XX.XXXX: 80.0000 needs the sign bit
        f645.encode_value(0x02030000, 80.0)
    with pytest.raises(ValueError, match="negative"):  # voltages are unsigned
        f645.encode_value(0x02010100, -1.0)
    with pytest.raises(ValueError):  # XXXXXX.XX holds less than a million
        f645.encode_value(0x00010000, 1_000_000.0)
    with pytest.raises(ValueError, match="no format"):
        f645.encode_value(0x12345678, 1.0)


def test_the_1997_and_address_replies_worked_out_by_hand() -> None:
    # 81, L 06: DI 9010 sent 10 90, 12345.67 as 67 45 23 01, every byte +33; CS by hand
    assert f645.reply(METER, 0x9010, 12345.67, version=1997) == bytes.fromhex(
        "68 12 90 78 56 34 12 68 81 06 43 C3 9A 78 56 34 AF 16")
    assert f645.error_reply(METER, 0x02, version=1997)[8] == 0xC1
    # 93, L 06: the address bytes 12 90 78 56 34 12, +33 each
    assert f645.address_reply(METER, wake=2) == bytes.fromhex(
        "FE FE 68 12 90 78 56 34 12 68 93 06 45 C3 AB 89 67 45 07 16")


def test_damaged_frames_are_refused() -> None:
    good = bytes.fromhex(VECTORS[1]["hex"])
    not_bcd = bytearray(good)
    not_bcd[1] = 0x1B  # a nibble over 9 in the address, the checksum made to match
    not_bcd[-2] = sum(not_bcd[:-2]) & 0xFF
    for bad in (good[:-2] + bytes([good[-2] ^ 1]) + good[-1:],  # checksum
                good[:-1] + b"\x00",  # end byte
                good[:-1],  # short
                bytes(not_bcd)):
        with pytest.raises(ValueError):
            f645.parse(bad)
    with pytest.raises(ValueError):  # no second 68
        f645.frame_length(good[:7] + b"\x00" + good[8:])


def test_the_simulator_knows_every_di_the_driver_reads() -> None:
    assert ({di: (p.version, p.point) for di, p in f645.POINTS.items()}
            == {di: (f.version, f.point) for di, f in driver.DI_TABLE.items()})


def _imports(path, package: str) -> set[str]:
    """Every module ``path`` imports, at the top or inside a function, relative ones resolved."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - (node.level - 1)] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def test_the_sim_package_imports_no_driver() -> None:
    files = sorted((ROOT / "edge_agent" / "sim").rglob("*.py"))
    assert any(p.name == "meters.py" for p in files)
    wrong = sorted(f"{p.relative_to(ROOT)}: {m}" for p in files for m in _imports(p, "edge_agent.sim")
                   if m.split(".")[:2] == ["edge_agent", "drivers"] or m.split(".")[0] == "drivers")
    assert not wrong, "the simulators must build their own frames:\n" + "\n".join(wrong)
