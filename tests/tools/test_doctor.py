"""``edge-agent doctor``: a broken gateway reports each FAIL with its fix and exits 1; a good one
(a real mosquitto, a pty serial port, keys made by ``keys init``) exits 0; TLS against a test
CA (handshake, certificate expiry); ``--json``; and each check's branches on its own.

Doctor runs in this process (``main``) so that the pty pair's own descriptors, held here, are
not "another process"; a subprocess plays the other program holding a port. ``systemctl`` is a
stand-in script on PATH and the clock state is set, so the results do not depend on the host.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator

import pytest
import yaml

from edge_agent import clock
from edge_agent.tools.doctor import verb as doctor
from edge_agent.tools.doctor import broker as doctor_broker
from edge_agent.tools.doctor import local as doctor_checks
from edge_agent.cli import main
from edge_agent.tools.doctor.finding import FAIL, OK, WARN, Finding, Who
from edge_agent.settings import BufferSettings
from edge_agent.sim.ptypair import PtyPair
from support.broker import Mosquitto, free_port
from support.certs import Pki, make_pki, write_key
from support.keys import init_keys


# -- the gateway under test -----------------------------------------------------------------------

def write_config(tmp_path: Path, *, port: int, serial: list[str] = (), host: str = "127.0.0.1",
                 tls: dict | None = None, max_bytes: str = "64MiB", keys: bool = True) -> Path:
    mqtt: dict = {"host": host, "port": port}
    if tls:
        mqtt["tls"] = {"enabled": True, **{k: v if isinstance(v, bool) else str(v) for k, v in tls.items()}}
    cfg = {
        "gateway": {"id": "gw-doc", "site": "s1", "state_dir": str(tmp_path / "state")},
        "mqtt": mqtt,
        "buffer": {"max_bytes": max_bytes},
        "buses": [{"name": f"line{i}", "protocol": "modbus-rtu", "serial": p} for i, p in enumerate(serial, 1)],
        "devices": [],
    }
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    if keys:
        init_keys(path)
    return path


@pytest.fixture(autouse=True)
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """A stand-in systemctl (enabled, active) and a synchronised clock; tests change them."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    state = SimpleNamespace(bin=bin_dir)

    def systemctl(enabled: str, active: str, stderr: str = "") -> None:
        script = bin_dir / "systemctl"
        script.write_text("#!/bin/sh\n"
                          f"[ \"$1\" = is-enabled ] && {{ echo '{enabled}'; echo '{stderr}' >&2; exit 0; }}\n"
                          f"echo '{active}'; echo '{stderr}' >&2\n")
        script.chmod(0o755)

    state.systemctl = systemctl
    systemctl("enabled", "active")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(clock, "clock_state", lambda slow=False: clock.ClockState(True, "adjtimex", "TIME_OK"))
    return state


def doctor_run(capsys: pytest.CaptureFixture, config: Path, *extra: str) -> tuple[int, str]:
    capsys.readouterr()  # what making the config and keys printed
    code = main(["doctor", "-c", str(config), *extra])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out


def line(out: str, check: str) -> tuple[str, str | None]:
    """The line of ``check`` (status and text), and its fix line when there is one."""
    lines = out.splitlines()
    for i, text in enumerate(lines):
        if text[6:].startswith(f"{check}: "):
            fix = lines[i + 1].strip() if i + 1 < len(lines) and lines[i + 1].strip().startswith("-> fix:") else None
            return text, fix
    raise AssertionError(f"no line for {check!r} in:\n{out}")


@pytest.fixture
def pair() -> Iterator[PtyPair]:
    """A pty pair whose port no other process seems to hold. A process in another mount namespace
    (a container's agetty on its own /dev/pts/0) can show the same path and device number as
    ours (scan.holders matches by path, then by st_rdev); such a pty is skipped, not tested."""
    from edge_agent.tools import scan

    skipped: list[PtyPair] = []
    try:
        while True:
            p = PtyPair()
            if not scan.holders(p.a):
                break
            skipped.append(p)
            assert len(skipped) < 20, "every pty seems held by another process"
        with p:
            yield p
    finally:
        for s in skipped:
            s.close()


@pytest.fixture
def holder(pair: PtyPair) -> Iterator[subprocess.Popen]:
    """Another program holding the port open (as a vendor tool or a second agent would)."""
    proc = subprocess.Popen([sys.executable, "-c", "import os, sys, time\n"
                             "fd = os.open(sys.argv[1], os.O_RDWR | os.O_NOCTTY)\n"
                             "print('ready', flush=True)\ntime.sleep(60)\n", pair.a],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    yield proc
    proc.kill()
    proc.wait()
    proc.stdout.close()


# -- a broken gateway, a good one -----------------------------------------------------------------

def test_a_broken_gateway_reports_each_fail_with_its_fix(tmp_path, capsys, pair, holder) -> None:
    absent = str(tmp_path / "ttyUSB9")
    config = write_config(tmp_path, port=free_port(), serial=[absent, pair.a], max_bytes="1000TiB")
    key = tmp_path / "state" / "keys" / "pseudonym.key"
    key.chmod(0o644)
    code, out = doctor_run(capsys, config, "--user", "root")
    assert code == 1

    text, fix = line(out, "serial line1")
    assert text == f"FAIL  serial line1: {absent} not found"
    assert "ls -l /dev/serial/by-id/" in fix and "buses[line1].serial" in fix

    text, fix = line(out, "serial line2")
    assert text.startswith(f"FAIL  serial line2: serial port {pair.a} is in use by PID {holder.pid} (")
    assert fix.startswith("-> fix: stop it first")

    text, fix = line(out, "broker tcp")
    assert text.startswith("FAIL  broker tcp: cannot connect to 127.0.0.1:") and "connection refused" in text
    assert "mqtt.port" in fix
    assert "broker mqtt: " not in out  # nothing to try after a refused connection

    text, fix = line(out, "pseudonym key")
    assert text == f"FAIL  pseudonym key: {key} is readable by group or others (-rw-r--r-- root:root)"
    assert fix == f"-> fix: chmod 600 {key}"

    text, fix = line(out, "disk")
    assert text.startswith("FAIL  disk: ") and "the cap cannot fit" in text
    assert "lower buffer.max_bytes below" in fix
    assert out.splitlines()[-1].startswith("doctor: 5 FAIL,")


def test_a_good_gateway_exits_0(tmp_path, capsys, pair) -> None:
    with Mosquitto(tmp_path) as broker:
        config = write_config(tmp_path, host="localhost", port=broker.port, serial=[pair.a])
        code, out = doctor_run(capsys, config, "--user", "root")
    assert code == 0, out
    assert not [text for text in out.splitlines() if text.startswith((FAIL, WARN))]
    checks = [text[6:].split(":")[0] for text in out.splitlines() if text[:4].strip() in (OK, WARN, FAIL)]
    assert checks == ["config", "service user", "serial line1", "broker dns", "broker tcp", "broker tls",
                      "broker mqtt", "clock", "state dir", "disk", "pseudonym key", "systemd"]
    assert line(out, "serial line1")[0] == (f"OK    serial line1: {pair.a} is a serial port, read/write for root, "
                                            "no other process has it open")
    assert line(out, "broker dns")[0].startswith("OK    broker dns: localhost -> ")
    assert line(out, "broker mqtt")[0] == "OK    broker mqtt: CONNECT accepted for client id edge-agent-gw-doc-doctor"
    assert line(out, "systemd")[0] == "OK    systemd: edge-agent.service enabled, active"
    assert out.splitlines()[-1] == "doctor: 0 FAIL, 0 WARN, 12 OK"


def test_json_carries_every_finding_and_the_same_exit_code(tmp_path, capsys) -> None:
    config = write_config(tmp_path, port=free_port())
    code, out = doctor_run(capsys, config, "--json", "--user", "root")
    assert code == 1
    data = json.loads(out)
    assert data["ok"] is False and data["user"] == "root" and data["config"] == str(config)
    tcp = next(c for c in data["checks"] if c["check"] == "broker tcp")
    assert tcp["status"] == FAIL and "connection refused" in tcp["finding"] and "mqtt.port" in tcp["fix"]
    assert data["counts"] == {s: sum(c["status"] == s for c in data["checks"]) for s in (OK, WARN, FAIL)}
    assert set(data["checks"][0]) == {"status", "check", "finding", "fix", "details"}


def test_a_bad_config_stops_doctor_there(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("gateway: {id: gw, site: s}\nmqtt: {host: 127.0.0.1, prot: 1883}\nbuses: []\ndevices: []\n")
    code, out = doctor_run(capsys, bad)
    assert code == 1
    lines = out.splitlines()
    assert lines[0] == f"FAIL  config: {bad}: 1 problem(s)"
    assert lines[1].startswith(f"      {bad}:2: mqtt.prot") and "did you mean 'port'" in lines[1]
    assert lines[2].startswith("      -> fix: correct each line above")
    assert lines[3:] == ["doctor: 1 FAIL, 0 WARN, 0 OK"]
    code, out = doctor_run(capsys, tmp_path / "absent.yaml", "--json")
    assert code == 1 and json.loads(out)["checks"][0]["details"][0].endswith("cannot read the file: "
                                                                           "No such file or directory")


# -- TLS against a test CA ------------------------------------------------------------------------

@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


def test_tls_handshake_ok_and_a_certificate_expiring_soon_warns(tmp_path, capsys, pki) -> None:
    with Mosquitto(tmp_path, tls=pki.broker_tls(require_certificate=True)) as broker:
        config = write_config(tmp_path, port=broker.port, tls={"ca_file": pki.ca_file, "cert_file": pki.client_cert,
                                                                "key_file": pki.client_key})
        code, out = doctor_run(capsys, config, "--user", "root")
    assert code == 0, out
    text, _ = line(out, "broker tls")
    assert text.startswith(f"OK    broker tls: handshake with 127.0.0.1:{broker.port} (TLSv1.")
    assert f"certificate verified against CA {pki.ca_file}, client certificate sent" in text
    text, fix = line(out, "broker cert")  # the test certificates live for a day
    assert text.startswith("WARN  broker cert: the broker's certificate (localhost) expires on ") and " in 2" in text
    assert fix == "-> fix: the broker's operator must renew it before then: the uplink stops when it expires"
    assert line(out, "client cert")[0].startswith(f"WARN  client cert: the gateway's certificate {pki.client_cert} "
                                                  "(edge-agent-gw-001) expires on ")
    assert line(out, "broker mqtt")[0].startswith("OK    broker mqtt: CONNECT accepted")
    assert line(out, "tls files")[0].startswith("OK    tls files: ")


def test_tls_with_the_wrong_ca_or_without_a_client_certificate(tmp_path, capsys, pki) -> None:
    with Mosquitto(tmp_path, tls=pki.broker_tls(require_certificate=True)) as broker:
        config = write_config(tmp_path, port=broker.port, tls={"ca_file": pki.other_ca_file})
        code, out = doctor_run(capsys, config, "--user", "root")
        assert code == 1
        text, fix = line(out, "broker tls")
        assert text.startswith("FAIL  broker tls: TLS certificate verification failed: ")
        assert fix == "-> fix: " + doctor_broker._CA_FIX
        assert line(out, "broker cert")[0].startswith("WARN  broker cert: ")  # still shown: it may be the reason

        config = write_config(tmp_path, port=broker.port, tls={"ca_file": pki.ca_file}, keys=False)
        code, out = doctor_run(capsys, config, "--user", "root")
    assert code == 1
    text, fix = line(out, "broker mqtt")
    assert text.startswith("FAIL  broker mqtt: no session with ") and "requires a client certificate" in text
    assert "mqtt.tls.cert_file and key_file" in fix


def test_an_expired_broker_certificate_fails(tmp_path, capsys, pki) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "old")]))
            .issuer_name(pki.ca.cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=2)).not_valid_after(now - dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(pki.ca.key, hashes.SHA256()))
    (tmp_path / "old.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    write_key(tmp_path / "old.key", key)
    tls = pki.broker_tls(require_certificate=False, certfile=tmp_path / "old.crt", keyfile=tmp_path / "old.key")
    with Mosquitto(tmp_path, tls=tls) as broker:
        config = write_config(tmp_path, port=broker.port, tls={"ca_file": pki.ca_file})
        code, out = doctor_run(capsys, config, "--user", "root")
    assert code == 1
    text, fix = line(out, "broker tls")
    assert "certificate has expired" in text
    assert fix == "-> fix: the broker's certificate has expired: its operator must renew it"
    text, fix = line(out, "broker cert")
    assert text.startswith("FAIL  broker cert: the broker's certificate (old) expired on ") and text.endswith(" ago")


def test_a_broker_that_never_answers_the_handshake_times_out(tmp_path, capsys) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        config = write_config(tmp_path, port=silent.getsockname()[1], tls={"verify_hostname": False})
        started = time.monotonic()
        code, out = doctor_run(capsys, config, "--user", "root")
        assert time.monotonic() - started < doctor.BROKER_TIMEOUT_S + 3
    assert code == 1
    text, fix = line(out, "broker tls")
    assert text == "FAIL  broker tls: timed out" and "TLS listener" in fix


# -- the service user judged by mode bits (doctor as root, the agent as edge-agent) --------------

def test_as_root_access_is_judged_for_the_service_user(tmp_path, capsys, pair, monkeypatch) -> None:
    config = write_config(tmp_path, port=free_port(), serial=[pair.a])
    config.chmod(0o640)
    agent = Who("edge-agent", 4242, frozenset({4242}), current=False)
    monkeypatch.setattr(doctor, "service_user",
                        lambda name: (agent, Finding(OK, "service user", "checking access for edge-agent")))
    code, out = doctor_run(capsys, config)
    assert code == 1
    text, fix = line(out, "serial line1")
    assert text.startswith(f"FAIL  serial line1: {pair.a} is not readable and writable by edge-agent (crw")
    assert "udev rule" in fix or "usermod -aG" in fix
    text, fix = line(out, "config file")
    assert text == f"FAIL  config file: {config} is not readable by edge-agent (-rw-r----- root:root)"
    assert fix.startswith(f"-> fix: chgrp edge-agent {config} && chmod g+r {config}")
    key = tmp_path / "state" / "keys" / "pseudonym.key"
    text, fix = line(out, "pseudonym key")
    assert text == f"FAIL  pseudonym key: {key} is not readable by edge-agent (-rw------- root:root)"
    assert fix == f"-> fix: chown edge-agent: {key}"
    text, fix = line(out, "state dir")
    assert text.startswith("FAIL  state dir: ") and "edge-agent" in text and "chown -R edge-agent:" in fix
    key.chmod(0o640)  # loose and not the service user's: chmod alone would lock the agent out
    code, out = doctor_run(capsys, config)
    text, fix = line(out, "pseudonym key")
    assert text == f"FAIL  pseudonym key: {key} is readable by group or others (-rw-r----- root:root)"
    assert fix == f"-> fix: chown edge-agent: {key} && chmod 600 {key}"


def test_who_may_follows_owner_group_and_other_bits_and_the_directories_on_the_way() -> None:
    import shutil
    import tempfile

    top = Path(tempfile.mkdtemp(prefix="doctor-who-"))  # pytest's tmp_path is 0700: no one else gets in
    try:
        top.chmod(0o755)
        f = top / "f"
        f.write_text("")
        st = f.stat()
        owner = Who("o", 4241, frozenset(), current=False)
        grouped = Who("g", 4242, frozenset({st.st_gid}), current=False)
        other = Who("x", 4243, frozenset({4243}), current=False)
        os.chmod(f, 0o640)
        os.chown(f, owner.uid, st.st_gid)
        assert owner.may(f, os.R_OK | os.W_OK) and grouped.may(f, os.R_OK) and not grouped.may(f, os.W_OK)
        assert not other.may(f, os.R_OK)
        os.chmod(f, 0o604)
        assert other.may(f, os.R_OK) and not grouped.may(f, os.R_OK)
        top.chmod(0o700)  # the file is readable, the directory is not passable
        assert not other.may(f, os.R_OK)
        assert Who("root", 0, current=False).may(f, os.R_OK | os.W_OK)
    finally:
        shutil.rmtree(top)


# -- one check at a time --------------------------------------------------------------------------

def test_an_unsynchronised_clock_warns_that_readings_are_marked(monkeypatch) -> None:
    monkeypatch.setattr(clock, "clock_state", lambda slow=False: clock.ClockState(False, "adjtimex", "STA_UNSYNC"))
    found = doctor_checks.check_clock()
    assert found.status == WARN and 'clk: "unsynced"' in found.finding and "timedatectl status" in found.fix
    monkeypatch.setattr(clock, "clock_state", lambda slow=False: clock.ClockState(None, "none", "denied"))
    assert doctor_checks.check_clock().status == WARN


def test_disk_warns_under_twice_the_cap(tmp_path) -> None:
    vfs = os.statvfs(tmp_path)
    free = vfs.f_bavail * vfs.f_frsize
    found = doctor_checks.check_disk(BufferSettings(path=tmp_path / "b.db", max_bytes=int(free / 1.5)))
    assert found.status == WARN and "less than twice the cap" in found.finding
    assert doctor_checks.check_disk(BufferSettings(path=tmp_path / "x" / "b.db", max_bytes=free // 4)).status == OK


@pytest.mark.parametrize("enabled, active, stderr, status, says", [
    ("enabled", "failed", "", FAIL, "journalctl -u edge-agent"),
    ("disabled", "active", "", WARN, "systemctl enable --now edge-agent"),
    ("masked", "inactive", "", FAIL, "systemctl unmask edge-agent"),
    ("enabled", "inactive", "", WARN, "systemctl start edge-agent"),
    ("", "inactive", "Failed to get unit file state for edge-agent.service: No such file or directory", WARN,
     "scripts/install.sh"),
    ("enabled", "", "System has not been booted with systemd as init system (PID 1).", WARN, "where systemd runs"),
])
def test_systemd_states(host, enabled, active, stderr, status, says) -> None:
    host.systemctl(enabled, active, stderr)
    found = doctor_checks.check_systemd()
    assert found.status == status and says in found.fix, found


def test_without_systemctl_the_unit_is_not_checked(monkeypatch) -> None:
    monkeypatch.setattr(doctor_checks.shutil, "which", lambda name: None)
    found = doctor_checks.check_systemd()
    assert found.status == WARN and found.finding.startswith("systemctl not found")


def test_expiry_thresholds() -> None:
    now = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)

    def cert(days_left: float, days_valid: float = 365) -> SimpleNamespace:
        from cryptography import x509

        after = now + dt.timedelta(days=days_left)
        return SimpleNamespace(not_valid_after_utc=after, not_valid_before_utc=after - dt.timedelta(days=days_valid),
                               subject=x509.Name([]))

    assert doctor_broker.expiry("c", "it", cert(90), "renew", now).status == OK
    assert doctor_broker.expiry("c", "it", cert(29), "renew", now).status == WARN
    assert doctor_broker.expiry("c", "it", cert(-1), "renew", now).status == FAIL
    not_yet = doctor_broker.expiry("c", "it", cert(90, days_valid=10), "renew", now)
    assert not_yet.status == FAIL and "clock" in not_yet.finding


def test_a_check_that_hangs_or_raises_is_a_fail_not_a_traceback() -> None:
    release = threading.Event()
    found = doctor.timed("slow", lambda: release.wait(5) and Finding(OK, "slow", "late"), 0.2)
    release.set()
    assert found == [Finding(FAIL, "slow", "no answer within 0.2 s", found[0].fix)] and found[0].fix

    def broken() -> Finding:
        raise RuntimeError("boom")

    found = doctor.timed("broken", broken, 1)
    assert found[0].status == FAIL and found[0].finding == "the check itself failed: RuntimeError: boom"


def test_key_files_for_seal_and_commands(tmp_path, capsys) -> None:
    config = write_config(tmp_path, port=free_port())
    cfg = yaml.safe_load(config.read_text())
    cfg["privacy"] = {"platform_key_file": str(tmp_path / "platform.pub"), "actions": {"health": "seal"}}
    cfg["commands"] = {"keys": [{"id": "platform-1", "public_key_file": str(tmp_path / "command.pub")}]}
    config.write_text(yaml.safe_dump(cfg))
    code, out = doctor_run(capsys, config, "--user", "root")
    assert code == 1
    text, fix = line(out, "platform key")
    assert text == f"FAIL  platform key: {tmp_path / 'platform.pub'} does not exist" and "platform keygen" in fix
    text, fix = line(out, "command key platform-1")
    assert text == f"FAIL  command key platform-1: {tmp_path / 'command.pub'} does not exist" and "signkey" in fix

    assert main(["platform", "keygen", str(tmp_path / "p")]) == 0
    assert main(["platform", "signkey", str(tmp_path / "p")]) == 0
    cfg["privacy"]["platform_key_file"] = str(tmp_path / "p" / "platform.pub")
    cfg["commands"]["keys"][0]["public_key_file"] = str(tmp_path / "p" / "command.pub")
    config.write_text(yaml.safe_dump(cfg))
    capsys.readouterr()
    code, out = doctor_run(capsys, config, "--user", "root")
    assert line(out, "platform key")[0].startswith("OK    platform key: ")
    assert line(out, "command key platform-1")[0].startswith("OK    command key platform-1: ")
    assert stat.S_IMODE((tmp_path / "p" / "command.key").stat().st_mode) == 0o600


def test_a_crash_looping_unit_is_a_fail(host) -> None:
    """The unit restarts forever (StartLimitIntervalSec=0), so a crashing agent is 'activating',
    never 'failed': its SubState auto-restart is what tells."""
    script = host.bin / "systemctl"
    script.write_text("#!/bin/sh\n"
                      "[ \"$1\" = is-enabled ] && { echo enabled; exit 0; }\n"
                      "[ \"$1\" = show ] && { echo auto-restart; exit 0; }\n"
                      "echo activating\n")
    script.chmod(0o755)
    found = doctor_checks.check_systemd()
    assert found.status == "FAIL" and "auto-restart" in found.finding


def test_each_op_allowed_unsigned_in_the_dialect_warns() -> None:
    """Issue 14: ThingsBoard RPC and Sparkplug DCMD carry no signature; every op let through
    unsigned in the configured dialect is a WARN naming the op, and nothing in the edge dialect."""
    from edge_agent.config.schema import parse_settings

    text = ("gateway: {{id: gw-1, site: s1}}\nmqtt: {{host: h, dialect: {d}}}\nbuses: []\ndevices: []\n"
            "commands:\n  unsigned:\n    thingsboard: [agent.ping, device.poll]\n    sparkplug: [device.write]\n")
    found = doctor_checks.check_unsigned(parse_settings(text.format(d="thingsboard")))
    assert [(f.status, f.check) for f in found] == [(WARN, "unsigned commands")] * 2
    assert "agent.ping is allowed without a signature in the thingsboard dialect" in found[0].finding
    assert "commands.unsigned.thingsboard" in found[1].fix
    assert [f.finding.split()[0] for f in doctor_checks.check_unsigned(parse_settings(text.format(d="sparkplug")))] \
        == ["device.write"]
    assert doctor_checks.check_unsigned(parse_settings(text.format(d="edge"))) == []
