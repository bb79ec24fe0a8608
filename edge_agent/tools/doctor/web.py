"""The doctor's checks of the technician's page (issue 15), when the config has ``web``:

- ``web password``: ``web.password_file`` present, 0600 and owned by the service user (the
  key files' rule, ``local._readable``), and a scrypt line the agent accepts;
- ``web tls``, ``web cert``: the key private, the certificate readable, and its expiry (the
  broker's rule, ``broker.expiry``: WARN under 30 days, FAIL expired or not yet valid);
- ``web listen``: something answers at ``web.listen`` (``0.0.0.0``/``::`` are asked on the
  loopback) and it is the agent's page (its ``Server`` header); WARN when nothing listens:
  the agent is not running, or started without the page.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import ssl
from pathlib import Path
from typing import Any

from .broker import expiry
from .finding import FAIL, OK, WARN, Finding, Who
from .local import _readable

__all__ = ["check_web"]

PROBE_S = 2.0


def check_web(settings: Any, who: Who, config: str) -> list[Finding]:
    web = settings.web
    found = [_password(web, who, config)]
    if web.tls:
        found += _tls(web, who)
    return found + [_listen(web)]


def _password(web: Any, who: Who, config: str) -> Finding:
    from ...web.auth import PasswordFile, WebError

    as_user = f"sudo -u {who.name} " if os.geteuid() == 0 and who.uid != 0 else ""
    fix = f"{as_user}edge-agent web passwd -c {config}"
    path = Path(web.password_file)
    problem = _readable("web password", path, who, secret=True,
                        missing=f"{fix} (the agent refuses to start without it)")
    if problem is not None:
        return problem
    try:
        PasswordFile(path).load()
    except WebError as exc:
        return Finding(FAIL, "web password", str(exc).replace("-c CONFIG", f"-c {config}"),
                       f"{fix} writes a new one")
    return Finding(OK, "web password", f"{path} private to {who.name}, a scrypt hash")


def _tls(web: Any, who: Who) -> list[Finding]:
    from cryptography import x509

    fix = "copy the page's certificate and key there, or correct web.tls (cert_file, key_file)"
    problems = [_readable("web tls", Path(web.tls_cert_file), who, secret=False, missing=fix),
                _readable("web tls", Path(web.tls_key_file), who, secret=True, missing=fix)]
    bad = [p for p in problems if p is not None]
    if bad:
        return bad[:1]
    found = [Finding(OK, "web tls", f"{web.tls_cert_file} readable, {web.tls_key_file} private to {who.name}")]
    try:
        cert = x509.load_pem_x509_certificate(Path(web.tls_cert_file).read_bytes())
    except (OSError, ValueError) as exc:
        why = getattr(exc, "strerror", None) or exc
        return found + [Finding(FAIL, "web cert", f"{web.tls_cert_file}: cannot be read as a PEM certificate ({why})",
                                "copy the page's certificate there again")]
    finding = expiry("web cert", f"the page's certificate {web.tls_cert_file}", cert,
                     "renew it (web.tls.cert_file), then restart the agent")
    if finding.status == WARN:  # the helper's words are the uplink's
        finding = dataclasses.replace(finding, fix="renew it (web.tls.cert_file) before then and restart the "
                                                   "agent: browsers refuse the page once it has expired")
    return found + [finding]


def _listen(web: Any) -> Finding:
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(web.listen_host, web.listen_host)
    shown = f"[{host}]:{web.listen_port}" if ":" in host else f"{host}:{web.listen_port}"
    url = f"{'https' if web.tls else 'http'}://{shown}/"
    try:
        with socket.create_connection((host, web.listen_port), timeout=PROBE_S) as sock:
            server = _server_header(sock, web.tls, host)
    except ConnectionRefusedError:
        return Finding(WARN, "web listen", f"nothing listens on {shown}: the agent is not running, or started "
                       "without its page", "systemctl start edge-agent; 'journalctl -u edge-agent -n 50' says why "
                       "the page did not start (its password file, TLS files, or the address taken)")
    except OSError as exc:
        return Finding(WARN, "web listen", f"{shown}: {exc.strerror or exc}",
                       "is web.listen an address of this gateway? 'ip addr' lists them")
    if server == "edge-agent":
        return Finding(OK, "web listen", f"the page answers at {url}")
    return Finding(WARN, "web listen", f"{shown} accepts connections but does not answer as the agent's page "
                   f"({'Server: ' + server if server else 'no HTTP answer'})",
                   "another program may hold the port ('ss -ltnp' names it): stop it or choose another web.listen")


def _server_header(sock: socket.socket, tls: bool, host: str) -> str | None:
    """The ``Server`` header of ``GET /login``; None when no HTTP answer comes. The certificate is
    not judged here (``web cert`` does), so the handshake does not verify it."""
    conn = sock
    try:
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
            conn = ctx.wrap_socket(sock, server_hostname=host)
        conn.sendall(b"GET /login HTTP/1.1\r\nHost: doctor\r\nConnection: close\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head and len(head) < 16384:
            chunk = conn.recv(4096)
            if not chunk:
                break
            head += chunk
    except OSError:
        return None
    finally:
        conn.close()
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "server":
            return value.strip()
    return None if not head.startswith(b"HTTP/") else ""
