"""The uplink's command channel: ``R/cmd`` in, results on ``R/cmd/result`` and replays out (or
what the uplink's dialect says instead: ``dialect.py``).

A part of the uplink (``uplink.py`` owns the paho client and the connection; it calls in here
from its callbacks). Issue 6, ``docs/commands.md``.

``CommandChannel``:

- ``R/cmd`` is subscribed at QoS 1 on every connect (the session is clean: a reconnect must
  subscribe again); a refused subscription is logged as an error (a broker ACL).
- Each message on exactly ``R/cmd`` is handed, as bytes, to ``on_command`` on paho's network
  thread. paho sends the PUBACK when the callback returns, so ``on_command`` must only queue
  (``commands.CommandService.submit``); whatever it raises is logged, never passed to paho.
- ``publish_replay`` publishes buffered rows again for ``buffer.replay``, marked
  ``"replay": "<command id>"``, and waits for the PUBACK; the caller paces it on its own thread.
  A replay is a data message: xz-compressed with ``mqtt.compress`` as the drain's (``payload``).

``ResultSender``: command results, few but each awaited by the platform, are kept until the
broker has acknowledged them:

- ``put`` appends to a bounded queue (``max_pending``, 100 by default). While the broker is
  connected and the queue is full it waits (up to ``ack_timeout_s``) for the sender to make
  room: a flood of commands then slows the command worker, and the excess is dropped, counted
  and audited at the command queue's entrance instead of losing answers to handled commands.
  While disconnected (or when the wait runs out) it returns at once and, when the queue is
  full, the *oldest* result is dropped and counted: the newest are the ones a platform is
  still waiting for.
- One thread (``uplink-results``) sends the head of the queue (QoS 1, not retained), waits for
  its PUBACK, then takes the next. While the uplink is disconnected the results wait; ``wake()``
  (called on every connect) sends them.
- A result whose PUBACK does not come (the connection died meanwhile: the uplink drops paho's
  unacked copies at the next CONNACK) is sent again. A result may therefore arrive twice; the
  platform matches results to commands by ``id``.

paho facts relied on (2.2): ``publish`` is thread-safe and returns an ``MQTTMessageInfo`` whose
``wait_for_publish(timeout)`` returns when the PUBACK came (QoS 1) or the timeout passed, and
raises for a message that was never queued. An ack on the uplink's own ``on_publish`` for a mid
it does not know is ignored there, so these messages do not disturb the drain's accounting.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any, Callable

from paho.mqtt.enums import MQTTErrorCode

from .dialect import Link, Message
from .edge_dialect import EdgeDialect
from .lanes import Batch
from .payload import Payloads, encode
from ..model import Priority

__all__ = ["CommandChannel", "ResultSender", "RESULTS_MAX", "encode"]

log = logging.getLogger("edge_agent.uplink")

RESULTS_MAX = 100  # results kept while the broker is away
ACK_TIMEOUT_S = 10.0  # a result not acknowledged within this is sent again
RETRY_S = 1.0  # after a failed send, while connected
SLICE_S = 0.2  # waits are cut in slices so that stop() is honoured quickly
REPLAY_ACK_S = 10.0  # publish_replay: how long to wait for the PUBACK of one message


def _acked(info: Any, until: float, keep_waiting: Callable[[], bool]) -> bool:
    """Wait, in slices, for the PUBACK of ``info`` until ``until`` or ``keep_waiting()`` is False."""
    while True:
        try:
            info.wait_for_publish(SLICE_S)
            if info.is_published():
                return True
        except (ValueError, RuntimeError):  # never queued, or the connection went
            return False
        if time.monotonic() >= until or not keep_waiting():
            return False


class ResultSender:
    """Sends queued results in order, each until acknowledged (module docstring)."""

    def __init__(self, publish: Callable[[Message], Any | None], *, session: Callable[[], int | None] = lambda: 0,
                 max_pending: int = RESULTS_MAX, ack_timeout_s: float = ACK_TIMEOUT_S) -> None:
        self._publish = publish
        self._session = session
        self._ack_timeout = ack_timeout_s
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)  # notified when the sender takes one off
        self._queue: deque[Message] = deque()
        self._max = max(1, max_pending)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._deadline: float | None = None  # set by close(): flush until then, then end
        self._thread: threading.Thread | None = None
        self.sent = 0
        self.dropped = 0
        self._dropping = False

    # -- what the uplink calls ----------------------------------------------------------------
    def put(self, result: Message | dict[str, Any]) -> None:
        """Queue one result (a message, or a result dict for ``R/cmd/result``: the dialect's
        ``reply`` makes the message). Waits for room only while connected and full (module
        docstring); otherwise returns at once."""
        payload = result if isinstance(result, Message) else Message("", encode(result))
        until = time.monotonic() + self._ack_timeout
        while True:
            # connected: the sender frees a place within an ack's time (asked outside our lock:
            # the uplink's own lock is taken there)
            may_wait = (self._thread is not None and self._session() is not None and not self._stop.is_set()
                        and self._deadline is None and time.monotonic() < until)
            with self._lock:
                if len(self._queue) < self._max or not may_wait:
                    break
                self._room.wait(SLICE_S)
        with self._lock:
            dropped = None
            if len(self._queue) >= self._max:
                self._queue.popleft()
                self.dropped += 1
                dropped, self._dropping = not self._dropping, True
            self._queue.append(payload)
        if dropped is not None:
            log.log(logging.WARNING if dropped else logging.DEBUG,
                    "uplink: %d command results wait to be sent; dropping the oldest (%d dropped so far)",
                    self._max, self.dropped)
        self._wake.set()

    def wake(self) -> None:
        """Connected (again): send what waits."""
        self._wake.set()

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    def start(self) -> None:
        self._stop.clear()
        self._deadline = None
        self._thread = threading.Thread(target=self._run, name="uplink-results", daemon=True)
        self._thread.start()

    def close(self, grace_s: float) -> None:
        """Keep sending for at most ``grace_s`` more (while there is something to send), then end."""
        self._deadline = time.monotonic() + max(0.0, grace_s)
        self._wake.set()

    def join(self, timeout: float) -> None:
        self._stop.set()  # after close()'s grace (or at once, without close())
        self._wake.set()
        if self._thread is not None:
            self._thread.join(max(0.0, timeout))
            if self._thread.is_alive():
                log.warning("uplink: the results thread did not stop within %.1f s", timeout)
            self._thread = None
        with self._lock:
            left = len(self._queue)
        if left:
            log.warning("uplink: %d command result(s) not sent before the stop", left)

    # -- the thread ---------------------------------------------------------------------------
    def _ending(self) -> bool:
        if self._stop.is_set():
            return True
        deadline = self._deadline
        if deadline is None:
            return False
        with self._lock:
            empty = not self._queue
        return empty or time.monotonic() >= deadline

    def _run(self) -> None:
        while not self._ending():
            with self._lock:
                payload = self._queue[0] if self._queue else None
            if payload is None:
                self._wait(1.0)
                continue
            try:
                acked = self._send(payload)
            except Exception as exc:  # never let the thread die; the result stays queued
                log.error("uplink: publishing a command result failed (%s: %s)", type(exc).__name__, exc)
                acked = False
            if acked:
                with self._lock:
                    if self._queue and self._queue[0] is payload:  # not dropped meanwhile
                        self._queue.popleft()
                        self._room.notify()
                    self.sent += 1
                    if not self._queue:
                        self._dropping = False
            else:
                self._wait(RETRY_S)

    def _wait(self, seconds: float) -> None:
        self._wake.wait(seconds)
        self._wake.clear()

    def _send(self, payload: Message) -> bool:
        session = self._session()
        info = self._publish(payload) if session is not None else None
        if info is None:
            return False
        until = time.monotonic() + self._ack_timeout
        deadline = self._deadline
        if deadline is not None:
            until = min(until, deadline)
        # paho's copy of an unacked message is dropped at the next CONNACK: once that connection is
        # gone, stop waiting; the result is sent again on the next one
        return _acked(info, until, lambda: self._session() == session and not self._stop.is_set())


class CommandChannel:
    """``R/cmd`` in, results and replays out, for one uplink (module docstring).

    ``client()`` is the uplink's paho client (None when stopped), ``connected()`` its state,
    ``now_ms()`` its clock; ``topics`` its ``Topics``. ``session()`` numbers the connections (None
    while disconnected), so a wait for a PUBACK ends when the connection it was sent on is gone,
    even when the next one came up meanwhile. ``payloads`` encodes replays (results stay JSON).
    """

    def __init__(self, *, gw: str, topics: Any, client: Callable[[], Any], connected: Callable[[], bool],
                 now_ms: Callable[[], int], on_command: Callable[[Any], None] | None,
                 payloads: Payloads | None = None, dialect: Any = None, link: Link | None = None,
                 publish_messages: Callable[[Callable[[], Any]], list[Any] | None] | None = None) -> None:
        self._gw, self._topics = gw, topics
        self._payloads = payloads or Payloads()
        self._dialect = dialect or EdgeDialect(gw=gw, topics=topics, payloads=self._payloads)
        self._link = link
        self._publish_messages = publish_messages  # the uplink's, under its publish lock (dialect.py)
        self._client, self._connected, self._now_ms = client, connected, now_ms
        self._on_command = on_command
        self._sessions = 0  # connections ended so far (the network thread counts, others read)
        self.results = ResultSender(self._send_result, session=self.session)
        self.received = 0  # messages on R/cmd
        self._failing = False  # on_command raised (network thread; logged once per streak)
        self._stopping = threading.Event()

    # -- lifecycle (the uplink's start and stop) ---------------------------------------------
    def attach(self, client: Any) -> None:
        """Set the callbacks on a new client; start the results thread."""
        if self._on_command is not None or self._dialect.name != "edge":  # a dialect's control topics too
            client.on_message = self._on_message
            client.on_subscribe = self._on_subscribe
        self._stopping.clear()
        self.results.start()

    def closing(self, grace_s: float) -> None:
        """The uplink is stopping: results still go out for ``grace_s``; replays end."""
        self._stopping.set()
        self.results.close(grace_s)

    def detach(self, timeout: float) -> None:
        self.results.join(timeout)

    def session(self) -> int | None:
        return self._sessions if self._connected() else None

    # -- paho callbacks (network thread) ------------------------------------------------------
    def on_connect(self, client: Any) -> None:
        if self._on_command is not None or self._dialect.name != "edge":
            for topic in self._dialect.subscriptions():
                client.subscribe(topic, qos=1)
        self.results.wake()

    def on_disconnect(self) -> None:
        """After the uplink marked itself disconnected: what was sent on that connection and is
        still unacknowledged will not be (paho drops it at the next CONNACK)."""
        self._sessions += 1

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        refused = [rc for rc in reason_codes if getattr(rc, "is_failure", False)]
        if refused:
            log.error("mqtt: the broker refused the subscription to %s (%s): no commands will arrive; "
                      "check the broker's ACL for this client", " and ".join(self._dialect.subscriptions()),
                      refused[0])

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        several = getattr(self._dialect, "inbounds", None)  # Sparkplug: a DCMD may write several metrics
        try:
            if several is not None:
                inbounds = list(several(message.topic, bytes(message.payload), self._link))
            else:
                one = self._dialect.inbound(message.topic, bytes(message.payload), self._link)
                inbounds = [one] if one is not None else []
        except Exception:  # a dialect bug: the network thread goes on
            log.exception("uplink: the %s dialect failed on a message on %s", self._dialect.name, message.topic)
            return
        if self._on_command is None:
            return
        for inbound in inbounds:
            self._command(inbound)

    def _command(self, inbound: Any) -> None:
        self.received += 1
        try:
            self._on_command(inbound.signed if inbound.dialect == "edge" else inbound)  # type: ignore[misc]
            if self._failing:
                log.info("uplink: commands are taken again")
            self._failing = False
        except Exception as exc:  # paho's network thread must survive whatever the handler does
            log.log(logging.DEBUG if self._failing else logging.ERROR,
                    "uplink: the command handler failed (%s); that command is lost", type(exc).__name__)
            self._failing = True

    # -- out ----------------------------------------------------------------------------------
    def _send_result(self, message: Message) -> Any | None:
        client = self._client()
        if client is None or not self._connected():
            return None
        topic = message.topic or self._topics.cmd_result
        info = client.publish(topic, message.payload, qos=1, retain=message.retain)
        return info if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS else None

    def publish_replay(self, kind: str, bodies: list[dict[str, Any]], cmd_id: str, *,
                       timeout_s: float = REPLAY_ACK_S) -> bool:
        client, session = self._client(), self.session()
        if client is None or session is None or self._stopping.is_set():
            return False
        def build() -> list[Message]:
            if isinstance(self._dialect, EdgeDialect):
                return [self._dialect.replay(kind, bodies, cmd_id, self._now_ms())]
            # another dialect: the rows again as it sends rows (it has no replay marker)
            return list(self._dialect.data(Batch("backlog", kind, tuple(_Replayed(b) for b in bodies)),
                                           self._now_ms()))

        try:
            if self._publish_messages is not None:
                infos = self._publish_messages(build) or []
            else:
                infos = [client.publish(m.topic, m.payload, qos=m.qos, retain=m.retain, **m.extra) for m in build()]
        except Exception as exc:  # past the broker's size limit; a Sparkplug host gone offline meanwhile
            log.warning("mqtt: a replay message of %d %s(s) could not be published: %s", len(bodies), kind, exc)
            return False
        if not infos or any(info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS for info in infos):
            return False
        until = time.monotonic() + timeout_s
        return all(_acked(info, until, lambda: self.session() == session and not self._stopping.is_set())
                   for info in infos)


class _Replayed:
    """A replayed row as a dialect's ``data`` reads rows (``lanes.OutRowLike``)."""

    __slots__ = ("body",)

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body

    @property
    def id(self) -> int:
        return int(self.body.get("id", 0))

    @property
    def kind(self) -> str:
        return "event" if "type" in self.body else "record"

    @property
    def prio(self) -> Priority:
        return {"critical": Priority.CRITICAL, "high": Priority.HIGH}.get(self.body.get("prio"), Priority.NORMAL)
