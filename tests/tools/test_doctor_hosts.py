"""``edge-agent doctor`` with several broker nodes (``mqtt.hosts``, issue 16): every node is checked
(reachable, TLS valid for the name dialled for that node, login accepted), one line each,
``broker node HOST:PORT``. A bad node is a WARN while another is good (the gateway delivers, without
its redundancy) and the run passes; with no good node each line is a FAIL and the run fails.

Real mosquittos, one stopped; doctor runs in this process (``main``); systemctl is a stand-in and
the clock is synchronised, so the exit code depends on the broker lines only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from edge_agent import clock
from edge_agent.cli import main
from support.broker import Mosquitto, free_port
from support.certs import Pki, make_pki
from support.keys import init_keys

CID = "edge-agent-gw-doc-doctor"


@pytest.fixture(autouse=True)
def quiet_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stand-in systemctl (enabled, active) and a synchronised clock."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "systemctl").write_text("#!/bin/sh\n[ \"$1\" = is-enabled ] && { echo enabled; exit 0; }\n"
                                       "echo active\n")
    (bin_dir / "systemctl").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(clock, "clock_state", lambda slow=False: clock.ClockState(True, "adjtimex", "TIME_OK"))


def write_config(tmp_path: Path, hosts: list[str], tls: dict | None = None) -> Path:
    mqtt: dict = {"hosts": hosts}
    if tls:
        mqtt["tls"] = {"enabled": True, **{k: str(v) for k, v in tls.items()}}
    cfg = {"gateway": {"id": "gw-doc", "site": "s1", "state_dir": str(tmp_path / "state")},
           "mqtt": mqtt, "buffer": {"max_bytes": "64MiB"}, "buses": [], "devices": []}
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    if not (tmp_path / "state" / "keys").exists():
        init_keys(path)
    return path


def doctor(capsys: pytest.CaptureFixture, config: Path, *extra: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["doctor", "-c", str(config), "--user", "root", *extra])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out


def broker_lines(out: str) -> list[str]:
    """The broker lines with their fix lines, as printed."""
    lines, keep = out.splitlines(), []
    for i, text in enumerate(lines):
        if text[6:].startswith(("broker", "client cert")):
            keep.append(text)
            if i + 1 < len(lines) and lines[i + 1].strip().startswith("-> fix:"):
                keep.append(lines[i + 1].strip())
    return keep


def nodes(tmp_path: Path, **kw: object) -> tuple[Mosquitto, Mosquitto]:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    return Mosquitto(tmp_path / "a", **kw), Mosquitto(tmp_path / "b", **kw)  # type: ignore[arg-type]


def test_one_node_stopped_warns_for_it_and_the_run_passes(tmp_path, capsys) -> None:
    a, b = nodes(tmp_path)
    with a, b:
        b.stop()
        config = write_config(tmp_path, [f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"])
        code, out = doctor(capsys, config)
    assert code == 0, out
    assert broker_lines(out) == [
        f"OK    broker node 127.0.0.1:{a.port}: reachable at 127.0.0.1, plain MQTT (mqtt.tls.enabled is false), "
        f"login accepted (client id {CID})",
        f"WARN  broker node 127.0.0.1:{b.port}: tcp: cannot connect to 127.0.0.1:{b.port}: 127.0.0.1: connection "
        "refused; the agent skips this node (1 of 2 nodes good, so the gateway delivers without this redundancy)",
        f"-> fix: is the broker running and is mqtt.hosts[1] right? (plain MQTT is usually 1883, TLS 8883); a "
        f"firewall may be in the way: 'nc -vz 127.0.0.1 {b.port}' tries it by hand",
    ]


def test_no_node_good_fails_each_and_the_run(tmp_path, capsys) -> None:
    ports = [free_port(), free_port()]
    config = write_config(tmp_path, [f"127.0.0.1:{p}" for p in ports])
    code, out = doctor(capsys, config, "--json")
    assert code == 1
    checks = {c["check"]: c for c in json.loads(out)["checks"] if c["check"].startswith("broker")}
    assert list(checks) == [f"broker node 127.0.0.1:{p}" for p in ports]
    for i, c in enumerate(checks.values()):
        assert c["status"] == "FAIL" and c["finding"].startswith("tcp: cannot connect")
        assert c["finding"].endswith("no node of mqtt.hosts is good: the uplink cannot deliver")
        assert f"mqtt.hosts[{i}]" in c["fix"]


def test_a_login_refused_on_one_node_warns(tmp_path, capsys) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with Mosquitto(tmp_path / "a") as a, Mosquitto(tmp_path / "b", users={"someone": "secret"}) as b:
        config = write_config(tmp_path, [f"localhost:{a.port}", f"127.0.0.1:{b.port}"])
        code, out = doctor(capsys, config)
    assert code == 0, out
    lines = broker_lines(out)
    assert lines[0].startswith(f"OK    broker node localhost:{a.port}: reachable at 127.0.0.1, ")
    assert lines[1].startswith(f"WARN  broker node 127.0.0.1:{b.port}: mqtt: the broker refused the connection: "
                               "Not authorized; the agent skips this node (1 of 2 nodes good")
    assert lines[2].startswith("-> fix: ") and "mqtt.credentials" in lines[2]


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


def test_tls_is_checked_against_the_name_dialled_for_each_node(tmp_path, capsys, pki) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    wrong = pki.issue_server("wrong", dns=["wrong.example"])
    ip_only = pki.issue_server("ip-only", ips=["127.0.0.1"])
    with Mosquitto(tmp_path / "a", tls=pki.broker_tls(certfile=wrong[0], keyfile=wrong[1])) as a, \
            Mosquitto(tmp_path / "b", tls=pki.broker_tls(certfile=ip_only[0], keyfile=ip_only[1])) as b:
        tls = {"ca_file": pki.ca_file, "cert_file": pki.client_cert, "key_file": pki.client_key}
        config = write_config(tmp_path, [f"localhost:{a.port}", f"127.0.0.1:{b.port}"], tls)
        code, out = doctor(capsys, config)
    assert code == 0, out
    lines = broker_lines(out)
    assert lines[0].startswith(f"WARN  broker node localhost:{a.port}: tls: TLS certificate verification failed: "
                               "Hostname mismatch, certificate is not valid for 'localhost'")
    assert lines[0].endswith("the agent skips this node (1 of 2 nodes good, so the gateway delivers without this "
                             "redundancy)")
    assert lines[1] == ("-> fix: mqtt.hosts[0] must be a name the certificate lists (it lists wrong.example), or "
                        "set mqtt.tls.verify_hostname: false")
    # node b: valid for 127.0.0.1, its certificate (made for a day) expiring soon: good, with that warning
    assert lines[2].startswith(f"WARN  broker node 127.0.0.1:{b.port}: reachable at 127.0.0.1, TLSv1.")
    assert (f"certificate valid for 127.0.0.1, login accepted (client id {CID}); but the broker's certificate "
            "(ip-only) expires on ") in lines[2]
    assert lines[3] == "-> fix: the broker's operator must renew it before then: the uplink stops when it expires"
    assert lines[4].startswith(f"WARN  client cert: the gateway's certificate {pki.client_cert} ")  # once
    assert len([t for t in lines if t.startswith(("OK", "WARN", "FAIL"))]) == 3


def test_one_node_in_hosts_keeps_the_step_lines(tmp_path, capsys) -> None:
    port = free_port()
    config = write_config(tmp_path, [f"127.0.0.1:{port}"])
    code, out = doctor(capsys, config)
    assert code == 1
    lines = broker_lines(out)
    assert lines[0] == "OK    broker dns: 127.0.0.1 is an address: nothing to resolve"
    assert lines[1].startswith(f"FAIL  broker tcp: cannot connect to 127.0.0.1:{port}: ")
    assert "is mqtt.hosts[0] right?" in lines[2]
