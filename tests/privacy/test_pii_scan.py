"""The scanner: the vectors, 1,000 synthetic residents in many surroundings, the numbers it must
leave alone (meter addresses, timestamps, register dumps), and properties over arbitrary text."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.paths import TESTS
from support.residents import legacy_id, mobile, plate, resident_id, residents

from edge_agent.privacy.pii_scan import classify, find, id_check_char, scan, scrub, valid_resident_id

VECTORS = json.loads((TESTS / "vectors" / "pii.json").read_text(encoding="utf-8"))
RESIDENTS = residents(1000)
CONTEXTS = ("{}", "身份证号：{}。", "ID{}", "ID:{},", "({})", "联系人{}请回电", "“{}”", "{}\n", "tel={}&x=1",
            "a {} b", "[{}]", "号码 {} ；", "{}，", "备注:{}!", "\t{}\t")


def kinds(text: str) -> list[tuple[str, str]]:
    return [(h.kind, h.text) for h in find(text)]


def tag(kind: str, found: str) -> str:
    return f"<{kind}>"


@pytest.mark.parametrize("case", VECTORS["resident_ids"], ids=lambda c: c["id"])
def test_resident_id_vectors(case: dict) -> None:
    assert valid_resident_id(case["id"]) is case["valid"]
    assert kinds(f"证件 {case['id']} 号") == ([("id", case["id"])] if case["valid"] else [])
    if case["valid"]:
        assert id_check_char(case["id"][:17]) == case["id"][17]


def test_lower_case_check_character_is_an_id() -> None:
    assert kinds("11010519491231002x") == [("id", "11010519491231002x")]


@pytest.mark.parametrize("text", ["110105 19491231 002X", "110105-19491231-002X", "11010519491231002X"])
@pytest.mark.parametrize("context", ["证件 {} 号", "B-{}", "ID:{}X", "{}Xy"])
def test_ids_printed_6_8_4_or_glued_to_letters_are_found(text: str, context: str) -> None:
    assert kinds(context.format(text)) == [("id", text)]


def test_every_written_form_of_one_identifier_gives_one_pseudonym() -> None:
    from edge_agent.privacy.pseudonym import normalise
    for kind, forms in (("id", ["11010519491231002X", "110105 19491231 002x", "110105-19491231-002X"]),
                        ("phone", ["13812345678", "138.1234.5678", "+86 138-1234-5678"]),
                        ("plate", ["桂A12345", "桂A-12345", "桂a.12345", "桂 A12345", "桂A－12345"])):
        found = [next(iter(find(f"x {form} y"))) for form in forms]
        assert [h.kind for h in found] == [kind] * len(forms)
        assert len({normalise(h.text, kind) for h in found}) == 1, forms


def test_every_generated_identifier_is_found_in_every_context() -> None:
    rng = random.Random(7)
    for r in RESIDENTS:
        for kind, value in (("id", r.id_no), ("phone", r.mobile), ("plate", r.plate)):
            context = rng.choice(CONTEXTS)
            text = context.format(value)
            assert kinds(text) == [(kind, value)], text
            assert value not in scan(text, tag)


def test_free_text_addresses_lose_their_phone() -> None:
    for r in RESIDENTS:
        out = scan(r.address, tag)
        assert r.mobile not in out and out.endswith("联系电话<phone>")


def test_several_identifiers_in_one_text() -> None:
    for r in RESIDENTS[:200]:
        text = f"{r.name}，身份证{r.id_no}，手机{r.mobile}，车辆{r.plate}；地址{r.address}"
        out = scan(text, tag)
        assert out.count("<id>") == 1 and out.count("<phone>") == 2 and out.count("<plate>") == 1
        assert all(v not in out for v in (r.id_no, r.mobile, r.plate))


@pytest.mark.parametrize("text", [
    "13812341234", "+8613812341234", "+86 13812341234", "+86-138-1234-1234", "0086 138 1234 1234",
    "008613812341234", "8613812341234", "138 1234 1234", "138-1234-1234", "199 9999 0000", "138.1234.5678"])
def test_phone_formats(text: str) -> None:
    assert kinds(f"电话:{text}。") == [("phone", text)]


@pytest.mark.parametrize("text", ["苏D40000", "陕A12345D", "苏AD12345", "苏D·40000", "苏D 40000", "京A1234学", "粤B1234港",
                                  "桂A12345", "桂A-12345", "桂A－12345", "桂A.12345", "桂 A12345", "桂a12345", "苏d40000",
                                  "桂A-D12345"])
def test_plate_formats(text: str) -> None:
    assert kinds(f"车牌{text}，") == [("plate", text)]


@pytest.mark.parametrize("text", [
    "110101199003077777",  # pii.json: wrong check character
    "11010519491231002X3",  # followed by a digit
    "911010519491231002X",  # preceded by a digit (19 characters)
    "1732380000123",  # ms timestamp: 13 digits starting 17
    "ts=1732380000123;", "1732380000",  # s timestamp
    "123456789012", "meter 000012345678 ok",  # 12-digit DL/T 645 meter addresses
    "AAAAAAAAAAAA", "999999999999",
    "138123412345", "1381234123", "12812341234",  # 12 digits, 10 digits, second digit 2
    "01 03 04 00 0A 00 0B 1C 2D",  # Modbus RTU frame, hex bytes
    "regs [0, 1381, 2341, 234, 65535]", "holding 0x0004=1381 0x0005=2341",
    "0x0103 0x1381 0x2341 0x0000", "68 12 34 56 78 90 12 68 11 04 33 33 34 33 B3 16",
    "000000000000000000000", "voltage 220.1 V, current 13.812 A", "2024-11-23 12:34:56",
    "苏D4000012", "京ABCDEF", "新MODEL3x", "新model3", "苏dab12c",
])
def test_negatives(text: str) -> None:
    assert kinds(text) == []
    assert scan(text, tag) == text


def test_wrong_check_character_never_passes() -> None:
    rng = random.Random(11)
    for _ in range(500):
        good = resident_id(rng)
        for wrong in "0123456789X":
            if wrong != good[17]:
                assert not valid_resident_id(good[:17] + wrong)
                assert kinds(f"证件 {good[:17] + wrong}") == []


def test_a_valid_id_inside_a_longer_digit_run_is_not_taken_out() -> None:
    rng = random.Random(12)
    for _ in range(300):
        inner = resident_id(rng).replace("X", "0")
        assert all(k != "id" or len(t) != 18 for k, t in kinds(f"9{inner}9"))
        assert kinds(f"9{inner}9") == []


def test_legacy_ids_need_a_real_birth_date_and_province() -> None:
    rng = random.Random(13)
    for _ in range(200):
        good = legacy_id(rng)
        assert valid_resident_id(good)
        assert not valid_resident_id(good[:8] + "13" + good[10:])  # month 13
        assert not valid_resident_id("99" + good[2:])  # no province 99


def test_full_width_characters_are_found_and_kept_as_written() -> None:
    text = "电话：１３８１２３４１２３４，证件１１０１０５１９４９１２３１００２Ｘ，车苏Ｄ４００００"
    assert [k for k, _ in kinds(text)] == ["phone", "id", "plate"]
    assert scan(text, tag) == "电话：<phone>，证件<id>，车<plate>"


def test_classify_whole_values() -> None:
    assert classify("11010519491231002X") == "id"
    assert classify(" 13812341234 ") == "phone"
    assert classify("苏D40000") == "plate"
    assert classify("B-00017") is None and classify("电话13812341234") is None


def test_scrub_for_logs() -> None:
    line = ("frame b'{\"t\":\"sos\",\"band\":\"B-1\"}' from 01 03 04 00 0a 00 0b 1c 2d 3e 4f "
            "id 11010519491231002X tel 138-1234-1234 car 苏D40000 raw 0103040A000B1C2D3E4F5A")
    out = scrub(line)
    assert out == "frame <bytes> from <bytes> id <id> tel <phone> car <plate> raw <bytes>"
    assert scrub("crc 0A0B0C0D") == "crc 0A0B0C0D"  # 4 bytes: short runs stay readable
    assert scrub(r"got \x01\x03\x04\x00\x0a\x00\x0b\x1c\x2d end") == "got <bytes> end"


# -- properties ----------------------------------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(st.text())
def test_scan_never_raises_on_arbitrary_text(text: str) -> None:
    out = scan(text, tag)
    assert isinstance(out, str) and isinstance(scrub(text), str)
    for hit in find(text):
        assert text[hit.start:hit.end] == hit.text


_FILLER = st.text(alphabet=st.characters(blacklist_categories=("Nd", "Cs"),
                                         blacklist_characters="0123456789"), min_size=0, max_size=12)
_SAFE_EDGE = st.sampled_from([" ", "，", "。", ":", "(", ")", "、", "\n", "号", "的", "-", "!"])


@st.composite
def _identifier(draw: st.DrawFn) -> str:
    rng = random.Random(draw(st.integers(0, 2**32)))
    maker = draw(st.sampled_from([resident_id, legacy_id, mobile, plate]))
    return maker(rng)


@st.composite
def _document(draw: st.DrawFn) -> tuple[str, list[str]]:
    values = draw(st.lists(_identifier(), min_size=1, max_size=5))
    parts = []
    for v in values:
        parts += [draw(_SAFE_EDGE), draw(_FILLER), draw(_SAFE_EDGE), v]
    parts.append(draw(_SAFE_EDGE))
    return "".join(parts), values


@settings(max_examples=300, deadline=None)
@given(_document())
def test_no_generated_identifier_survives(doc: tuple[str, list[str]]) -> None:
    text, values = doc
    out = scan(text, tag)
    for v in values:
        assert v not in out, (text, out)
