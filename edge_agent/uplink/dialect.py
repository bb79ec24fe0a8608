"""A platform dialect: how the uplink's rows, state and command results look on the wire, and how
commands arrive (CONTRACT section 8, ``mqtt.dialect``; docs/dialects.md).

Why a seam here: everything below the uplink (privacy, the record outbox, priorities, eviction,
store-and-forward, the audit) is the same in every dialect; only topics and payloads differ. The
uplink (``drain.py``) owns the paho client, the connection, the in-flight window and the acks; a
dialect only turns things into ``Message`` s and inbound messages into commands, and never calls
paho. Three implement it: ``edge`` (sections 3-4 and 6: ``edge_dialect.py``), ``thingsboard``
(the ThingsBoard gateway MQTT API: ``thingsboard.py``) and ``sparkplug`` (Eclipse Sparkplug B
3.0: ``sparkplug.py``).

Threads: ``births``, ``inbound`` and ``on_disconnect`` run on paho's network thread; ``data`` on
the drain thread; ``state`` on the state thread; ``reply`` on the result sender's thread.
Ordering: the uplink holds one publish lock across ``data`` and the hand-over of its messages to
paho, and ``Link.publish_ordered`` takes the same lock across its ``build`` and publish: so a
dialect that numbers its messages (Sparkplug's ``seq``) numbers them in ``data``/``build`` and
they leave in that order.

A batch (rows of one kind from one lane, ``lanes.Batch``) may become several messages (Sparkplug:
one DDATA per device); the uplink marks its rows sent only once every one of them is acked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence

__all__ = ["Message", "Inbound", "Dialect", "Link", "DIALECTS"]

DIALECTS = ("edge", "thingsboard", "sparkplug")


@dataclass(frozen=True)
class Message:
    """One MQTT message to publish."""

    topic: str
    payload: bytes
    retain: bool = False
    qos: int = 1
    extra: Mapping[str, Any] = field(default_factory=dict)  # further ``client.publish`` kwargs (MQTT 5 properties)


@dataclass(frozen=True)
class Inbound:
    """A command that arrived in a dialect's own form.

    ``signed``: the bytes of a command in our own signed format (CONTRACT section 6), verified as
    on ``R/cmd``; else ``unsigned``: ``{"id", "op", "target", "args"}`` built from the dialect's
    request, acted on only if ``commands.unsigned.<dialect>`` lists the op. ``reply``: what
    ``Dialect.reply`` needs to answer it (ThingsBoard's device and request id); ``None`` when the
    dialect answers nothing.
    """

    dialect: str
    signed: bytes | None = None
    unsigned: Mapping[str, Any] | None = None
    reply: Any = None


class Link(Protocol):
    """What a dialect may ask of the uplink (from any thread)."""

    def publish(self, messages: Sequence[Message]) -> bool:
        """Hand messages to paho now, QoS as each says, not tracked as rows; False when offline."""
        ...

    def publish_ordered(self, build: Callable[[], Sequence[Message]]) -> bool:
        """``build`` then publish under one lock, so numbered messages leave in their order."""
        ...

    def wake(self) -> None:
        """Something changed that lets data flow (a host came online): drain now."""
        ...


class Dialect(Protocol):
    name: str

    def will(self) -> Message | None:
        """The Last Will for the next connection attempt (asked before each), or None."""
        ...

    def subscriptions(self) -> Sequence[str]:
        """Topics to subscribe (QoS 1) on every connect."""
        ...

    def births(self, link: Link, state: Mapping[str, Any]) -> None:
        """On every connect, before any data: publish what announces the gateway (edge: the
        retained R/state birth; ThingsBoard: a connect per device and attributes; Sparkplug:
        NBIRTH and DBIRTHs once the primary host is online)."""
        ...

    def ready(self) -> bool:
        """Whether data may be published now (Sparkplug: births done, primary host online)."""
        ...

    def data(self, batch: Any, sent_ms: int) -> Sequence[Message]:
        """The messages carrying ``batch`` (``lanes.Batch``: ``lane`` (``backlog`` rows were
        buffered before this connection), ``kind`` ('record' | 'event'), ``rows`` each with
        ``id``, ``prio`` and ``body``, the edge wire dict of CONTRACT section 4, id included), in
        order. Called under the publish lock (module docstring)."""
        ...

    def state(self, state: Mapping[str, Any]) -> Sequence[Message]:
        """The gateway's periodic state (edge: retained R/state)."""
        ...

    def offline(self, stopped_ms: int) -> Sequence[Message]:
        """Published at a clean stop, before disconnecting (edge: retained offline state;
        Sparkplug: NDEATH)."""
        ...

    def inbound(self, topic: str, payload: bytes, link: Link) -> Inbound | None:
        """A message on a subscribed topic: a command to hand to the command service, or None
        when the dialect dealt with it (a Sparkplug STATE or Rebirth) or ignores it."""
        ...

    def reply(self, inbound: Inbound, result: Mapping[str, Any]) -> Message | None:
        """The answer to a command (our result dict, CONTRACT section 6)."""
        ...

    def on_disconnect(self) -> None:
        """The connection went (Sparkplug: the next connection needs a new bdSeq)."""
        ...
