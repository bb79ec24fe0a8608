"""The doctor's broker checks, one step at a time, each within ``BROKER_TIMEOUT_S``:

``broker dns`` (mqtt.host resolves) -> ``broker tcp`` (mqtt.port accepts) -> ``broker tls``
(handshake with mqtt.tls's CA and client certificate; ``broker cert``: the server certificate's
expiry, shown even when verification failed, since "expired" is a common reason) ->
``client cert`` (expiry of mqtt.tls.cert_file) -> ``broker mqtt`` (CONNECT as
``<client id>-doctor`` with the configured credentials; a distinct id so a running daemon's
session is not taken over). A failed step ends the chain: what comes after cannot be tried.

Several nodes (``mqtt.hosts``, issue 16): the agent dials them in turn and checks each server
certificate against the name it dials for *that* node, so the same chain runs for every node, and
each node gets one line, ``broker node HOST:PORT``: reachable, TLS valid for that host name, login
accepted, or the step that failed and why (``client cert`` is the gateway's and comes once).
Severity, as a careful installer would want it: a bad node is a WARN while another node is good,
since the gateway still delivers (the agent skips to the next node) but runs without the
redundancy it was installed with, and a FAIL (exit 1) would stop an installation that works; when
no node is good every node's line is a FAIL, as the uplink cannot deliver at all. A node whose
chain passed with a warning (a certificate expiring soon) is good and its line is that WARN. One
node (``host``, or ``hosts`` of one) keeps the step lines above.

Reasons are worded by ``mqtt_client.describe_error``/``describe_socket_error``, as the daemon's
log words them; the TLS and password files are first checked by ``mqtt_client.build_client``,
exactly as the daemon does at start. The handshake's context is made from the same
``TlsSettings`` as paho's ``tls_set`` makes it (CERT_REQUIRED, the CA file or the system store,
the client certificate, ``verify_hostname``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any, Callable

from .finding import FAIL, OK, WARN, Finding

__all__ = ["run", "BrokerProbe", "expiry", "EXPIRY_WARN_DAYS"]

EXPIRY_WARN_DAYS = 30
Run = Callable[[str, Callable[[], Any], float], list[Finding]]

_CA_FIX = "set mqtt.tls.ca_file to the CA that signed the broker's certificate (ask the broker's operator)"
_VERIFY_FIX = {
    9: "the gateway's clock is probably wrong (see the clock line), or the certificate is issued for later",
    10: "the broker's certificate has expired: its operator must renew it",
    18: _CA_FIX, 19: _CA_FIX, 20: _CA_FIX, 21: _CA_FIX,
    62: "{host} must be a name the certificate lists ({names}), or set mqtt.tls.verify_hostname: false",
    64: "{host} must be an address the certificate lists ({names}), or set mqtt.tls.verify_hostname: false",
}
_LISTENER_FIX = ("is {port} a TLS listener? (TLS is usually 8883, plain MQTT 1883); "
                 "or turn mqtt.tls.enabled off for a plain listener")


def run(settings: Any, run_check: Run, timeout: float, quiet: Run | None = None) -> None:
    """Every broker step through ``run_check(name, fn, timeout)``, stopping at the first FAIL;
    with several nodes (and ``quiet``: the same time limit, without printing), one line a node."""
    nodes = settings.mqtt.nodes
    if len(nodes) < 2 or quiet is None:
        keys = ("mqtt.hosts[0]",) * 2 if settings.mqtt.hosts else ("mqtt.host", "mqtt.port")
        probe = BrokerProbe(settings, timeout * 0.9, keys=keys)  # the step's own timeouts fire before the doctor's
        _chain(probe, run_check, timeout, client_cert=True)
        return
    probes = [BrokerProbe(settings, timeout * 0.9, node=node, keys=(f"mqtt.hosts[{i}]",) * 2)
              for i, node in enumerate(nodes)]
    chains = [_chain(probe, quiet, timeout, client_cert=False) for probe in probes]
    good = sum(not any(f.status == FAIL for f in found) for found in chains)
    for probe, found in zip(probes, chains):
        line = _node_line(probe, found, good, len(nodes))
        run_check(line.check, lambda line=line: line, timeout)
    if settings.mqtt.tls.enabled and settings.mqtt.tls.cert_file:
        run_check("client cert", probes[0].client_cert, timeout)


def _chain(probe: "BrokerProbe", step: Run, timeout: float, *, client_cert: bool) -> list[Finding]:
    """One node's steps through ``step``, stopping at the first FAIL; what each found."""
    found: list[Finding] = []

    def failed(check: str, fn: Callable[[], Any]) -> bool:
        got = step(check, fn, timeout)
        found.extend(got)
        return any(f.status == FAIL for f in got)

    if failed("broker dns", probe.dns) or failed("broker tcp", probe.tcp):
        return found
    if probe.mqtt.tls.enabled:
        tls_failed = failed("broker tls", probe.tls)
        if probe.peer_der is not None:
            failed("broker cert", probe.cert)
        if client_cert and probe.mqtt.tls.cert_file:
            failed("client cert", probe.client_cert)
        if tls_failed:
            return found
    else:
        failed("broker tls", lambda: Finding(OK, "broker tls", f"off: plain MQTT to port {probe.port} "
                                                               "(mqtt.tls.enabled is false)"))
    failed("broker mqtt", probe.session)
    return found


def _node_line(probe: "BrokerProbe", found: list[Finding], good: int, total: int) -> Finding:
    """``broker node HOST:PORT``: the first failed step and its fix (WARN while ``good`` nodes
    remain, else FAIL), or what the node offers, with a step's warning when there is one."""
    check = f"broker node {probe.target}"
    bad = next((f for f in found if f.status == FAIL), None)
    if bad is not None:
        step = bad.check.removeprefix("broker ")
        if good:
            return Finding(WARN, check, f"{step}: {bad.finding}; the agent skips this node ({good} of {total} "
                                        "nodes good, so the gateway delivers without this redundancy)", bad.fix)
        return Finding(FAIL, check, f"{step}: {bad.finding}; no node of mqtt.hosts is good: the uplink cannot "
                                    "deliver", bad.fix)
    parts = [f"reachable at {probe.reached[1][0] if probe.reached else probe.host}"]
    tls = probe.mqtt.tls
    if not tls.enabled:
        parts.append("plain MQTT (mqtt.tls.enabled is false)")
    elif tls.verify_hostname:
        parts.append(f"{probe.tls_version} certificate valid for {probe.host}")
    else:
        parts.append(f"{probe.tls_version} certificate verified (host name not checked: verify_hostname false)")
    parts.append(f"login accepted ({probe.accepted})")
    warned = next((f for f in found if f.status == WARN), None)
    if warned is not None:
        return Finding(WARN, check, ", ".join(parts) + f"; but {warned.finding}", warned.fix)
    return Finding(OK, check, ", ".join(parts))


def _when(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M UTC")


def _subject(cert: Any) -> str:
    from cryptography.x509.oid import NameOID

    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else cert.subject.rfc4514_string() or "no subject"


def expiry(check: str, what: str, cert: Any, renew: str, now: dt.datetime | None = None) -> Finding:
    """FAIL expired or not yet valid, WARN under ``EXPIRY_WARN_DAYS``, else OK."""
    from ...units import format_duration

    now = now or dt.datetime.now(dt.timezone.utc)
    after, before = cert.not_valid_after_utc, cert.not_valid_before_utc
    name = f"{what} ({_subject(cert)})"
    left = (after - now).total_seconds()
    if left <= 0:
        return Finding(FAIL, check, f"{name} expired on {_when(after)}, {format_duration(-left)} ago",
                       f"{renew}: the gateway refuses an expired certificate")
    if before > now:
        return Finding(FAIL, check, f"{name} is not valid before {_when(before)}: is the gateway's clock right?",
                       "see the clock line; 'timedatectl status' shows the time this gateway has")
    if left < EXPIRY_WARN_DAYS * 86400:
        return Finding(WARN, check, f"{name} expires on {_when(after)}, in {format_duration(left)}",
                       f"{renew} before then: the uplink stops when it expires")
    return Finding(OK, check, f"{name} valid until {_when(after)} ({int(left // 86400)} days)")


class BrokerProbe:
    """The steps for one broker node (``node``: (host, port), default ``mqtt.host``/``port``),
    sharing what one learns (addresses, the server certificate) with the next. ``keys``: the
    config keys a fix names for the host and the port."""

    def __init__(self, settings: Any, timeout: float, *, node: tuple[str, int] | None = None,
                 keys: tuple[str, str] = ("mqtt.host", "mqtt.port")) -> None:
        self.mqtt, self.gateway = settings.mqtt, settings.gateway
        self.host, self.port = node or (self.mqtt.host, self.mqtt.port)
        self.host_key, self.port_key = keys
        self.timeout = timeout
        self.addrs: list[tuple[int, Any]] = []  # (family, sockaddr) from dns
        self.reached: tuple[int, Any] | None = None  # the one tcp connected to
        self.peer_der: bytes | None = None
        self.tls_version = ""  # from tls, once the handshake passed
        self.accepted = ""  # from session: the client id (and user) the broker let in

    @property
    def target(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def dns(self) -> Finding:
        from ...uplink.client import describe_error

        host = self.host
        try:
            ip = ipaddress.ip_address(host)
            self.addrs = [(socket.AF_INET6 if ip.version == 6 else socket.AF_INET, (host, self.port))]
            return Finding(OK, "broker dns", f"{host} is an address: nothing to resolve")
        except ValueError:
            pass
        try:
            infos = socket.getaddrinfo(host, self.port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            return Finding(FAIL, "broker dns", f"{host}: {describe_error(exc)}",
                           f"check {self.host_key} for a typo; 'getent hosts {host}' asks the resolver, and "
                           "/etc/resolv.conf names the DNS servers this gateway uses")
        self.addrs = list(dict.fromkeys((family, sockaddr) for family, _, _, _, sockaddr in infos))
        shown = ", ".join(dict.fromkeys(str(sockaddr[0]) for _, sockaddr in self.addrs))
        return Finding(OK, "broker dns", f"{host} -> {shown}")

    def tcp(self) -> Finding:
        from ...uplink.client import describe_error

        deadline = time.monotonic() + self.timeout
        reasons: list[str] = []
        for family, sockaddr in self.addrs:
            started = time.monotonic()
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.settimeout(max(0.1, deadline - started))
                sock.connect(sockaddr)
            except OSError as exc:
                reasons.append(f"{sockaddr[0]}: {describe_error(exc)}")
                continue
            finally:
                sock.close()
            self.reached = (family, sockaddr)
            return Finding(OK, "broker tcp", f"connected to {sockaddr[0]} port {sockaddr[1]} in "
                                             f"{(time.monotonic() - started) * 1000:.0f} ms")
        return Finding(FAIL, "broker tcp", f"cannot connect to {self.target}: {'; '.join(reasons) or 'no address'}",
                       f"is the broker running and is {self.port_key} right? (plain MQTT is usually 1883, TLS 8883); "
                       f"a firewall may be in the way: 'nc -vz {self.host} {self.port}' tries it by hand")

    def _context(self, verify: bool) -> ssl.SSLContext:
        tls = self.mqtt.tls
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if not verify:
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
            return ctx
        if tls.ca_file:
            ctx.load_verify_locations(cafile=str(tls.ca_file))
        else:
            ctx.load_default_certs()
        if tls.cert_file:
            ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file) if tls.key_file else None)
        ctx.check_hostname = tls.verify_hostname
        return ctx

    def _handshake(self, ctx: ssl.SSLContext) -> tuple[bytes | None, str]:
        assert self.reached is not None
        family, sockaddr = self.reached
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(sockaddr)
            with ctx.wrap_socket(sock, server_hostname=self.host) as tls_sock:
                return tls_sock.getpeercert(binary_form=True), tls_sock.version() or "TLS"
        finally:
            sock.close()

    def tls(self) -> Finding:
        from ...uplink.client import MqttConfigError, build_client, describe_error

        try:
            build_client(self.mqtt, self.gateway)  # the daemon's own checks of the TLS and password files
        except MqttConfigError as exc:
            return Finding(FAIL, "broker tls", str(exc), "correct mqtt.tls or mqtt.credentials: the agent refuses "
                           "to start like this")
        try:
            self.peer_der, version = self._handshake(self._context(verify=True))
        except ssl.SSLCertVerificationError as exc:
            try:  # the certificate itself, so that broker cert can say what is wrong with it
                self.peer_der, _ = self._handshake(self._context(verify=False))
            except (OSError, ValueError):
                pass
            fix = _VERIFY_FIX.get(exc.verify_code or 0, "ask the broker's operator which CA signs its certificate, "
                                                        "and set mqtt.tls.ca_file to it")
            return Finding(FAIL, "broker tls", describe_error(exc, tls=True),
                           fix.format(host=self.host_key, names=self._peer_names()))
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            return Finding(FAIL, "broker tls", describe_error(exc, tls=True), _LISTENER_FIX.format(port=self.port_key))
        tls = self.mqtt.tls
        trust = f"CA {tls.ca_file}" if tls.ca_file else "the system trust store"
        client = ", client certificate sent" if tls.cert_file else ""
        self.tls_version = version
        host = "" if tls.verify_hostname else " (host name not checked: verify_hostname false)"
        return Finding(OK, "broker tls", f"handshake with {self.target} ({version}), certificate verified "
                                         f"against {trust}{host}{client}")

    def _peer_names(self) -> str:
        """The names and addresses the server certificate lists (subjectAltName), for a fix."""
        if self.peer_der is None:
            return "see broker cert"
        from cryptography import x509

        try:
            san = x509.load_der_x509_certificate(self.peer_der).extensions.get_extension_for_class(
                x509.SubjectAlternativeName).value
        except (ValueError, x509.ExtensionNotFound):
            return "see broker cert"
        names = [str(n) for n in san.get_values_for_type(x509.DNSName)]
        names += [str(a) for a in san.get_values_for_type(x509.IPAddress)]
        return "it lists " + ", ".join(names) if names else "it lists none"

    def cert(self) -> Finding:
        from cryptography import x509

        assert self.peer_der is not None
        cert = x509.load_der_x509_certificate(self.peer_der)
        return expiry("broker cert", "the broker's certificate", cert,
                      "the broker's operator must renew it")

    def client_cert(self) -> Finding:
        from cryptography import x509

        path = self.mqtt.tls.cert_file
        try:
            cert = x509.load_pem_x509_certificate(Path(path).read_bytes())
        except (OSError, ValueError) as exc:
            return Finding(FAIL, "client cert", f"{path}: cannot be read as a PEM certificate "
                           f"({getattr(exc, 'strerror', None) or exc})", "copy the gateway's certificate there again")
        return expiry("client cert", f"the gateway's certificate {path}", cert,
                      "ask the platform operator for a new client certificate (mqtt.tls.cert_file, key_file)")

    def session(self) -> Finding:
        from ...uplink.client import (ErrorTap, MqttConfigError, build_client, client_id_for, describe_error,
                                  describe_socket_error, keepalive_s, stop_loop)

        cid = client_id_for(self.mqtt, self.gateway) + "-doctor"
        tap, done, outcome = ErrorTap(), threading.Event(), {}
        try:
            # one attempt: paho's loop would otherwise wait reconnect_min (1 s) before it notices the stop
            once = dataclasses.replace(self.mqtt, client_id=cid, reconnect_min_s=0.1, reconnect_max_s=0.1)
            client = build_client(once, self.gateway, errors=tap)
        except MqttConfigError as exc:
            return Finding(FAIL, "broker mqtt", str(exc), "correct mqtt.credentials or mqtt.tls: the agent refuses "
                           "to start like this")

        def on_connect(client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
            outcome.setdefault("connack", reason_code)
            done.set()

        def on_disconnect(client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
            outcome.setdefault("closed", describe_socket_error(tap.take()))
            done.set()

        def on_connect_fail(client: Any, userdata: Any) -> None:
            import sys

            outcome.setdefault("failed", describe_error(sys.exception(), tls=self.mqtt.tls.enabled))
            done.set()

        client.on_connect, client.on_disconnect, client.on_connect_fail = on_connect, on_disconnect, on_connect_fail
        client.connect_timeout = self.timeout
        client.connect_async(self.host, self.port, keepalive=keepalive_s(self.mqtt))
        client.loop_start()
        try:
            done.wait(self.timeout)
        finally:
            client.disconnect()
            stop_loop(client)
        return self._mqtt_finding(cid, outcome)

    def _mqtt_finding(self, cid: str, outcome: dict[str, Any]) -> Finding:
        as_user = f" as user {self.mqtt.username}" if self.mqtt.username else ""
        rc = outcome.get("connack")
        if rc is not None and not rc.is_failure:
            self.accepted = f"client id {cid}{as_user}"
            return Finding(OK, "broker mqtt", f"CONNECT accepted for client id {cid}{as_user}")
        if rc is not None:
            text = str(rc)
            fix = ("check mqtt.credentials (username, password_file) and the broker's ACL for this gateway"
                   if "authori" in text.lower() or "password" in text.lower()
                   else "the broker's operator can tell from its log why it refused this client")
            return Finding(FAIL, "broker mqtt", f"the broker refused the connection{as_user}: {text}", fix)
        reason = outcome.get("failed") or outcome.get("closed")
        if reason:
            fix = ("mqtt.tls.cert_file and key_file: the gateway's client certificate, signed by a CA the broker "
                   "trusts" if "certificate" in reason else "the broker's log tells why it closed the connection")
            return Finding(FAIL, "broker mqtt", f"no session with {self.target}: {reason}", fix)
        return Finding(FAIL, "broker mqtt", f"no CONNACK from {self.target} within {self.timeout:.1f} s",
                       "is this port an MQTT listener? a loaded broker, or a proxy in the way, can be this slow")
