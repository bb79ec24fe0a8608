"""A stand-in for the uplink as a dialect sees it (``uplink.dialect.Link``): what it publishes,
in order, and how often it asked to be woken. For the dialects' unit tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

from edge_agent.uplink.dialect import Message

__all__ = ["FakeLink"]


@dataclass
class FakeLink:
    published: list[Message] = field(default_factory=list)
    wakes: int = 0

    def publish(self, messages: Sequence[Message]) -> bool:
        self.published.extend(messages)
        return True

    def publish_ordered(self, build: Callable[[], Sequence[Message]]) -> bool:
        return self.publish(build())

    def wake(self) -> None:
        self.wakes += 1
