"""The synthetic residents' own GB 11643 check character and plate provinces, written apart from the
gateway's scanner: they must agree with the standard's example and with the scanner, so that a
mistake in either shows here instead of cancelling out in the privacy tests."""

from __future__ import annotations

import random

from edge_agent.privacy import pii_scan
from edge_agent.sim import residents


def test_the_standards_example_check_character() -> None:
    assert residents.id_check_char("11010519491231002") == "X"  # GB 11643-1999's example: 11010519491231002X


def test_the_simulator_and_the_scanner_agree_on_every_check_character() -> None:
    rng = random.Random(11643)
    for _ in range(5000):
        first17 = "".join(str(rng.randrange(10)) for _ in range(17))
        assert residents.id_check_char(first17) == pii_scan.id_check_char(first17), first17


def test_every_generated_resident_passes_the_scanner() -> None:
    for person in residents.residents(200, seed=7):
        assert pii_scan.valid_resident_id(person.id_no), person.id_no
        assert person.plate[0] in pii_scan.PROVINCES
    assert sorted(residents.PROVINCES) == sorted(pii_scan.PROVINCES)
