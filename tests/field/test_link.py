"""ByteLink, the raw byte link of the non-Modbus protocols, against a real pty pair and TCP."""

from __future__ import annotations

import socket
import time

import pytest

from edge_agent.errors import LineTooLong, LinkError, NoResponse
from edge_agent.field.link import ByteLink
from edge_agent.settings import BusSettings
from edge_agent.sim.byteserver import ByteServer
from edge_agent.sim.ptypair import PtyPair


class Echo:
    """Answers each line with 're:' + the line; says what ``say`` holds, once, on the next tick."""

    def __init__(self) -> None:
        self.say = b""

    def feed(self, pending: bytearray) -> bytes:
        end = pending.find(b"\n")
        if end < 0:
            return b""
        line = bytes(pending[:end])
        del pending[:end + 1]
        return b"" if line == b"quiet" else b"re:" + line + b"\n"

    def tick(self, now: float) -> bytes:
        said, self.say = self.say, b""
        return said


def _line_done(data: bytes) -> int | None:
    return data.index(b"\n") + 1 if b"\n" in data else None


@pytest.fixture
def echo_tcp():
    handler = Echo()
    server = ByteServer(handler)
    host, port = server.serve_tcp()
    yield handler, BusSettings("t", "json-lines", host=host, port=port, timeout_s=0.5)
    server.stop()


@pytest.fixture
def echo_pty():
    handler = Echo()
    server = ByteServer(handler)
    with PtyPair(baud=115200) as pair:
        server.serve_serial(pair.b, baud=115200)
        yield handler, BusSettings("s", "json-lines", serial=pair.a, baud=115200, timeout_s=0.5)
        server.stop()


@pytest.fixture
def echo_pty_8e1():
    """8E1, as DL/T 645 and CJ/T 188 run: a pty drops the parity setting silently, and pyserial
    re-applying it (on a timeout change) fails; the link must not trip over that."""
    handler = Echo()
    server = ByteServer(handler)
    with PtyPair(baud=2400, bits_per_byte=11) as pair:
        server.serve_serial(pair.b, baud=2400, parity="E")
        yield handler, BusSettings("e", "dlt645", serial=pair.a, baud=2400, parity="E", timeout_s=0.5)
        server.stop()


@pytest.mark.parametrize("kind", ["echo_tcp", "echo_pty", "echo_pty_8e1"])
def test_transact_returns_the_complete_answer(kind, request):
    _, settings = request.getfixturevalue(kind)
    link = ByteLink(settings)
    try:
        assert link.transact(b"ping\n", _line_done) == b"re:ping\n"
        assert link.transact(b"two\n", _line_done) == b"re:two\n"
    finally:
        link.close()


def test_an_8e1_pty_reopens(echo_pty_8e1):
    """The second open of a pty with parity E fails with EINVAL on Linux; the link opens it
    without parity instead (a pty carries none), so a restarted agent still reaches a simulator."""
    _, settings = echo_pty_8e1
    for _ in range(3):
        link = ByteLink(settings)
        try:
            assert link.transact(b"again\n", _line_done) == b"re:again\n"
        finally:
            link.close()


def test_silence_is_no_response_within_the_timeout(echo_tcp):
    _, settings = echo_tcp
    link = ByteLink(settings)
    started = time.monotonic()
    with pytest.raises(NoResponse, match="did not answer within 0.5s"):
        link.transact(b"quiet\n", _line_done)
    assert time.monotonic() - started < 2
    link.close()


def test_garbage_is_no_response_not_an_exception(echo_tcp):
    _, settings = echo_tcp
    link = ByteLink(settings)

    def never(data: bytes) -> int | None:
        raise ValueError("cannot start a frame")
    with pytest.raises(NoResponse, match="unusable answer"):
        link.transact(b"x\n", never, 0.3)
    link.close()


def test_lines_and_an_over_long_line_is_dropped_once(echo_tcp):
    handler, settings = echo_tcp
    link = ByteLink(settings, max_line=100)
    try:
        link.open()
        time.sleep(0.1)  # the server has accepted: ticks reach this connection
        handler.say = b"first\n" + b"x" * 5000 + b"\nafter\n"
        assert link.read_line(2) == b"first"
        with pytest.raises(LineTooLong):
            link.read_line(2)
        assert link.read_line(2) == b"after"
        assert link.read_line(0.1) is None
        assert len(link._pending) <= 100 + 512
    finally:
        link.close()


def test_an_over_long_line_never_grows_memory(echo_tcp):
    handler, settings = echo_tcp
    link = ByteLink(settings, max_line=4096)
    try:
        link.open()
        time.sleep(0.1)
        handler.say = b"y" * 1_000_000  # no newline at all
        with pytest.raises(LineTooLong):
            link.read_line(3)
        peak = 0
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and link.read_line(0.1) is None:
            peak = max(peak, len(link._pending))
        assert peak <= 4096 + 512
        handler.say = b"\nok\n"
        assert link.read_line(2) == b"ok"
    finally:
        link.close()


def test_absent_port_is_one_link_error_line(tmp_path):
    link = ByteLink(BusSettings("rs485-9", "dlt645", serial=str(tmp_path / "ttyUSB9")))
    with pytest.raises(LinkError, match=r"^bus rs485-9: serial port .*ttyUSB9 not found$"):
        link.transact(b"x", _line_done)
    with pytest.raises(LinkError):  # not retried within RETRY_LINK_AFTER_S: same error, at once
        link.read_line(0.1)


def test_refused_tcp_is_a_link_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    link = ByteLink(BusSettings("t", "cjt188", host="127.0.0.1", port=port))
    with pytest.raises(LinkError, match="cannot open 127.0.0.1"):
        link.transact(b"x", _line_done)


def test_server_gone_mid_session_is_a_link_error_then_recovers():
    handler = Echo()
    server = ByteServer(handler)
    host, port = server.serve_tcp()
    settings = BusSettings("t", "json-lines", host=host, port=port, timeout_s=0.5)
    link = ByteLink(settings)
    assert link.transact(b"a\n", _line_done) == b"re:a\n"
    server.stop()
    with pytest.raises((LinkError, NoResponse)):
        for _ in range(3):
            link.transact(b"b\n", _line_done)
    link.close()
