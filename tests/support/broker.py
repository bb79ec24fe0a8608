"""A real mosquitto for tests, and a subscriber that sees what the platform would see.

``Mosquitto`` runs ``mosquitto -c FILE`` as a child process (never ``-d``: the test keeps the
Popen and stops exactly the process it started) on a free loopback port, with its log in the
test's directory. ``Subscriber`` is a paho client on a topic filter that collects
``(topic, payload bytes, retain)`` and lets a test wait for a condition with a deadline.

Both are context managers::

    with Mosquitto(tmp_path) as broker, Subscriber(broker, "edge/v1/#") as sub:
        ...
        sub.wait_for(lambda msgs: len(msgs) >= 3, timeout=5)
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, NamedTuple

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

__all__ = ["Mosquitto", "Subscriber", "Message", "BrokerError", "find_mosquitto", "free_port"]

START_DEADLINE_S = 10.0


class BrokerError(RuntimeError):
    """The test broker could not be found, configured or started."""


def find_mosquitto() -> str:
    """The mosquitto binary, or a clear error telling how to install it (tests do not skip)."""
    found = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None)
    if not found:
        raise BrokerError("mosquitto is not installed; run scripts/setup.sh (it installs mosquitto and "
                          "mosquitto-clients with apt-get)")
    return found


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class Mosquitto:
    """One mosquitto on ``127.0.0.1:<port>``; ``restart()`` keeps the port.

    ``tls``: ``{"cafile", "certfile", "keyfile", "require_certificate"}`` turns the listener
    into a TLS one. ``users``: ``{name: password}`` writes a password file with
    ``mosquitto_passwd -b`` and turns anonymous access off.
    """

    host = "127.0.0.1"

    def __init__(self, tmp_path: Path, *, port: int | None = None, tls: dict[str, Any] | None = None,
                 users: dict[str, str] | None = None, persistence: bool = False,
                 extra: Iterable[str] = ()) -> None:
        self.dir = Path(tmp_path)
        self.tls = dict(tls or {})
        self.users = dict(users or {})
        self.persistence = persistence
        self.extra = tuple(extra)
        self.proc: subprocess.Popen[bytes] | None = None
        # a port we chose may be taken by another process before mosquitto binds it: the first
        # start then tries another (a restart keeps the port, as clients reconnect to it)
        self._may_move = port is None
        self._use_port(port or free_port(self.host))

    def _use_port(self, port: int) -> None:
        self.port = port
        self.conf_path = self.dir / f"mosquitto-{port}.conf"
        self.log_path = self.dir / f"mosquitto-{port}.log"

    # -- configuration -------------------------------------------------------------------
    def _config(self) -> str:
        lines = [
            f"listener {self.port} {self.host}",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            # run as whoever runs the tests: as root, mosquitto would otherwise switch to the
            # 'mosquitto' user, which cannot read a pytest tmp_path
            f"user {pwd.getpwuid(os.getuid()).pw_name}",
        ]
        if self.persistence:  # sessions and queued messages survive restart() (saved at SIGTERM)
            lines += ["persistence true", f"persistence_location {self.dir}/",
                      f"persistence_file mosquitto-{self.port}.db"]
        else:
            lines.append("persistence false")
        if self.users:
            lines += ["allow_anonymous false", f"password_file {self._write_passwords()}"]
        else:
            lines.append("allow_anonymous true")
        if self.tls:
            known = {"cafile", "certfile", "keyfile", "require_certificate"}
            unknown = set(self.tls) - known
            if unknown:
                raise BrokerError(f"unknown TLS option(s) {sorted(unknown)}; known: {sorted(known)}")
            for key in ("cafile", "certfile", "keyfile"):
                if self.tls.get(key):
                    lines.append(f"{key} {self.tls[key]}")
            if "require_certificate" in self.tls:
                lines.append(f"require_certificate {'true' if self.tls['require_certificate'] else 'false'}")
        lines += list(self.extra)
        return "\n".join(lines) + "\n"

    def _write_passwords(self) -> Path:
        tool = shutil.which("mosquitto_passwd")
        if not tool:
            raise BrokerError("mosquitto_passwd is not installed; run scripts/setup.sh")
        path = self.dir / f"mosquitto-{self.port}.passwd"
        path.write_text("")
        path.chmod(0o600)
        for name, password in self.users.items():
            subprocess.run([tool, "-b", str(path), name, password], check=True, capture_output=True)
        return path

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> "Mosquitto":
        for attempt in range(3):
            try:
                return self._start()
            except BrokerError as exc:
                if not (self._may_move and "Address already in use" in str(exc)) or attempt == 2:
                    raise
                self._use_port(free_port(self.host))
        raise AssertionError("unreachable")

    def _start(self) -> "Mosquitto":
        if self.proc is not None and self.proc.poll() is None:
            return self
        binary = find_mosquitto()
        self.conf_path.write_text(self._config())
        stderr_path = self.dir / f"mosquitto-{self.port}.stderr"
        with open(stderr_path, "wb") as stderr:
            self.proc = subprocess.Popen([binary, "-c", str(self.conf_path)],
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.monotonic() + START_DEADLINE_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                rc, self.proc = self.proc.returncode, None
                err = stderr_path.read_text(errors="replace").strip()
                raise BrokerError(f"mosquitto exited with status {rc}: {err or '(no output)'}\n{self.log_tail()}")
            if _port_open(self.host, self.port):
                self._may_move = False  # started: from now on the port is the broker's address
                return self
            time.sleep(0.05)
        self.stop()
        raise BrokerError(f"mosquitto did not accept connections on {self.host}:{self.port} within "
                          f"{START_DEADLINE_S:.0f} s\n{self.log_tail()}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)  # a paused broker cannot act on SIGTERM
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)

    def pause(self) -> None:
        """SIGSTOP: the broker keeps its sockets but answers nothing (no PUBACK) until resume()."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)

    def restart(self) -> "Mosquitto":
        self.stop()
        return self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no mosquitto log)"
        return "mosquitto log (tail):\n" + "\n".join(text[-lines:])

    def __enter__(self) -> "Mosquitto":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Message(NamedTuple):
    topic: str
    payload: bytes
    retain: bool


class Subscriber:
    """A paho client subscribed (QoS 1) to ``topic_filter``; ``start()`` returns after SUBACK.

    ``tls``: ``{"ca_certs", "certfile", "keyfile"}`` (paho's ``tls_set`` arguments) for a TLS
    listener; the broker's certificate is verified against ``ca_certs``, host name included.
    """

    def __init__(self, broker: Mosquitto, topic_filter: str = "#", *, client_id: str | None = None,
                 username: str | None = None, password: str | None = None, clean_session: bool = True,
                 tls: dict[str, Any] | None = None) -> None:
        self.broker = broker
        self.topic_filter = topic_filter
        self._cond = threading.Condition()
        self._messages: list[Message] = []
        self._subscribed = threading.Event()
        self.subacks = 0
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or f"test-sub-{id(self):x}",
                                  clean_session=clean_session)
        self.client.reconnect_delay_set(0.1, 0.5)  # type: ignore[arg-type]
        if username is not None:
            self.client.username_pw_set(username, password)
        if tls is not None:
            self.client.tls_set(**{k: str(v) for k, v in tls.items()})
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if not reason_code.is_failure:
            client.subscribe(self.topic_filter, qos=1)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        with self._cond:
            self.subacks += 1
        self._subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self._messages.append(Message(msg.topic, bytes(msg.payload), bool(msg.retain)))
            self._cond.notify_all()

    def start(self, timeout: float = 10.0) -> "Subscriber":
        self.client.connect(self.broker.host, self.broker.port, keepalive=30)
        self.client.loop_start()
        if not self._subscribed.wait(timeout):
            self.stop()
            raise BrokerError(f"subscriber got no SUBACK for {self.topic_filter!r} within {timeout} s\n"
                              f"{self.broker.log_tail()}")
        return self

    def stop(self) -> None:
        from edge_agent.uplink.client import stop_loop  # paho 2.2's loop_stop race, handled

        self.client.disconnect()
        stop_loop(self.client)

    @property
    def messages(self) -> list[Message]:
        with self._cond:
            return list(self._messages)

    def on(self, topic: str) -> list[Message]:
        return [m for m in self.messages if m.topic == topic]

    def clear(self) -> None:
        with self._cond:
            self._messages.clear()

    def wait_for(self, predicate: Callable[[list[Message]], Any], timeout: float = 10.0,
                 what: str = "condition") -> list[Message]:
        """Wait until ``predicate(messages)`` is true; the messages then, or AssertionError."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                snapshot = list(self._messages)
                if predicate(snapshot):
                    return snapshot
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    topics: dict[str, int] = {}
                    for m in snapshot:
                        topics[m.topic] = topics.get(m.topic, 0) + 1
                    raise AssertionError(f"timed out after {timeout} s waiting for {what}; "
                                         f"received {len(snapshot)} message(s) by topic {topics}")
                self._cond.wait(min(remaining, 0.2))

    def __enter__(self) -> "Subscriber":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
