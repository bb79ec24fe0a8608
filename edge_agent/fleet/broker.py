"""The fleet tools' one MQTT client (paho-mqtt: the only module of this room that imports it).

Why a module of its own: ``platform watch`` and ``platform send`` need the same few things
(connect with credentials or TLS, subscribe and know the broker granted it, publish QoS 1 and
know it was acknowledged), and every paho detail and error is mapped here, once, into a
``ConnectionError`` whose message is the one line the CLI prints.

paho facts relied on (2.x): ``Client(CallbackAPIVersion.VERSION2, ...)``; ``connect`` raises
``OSError`` for a refused or unreachable TCP connection, while a CONNACK refusal (bad
credentials) comes to ``on_connect`` as a failed reason code; ``loop_start`` runs the network
thread and reconnects by itself after a lost connection; a SUBACK reason code >= 0x80 means the
broker refused that filter (e.g. ``$share`` on a broker without shared subscriptions).
"""

from __future__ import annotations

import secrets
import ssl
import threading
from pathlib import Path
from typing import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

__all__ = ["Link", "parse_broker", "share"]

CONNECT_TIMEOUT_S = 5.0


def parse_broker(text: str, tls: bool = False) -> tuple[str, int]:
    """``HOST[:PORT]`` -> (host, port); the port defaults to 1883, or 8883 with TLS."""
    host, sep, port = text.rpartition(":")
    if not sep or "]" in port:  # no port, or an IPv6 literal's last group
        return text.strip("[]"), 8883 if tls else 1883
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r}: the port must be a number from 1 to 65535")
    return host.strip("[]"), int(port)


def share(group: str | None, topic_filter: str) -> str:
    """``$share/GROUP/FILTER`` (MQTT 5 shared subscriptions; mosquitto >= 1.6 also on 3.1.1)."""
    return f"$share/{group}/{topic_filter}" if group else topic_filter


class Link:
    """One connection to the broker; ``on_message(topic, payload)`` runs on paho's network thread."""

    def __init__(self, broker: str, *, on_message: Callable[[str, bytes], None] | None = None,
                 username: str | None = None, password_file: str | None = None, tls_ca: str | None = None,
                 client_id: str | None = None, role: str = "platform") -> None:
        self.host, self.port = parse_broker(broker, tls=tls_ca is not None)
        self.where = f"{self.host}:{self.port}"
        self._on_message = on_message
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                   client_id=client_id or f"edge-agent-{role}-{secrets.token_hex(4)}",
                                   protocol=mqtt.MQTTv311, clean_session=True)
        if username is not None:
            password = None
            if password_file is not None:
                try:
                    password = Path(password_file).read_text(encoding="utf-8").splitlines()[0].strip()
                except (OSError, IndexError, UnicodeDecodeError) as exc:
                    raise ConnectionError(f"password file {password_file}: cannot be read "
                                          f"({getattr(exc, 'strerror', None) or 'empty or not text'})") from None
            self._client.username_pw_set(username, password)
        if tls_ca is not None:
            try:
                self._client.tls_set(ca_certs=tls_ca, tls_version=ssl.PROTOCOL_TLS_CLIENT)
            except (OSError, ssl.SSLError) as exc:
                raise ConnectionError(f"TLS CA file {tls_ca}: {getattr(exc, 'strerror', None) or exc}") from None
        self._connected = threading.Event()
        self._refused: str | None = None
        self._subacked = threading.Condition()
        self._subacks: dict[int, list] = {}  # mid -> reason codes, kept until subscribe() reads them
        self._client.on_connect = self._connect_cb
        self._client.on_subscribe = self._subscribe_cb
        self._client.on_message = self._message_cb

    # -- paho's thread ------------------------------------------------------------------------------
    def _connect_cb(self, client, userdata, flags, reason, properties) -> None:
        if reason.is_failure:
            self._refused = str(reason)
        self._connected.set()

    def _subscribe_cb(self, client, userdata, mid, reasons, properties) -> None:
        with self._subacked:
            self._subacks[mid] = list(reasons)
            self._subacked.notify_all()

    def _message_cb(self, client, userdata, message) -> None:
        if self._on_message is not None:
            self._on_message(message.topic, bytes(message.payload))

    # -- the caller's thread ------------------------------------------------------------------------
    def connect(self, timeout: float = CONNECT_TIMEOUT_S) -> "Link":
        """Connect and wait for the CONNACK; ``ConnectionError`` (one line) when it fails."""
        try:
            self._client.connect(self.host, self.port, keepalive=30)
        except (OSError, ssl.SSLError) as exc:
            raise ConnectionError(f"broker {self.where}: cannot connect "
                                  f"({getattr(exc, 'strerror', None) or exc})") from None
        self._client.loop_start()
        if not self._connected.wait(timeout):
            self.close()
            raise ConnectionError(f"broker {self.where}: no CONNACK within {timeout:g} s")
        if self._refused is not None:
            self.close()
            raise ConnectionError(f"broker {self.where} refused the connection: {self._refused}")
        return self

    def subscribe(self, filters: list[str], qos: int = 1, timeout: float = CONNECT_TIMEOUT_S) -> None:
        """Subscribe to every filter and wait for the SUBACK; ``ConnectionError`` for a refused one."""
        rc, mid = self._client.subscribe([(f, qos) for f in filters])
        with self._subacked:  # the SUBACK may have come before subscribe() returned its mid
            acked = rc == mqtt.MQTT_ERR_SUCCESS and self._subacked.wait_for(lambda: mid in self._subacks, timeout)
            reasons = self._subacks.pop(mid, [])
        if not acked:
            raise ConnectionError(f"broker {self.where}: subscription to {', '.join(filters)} not acknowledged")
        refused = [f for f, r in zip(filters, reasons) if r.is_failure]
        if refused:
            raise ConnectionError(f"broker {self.where} refused the subscription to {', '.join(refused)}")

    def publish(self, topic: str, payload: bytes, qos: int = 1, timeout: float = CONNECT_TIMEOUT_S) -> None:
        """Publish and wait for the broker's acknowledgement (PUBACK at QoS 1)."""
        info = self._client.publish(topic, payload, qos=qos)
        try:
            info.wait_for_publish(timeout)
        except (RuntimeError, ValueError) as exc:
            raise ConnectionError(f"broker {self.where}: publish to {topic} failed ({exc})") from None
        if not info.is_published():
            raise ConnectionError(f"broker {self.where}: publish to {topic} not acknowledged within {timeout:g} s")

    def close(self) -> None:
        self._client.disconnect()
        try:
            self._client.loop_stop()
        except AttributeError:  # paho 2.2: the thread ended between loop_stop's check and join (uplink/client.stop_loop)
            pass
