"""The paho client as ``uplink/client.py`` builds it from the settings, and the words it finds for
what went wrong.

A client is built and connected to a real mosquitto (plain, with users, with TLS made by
``support.certs``); the reasons ``describe_error`` gives are those of the real exceptions a
refused, unresolvable, plaintext or wrongly certified broker raises, and ``ErrorTap`` is fed by
paho itself. The uplink's own behaviour on those failures (retries, one log line, nothing sent)
is in ``test_drain.py`` and ``test_tls.py``.
"""

from __future__ import annotations

import gc
import logging
import re
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import MQTTErrorCode

from edge_agent.settings import GatewaySettings, MqttSettings, TlsSettings
from edge_agent.uplink.client import (ConnectionLog, ErrorTap, MqttConfigError, build_client, client_id_for,
                                      describe_error, describe_rc, describe_socket_error, keepalive_s, read_password)
from support.broker import Mosquitto, free_port
from support.certs import Pki, make_pki

GW = GatewaySettings(id="gw-7", site="site-a", state_dir=Path("."))

# paho 2.2 leaves the SSLSocket open when the TLS handshake fails; the garbage collector closes it
# with a ResourceWarning (an error in this suite). Ignored only where a handshake must fail.
UNCLOSED_SSL_SOCKET = pytest.mark.filterwarnings("ignore:unclosed <ssl.SSLSocket:ResourceWarning")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def password_file(tmp_path: Path, content: str | bytes) -> Path:
    path = tmp_path / "mqtt.pass"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def config_error(mqtt: MqttSettings, **kw: Any) -> str:
    with pytest.raises(MqttConfigError) as raised:
        build_client(mqtt, GW, **kw)
    return str(raised.value)


# -- identity ---------------------------------------------------------------------------------
def test_the_client_id_is_the_gateways_unless_one_is_set() -> None:
    assert client_id_for(MqttSettings(host="h"), GW) == "edge-agent-gw-7"
    assert client_id_for(MqttSettings(host="h", client_id="plant-3-uplink"), GW) == "plant-3-uplink"


@pytest.mark.parametrize(("configured", "sent"), [(30.0, 30), (30.4, 30), (59.6, 60), (0.2, 1), (0.0, 1)])
def test_keepalive_is_whole_seconds_and_never_zero(configured: float, sent: int) -> None:
    """0 would turn keepalive off, and with it the broker's timer for the Last Will."""
    assert keepalive_s(MqttSettings(host="h", keepalive_s=configured)) == sent


# -- what build_client sets -------------------------------------------------------------------
@pytest.mark.parametrize(("protocol", "paho_protocol"), [("3.1.1", paho.MQTTv311), ("5", paho.MQTTv5)])
def test_the_protocol_of_the_settings(protocol: str, paho_protocol: int) -> None:
    assert build_client(MqttSettings(host="h", protocol=protocol), GW).protocol == paho_protocol


def test_the_last_will_is_set_before_any_connect_and_paho_does_no_flow_control_of_its_own() -> None:
    client = build_client(MqttSettings(host="h"), GW, will=("edge/v1/site-a/gw-7/state", b'{"online":false}'))
    assert client.will_topic == "edge/v1/site-a/gw-7/state" and client.will_payload == b'{"online":false}'
    assert client.max_inflight_messages == 0  # the uplink keeps its own window
    assert not build_client(MqttSettings(host="h"), GW).will_topic


def test_the_error_tap_stands_in_for_pahos_logger() -> None:
    tap = ErrorTap()
    assert build_client(MqttSettings(host="h"), GW, errors=tap).logger is tap


# -- credentials ------------------------------------------------------------------------------
def test_the_password_comes_from_its_file_without_the_line_break(tmp_path: Path) -> None:
    mqtt = MqttSettings(host="h", username="gw", password_file=password_file(tmp_path, "  s3cret Ω \r\n\n"))
    assert read_password(mqtt) == "  s3cret Ω "  # only line breaks at the end go: spaces may be part of it
    client = build_client(mqtt, GW)
    assert (client.username, client.password) == ("gw", "  s3cret Ω ")


def test_without_a_password_file_there_is_no_password(tmp_path: Path) -> None:
    assert read_password(MqttSettings(host="h")) is None
    client = build_client(MqttSettings(host="h", username="gw"), GW)
    assert (client.username, client.password) == ("gw", None)
    assert build_client(MqttSettings(host="h"), GW).username is None


@pytest.mark.parametrize(("content", "reason"), [
    ("\n", "is empty"), ("", "is empty"),
    (b"caf\xe9\n", "cannot read"),
], ids=["a line break only", "nothing", "not UTF-8"])
def test_a_password_file_that_gives_no_password_is_one_clear_line(tmp_path: Path, content: str | bytes,
                                                                  reason: str) -> None:
    path = password_file(tmp_path, content)
    text = config_error(MqttSettings(host="h", username="gw", password_file=path))
    assert text.startswith("mqtt.password_file: ") and reason in text and str(path) in text and "\n" not in text


def test_a_missing_or_unreadable_password_file(tmp_path: Path) -> None:
    absent = tmp_path / "absent.pass"
    assert config_error(MqttSettings(host="h", username="gw", password_file=absent)) == \
        f"mqtt.password_file: cannot read {absent}: No such file or directory"
    assert config_error(MqttSettings(host="h", username="gw", password_file=tmp_path)) == \
        f"mqtt.password_file: cannot read {tmp_path}: Is a directory"


def test_a_password_without_a_user_name_is_refused(tmp_path: Path) -> None:
    mqtt = MqttSettings(host="h", password_file=password_file(tmp_path, "s3cret\n"))
    assert config_error(mqtt) == ("mqtt.password_file is set but mqtt.username is not; MQTT sends a password "
                                  "only with a user name")


# -- TLS settings -----------------------------------------------------------------------------
def tls(**kw: Any) -> MqttSettings:
    return MqttSettings(host="h", tls=TlsSettings(enabled=True, **kw))


def test_tls_files_are_loaded_when_the_client_is_built(pki: Pki, tmp_path: Path) -> None:
    build_client(tls(ca_file=pki.ca_file, cert_file=pki.client_cert, key_file=pki.client_key), GW)
    build_client(tls(), GW)  # no CA file: the system trust store
    # TLS off: the files are not even looked at
    build_client(MqttSettings(host="h", tls=TlsSettings(enabled=False, ca_file=tmp_path / "absent.crt")), GW)


def test_a_client_certificate_needs_its_key_and_the_other_way_round(pki: Pki) -> None:
    expected = "mqtt.tls: cert_file and key_file go together (a client certificate needs its key)"
    assert config_error(tls(ca_file=pki.ca_file, cert_file=pki.client_cert)) == expected
    assert config_error(tls(ca_file=pki.ca_file, key_file=pki.client_key)) == expected


@pytest.mark.parametrize("key", ["ca_file", "cert_file", "key_file"])
def test_a_tls_file_that_is_not_there_is_named_by_its_key(pki: Pki, tmp_path: Path, key: str) -> None:
    files = {"ca_file": pki.ca_file, "cert_file": pki.client_cert, "key_file": pki.client_key}
    files[key] = tmp_path / "absent.pem"
    assert config_error(tls(**files)) == f"mqtt.tls.{key}: {tmp_path / 'absent.pem'} does not exist or is not a file"
    files[key] = tmp_path  # a directory
    assert config_error(tls(**files)) == f"mqtt.tls.{key}: {tmp_path} does not exist or is not a file"


def test_a_file_that_is_no_certificate_or_a_key_of_another_certificate(pki: Pki, tmp_path: Path) -> None:
    garbage = tmp_path / "ca.crt"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    text = config_error(tls(ca_file=garbage))
    assert text.startswith("mqtt.tls: cannot load the CA, certificate or key: ") and "\n" not in text
    text = config_error(tls(ca_file=pki.ca_file, cert_file=pki.client_cert, key_file=pki.server_key))
    assert text.startswith("mqtt.tls: cannot load the CA, certificate or key: ")
    assert "KEY_VALUES_MISMATCH" in text.upper().replace(" ", "_")


# -- against a real mosquitto -----------------------------------------------------------------
def connack(client: paho.Client, host: str, port: int, timeout: float = 10.0) -> Any:
    """Connect and run the loop in this thread until the CONNACK (its reason code) or a disconnect."""
    got: list[Any] = []
    client.on_connect = lambda c, u, flags, rc, props: got.append(rc)
    client.on_disconnect = lambda c, u, flags, rc, props: got.append(("disconnected", rc))
    client.connect(host, port, 30)
    deadline = time.monotonic() + timeout
    try:
        while not got:
            assert time.monotonic() < deadline, "no CONNACK and no disconnect"
            client.loop(0.1)
        return got[0]
    finally:
        if got and not isinstance(got[0], tuple) and not got[0].is_failure:
            client.disconnect()
            client.loop(0.1)
        sock = client.socket()
        if sock is not None:
            sock.close()


def connected_line(broker: Mosquitto, client_id: str) -> str:
    found = [line for line in broker.log_path.read_text().splitlines() if f" as {client_id} " in line]
    assert found, broker.log_tail()
    return found[-1]


@pytest.mark.parametrize(("protocol", "logged"), [("3.1.1", "p2"), ("5", "p5")])  # mosquitto's numbering
def test_a_built_client_connects_with_its_id_protocol_clean_session_and_keepalive(
        tmp_path: Path, protocol: str, logged: str) -> None:
    with Mosquitto(tmp_path) as broker:
        mqtt = MqttSettings(host=broker.host, protocol=protocol)
        rc = connack(build_client(mqtt, GW), broker.host, broker.port)
        assert not rc.is_failure
        assert f"as edge-agent-gw-7 ({logged}, c1, k30)" in connected_line(broker, "edge-agent-gw-7")


def test_the_user_and_the_password_from_its_file_are_what_the_broker_checks(tmp_path: Path) -> None:
    with Mosquitto(tmp_path, users={"gw": "s3cret-Ω"}) as broker:
        good = MqttSettings(host=broker.host, username="gw", password_file=password_file(tmp_path, "s3cret-Ω\n"))
        assert not connack(build_client(good, GW), broker.host, broker.port).is_failure
        assert "u'gw'" in connected_line(broker, "edge-agent-gw-7")
        (tmp_path / "mqtt.pass").write_text("wrong\n")
        refused = connack(build_client(good, GW), broker.host, broker.port)
        assert refused.is_failure and str(refused) == "Not authorized"


def test_mutual_tls_with_the_configured_files(tmp_path: Path, pki: Pki) -> None:
    with Mosquitto(tmp_path, tls=pki.broker_tls(require_certificate=True)) as broker:
        mqtt = tls(ca_file=pki.ca_file, cert_file=pki.client_cert, key_file=pki.client_key)
        assert not connack(build_client(mqtt, GW), broker.host, broker.port).is_failure
        connected_line(broker, "edge-agent-gw-7")


def failed_connect(mqtt: MqttSettings, host: str, port: int) -> BaseException:
    """The exception ``connect`` raised. A socket paho left open is finalised here, inside the test
    (its ResourceWarning is the test's, ignored by UNCLOSED_SSL_SOCKET), not in a later one."""
    client = build_client(mqtt, GW)
    with pytest.raises(Exception) as raised:
        client.connect(host, port, 30)
    exc = raised.value
    exc.__traceback__ = None  # its frames hold the socket
    del raised, client
    gc.collect()
    return exc


def test_describe_error_for_a_closed_port_and_a_host_name_that_does_not_resolve() -> None:
    refused = failed_connect(MqttSettings(host="h"), "127.0.0.1", free_port())
    assert isinstance(refused, ConnectionRefusedError) and describe_error(refused) == "connection refused"
    unresolved = failed_connect(MqttSettings(host="h"), "no-such-host.invalid", 1883)
    assert isinstance(unresolved, socket.gaierror)
    assert re.fullmatch(r"cannot resolve the host name \(.+\)", describe_error(unresolved))


@UNCLOSED_SSL_SOCKET
def test_describe_error_for_tls_to_a_plaintext_port(tmp_path: Path, pki: Pki) -> None:
    with Mosquitto(tmp_path) as broker:
        exc = failed_connect(tls(ca_file=pki.ca_file), broker.host, broker.port)
    text = describe_error(exc, tls=True)
    assert text == "connection reset during the TLS handshake (is this port a TLS listener?)" or \
        text.startswith("TLS handshake failed: "), (exc, text)


@UNCLOSED_SSL_SOCKET
def test_describe_error_for_a_broker_certificate_from_another_ca(tmp_path: Path, pki: Pki) -> None:
    with Mosquitto(tmp_path, tls=pki.broker_tls()) as broker:
        exc = failed_connect(tls(ca_file=pki.other_ca_file), broker.host, broker.port)
    assert isinstance(exc, ssl.SSLCertVerificationError)
    assert describe_error(exc, tls=True) == (
        "TLS certificate verification failed: self-signed certificate in certificate chain "
        "(mqtt.tls.ca_file does not hold the CA that signed the broker's certificate)")


@UNCLOSED_SSL_SOCKET
@pytest.mark.parametrize(("host", "hint"), [
    ("127.0.0.1", "IP address mismatch, certificate is not valid for '127.0.0.1' (the certificate is for another "
                  "address; the host dialled (mqtt.host, or the node "
                  "in mqtt.hosts) must match it, or set mqtt.tls.verify_hostname: false)"),
    ("localhost", "Hostname mismatch, certificate is not valid for 'localhost' (the certificate is for another "
                  "name; the host dialled (mqtt.host, or the node "
                  "in mqtt.hosts) must match it, or set mqtt.tls.verify_hostname: false)"),
])
def test_describe_error_for_a_certificate_for_another_name(tmp_path: Path, pki: Pki, host: str, hint: str) -> None:
    cert, key = pki.issue_server(f"elsewhere-{host}", dns=["broker.elsewhere.example"])
    with Mosquitto(tmp_path, tls=pki.broker_tls(certfile=cert, keyfile=key)) as broker:
        exc = failed_connect(tls(ca_file=pki.ca_file), host, broker.port)
        assert describe_error(exc, tls=True) == f"TLS certificate verification failed: {hint}"
        # verify_hostname: false accepts the name, never the chain
        lax = build_client(tls(ca_file=pki.ca_file, cert_file=pki.client_cert, key_file=pki.client_key,
                               verify_hostname=False), GW)
        assert not connack(lax, host, broker.port).is_failure


def test_the_error_tap_keeps_pahos_line_when_an_attempt_ends_without_a_connack(tmp_path: Path, pki: Pki) -> None:
    """A broker that wants a client certificate: the TLS 1.3 handshake completes on the client's
    side, and the session ends at the first read, as a paho error line and a disconnect without any
    CONNACK. (Which line it is depends on a race: the broker's alert, or an EOF when the broker's
    reset overtook it; see test_describe_socket_error_for_a_tls_session_cut_off_without_an_alert.)"""
    with Mosquitto(tmp_path, tls=pki.broker_tls(require_certificate=True)) as broker:
        tap = ErrorTap()
        outcome = connack(build_client(tls(ca_file=pki.ca_file), GW, errors=tap), broker.host, broker.port)
    assert isinstance(outcome, tuple) and outcome[0] == "disconnected"
    line = tap.take()
    assert line is not None and line.startswith("failed to receive on socket: "), line
    assert describe_socket_error(line) and "\n" not in describe_socket_error(line)
    assert tap.take() is None  # taken


@UNCLOSED_SSL_SOCKET
def test_describe_error_for_a_port_that_answers_in_plaintext(tmp_path: Path, pki: Pki) -> None:
    """A web server (or anything not TLS) on the broker's port: the handshake fails at its first
    answer, named by OpenSSL's reason."""
    server = socket.create_server(("127.0.0.1", 0))

    def answer() -> None:
        conn, _ = server.accept()
        with conn:
            try:
                conn.recv(4096)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                conn.recv(4096)
            except OSError:  # the client gave up: reset
                pass

    worker = threading.Thread(target=answer, daemon=True)
    worker.start()
    try:
        exc = failed_connect(tls(ca_file=pki.ca_file), "127.0.0.1", server.getsockname()[1])
    finally:
        worker.join(5)
        server.close()
    assert isinstance(exc, ssl.SSLError) and not isinstance(exc, ssl.SSLCertVerificationError)
    assert describe_error(exc, tls=True) == f"TLS handshake failed: {exc.reason}"
    assert exc.reason and "\n" not in exc.reason


# -- the words, from given errors -------------------------------------------------------------
@pytest.mark.parametrize(("exc", "tls_on", "text"), [
    (None, False, "connection failed"),
    (TimeoutError(), False, "timed out"),
    (ConnectionResetError(104, "Connection reset by peer"), False, "connection reset by peer"),
    (ConnectionResetError(104, "Connection reset by peer"), True,
     "connection reset during the TLS handshake (is this port a TLS listener?)"),
    (BrokenPipeError(32, "Broken pipe"), True, "connection reset during the TLS handshake (is this port a TLS listener?)"),
    (OSError(113, "No route to host"), False, "no route to host"),
    (ValueError("invalid host"), False, "invalid host"),
    (RuntimeError(), False, "RuntimeError"),
])
def test_describe_error_is_one_short_reason(exc: BaseException | None, tls_on: bool, text: str) -> None:
    assert describe_error(exc, tls=tls_on) == text


@pytest.mark.parametrize(("line", "text"), [
    (None, "the broker closed the connection before accepting it"),
    ("", "the broker closed the connection before accepting it"),
    ("failed to receive on socket: [Errno 104] Connection reset by peer", "connection reset by peer"),
    ("failed to receive on socket: ", "connection failed"),
    ("failed to receive on socket: [SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert certificate required "
     "(_ssl.c:2580)", "the broker rejected the TLS session: tlsv13 alert certificate required (it requires a client "
                      "certificate: mqtt.tls.cert_file and key_file)"),
    ("failed to receive on socket: [SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert unknown ca (_ssl.c:2580)",
     "the broker rejected the client certificate: tlsv1 alert unknown ca"),
    ("failed to receive on socket: [SSL: SSLV3_ALERT_CERTIFICATE_EXPIRED] sslv3 alert certificate expired (_ssl.c:2580)",
     "the broker rejected the client certificate: sslv3 alert certificate expired"),
    ("failed to receive on socket: [SSL: DECRYPTION_FAILED_OR_BAD_RECORD_MAC] decryption failed (_ssl.c:2580)",
     "TLS session failed: decryption failed"),
])
def test_describe_socket_error_reads_pahos_line(line: str | None, text: str) -> None:
    assert describe_socket_error(line) == text


def test_describe_socket_error_for_a_tls_session_cut_off_without_an_alert() -> None:
    text = describe_socket_error("failed to receive on socket: EOF occurred in violation of protocol (_ssl.c:2427)")
    assert not text.startswith("eOF") and "_ssl.c" not in text
    assert "mqtt.tls.cert_file" in text  # the likely cause, as for the alert it stands in for


def test_describe_rc_names_pahos_code() -> None:
    assert describe_rc(MQTTErrorCode.MQTT_ERR_QUEUE_SIZE) == "MQTT_ERR_QUEUE_SIZE: Message queue full."
    assert describe_rc(MQTTErrorCode.MQTT_ERR_NO_CONN) == \
        "MQTT_ERR_NO_CONN: The client is not currently connected."
    assert describe_rc(999) == "error 999"


def test_the_error_tap_keeps_only_the_last_error_line() -> None:
    tap = ErrorTap()
    tap.log(logging.DEBUG, "Sending PUBLISH (d%d, q%d)", 0, 1)
    assert tap.take() is None  # packets are not even formatted
    tap.log(logging.ERROR, "first %s", "error")
    tap.log(logging.WARNING, "a warning")
    tap.log(logging.ERROR, "failed to receive on socket: %s", "boom")
    assert tap.take() == "failed to receive on socket: boom" and tap.take() is None
    tap.log(logging.ERROR, "50%% done %s")  # arguments that do not fit the format: the format itself
    assert tap.take() == "50%% done %s"


# -- the connection's story in the log --------------------------------------------------------
@pytest.fixture
def story(caplog: pytest.LogCaptureFixture) -> Iterator[tuple[ConnectionLog, pytest.LogCaptureFixture]]:
    caplog.set_level(logging.DEBUG, logger="edge_agent.test_client")
    yield ConnectionLog("broker.example:8883", "edge-agent-gw-7", logging.getLogger("edge_agent.test_client")), caplog


def lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    out = [(r.levelname, r.getMessage()) for r in caplog.records]
    caplog.clear()
    return out


def test_a_first_connect_is_one_info_line(story: tuple[ConnectionLog, pytest.LogCaptureFixture]) -> None:
    log, caplog = story
    log.starting()
    log.connected()
    assert lines(caplog) == [("DEBUG", "mqtt: connecting to broker.example:8883 as edge-agent-gw-7"),
                             ("INFO", "mqtt: connected to broker.example:8883 as edge-agent-gw-7")]
    assert log.ever_connected


def test_failures_are_an_error_once_per_reason_and_the_recovery_is_one_line(
        story: tuple[ConnectionLog, pytest.LogCaptureFixture]) -> None:
    log, caplog = story
    log.starting()
    for _ in range(3):
        log.failed("connection refused")
    log.failed("timed out")
    log.connected()
    got = lines(caplog)
    assert got[1:5] == [
        ("ERROR", "mqtt: cannot connect to broker.example:8883: connection refused; retrying"),
        ("DEBUG", "mqtt: cannot connect to broker.example:8883: connection refused (attempt 2); retrying"),
        ("DEBUG", "mqtt: cannot connect to broker.example:8883: connection refused (attempt 3); retrying"),
        ("ERROR", "mqtt: cannot connect to broker.example:8883: timed out; retrying"),
    ]
    assert got[5][0] == "INFO" and re.fullmatch(r"mqtt: connected to broker\.example:8883 after \d+\.\d s", got[5][1])


def test_a_lost_connection_is_a_warning_and_the_reconnect_says_again(
        story: tuple[ConnectionLog, pytest.LogCaptureFixture]) -> None:
    log, caplog = story
    log.connected()
    log.lost(" (keepalive timeout)")
    log.failed("connection refused")
    log.failed("connection refused")
    log.connected()
    log.lost("")
    log.failed("connection refused")  # the same reason as last time, but a new outage: an error again
    got = lines(caplog)
    assert [level for level, _ in got] == ["INFO", "WARNING", "ERROR", "DEBUG", "INFO", "WARNING", "ERROR"]
    assert got[1][1] == "mqtt: connection to broker.example:8883 lost (keepalive timeout); reconnecting"
    assert re.fullmatch(r"mqtt: connected to broker\.example:8883 again after \d+\.\d s", got[4][1])
    assert got[5][1] == "mqtt: connection to broker.example:8883 lost; reconnecting"


class _EndsBetweenCheckAndJoin(paho.Client):
    """paho's own ``loop_stop`` with its network thread ending between the attribute's check and
    its join, as it did at one agent's stop in the fleet bench (the thread clears ``_thread``)."""

    reads = 0

    @property
    def _thread(self) -> threading.Thread | None:
        self.reads += 1
        return threading.current_thread() if self.reads == 1 else None

    @_thread.setter
    def _thread(self, value: Any) -> None:
        pass


def test_stop_loop_survives_the_network_thread_ending_under_loop_stop() -> None:
    from paho.mqtt.enums import CallbackAPIVersion

    from edge_agent.uplink.client import stop_loop

    client = _EndsBetweenCheckAndJoin(CallbackAPIVersion.VERSION2, client_id="race")
    client.reads = 0
    with pytest.raises(AttributeError):
        client.loop_stop()  # paho 2.2 as it is
    client.reads = 0
    stop_loop(client)  # ours: the thread has ended, nothing to wait for


def test_stop_loop_stops_a_running_network_thread(tmp_path: Path) -> None:
    from paho.mqtt.enums import CallbackAPIVersion

    from edge_agent.uplink.client import stop_loop

    with Mosquitto(tmp_path) as broker:
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id="stopper")
        client.connect("127.0.0.1", broker.port)
        client.loop_start()
        thread = client._thread
        assert thread is not None and thread.is_alive()
        client.disconnect()
        stop_loop(client)
        assert not thread.is_alive()
