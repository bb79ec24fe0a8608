"""Where the checkout and the tests' own data are, whichever folder a test sits in."""

from pathlib import Path

__all__ = ["ROOT", "TESTS"]

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent
