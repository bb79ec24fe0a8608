"""Waiting for something to happen, one way for every test: poll a predicate, fail naming it."""

from __future__ import annotations

import time
from typing import Any, Callable

__all__ = ["wait_until", "poll_until"]


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition", *,
               interval: float = 0.05) -> None:
    """Poll ``predicate`` every ``interval`` seconds until it is true; fail after ``timeout``
    seconds naming ``what`` was awaited."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def poll_until(reader: Any, predicate: Callable[[list], bool], timeout: float = 5.0) -> list:
    """Poll a device reader like the bus worker does (again at once) until ``predicate(collected)``;
    every poll's result."""
    got, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        got.append(reader.poll())
        if predicate(got):
            return got
    raise AssertionError(f"not seen within {timeout}s: {[(len(x.readings), x.events, x.errors) for x in got]}")
