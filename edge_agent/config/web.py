"""The ``web`` section: the technician's page (issue 15, CONTRACT section 9), off when absent.

Called by ``schema``; problems go to the same ``Report``. The password and TLS files are only
named here: ``check`` looks for them (``files``), ``run`` reads them. No I/O::

    web:                                  # 'web:' alone: every default
      listen: 127.0.0.1:8080              # HOST:PORT; an IPv6 address in brackets: '[::1]:8080'
      password_file: web.passwd           # default {state_dir}/web.passwd ('edge-agent web passwd')
      tls: {cert_file: web.crt, key_file: web.key}   # both or neither: HTTPS with them
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

from ..settings import WebSettings
from .source import Report, Section, describe, path

__all__ = ["read_web", "DEFAULT_LISTEN", "parse_listen"]

DEFAULT_LISTEN = ("127.0.0.1", 8080)
_FORM = "expected HOST:PORT, e.g. '127.0.0.1:8080', '0.0.0.0:8080' or '[::1]:8080'"


def read_web(report: Report, top: Section, base: Path, state_dir: Path) -> WebSettings | None:
    """``web:``; None when absent (no page). ``web:`` with no value means every default."""
    if "web" not in top.values:
        return None
    default_password = state_dir / "web.passwd"
    if top.values["web"].value is None:
        return WebSettings(password_file=default_password)
    s = top.section("web", ("listen", "password_file", "tls"), secrets={"password": "password_file"})
    if s is None:
        return None
    listen = s.get("listen", parse_listen, DEFAULT_LISTEN) or DEFAULT_LISTEN
    cert, key = _tls(report, s, base)
    return WebSettings(listen_host=listen[0], listen_port=listen[1], tls_cert_file=cert, tls_key_file=key,
                       password_file=s.get("password_file", path(base), default_password) or default_password)


def _tls(report: Report, web: Section, base: Path) -> tuple[Path | None, Path | None]:
    s = web.section("tls", ("cert_file", "key_file"), secrets={"key": "key_file"})
    if s is None:
        return None, None
    for have, need in (("cert_file", "key_file"), ("key_file", "cert_file")):
        if s.given(have) and not s.given(need):
            report.add(s.line_of(have), s.sub(need), f"required with {have}: the page's certificate and its key "
                       "go together (remove tls for plain HTTP)")
    if not s.given("cert_file") and not s.given("key_file"):
        report.add(web.line_of("tls"), web.sub("tls"), "give cert_file and key_file (or remove tls for plain HTTP)")
    return s.get("cert_file", path(base), None), s.get("key_file", path(base), None)


def parse_listen(value: Any) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port); an IPv6 host is written in brackets and returned without."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{_FORM}, got {describe(value)}")
    text = value.strip()
    if "/" in text or " " in text:
        raise ValueError(f"{text!r} is not a host and port: no scheme, path or spaces ({_FORM})")
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{_FORM}, got {text!r}" + ("" if sep else " (no port)"))
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} in brackets is not an IPv6 address ({_FORM})") from None
    elif "[" in host or "]" in host:
        raise ValueError(f"{host!r} is not a host name or address ({_FORM})")
    elif ":" in host:
        raise ValueError(f"an IPv6 address goes in brackets: '[{host}]:{port}'")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"port {port!r} is not a number in 1..65535 ({_FORM})")
    return host, int(port)
