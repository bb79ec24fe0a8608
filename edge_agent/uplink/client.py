"""Builds the paho client from ``MqttSettings``: protocol, client id, credentials, TLS, Last Will.

Only this module, ``uplink`` and (later) ``downlink`` import paho. Everything here runs at
start-up and fails with one clear line (``MqttConfigError``) when a file the settings name
cannot be read; nothing here touches the network. Connection failures at run time (refused,
unresolvable host, TLS handshake or certificate verification) are retried by paho's loop,
described for the log by ``describe_error`` / ``describe_socket_error`` and logged, without
flooding, by ``ConnectionLog``. A TLS client never falls back to plaintext: with
``tls.enabled`` the only socket paho opens is wrapped in the SSL context made here.

A broker that rejects the client certificate (``require_certificate``) does so *after* a TLS
1.3 handshake completed on the client's side: paho then sends CONNECT (encrypted), reads the
alert, logs "failed to receive on socket: ..." and calls ``on_disconnect`` without any
``on_connect``. ``ErrorTap`` (paho's logger, reduced to its errors) keeps that line so the
uplink can say why.

paho facts relied on (2.2):
- ``CallbackAPIVersion.VERSION2``: callbacks get ``reason_code, properties``.
- ``Client(clean_session=...)`` is for 3.1.1 only; MQTT 5 takes ``clean_start`` at connect.
- ``tls_set`` loads the CA, certificate and key files at once (so errors surface at start);
  ``tls_insecure_set(True)`` turns hostname verification off but keeps chain verification.
- ``will_set`` must precede ``connect``/``connect_async``.
"""

from __future__ import annotations

import logging
import re
import socket
import ssl
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from ..errors import StartupError
from ..settings import GatewaySettings, MqttSettings

__all__ = ["MqttConfigError", "build_client", "read_password", "client_id_for", "describe_error",
           "describe_socket_error", "describe_rc", "keepalive_s", "stop_loop", "ErrorTap", "ConnectionLog"]


class MqttConfigError(StartupError):
    """A file the mqtt settings name cannot be used; raised at start, never retried."""


def client_id_for(mqtt: MqttSettings, gateway: GatewaySettings) -> str:
    return mqtt.client_id or f"edge-agent-{gateway.id}"


def keepalive_s(mqtt: MqttSettings) -> int:
    """paho and MQTT take whole seconds (0 would turn keepalive, and so the Last Will timer, off)."""
    return max(1, round(mqtt.keepalive_s))


def read_password(mqtt: MqttSettings) -> str | None:
    """The password from ``password_file`` (trailing newlines stripped), or None without one."""
    return _read_secret(mqtt.password_file, "mqtt.password_file")


def read_username(mqtt: MqttSettings) -> str | None:
    """``username``, or the one in ``username_file`` (a ThingsBoard access token), or None."""
    return mqtt.username or _read_secret(mqtt.username_file, "mqtt.username_file")


def _read_secret(file: Path | None, key: str) -> str | None:
    if file is None:
        return None
    try:
        text = Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise MqttConfigError(f"{key}: cannot read {file}: {reason}") from None
    secret = text.rstrip("\r\n")
    if not secret:
        raise MqttConfigError(f"{key}: {file} is empty")
    return secret


def build_client(mqtt: MqttSettings, gateway: GatewaySettings, *,
                 will: tuple[str, bytes] | tuple[str, bytes, bool] | None = None,
                 errors: "ErrorTap | None" = None) -> paho.Client:
    """A configured, not yet connected client. ``will`` is (topic, payload[, retain]), sent QoS 1,
    retained unless it says otherwise (Sparkplug's NDEATH is not); ``errors`` receives paho's
    error lines."""
    v5 = mqtt.protocol == "5"
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id_for(mqtt, gateway),
        clean_session=None if v5 else True,
        protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
    )
    password = read_password(mqtt)
    username = read_username(mqtt)
    if password is not None and not username:
        raise MqttConfigError("mqtt.password_file is set but mqtt.username is not; MQTT sends a password "
                              "only with a user name")
    if username:
        client.username_pw_set(username, password)
    if mqtt.tls.enabled:
        _set_tls(client, mqtt)
    if will is not None:
        client.will_set(will[0], will[1], qos=1, retain=bool(will[2]) if len(will) > 2 else True)
    client.reconnect_delay_set(min_delay=mqtt.reconnect_min_s, max_delay=mqtt.reconnect_max_s)  # type: ignore[arg-type]
    # We keep our own window of unacknowledged messages (mqtt.inflight); paho's own limit would
    # only queue behind it, and its in-flight counter drifts when unacked messages are dropped.
    client.max_inflight_messages_set(0)
    if errors is not None:
        client.enable_logger(errors)  # type: ignore[arg-type]
    return client


class ErrorTap:
    """Stands in for paho's ``logging.Logger``: keeps the last error line, drops the rest.

    paho calls ``log(level, fmt, *args)`` for every packet; only errors are formatted here, so
    this costs one comparison per packet (``on_log`` would format every line).
    """

    def __init__(self) -> None:
        self.last: str | None = None

    def log(self, level: int, fmt: str, *args: Any) -> None:
        if level >= logging.ERROR:
            try:
                self.last = fmt % args
            except (TypeError, ValueError):
                self.last = str(fmt)

    def take(self) -> str | None:
        """The last error since the previous ``take``, and forget it."""
        last, self.last = self.last, None
        return last


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


# OpenSSL X509_V_ERR_* codes whose cause is most often the configuration
_CA_HINT = " (mqtt.tls.ca_file does not hold the CA that signed the broker's certificate)"
_VERIFY_HINTS = {
    18: _CA_HINT, 19: _CA_HINT, 20: _CA_HINT, 21: _CA_HINT,  # self-signed, unknown issuer
    62: " (the certificate is for another name; the host dialled (mqtt.host, or the node in mqtt.hosts) must match it, or set mqtt.tls.verify_hostname: false)",
    64: " (the certificate is for another address; the host dialled (mqtt.host, or the node in mqtt.hosts) must match it, or set mqtt.tls.verify_hostname: false)",
}


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
        what = str(exc.verify_message or exc.reason or exc).rstrip(".")
        hint = _VERIFY_HINTS.get(exc.verify_code or 0, "")
        return f"TLS certificate verification failed: {what}{hint}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {_ssl_reason(exc)}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[:1].lower() + exc.strerror[1:]
    return str(exc) or type(exc).__name__


_SSL_TAG = re.compile(r"\[SSL: ([A-Z0-9_]+)\] ([^(]*)")


def describe_socket_error(line: str | None) -> str:
    """One short reason from paho's error line for a connection that died before its CONNACK."""
    if not line:
        return "the broker closed the connection before accepting it"
    found = _SSL_TAG.search(line)
    if found is None and "EOF occurred in violation of protocol" in line:  # cut off before its alert arrived
        return ("the broker ended the TLS session during the handshake without saying why (if it requires a "
                "client certificate: mqtt.tls.cert_file and key_file)")
    if found is None:
        text = re.sub(r"^\[Errno \d+\] ", "", line.removeprefix("failed to receive on socket: ").strip())
        return text[:1].lower() + text[1:] if text else "connection failed"
    tag, text = found.group(1), found.group(2).strip()
    if tag.endswith("CERTIFICATE_REQUIRED"):
        return (f"the broker rejected the TLS session: {text} (it requires a client certificate: "
                "mqtt.tls.cert_file and key_file)")
    if any(tag.endswith(t) for t in ("UNKNOWN_CA", "BAD_CERTIFICATE", "CERTIFICATE_UNKNOWN",
                                     "CERTIFICATE_EXPIRED", "CERTIFICATE_REVOKED", "UNSUPPORTED_CERTIFICATE")):
        return f"the broker rejected the client certificate: {text}"
    return f"TLS session failed: {text}"


class ConnectionLog:
    """The connection's ups and downs in the log, without flooding it.

    The first failure, or a failure of a new kind, at ERROR; repeats at DEBUG (with the attempt
    count); the recovery once at INFO with the time it took; a lost connection at WARNING.
    Called from paho's network thread only (and ``starting`` before it runs).
    """

    def __init__(self, address: str, client_id: str, logger: logging.Logger) -> None:
        self.address = address
        self.client_id = client_id
        self._log = logger
        self.ever_connected = False
        self._down_since: float | None = None
        self._failed_attempts = 0
        self._logged_reason: str | None = None

    def starting(self) -> None:
        self._down_since = time.monotonic()
        self._log.debug("mqtt: connecting to %s as %s", self.address, self.client_id)

    def failed(self, reason: str) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
        self._failed_attempts += 1
        if reason != self._logged_reason:
            self._logged_reason = reason
            self._log.error("mqtt: cannot connect to %s: %s; retrying", self.address, reason)
        else:
            self._log.debug("mqtt: cannot connect to %s: %s (attempt %d); retrying", self.address, reason,
                            self._failed_attempts)

    def connected(self) -> None:
        if self._failed_attempts == 0 and not self.ever_connected:
            self._log.info("mqtt: connected to %s as %s", self.address, self.client_id)
        elif self._down_since is not None:  # the recovery, once
            self._log.info("mqtt: connected to %s%s after %.1f s", self.address,
                           " again" if self.ever_connected else "", time.monotonic() - self._down_since)
        self.ever_connected = True
        self._down_since = None
        self._failed_attempts = 0
        self._logged_reason = None

    def lost(self, why: str, next_node: str | None = None) -> None:
        self._down_since = time.monotonic()
        self._log.warning("mqtt: connection to %s lost%s; reconnecting%s", self.address, why,
                          f" to {next_node}" if next_node else "")


def stop_loop(client: Any) -> None:
    """``client.loop_stop()`` without paho 2.2's race: the network thread clears ``client._thread``
    as it ends, and ``loop_stop`` reads that attribute twice (checks it, then joins it), so a
    thread that ends in between (right after ``disconnect``) makes it raise ``AttributeError:
    'NoneType' object has no attribute 'join'``. One agent in 100 hit it at a clean stop in the
    fleet bench, exited 1 and left two acked rows unmarked. Caught here: the thread has ended."""
    try:
        client.loop_stop()
    except AttributeError:
        pass


def describe_rc(rc: int) -> str:
    """paho's text for a publish/loop error code (``MQTT_ERR_QUEUE_SIZE`` and friends)."""
    try:
        return f"{MQTTErrorCode(rc).name}: {paho.error_string(rc)}"
    except ValueError:
        return f"error {rc}"
