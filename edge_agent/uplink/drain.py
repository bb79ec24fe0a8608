"""The uplink: drains the buffer to MQTT at QoS 1 and marks rows sent only when the broker acks.

Threads: paho's network thread (``loop_start``: connect, reconnect with exponential backoff,
all callbacks), our drain thread (the only one that reads rows from and marks rows in the
buffer) and the state thread of ``uplink_state`` (reads ``Buffer.stats()`` only). They share
a small state under ``_lock``; the lock is never held across a paho call.

Linger: ``wake_soon`` (the writer, when a poll's rows are queued: ids at intake, ``buffer/live.py``)
lets the drain wait ``mqtt.linger`` (25 ms) before it selects, so the records of one polling
round share a message instead of going one a message; ``wake`` (a commit, an ack) does not wait.

Drain: while connected, ``lanes.select`` picks the next rows (critical, high, live, then one
backlog window: the order is described there, and only there), a message carries at most
``batch_max`` rows of one kind, and at most ``inflight`` messages wait for their PUBACK. The
live floor (``Buffer.max_id()``) is read by the drain thread after each (re)connect. A message's
bytes are compact JSON, or with ``mqtt.compress`` an xz stream of it where that is smaller
(``payload.Payloads``, shared with replays); state and command results stay JSON.

Failover (``mqtt.hosts``, issue 16): the broker's nodes are tried in turn. A lost connection or a
failed attempt moves to the next node (``connect_async`` from paho's callback: its own reconnect
then dials that one, after the usual backoff); what was unacknowledged is fetched again from the
outbox and published to the new node, byte-identical. ``address`` (status, ``R/state``'s
``broker``, the page) names the node in use. With one node nothing changes.

State: the retained ``R/state`` birth on connect, re-published every ``state_interval_s`` and
when the buffer's evicted counts change (``uplink_state``); the Last Will says offline.
Connection logging (log once, recovery once) is ``mqtt_client.ConnectionLog``.

Commands (issue 6): with ``on_command``, ``R/cmd`` is subscribed on every connect and its
payloads handed on; ``publish_result`` and ``publish_replay`` send results and replays. All of
it is ``uplink_commands.CommandChannel``, which this class calls from its callbacks.

At least once: on a disconnect the cursors and the in-flight map are reset, and paho's own
copies of unacked messages are dropped at the next CONNACK, so every unacked row is fetched
and published again by us, once, with a byte-identical body (the platform de-duplicates on
``(gw, id)``). A row is marked sent only after the PUBACK of a message that carried it.

paho facts relied on (2.2):
- ``on_publish`` may run on the network thread before ``publish()`` returns its mid: an ack for
  a mid we do not know yet, while a publish is under way, is parked in ``_early`` and claimed
  by the publishing thread. A generation counter (bumped on every connect and disconnect) makes
  a publish that straddles a reconnect harmless.
- ``on_publish`` runs holding paho's out-message lock, and ``publish()`` takes it: holding our
  lock across ``publish()`` could deadlock, so we never do.
- With a clean session paho re-sends unacked QoS 1 messages after a reconnect; ``on_connect``
  runs before that re-send and calls ``drop_out_messages()``, since we re-send from the buffer.
- ``loop_start`` retries a failed *first* connect too (``retry_first_connection=True``), with the
  ``reconnect_delay_set`` backoff; ``on_connect_fail`` runs inside paho's ``except OSError``,
  so ``sys.exception()`` there is the reason (refused, DNS, TLS).
- A connection that dies before its CONNACK (the broker rejecting our client certificate after
  a TLS 1.3 handshake) gives ``on_disconnect`` without ``on_connect``: a failed attempt too.
- The broker publishes the Last Will when it sees no packet for 1.5 x keepalive.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence

from paho.mqtt.enums import MQTTErrorCode

from .. import __version__
from ..errors import StartupError
from .lanes import Batch, Cursors, Outbox as LaneOutbox, select
from ..model import Priority
from .client import (ConnectionLog, ErrorTap, MqttConfigError, build_client, client_id_for,
                          describe_error, describe_rc, describe_socket_error, keepalive_s, stop_loop)
from ..settings import GatewaySettings, MqttSettings
from .channel import CommandChannel, encode
from .dialect import Message
from .edge_dialect import EdgeDialect
from .payload import Payloads
from .state import StateReporter, StatsLike

__all__ = ["Uplink", "UplinkStats", "UplinkError", "Outbox", "Topics", "topics", "encode"]

log = logging.getLogger("edge_agent.uplink")

POLL_S = 1.0  # the longest the drain sleeps when idle (wake() cuts it short)
RETRY_PUBLISH_S = 0.5  # after publish() returned an error code (queue full, no connection)
RETRY_REFUSED_S = 10.0  # after the broker refused a message in its PUBACK (MQTT 5)
RETRY_BUFFER_S = 1.0  # after the buffer raised


class UplinkError(StartupError):
    """The uplink cannot start (a settings file it needs cannot be read)."""


class Outbox(LaneOutbox, Protocol):
    """What the uplink needs of the buffer (``Buffer`` has it)."""

    def mark_sent(self, ids: Iterable[int]) -> None: ...

    def stats(self) -> StatsLike: ...


@dataclass(frozen=True)
class Topics:
    root: str
    telemetry: str
    events: str
    state: str
    cmd: str
    cmd_result: str

    @classmethod
    def of(cls, prefix: str, site: str, gateway_id: str) -> "Topics":
        r = f"{prefix}/{site}/{gateway_id}"
        return cls(r, f"{r}/telemetry", f"{r}/events", f"{r}/state", f"{r}/cmd", f"{r}/cmd/result")


def topics(mqtt: MqttSettings, gateway: GatewaySettings) -> Topics:
    return Topics.of(mqtt.topic_prefix, gateway.site, gateway.id)


@dataclass(frozen=True)
class UplinkStats:
    """Counters since construction; published_* count re-sends after a reconnect too."""

    connected: bool
    published_messages: int
    published_items: int
    acked_items: int
    last_ack_at: int | None  # ms since the epoch
    last_error: str | None  # the most recent failure; kept after recovery
    reconnects: int  # successful connects after the first


class Uplink:
    """Drains ``buffer`` to the broker in ``mqtt``; ``start()`` returns at once, even with the broker down.

    ``state_interval_s``: how often the retained state is published again while connected.
    ``extra_state``: called (on the state thread) for further keys of the state message, e.g.
    ``{"write_errors": n}``; it cannot replace the uplink's own keys.
    ``on_command``: called on paho's network thread with the payload of every message on
    ``R/cmd`` (subscribed only when given); it must return at once (queue, never block). In
    another dialect it gets the dialect's ``Inbound`` instead of bytes.
    ``dialect``: how rows, state and results look on the wire (``dialect.py``); default ``edge``.
    """

    def __init__(self, mqtt: MqttSettings, gateway: GatewaySettings, buffer: Outbox, *,
                 version: str = __version__, clock: Callable[[], float] = time.time,
                 started_at_ms: int | None = None, state_interval_s: float = 60.0,
                 extra_state: Callable[[], Mapping[str, Any]] | None = None,
                 on_command: Callable[[Any], None] | None = None, dialect: Any = None) -> None:
        self._mqtt = mqtt
        self._gw = gateway.id
        self._gateway = gateway
        self._buffer = buffer
        self._clock = clock
        self.topics = topics(mqtt, gateway)
        self._batch_max = max(1, mqtt.batch_max)
        self._payloads = Payloads.of(mqtt)  # JSON, or xz with mqtt.compress (payload.py)
        self.dialect = dialect or EdgeDialect(gw=self._gw, topics=self.topics, payloads=self._payloads)
        self._link = _Link(self)
        self._publish_lock = threading.Lock()  # numbering (dialect.data) and hand-over to paho, in order
        self._client: Any = None
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._grace_until = 0.0
        self._state = StateReporter(
            gw=self._gw, version=version,
            started_ms=started_at_ms if started_at_ms is not None else self._now_ms(),
            stats=buffer.stats, publish=self._publish_state, interval_s=state_interval_s, extra=extra_state)
        self._nodes = mqtt.nodes  # (host, port) of each broker node, tried in turn (mqtt.hosts)
        self._node = 0  # the one in use or being tried (the network thread moves it)
        self._conn_log = ConnectionLog(self.address, client_id_for(mqtt, gateway), log)
        self._commands = CommandChannel(gw=self._gw, topics=self.topics, client=lambda: self._client,
                                        connected=lambda: self.connected, now_ms=self._now_ms,
                                        on_command=on_command, payloads=self._payloads, dialect=self.dialect,
                                        link=self._link, publish_messages=self._publish_messages)
        self._errors = ErrorTap()  # paho's error lines (network thread)
        self._lock = threading.Lock()
        # shared with the network thread, under _lock
        self._connected = False
        self._gen = 0
        self._window = max(1, mqtt.inflight)
        self._cursors: Cursors | None = None  # None: the live floor is to be read (after a connect)
        self._staged: deque[Batch] = deque()  # selected, not yet published (the rest of a window)
        self._retry: deque[Batch] = deque()  # refused in a PUBACK: ids only, fetched again to retry
        self._inflight: dict[int, _Sent] = {}  # mid -> the batch (one of its messages) awaiting a PUBACK
        self._early: dict[int, Any] = {}  # acks that came before publish() returned
        self._publishing = False
        self._acked: list[int] = []  # acked ids not yet marked sent (the drain thread marks them)
        self._hold_until = 0.0
        self._linger_until = 0.0  # wake_soon: select no new rows before this (monotonic)
        self._published_messages = self._published_items = self._acked_items = 0
        self._last_ack_at: int | None = None
        self._last_error: str | None = None
        self._reconnects = 0
        # network thread only
        self._refused = False  # this attempt's CONNACK refused us (its on_disconnect is no news)
        # drain thread only (log state)
        self._publish_failing = False
        self._buffer_failing = False
        self._refusing = False

    # -- public ------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        with self._lock:
            return self._connected

    @property
    def address(self) -> str:
        """The broker node in use (or being tried): ``host:port``."""
        host, port = self._nodes[self._node]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def _next_node(self, client: Any) -> None:
        """After a lost connection or a failed attempt: dial the next node (paho's reconnect does,
        after its backoff). Network thread."""
        if len(self._nodes) < 2 or self._stopping.is_set():
            return
        self._node = (self._node + 1) % len(self._nodes)
        host, port = self._nodes[self._node]
        self._conn_log.address = self.address
        try:
            client.connect_async(host, port, keepalive=keepalive_s(self._mqtt), clean_start=True)
        except (ValueError, OSError) as exc:  # paho refuses the arguments: keep the node it has
            log.error("mqtt: cannot switch to broker node %s: %s", self.address, exc)

    def start(self) -> None:
        """Connect in the background and start draining; raises only for unusable settings files."""
        if self._thread is not None:
            raise RuntimeError("uplink already started")
        will = self.dialect.will()
        try:
            client = build_client(self._mqtt, self._gateway, errors=self._errors,
                                  will=(will.topic, will.payload, will.retain) if will is not None else None)
        except MqttConfigError as exc:
            raise UplinkError(str(exc)) from None
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        self._commands.attach(client)
        self._state.refresh()  # the first birth carries the backlog
        self._client = client
        self._stopping.clear()
        self._conn_log.starting()
        host, port = self._nodes[self._node]
        client.connect_async(host, port, keepalive=keepalive_s(self._mqtt), clean_start=True)
        client.loop_start()
        self._thread = threading.Thread(target=self._drain_main, name="uplink-drain", daemon=True)
        self._thread.start()
        self._state.start()

    def wake(self) -> None:
        """New rows are buffered: drain now rather than at the next poll tick."""
        self._wake.set()

    def wake_soon(self) -> None:
        """New rows are queued: drain after ``mqtt.linger``, with whatever else comes meanwhile."""
        with self._lock:
            if self._linger_until <= time.monotonic():
                self._linger_until = time.monotonic() + self._mqtt.linger_s
        self._wake.set()

    def publish_result(self, result: Mapping[str, Any], reply: Any = None) -> None:
        """Queue a command result for ``R/cmd/result`` (QoS 1, not retained), or the dialect's
        answer to ``reply`` (the command's ``Inbound``); returns at once. Sent in order, each until
        acknowledged; while offline the newest 100 wait."""
        message = self.dialect.reply(reply, dict(result))
        if message is not None:
            self._commands.results.put(message)

    def publish_replay(self, kind: str, bodies: list[dict[str, Any]], cmd_id: str, *,
                       timeout_s: float = 10.0) -> bool:
        """Publish buffered rows of one ``kind`` ('record' or 'event') again, ids and bodies as
        they were, in one message marked ``"replay": cmd_id``, and wait for its PUBACK. False when
        not connected, stopping, or not acknowledged within ``timeout_s``. Any thread."""
        return self._commands.publish_replay(kind, bodies, cmd_id, timeout_s=timeout_s)

    def stop(self, timeout: float = 5.0) -> None:
        """Let in-flight messages be acked (half of ``timeout`` at most), publish the retained
        offline state, disconnect cleanly (so the broker discards the Last Will)."""
        client = self._client
        if client is None:
            return
        deadline = time.monotonic() + timeout
        self._grace_until = time.monotonic() + timeout / 2
        self._commands.closing(timeout / 2)  # the last results go out while the drain finishes
        self._stopping.set()
        self._wake.set()
        self._state.stop(max(0.1, timeout / 4))  # no online state after the offline one
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
            if self._thread.is_alive():
                log.warning("uplink: the drain thread did not stop within %.1f s", timeout)
        self._commands.detach(max(0.1, self._grace_until - time.monotonic()))
        if self.connected:
            infos = self._publish_messages(lambda: self.dialect.offline(self._now_ms())) or [None]
            info = infos[-1]
            if info is not None and info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                try:
                    info.wait_for_publish(max(0.1, deadline - time.monotonic()))
                except (RuntimeError, ValueError):
                    pass  # the connection went meanwhile: the Last Will says offline instead
        client.disconnect()
        stop_loop(client)
        if self._thread is not None and not self._thread.is_alive():
            try:  # acks that came after the drain thread ended (it is gone: the buffer is ours now)
                self._flush_acks()
            except Exception as exc:
                log.error("uplink: marking acked rows sent failed at stop: %s", exc)
        with self._lock:
            was_connected, self._connected = self._connected, False
        self._client = None
        self._thread = None
        log.log(logging.INFO if was_connected else logging.DEBUG, "mqtt: disconnected from %s", self.address)

    def stats(self) -> UplinkStats:
        with self._lock:
            return UplinkStats(self._connected, self._published_messages, self._published_items,
                               self._acked_items, self._last_ack_at, self._last_error, self._reconnects)

    # -- paho callbacks (network thread) ----------------------------------------------
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            self._refused = True
            self._connect_failed(f"the broker refused the connection: {reason_code}")
            return
        self._errors.take()  # errors of earlier attempts
        client.drop_out_messages()  # before paho re-sends them: unacked rows come again from the buffer
        try:
            self.dialect.births(self._link, {**self._state.birth(), "broker": self.address})
        except Exception:  # a dialect bug must not kill paho's network thread
            log.exception("uplink: the %s dialect's birth messages failed", self.dialect.name)
        window = max(1, self._mqtt.inflight)
        receive_max = getattr(properties, "ReceiveMaximum", None)  # MQTT 5: the broker's own limit
        if receive_max:
            window = max(1, min(window, receive_max - 1))  # one left for state messages
        with self._lock:
            self._reset_locked()
            self._connected = True
            self._window = window
            if self._conn_log.ever_connected:
                self._reconnects += 1
        self._conn_log.connected()
        self._wake.set()
        self._commands.on_connect(client)  # subscribes R/cmd again: the session is clean

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        # paho calls this inside its `except OSError`: the exception is the reason
        self._connect_failed(describe_error(sys.exception(), tls=self._mqtt.tls.enabled))
        self._next_node(client)

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        with self._lock:
            was_connected = self._connected
            self._connected = False
            self._reset_locked()
        self._commands.on_disconnect()  # results and replays in flight are sent again
        if was_connected:
            self._next_will(client)
        self._wake.set()
        paho_error = self._errors.take()
        refused, self._refused = self._refused, False
        if self._stopping.is_set():
            return
        lost_node = self.address
        self._next_node(client)
        if not was_connected:  # the attempt ended before a CONNACK let us in
            if not refused:  # (a refusal is already reported)
                self._connect_failed(describe_socket_error(paho_error), lost_node)
            return
        why = "" if str(reason_code) == "Unspecified error" else f" ({reason_code})"  # 3.1.1 gives no reason
        with self._lock:
            self._last_error = f"connection lost{why}"
        self._conn_log.address, trying = lost_node, self._conn_log.address
        self._conn_log.lost(why, trying if trying != lost_node else None)
        self._conn_log.address = trying

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        with self._lock:
            sent = self._inflight.pop(mid, None)
            if sent is None:
                if self._publishing:  # the ack overtook publish(); the publishing thread claims it
                    self._early[mid] = reason_code
                return  # a state message, or a message of a session we have already reset
            self._part_acked_locked(sent, reason_code)
        self._wake.set()

    def _next_will(self, client: Any) -> None:
        """The dialect's Last Will for the next connection (Sparkplug's carries a new bdSeq)."""
        try:
            self.dialect.on_disconnect()
            will = self.dialect.will()
            if will is not None:
                client.will_set(will.topic, will.payload, qos=1, retain=will.retain)
        except Exception:
            log.exception("uplink: the %s dialect's will for the next connection failed", self.dialect.name)

    def _connect_failed(self, reason: str, node: str | None = None) -> None:
        with self._lock:
            self._last_error = reason
        if node is not None and node != self.address:  # moved on already: name the one that failed
            self._conn_log.address, shown = node, self.address
            self._conn_log.failed(reason)
            self._conn_log.address = shown
        else:
            self._conn_log.failed(reason)

    # -- shared state (caller holds _lock) ---------------------------------------------
    def _reset_locked(self) -> None:
        """Forget what is in flight: after a (re)connect every unacked row is fetched again."""
        self._gen += 1
        self._cursors = None
        self._staged.clear()
        self._retry.clear()
        self._inflight.clear()
        self._early.clear()
        self._hold_until = 0.0

    def _part_acked_locked(self, sent: "_Sent", reason_code: Any) -> None:
        """One message of a batch acked: the batch is acked once all are (refused: retried whole)."""
        if sent.done:
            return  # a part was refused: the batch went back to the stage already
        refused = reason_code is not None and reason_code.is_failure
        sent.left -= 1
        if refused or sent.left <= 0:
            sent.done = True
            self._acked_locked(sent.batch, reason_code)

    def _acked_locked(self, batch: Batch, reason_code: Any) -> None:
        if reason_code is not None and reason_code.is_failure:
            # MQTT 5 lets the broker refuse a message in its PUBACK: keep the rows, try later
            self._retry.append(batch)
            self._hold_until = time.monotonic() + RETRY_REFUSED_S
            self._last_error = f"the broker refused a message of {batch.kind}s: {reason_code}"
            log.log(logging.DEBUG if self._refusing else logging.ERROR, "mqtt: %s; retrying in %.0f s",
                    self._last_error, RETRY_REFUSED_S)
            self._refusing = True
            return
        self._refusing = False
        self._acked.extend(batch.ids)
        self._acked_items += len(batch.rows)
        self._last_ack_at = self._now_ms()

    # -- state (the state thread) -------------------------------------------------------------
    def _publish_state(self, state: dict[str, Any]) -> bool:
        """Hand the dialect's state messages to paho; False when not connected (the birth will do)."""
        if self._client is None or not self.connected:
            return False
        infos = self._publish_messages(lambda: self.dialect.state({**state, "broker": self.address}))
        return infos is not None and all(i.rc == MQTTErrorCode.MQTT_ERR_SUCCESS for i in infos)

    def _publish_messages(self, build: Callable[[], Sequence[Message]]) -> list[Any] | None:
        """``build`` and hand its messages to paho under the publish lock (``dialect.py``: their order
        is their numbering); untracked (not rows). None when stopped; stops at the first refusal."""
        client = self._client
        if client is None:
            return None
        infos = []
        with self._publish_lock:
            for m in build():
                info = client.publish(m.topic, m.payload, qos=m.qos, retain=m.retain, **m.extra)
                infos.append(info)
                if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    break
        return infos

    # -- drain (our thread) ---------------------------------------------------------------
    def _drain_main(self) -> None:
        while not self._stopping.is_set():
            try:
                self._flush_acks()
                delay = self._step()
                if self._buffer_failing:
                    self._buffer_failing = False
                    log.info("uplink: draining again")
            except Exception as exc:  # the drain must outlive a bad moment of the buffer
                delay = RETRY_BUFFER_S
                log.log(logging.DEBUG if self._buffer_failing else logging.ERROR,
                        "uplink: drain failed (%s: %s); retrying", type(exc).__name__, exc,
                        exc_info=self._buffer_failing)  # the trace of repeats at DEBUG only
                self._buffer_failing = True
            if delay > 0:
                self._wake.wait(delay)
                self._wake.clear()
        # stopping: give what is in flight a chance to be acked, then mark it sent
        while time.monotonic() < self._grace_until:
            with self._lock:
                if not (self._inflight and self._connected):
                    break
            self._wake.wait(0.05)
            self._wake.clear()
        try:
            self._flush_acks()
        except Exception as exc:
            log.error("uplink: marking acked rows sent failed at stop: %s", exc)

    def _flush_acks(self) -> None:
        with self._lock:
            ids, self._acked = self._acked, []
        if not ids:
            return
        try:
            self._buffer.mark_sent(ids)
        except BaseException:
            with self._lock:
                self._acked[:0] = ids
            raise

    def _step(self) -> float:
        """Publish one message if the window allows; the time to wait before the next step."""
        with self._lock:
            if not self._connected or len(self._inflight) >= self._window:
                return POLL_S  # an ack or a connect wakes us earlier
            hold = self._hold_until - time.monotonic()
            if hold > 0:
                return hold
            gen = self._gen
            batch = self._staged.popleft() if self._staged else None
            refused = self._retry.popleft() if batch is None and self._retry else None
            cursors = self._cursors
        if refused is not None:
            batch = self._fetch_again(refused)
            if batch is None:
                return 0.0  # its rows are gone (evicted): nothing to retry
        if not self.dialect.ready():
            if batch is not None:
                with self._lock:
                    if gen == self._gen:
                        self._staged.appendleft(batch)
            return POLL_S  # e.g. a Sparkplug primary host offline: the dialect wakes us
        if batch is None:
            with self._lock:
                linger = self._linger_until - time.monotonic()
            if linger > 0:
                return linger  # let the rest of the polling round join these rows
            if cursors is None:  # connected since the last step: what is buffered now is backlog
                cursors = Cursors.at_connect(self._buffer.max_id())
            window = select(self._buffer, cursors, self._batch_max)
            with self._lock:
                if gen != self._gen:
                    return 0.0  # a reconnect reset the lanes meanwhile: select again
                self._cursors = window.cursors if window is not None else cursors
                if window is None:
                    return POLL_S
                self._staged.extend(window.batches[1:])
            if window.unknown_kinds:
                log.error("uplink: skipping buffered row(s) of unknown kind %s", list(window.unknown_kinds))
            if not window.batches:
                return 0.0
            batch = window.batches[0]
        return 0.0 if self._publish(batch, gen) else RETRY_PUBLISH_S

    def _publish(self, batch: Batch, gen: int) -> bool:
        """Hand one batch's messages to paho; False when it refused (the batch waits, staged, for a retry)."""
        client = self._client
        if client is None:
            return True  # stopped
        infos: list[Any] = []
        error: str | None = None
        with self._publish_lock:
            with self._lock:
                if gen != self._gen or not self._connected:
                    return True  # the lanes were reset: these rows will be fetched again
            try:
                messages = list(self.dialect.data(batch, self._now_ms()))
            except Exception as exc:  # keep the rows; a dialect that stopped being ready is no bug
                if self.dialect.ready():
                    log.exception("uplink: the %s dialect could not encode %d %s(s)", self.dialect.name,
                                  len(batch.rows), batch.kind)
                messages, error = [], f"the {self.dialect.name} dialect failed ({type(exc).__name__}: {exc})"
            with self._lock:
                self._publishing = True
            for m in messages:
                try:
                    info = client.publish(m.topic, m.payload, qos=m.qos, retain=m.retain, **m.extra)
                except (ValueError, OSError) as exc:  # e.g. a message past the MQTT size limit
                    error = str(exc)
                    break
                infos.append(info)
                if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    break
        sent = _Sent(_ids_only(batch), len(infos))  # the bodies are in the messages now: not kept
        with self._lock:
            self._publishing = False
            early = {i.mid: self._early.pop(i.mid) for i in infos if i.mid in self._early}
            self._early.clear()
            if gen != self._gen:
                return True  # a reconnect happened during publish(): the rows come again
            ok = error is None and len(infos) == len(messages) and all(
                i.rc == MQTTErrorCode.MQTT_ERR_SUCCESS for i in infos)
            if ok and not messages:  # the dialect has nothing to send for these rows: done with them
                self._acked_locked(batch, None)
            if ok:
                self._published_messages += len(infos)
                self._published_items += len(batch.rows)
            else:
                sent.done = True  # what paho took of it may still be acked: ignored, the batch goes again
                bad = next((i.rc for i in infos if i.rc != MQTTErrorCode.MQTT_ERR_SUCCESS), -1)
                error = error or describe_rc(bad)
                self._staged.appendleft(batch)
                self._hold_until = time.monotonic() + RETRY_PUBLISH_S
                self._last_error = f"publish of {batch.kind}s failed: {error}"
            for info in infos:
                if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    continue
                if info.mid in early:
                    self._part_acked_locked(sent, early[info.mid])
                else:
                    self._inflight[info.mid] = sent
        failed = not ok
        if failed:
            log.log(logging.DEBUG if self._publish_failing else logging.WARNING,
                    "mqtt: publish of %d %s(s) failed (%s); retrying", len(batch.rows), batch.kind, error)
        elif self._publish_failing:
            log.info("mqtt: publishing again")
        self._publish_failing = failed
        return not failed

    # -- helpers ---------------------------------------------------------------------------
    def _fetch_again(self, batch: Batch) -> Batch | None:
        """A refused batch (ids only) with its rows read again from the outbox: they are in it,
        unsent, and in that lane's id range (``lanes.py``)."""
        ids = set(batch.ids)
        rows = self._buffer.pending(len(ids), prio=LANE_PRIO[batch.lane], after_id=min(ids) - 1,
                                    until_id=max(ids))
        found = tuple(r for r in rows if r.id in ids and r.kind == batch.kind)
        return Batch(batch.lane, batch.kind, found) if found else None

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)


LANE_PRIO = {"critical": Priority.CRITICAL, "high": Priority.HIGH, "live": Priority.NORMAL,
             "backlog": Priority.NORMAL}


class _RowId:
    """A published row as the ack needs it: its id (its body went out in the message)."""

    __slots__ = ("id",)

    def __init__(self, row_id: int) -> None:
        self.id = row_id


def _ids_only(batch: Batch) -> Batch:
    """The batch without its bodies: 20 in-flight messages of 500 records of 20 values held ~20 MB
    of dicts that the acks never read (bench_rss)."""
    return Batch(batch.lane, batch.kind, tuple(_RowId(r.id) for r in batch.rows))  # type: ignore[arg-type]


class _Sent:
    """A batch handed to paho as ``left`` messages; acked when all are (``done`` once settled)."""

    __slots__ = ("batch", "left", "done")

    def __init__(self, batch: Batch, left: int) -> None:
        self.batch, self.left, self.done = batch, left, False


class _Link:
    """What a dialect may ask of its uplink (``dialect.Link``)."""

    def __init__(self, uplink: Uplink) -> None:
        self._uplink = uplink

    def publish(self, messages: Sequence[Message]) -> bool:
        infos = self._uplink._publish_messages(lambda: messages)
        return bool(infos) and all(i.rc == MQTTErrorCode.MQTT_ERR_SUCCESS for i in infos)

    def publish_ordered(self, build: Callable[[], Sequence[Message]]) -> bool:
        infos = self._uplink._publish_messages(build)
        return infos is not None and all(i.rc == MQTTErrorCode.MQTT_ERR_SUCCESS for i in infos)

    def wake(self) -> None:
        self._uplink.wake()
