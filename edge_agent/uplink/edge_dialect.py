"""The ``edge`` dialect (the default): CONTRACT sections 3-4 and 6, as the uplink spoke before
dialects existed (``dialect.py`` says what a dialect is).

- Data: one message per batch on ``R/telemetry`` or ``R/events``, ``{"v": 2, "gw", "sent",
  "recs" | "events": [bodies]}``, compact JSON or xz (``payload.Payloads``, ``mqtt.compress``).
  A message sent again after a reconnect carries the same bodies (the platform de-duplicates on
  ``(gw, id)``).
- State: the retained ``R/state`` (``state.py``): the birth on every connect, the same topic as
  the Last Will with ``{"online": false}``, and the offline state at a clean stop.
- Commands: ``R/cmd`` payloads are our signed format, verified as they are; results go to
  ``R/cmd/result``. Nothing is unsigned in this dialect.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from .dialect import Inbound, Link, Message
from .lanes import KINDS, WIRE_VERSION
from .payload import Payloads, encode

__all__ = ["EdgeDialect"]


class EdgeDialect:
    name = "edge"

    def __init__(self, *, gw: str, topics: Any, payloads: Payloads | None = None) -> None:
        self._gw = gw
        self.topics = topics  # uplink.Topics
        self._payloads = payloads or Payloads()

    def will(self) -> Message | None:
        return Message(self.topics.state, encode({"online": False, "gw": self._gw}), retain=True)

    def subscriptions(self) -> Sequence[str]:
        return (self.topics.cmd,)

    def births(self, link: Link, state: Mapping[str, Any]) -> None:
        link.publish(self.state(state))

    def ready(self) -> bool:
        return True

    def data(self, batch: Any, sent_ms: int) -> Sequence[Message]:
        topic_name, key = KINDS[batch.kind]
        payload, extra = self._payloads.encode({"v": WIRE_VERSION, "gw": self._gw, "sent": sent_ms,
                                                key: [r.body for r in batch.rows]})
        return (Message(getattr(self.topics, topic_name), payload, extra=extra),)

    def replay(self, kind: str, bodies: list[dict[str, Any]], cmd_id: str, sent_ms: int) -> Message:
        """``buffer.replay``'s message: the rows as they were, marked ``"replay": cmd_id``."""
        topic_name, key = KINDS[kind]
        payload, extra = self._payloads.encode({"v": WIRE_VERSION, "gw": self._gw, "sent": sent_ms,
                                                "replay": cmd_id, key: bodies})
        return Message(getattr(self.topics, topic_name), payload, extra=extra)

    def state(self, state: Mapping[str, Any]) -> Sequence[Message]:
        return (Message(self.topics.state, encode(dict(state)), retain=True),)

    def offline(self, stopped_ms: int) -> Sequence[Message]:
        return (Message(self.topics.state, encode({"online": False, "gw": self._gw, "stopped": stopped_ms}),
                        retain=True),)

    def inbound(self, topic: str, payload: bytes, link: Link) -> Inbound | None:
        return Inbound("edge", signed=bytes(payload)) if topic == self.topics.cmd else None

    def reply(self, inbound: Inbound | None, result: Mapping[str, Any]) -> Message | None:
        return Message(self.topics.cmd_result, encode(dict(result)))

    def on_disconnect(self) -> None:
        pass
