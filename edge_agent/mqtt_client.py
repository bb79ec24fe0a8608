"""Builds the paho client from ``MqttSettings``: protocol, client id, credentials, TLS, Last Will.

Only this module, ``uplink`` and (later) ``downlink`` import paho. Everything here runs at
start-up and fails with one clear line (``MqttConfigError``) when a file the settings name
cannot be read; nothing here touches the network. Connection failures at run time (refused,
unresolvable host, TLS handshake or certificate verification) are retried by paho's loop and
described for the log by ``describe_error``. A TLS client never falls back to plaintext: with
``tls.enabled`` the only socket paho opens is wrapped in the SSL context made here.

paho facts relied on (2.2):
- ``CallbackAPIVersion.VERSION2``: callbacks get ``reason_code, properties``.
- ``Client(clean_session=...)`` is for 3.1.1 only; MQTT 5 takes ``clean_start`` at connect.
- ``tls_set`` loads the CA, certificate and key files at once (so errors surface at start);
  ``tls_insecure_set(True)`` turns hostname verification off but keeps chain verification.
- ``will_set`` must precede ``connect``/``connect_async``.
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from .settings import GatewaySettings, MqttSettings

__all__ = ["MqttConfigError", "build_client", "read_password", "client_id_for", "describe_error",
           "describe_rc", "keepalive_s"]


class MqttConfigError(Exception):
    """A file the mqtt settings name cannot be used; raised at start, never retried."""


def client_id_for(mqtt: MqttSettings, gateway: GatewaySettings) -> str:
    return mqtt.client_id or f"edge-agent-{gateway.id}"


def keepalive_s(mqtt: MqttSettings) -> int:
    """paho and MQTT take whole seconds (0 would turn keepalive, and so the Last Will timer, off)."""
    return max(1, round(mqtt.keepalive_s))


def read_password(mqtt: MqttSettings) -> str | None:
    """The password from ``password_file`` (trailing newlines stripped), or None without one."""
    if mqtt.password_file is None:
        return None
    try:
        text = Path(mqtt.password_file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise MqttConfigError(f"mqtt.password_file: cannot read {mqtt.password_file}: {reason}") from None
    password = text.rstrip("\r\n")
    if not password:
        raise MqttConfigError(f"mqtt.password_file: {mqtt.password_file} is empty")
    return password


def build_client(mqtt: MqttSettings, gateway: GatewaySettings, *,
                 will: tuple[str, bytes] | None = None) -> paho.Client:
    """A configured, not yet connected client. ``will`` is (topic, payload), sent QoS 1 retained."""
    v5 = mqtt.protocol == "5"
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id_for(mqtt, gateway),
        clean_session=None if v5 else True,
        protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
    )
    password = read_password(mqtt)
    if password is not None and not mqtt.username:
        raise MqttConfigError("mqtt.password_file is set but mqtt.username is not; MQTT sends a password "
                              "only with a user name")
    if mqtt.username:
        client.username_pw_set(mqtt.username, password)
    if mqtt.tls.enabled:
        _set_tls(client, mqtt)
    if will is not None:
        client.will_set(will[0], will[1], qos=1, retain=True)
    client.reconnect_delay_set(min_delay=mqtt.reconnect_min_s, max_delay=mqtt.reconnect_max_s)  # type: ignore[arg-type]
    # We keep our own window of unacknowledged messages (mqtt.inflight); paho's own limit would
    # only queue behind it, and its in-flight counter drifts when unacked messages are dropped.
    client.max_inflight_messages_set(0)
    return client


def _set_tls(client: paho.Client, mqtt: MqttSettings) -> None:
    tls = mqtt.tls
    if (tls.cert_file is None) != (tls.key_file is None):
        raise MqttConfigError("mqtt.tls: cert_file and key_file go together (a client certificate needs its key)")
    for key, path in (("ca_file", tls.ca_file), ("cert_file", tls.cert_file), ("key_file", tls.key_file)):
        if path is not None and not Path(path).is_file():
            raise MqttConfigError(f"mqtt.tls.{key}: {path} does not exist or is not a file")
    try:
        client.tls_set(
            ca_certs=str(tls.ca_file) if tls.ca_file else None,  # None: the system trust store
            certfile=str(tls.cert_file) if tls.cert_file else None,
            keyfile=str(tls.key_file) if tls.key_file else None,
            cert_reqs=ssl.CERT_REQUIRED,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise MqttConfigError(f"mqtt.tls: cannot load the CA, certificate or key: {_ssl_reason(exc)}") from None
    if not tls.verify_hostname:
        client.tls_insecure_set(True)  # the chain is still verified against the CA


def _ssl_reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def describe_error(exc: BaseException | None, *, tls: bool = False) -> str:
    """One short reason for a failed connection attempt (no trace, no payload)."""
    if exc is None:
        return "connection failed"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name ({exc.strerror or exc})"
    if tls and isinstance(exc, (ConnectionResetError, BrokenPipeError)):
        return "connection reset during the TLS handshake (is this port a TLS listener?)"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate verification failed: {str(exc.verify_message or exc.reason or exc).rstrip('.')}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {_ssl_reason(exc)}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[:1].lower() + exc.strerror[1:]
    return str(exc) or type(exc).__name__


def describe_rc(rc: int) -> str:
    """paho's text for a publish/loop error code (``MQTT_ERR_QUEUE_SIZE`` and friends)."""
    try:
        return f"{MQTTErrorCode(rc).name}: {paho.error_string(rc)}"
    except ValueError:
        return f"error {rc}"
