"""Synthetic residents for the simulators and the privacy tests: seeded, random, never real.

Every value has the *format* of the real thing (valid GB 11643 check characters, real-format
region codes, mobile prefixes in use, plates of both lengths) so the scanner is tested on what
the field will send, but the values themselves are drawn at random: no real person's data
appears in the repository.

It lives in the package (not only under tests/) because the shipped simulators (``simulate hub``,
``simulate gate``) give their bands and vehicles these people; ``tests/support/residents.py``
re-exports it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, timedelta

__all__ = ["Resident", "residents", "resident_id", "legacy_id", "mobile", "plate", "name", "SEPARATORS",
           "PROVINCES", "id_check_char"]

# The provinces' one-character abbreviations on licence plates, in GB/T 2260 order. Written here,
# not taken from the gateway's scanner, so that a mistake there cannot cancel out in the tests.
PROVINCES = "京津沪渝冀晋蒙辽吉黑苏浙皖闽赣鲁豫鄂湘粤桂琼川贵云藏陕甘青宁新"


def id_check_char(first17: str) -> str:
    """GB 11643's check character: ISO 7064 MOD 11-2 over the first 17 digits, weights 2^(17-i) mod 11,
    the value (12 - sum mod 11) mod 11 written as a digit or X for 10."""
    total = sum(int(d) * pow(2, 17 - i, 11) for i, d in enumerate(first17))
    value = (12 - total % 11) % 11
    return "X" if value == 10 else str(value)


# Real-format 6-digit administrative codes (GB/T 2260), as found on ID cards.
REGIONS = ("110105", "110108", "310104", "440106", "440305", "450102", "450103", "450107", "320102",
           "330106", "510107", "610113", "130503", "370202", "420106", "500103")
MOBILE_PREFIXES = ("130", "133", "135", "138", "139", "147", "150", "152", "158", "166", "171", "177",
                   "180", "186", "189", "191", "198", "199")
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐韦蒙覃"
COMPOUND_SURNAMES = ("欧阳", "司马", "诸葛", "上官")
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰"
PLATE_LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"  # plates skip I and O
PLATE_CHARS = PLATE_LETTERS + "0123456789"
SEPARATORS = ("", " ", "-")  # phone groupings 3-4-4


@dataclass(frozen=True)
class Resident:
    id_no: str
    name: str
    mobile: str
    plate: str
    address: str
    lat: float
    lon: float
    born: date


def _birth(rng: random.Random, first: int = 1930, last: int = 2010) -> date:
    start = date(first, 1, 1)
    return start + timedelta(days=rng.randrange((date(last, 12, 31) - start).days + 1))


def resident_id(rng: random.Random, born: date | None = None) -> str:
    """An 18-character ID with a correct check character."""
    born = born or _birth(rng)
    first17 = f"{rng.choice(REGIONS)}{born:%Y%m%d}{rng.randrange(1000):03d}"
    return first17 + id_check_char(first17)


def legacy_id(rng: random.Random, born: date | None = None) -> str:
    """A 15-digit pre-1999 ID: region, YYMMDD (19YY), 3-digit sequence."""
    born = born or _birth(rng, 1930, 1984)
    return f"{rng.choice(REGIONS)}{born:%y%m%d}{rng.randrange(1000):03d}"


def mobile(rng: random.Random) -> str:
    return rng.choice(MOBILE_PREFIXES) + f"{rng.randrange(10**8):08d}"


def plate(rng: random.Random, new_energy: bool | None = None) -> str:
    """Ordinary 7-character plate, or an 8-character new-energy one (D/F first or last)."""
    if new_energy is None:
        new_energy = rng.random() < 0.3
    head = rng.choice(PROVINCES) + rng.choice(PLATE_LETTERS)
    if new_energy:
        digits = f"{rng.randrange(10**5):05d}"
        return head + (rng.choice("DF") + digits if rng.random() < 0.5 else digits + rng.choice("DF"))
    body = [rng.choice("0123456789") for _ in range(5)]
    for i in rng.sample(range(5), rng.randrange(3)):  # up to two letters
        body[i] = rng.choice(PLATE_LETTERS)
    if not any(c.isdigit() for c in body):
        body[-1] = "8"
    return head + "".join(body)


def name(rng: random.Random) -> str:
    """A Chinese name: a common (sometimes compound) surname and one or two given characters."""
    surname = rng.choice(COMPOUND_SURNAMES) if rng.random() < 0.1 else rng.choice(SURNAMES)
    return surname + "".join(rng.choice(GIVEN) for _ in range(rng.randint(1, 2)))


def residents(count: int, seed: int = 20241123) -> list[Resident]:
    """``count`` residents, the same ones for the same seed; ~15% carry a legacy 15-digit ID."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        legacy = rng.random() < 0.15
        born = _birth(rng, 1930, 1984 if legacy else 2010)
        phone = mobile(rng)
        address = (f"{rng.randint(1, 30)}栋{rng.randint(1, 6)}单元{rng.randint(1, 33)}{rng.randint(1, 4):02d}室, "
                   f"联系电话{phone}")
        out.append(Resident(
            id_no=legacy_id(rng, born) if legacy else resident_id(rng, born), name=name(rng), mobile=phone,
            plate=plate(rng), address=address, lat=round(22.8 + rng.uniform(-0.05, 0.05), 6),
            lon=round(108.3 + rng.uniform(-0.05, 0.05), 6), born=born))
    return out
