"""A wire-timed meter line for driver tests: our meter simulators behind a pseudo-terminal pair
at 2400 baud, 11 bits a byte (8E1, as DL/T 645 and CJ/T 188 meters use)."""

from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from edge_agent.sim.byteserver import ByteServer
from edge_agent.sim.ptypair import PtyPair


@contextmanager
def meter_lines(bus_class: Callable[[Any], Any]) -> Iterator[Callable[..., tuple[str, Any]]]:
    """``serve(*meters) -> (path for the agent, bus)``: each call a new line; all closed at exit."""
    started: list = []

    def serve(*meters: Any) -> tuple[str, Any]:
        pair = PtyPair(baud=2400, bits_per_byte=11)
        bus = bus_class(meters)
        server = ByteServer(bus)
        server.serve_serial(pair.b, baud=2400)
        started.extend([server, pair])
        return pair.a, bus
    try:
        yield serve
    finally:
        for thing in started:
            thing.stop() if isinstance(thing, ByteServer) else thing.close()


def said(expect: str | re.Pattern, error: str) -> bool:
    """An error text says what a case expects: a substring, or a pattern's match."""
    return bool(expect.search(error)) if isinstance(expect, re.Pattern) else expect in error
