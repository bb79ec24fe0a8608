"""What is done to one identifier: normalise it, pseudonymize it, mask it, read an age from it.

Pseudonyms: the same person gives the same token under one key, and nobody without the key
can go from a token back to the person.

``p{version}:{token}``, where token = base32 (RFC 4648 alphabet, upper case, no ``=`` padding)
of the first 16 bytes of HMAC-SHA256(site key of that version, normalised value), UTF-8.

Why keyed: resident IDs, phones and plates come from small spaces (a phone is ~10^10 values);
a plain hash of one is reversed by enumerating them all. With a secret per-site key the
platform can join records of one person but cannot enumerate, and a leaked payload names nobody.

Why 128 bits: a token only has to be collision-free and unguessable. Birthday collisions among
even 10^12 distinct values at 128 bits are ~10^-15, and guessing a token without the key is
2^-128 per try, the same margin as AES-128; the other 128 bits of the MAC buy nothing but wire
bytes (26 characters instead of 52). The key, not the length, is what stops enumeration.

Why normalise: one phone arrives as ``+86 138-1234-1234`` from a hub and ``13812341234`` from a
gate; both must give one token. Full-width characters are folded to ASCII first
(``pii_scan.fold``). Then, by what the value is (``kind``, or guessed from its shape):

- ``id`` (resident ID): spaces and dashes removed (``110105 19491231 002x``), upper case.
- ``phone``: spaces, dashes, dots and brackets removed, then a ``+86`` / ``0086`` / ``86`` country prefix.
- ``plate``: upper case, spaces and separators (``·``, ``•``, ``-``, ``.``) removed.
- anything else (card UID, IMEI, wearer id, numbers): ``str(value).strip()``.

Key rotation: new data uses the ring's active version; tokens of an older version stay valid
for what was already sent, and the version in the prefix tells the platform which ones it
must not join across.

Display masks (``mask``), chosen to match what Chinese services commonly show:

- phone: first 3 and last 4 digits, ``138****1234``;
- resident ID: the 6-digit region and the last 4 (15-digit: last 3) around stars, so the birth
  date is hidden: ``110105********002X``;
- plate: province, letter and first character, stars, last character: ``苏D4***0``, ``陕A1****D``;
- name (``name=True``): the surname and a star per other character: ``张*``, ``欧阳**`` (a
  common compound surname counts as the surname; a one-character name is ``*``);
- anything else: first and last character around stars (``04A1B2C3`` -> ``0******3``); one or
  two characters keep only the first (``*`` for one).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from datetime import date
from typing import TYPE_CHECKING, Any

from .pii_scan import PROVINCES, classify, fold, valid_resident_id

if TYPE_CHECKING:
    from .keys import KeyRing

__all__ = ["TOKEN_BYTES", "normalise", "kind_of", "token", "pseudonymize", "mask", "surname", "age_band",
           "birth_date", "COMPOUND_SURNAMES"]

TOKEN_BYTES = 16
_PHONE = re.compile(r"(?:\+86|0086|86)?(1[3-9]\d{9})")
_PLATE_SEPARATORS = str.maketrans("", "", " ·•-.\t")
COMPOUND_SURNAMES = frozenset("欧阳 司马 诸葛 上官 东方 皇甫 尉迟 公孙 慕容 长孙 宇文 司徒 夏侯 轩辕 令狐 端木 独孤 "
                              "南宫 西门 百里 呼延 澹台 公冶 宗政 濮阳 淳于 单于 太叔 申屠 闻人 万俟 赫连 钟离".split())
_FIELD_HINTS = (("phone", ("phone", "mobile", "tel")), ("plate", ("plate",)), ("id", ("id_no", "id_card", "idcard")))


def kind_of(value: Any, field: str | None = None) -> str | None:
    """``"id"``, ``"phone"``, ``"plate"`` when ``value`` (all of it) is one, else ``None``.

    The shape decides; the field name (``phone``, ``plate``, ``id_no``...) is only a hint used
    when the shape is not conclusive (a phone typed with brackets, a plate with a dash).
    """
    if not isinstance(value, str):
        return None
    text = fold(value).strip()
    if valid_resident_id(text):
        return "id"
    if _PHONE.fullmatch(re.sub(r"[\s\-().]", "", text)):
        return "phone"
    if text and text[0] in PROVINCES and classify(text.translate(_PLATE_SEPARATORS).upper()) == "plate":
        return "plate"
    kind = classify(text)
    if kind is None and field:
        name = field.lower()
        for hinted, words in _FIELD_HINTS:
            if any(w in name for w in words):
                return hinted
    return kind


def normalise(value: Any, kind: str | None = None) -> str:
    """The canonical text of an identifier, per the rules in the module docstring."""
    text = fold(str(value)).strip()
    if kind is None:
        kind = kind_of(text)
    if kind == "id":
        return re.sub(r"[\s-]", "", text).upper()
    if kind == "phone":
        digits = re.sub(r"[\s\-().]", "", text)
        m = _PHONE.fullmatch(digits)
        return m.group(1) if m else digits
    if kind == "plate":
        return text.translate(_PLATE_SEPARATORS).upper()
    return text


def token(key: bytes, text: str) -> str:
    """base32 (no padding) of HMAC-SHA256(key, text) truncated to ``TOKEN_BYTES``: 26 characters."""
    mac = hmac.new(key, text.encode("utf-8"), hashlib.sha256).digest()[:TOKEN_BYTES]
    return base64.b32encode(mac).decode("ascii").rstrip("=")


def pseudonymize(value: Any, keys: "KeyRing", kind: str | None = None, *, version: int | None = None) -> str:
    """``p{version}:{token}`` of ``value`` under the ring's active key (or ``version``)."""
    v = keys.active if version is None else version
    return f"p{v}:{token(keys.key(v), normalise(value, kind))}"


def age_band(born: date, today: date) -> str | None:
    """Ten-year band of the age at ``today`` (``"70-79"``; ``"100+"``); None for a birth in the future."""
    age = today.year - born.year - ((today.month, today.day) < (born.month, born.day))
    if age < 0:
        return None
    return "100+" if age >= 100 else f"{age // 10 * 10}-{age // 10 * 10 + 9}"


def birth_date(id_number: str) -> date | None:
    """The birth date inside an 18- or 15-digit (19YY) resident ID number; None if it is not a date."""
    s = id_number.strip()
    try:
        if len(s) == 18:
            return date(int(s[6:10]), int(s[10:12]), int(s[12:14]))
        return date(1900 + int(s[6:8]), int(s[8:10]), int(s[10:12]))
    except ValueError:
        return None


def _stars(text: str, keep_head: int, keep_tail: int) -> str:
    if len(text) <= keep_head + keep_tail:
        return text[:1] + "*" * (len(text) - 1) if len(text) > 1 else "*"
    return text[:keep_head] + "*" * (len(text) - keep_head - keep_tail) + text[len(text) - keep_tail:]


def mask(text: str, kind: str | None = None, *, name: bool = False) -> str:
    """Display mask of one value (rules in the module docstring); ``kind`` as ``kind_of`` returns it."""
    kind = kind or kind_of(text)
    if name:
        text = text.strip()
        return _stars(text, len(surname(text)), 0)
    if kind == "phone":
        return _stars(normalise(text, "phone"), 3, 4)
    if kind == "id":
        s = normalise(text, "id")
        return _stars(s, 6, 4 if len(s) == 18 else 3)
    if kind == "plate":
        return _stars(normalise(text, "plate"), 3, 1)
    return _stars(text, 1, 1)


def surname(name: str) -> str:
    """The family name: a common two-character one (``欧阳``) when the name is longer, else the first character."""
    name = name.strip()
    return name[:2] if len(name) > 2 and name[:2] in COMPOUND_SURNAMES else name[:1]
