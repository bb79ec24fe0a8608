"""The ``web`` section (issue 15): off when absent, every default with ``web:`` alone, ``listen`` as
HOST:PORT (IPv6 in brackets), the password file in the state dir unless named, TLS both or
neither; ``check`` warns about a password or TLS file that is not there. Several problems at
once, as ``check`` prints them, are the folder case ``cases/web_section_problems``."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.config.schema import ConfigError, check_config, parse_settings
from edge_agent.config.web import parse_listen
from edge_agent.settings import WebSettings

BASE = "gateway: {id: gw-1, site: s1, state_dir: /srv/state}\nmqtt: {host: h}\nbuses: []\ndevices: []\n"


def _web(text: str, base_dir: Path = Path("/etc/edge-agent")) -> WebSettings | None:
    return parse_settings(BASE + text, base_dir=base_dir).web


def _problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        parse_settings(BASE + text)
    return str(raised.value).splitlines()


def test_absent_means_no_page() -> None:
    assert _web("") is None


@pytest.mark.parametrize("text", ["web:\n", "web: {}\n"])
def test_an_empty_section_means_every_default(text: str) -> None:
    assert _web(text) == WebSettings("127.0.0.1", 8080, None, None, Path("/srv/state/web.passwd"))


def test_every_key() -> None:
    web = _web("web:\n  listen: 0.0.0.0:8443\n  password_file: web/passwd\n"
               "  tls: {cert_file: web.crt, key_file: /etc/ssl/web.key}\n")
    assert web == WebSettings("0.0.0.0", 8443, Path("/etc/edge-agent/web.crt"), Path("/etc/ssl/web.key"),
                              Path("/etc/edge-agent/web/passwd"))
    assert web.tls


@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1:8080", ("127.0.0.1", 8080)), ("[::1]:8080", ("::1", 8080)), ("[::]:80", ("::", 80)),
    ("gateway.local:9000", ("gateway.local", 9000)), (" 0.0.0.0:65535 ", ("0.0.0.0", 65535)),
])
def test_listen_forms(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text, message", [
    ("8080", "expected HOST:PORT, e.g. '127.0.0.1:8080', '0.0.0.0:8080' or '[::1]:8080', got '8080' (no port)"),
    (":8080", "expected HOST:PORT, e.g. '127.0.0.1:8080', '0.0.0.0:8080' or '[::1]:8080', got ':8080'"),
    ("::1:8080", "an IPv6 address goes in brackets: '[::1]:8080'"),
    ("[gateway]:8080", "'gateway' in brackets is not an IPv6 address"),
    ("127.0.0.1:0", "port '0' is not a number in 1..65535"),
    ("127.0.0.1:http", "port 'http' is not a number in 1..65535"),
    ("http://gw:8080", "'http://gw:8080' is not a host and port: no scheme, path or spaces"),
    ("[::1:8080", "'[::1' is not a host name or address"),
])
def test_listen_mistakes_say_the_form(text: str, message: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_listen(text)
    assert str(raised.value).startswith(message)


def test_listen_problem_is_located() -> None:
    assert _problems("web:\n  listen: 8080\n") == [
        "<string>:6: web.listen: expected HOST:PORT, e.g. '127.0.0.1:8080', '0.0.0.0:8080' or '[::1]:8080', "
        "got an integer (8080)"]


def test_tls_needs_both_files() -> None:
    assert _problems("web:\n  tls: {key_file: k.pem}\n") == [
        "<string>:6: web.tls.cert_file: required with key_file: the page's certificate and its key go together "
        "(remove tls for plain HTTP)"]
    assert _problems("web:\n  tls: {}\n") == [
        "<string>:6: web.tls: give cert_file and key_file (or remove tls for plain HTTP)"]


def test_not_a_mapping() -> None:
    assert _problems("web: yes\n") == ["<string>:5: web: expected a mapping, got a boolean (true)"]


# -- check: the files run would read ----------------------------------------------------------------

def test_check_warns_about_the_default_password_file_at_the_web_line(tmp_path: Path) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text(f"gateway: {{id: gw-1, site: s1, state_dir: {tmp_path}}}\nmqtt: {{host: h}}\n"
                      "buses: []\ndevices: []\nprivacy: {actions: {}}\nweb:\n  listen: 127.0.0.1:8080\n")
    settings, found = check_config(config)
    assert settings is not None and settings.web is not None
    assert [str(p) for p in found if "web" in p.path] == [
        f"{config}:6: web.password_file: warning: {tmp_path}/web.passwd does not exist (the default, "
        f"{{state_dir}}/web.passwd); 'run' refuses to start without it: 'edge-agent web passwd -c {config}' "
        "sets the technician's password there"]


def test_check_warns_about_named_password_and_tls_files_and_is_quiet_once_they_are_there(tmp_path: Path) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text(f"gateway: {{id: gw-1, site: s1, state_dir: {tmp_path}}}\nmqtt: {{host: h}}\n"
                      "buses: []\ndevices: []\nweb:\n  password_file: pw\n  tls:\n    cert_file: web.crt\n"
                      "    key_file: web.key\n")
    _, found = check_config(config)
    assert [(p.line, p.path) for p in found if "web" in p.path] == [
        (6, "web.password_file"), (8, "web.tls.cert_file"), (9, "web.tls.key_file")]
    assert all(p.warning for p in found)
    for name in ("pw", "web.crt", "web.key"):
        (tmp_path / name).write_text("x\n")
    _, found = check_config(config)
    assert [p for p in found if "web" in p.path] == []
