"""The verbs as a technician meets them: exit codes, one clear line, no traceback; and the
daemon riding out an absent serial port and a refused TCP link while other buses work."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from edge_agent.buffer.outbox import Buffer
from edge_agent.model import Reading
from support.users import as_another_user, shared_dir, unreadable_mode
from support.agent import cli, start_agent, stop_agent
from support.broker import Mosquitto, Subscriber
from support.keys import init_keys
from support.modbus_server import ModbusTestServer


def base_config(tmp_path: Path, **over) -> dict:
    cfg = {
        "gateway": {"id": "gw-cli", "site": "s1", "state_dir": str(tmp_path / "state")},
        "mqtt": {"host": "127.0.0.1", "port": 1, "reconnect_min": "200ms", "reconnect_max": "1s"},
        "buses": [], "devices": [],
    }
    cfg.update(over)
    return cfg


def write(tmp_path: Path, cfg: dict, name: str = "gw.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    init_keys(path)
    return path


def test_check_good_and_bad(tmp_path):
    good = write(tmp_path, base_config(tmp_path))
    out = cli("check", "-c", str(good))
    assert out.returncode == 0 and "ok" in out.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("gateway:\n  id: gw\n  site: s\n  stat_dir: /x\nmqtt:\n  host: h\nbuses: []\ndevices: []\n")
    out = cli("check", "-c", str(bad))
    assert out.returncode == 1
    assert f"{bad}:4: gateway.stat_dir: unknown key 'stat_dir' (did you mean 'state_dir'?)" in out.stdout
    assert "Traceback" not in out.stdout + out.stderr


@pytest.mark.parametrize("verb", ["run", "status", "read"])
def test_bad_or_missing_config_is_one_clear_failure(tmp_path, verb):
    extra = ["dev"] if verb == "read" else []
    out = cli(verb, "-c", str(tmp_path / "absent.yaml"), *extra)
    assert out.returncode == 1
    assert "absent.yaml" in out.stderr and "Traceback" not in out.stderr


def test_bad_usage_exits_2():
    assert cli("frobnicate").returncode == 2
    assert cli("check").returncode == 2  # -c is required
    negative = cli("tail", "-c", "gw.yaml", "-n", "-5")
    assert negative.returncode == 2 and "'-5' is not a count of rows (0 or more)" in negative.stderr


def test_status_before_the_daemon_ever_ran(tmp_path):
    cfg = write(tmp_path, base_config(tmp_path))
    out = cli("status", "-c", str(cfg))
    assert out.returncode == 0 and "no buffer yet" in out.stdout
    out = cli("status", "-c", str(cfg), "--json")
    assert json.loads(out.stdout)["buffer"] is None


def test_status_on_a_corrupt_buffer_says_so_shows_the_rest_and_exits_1(tmp_path):
    cfg = write(tmp_path, base_config(tmp_path))
    (tmp_path / "state" / "buffer.db").write_bytes(bytes(range(256)) * 20)
    out = cli("status", "-c", str(cfg))
    assert out.returncode == 1 and "Traceback" not in out.stdout + out.stderr
    assert "its buffer cannot be read" in out.stdout and "buffer.db.corrupt-<time>" in out.stdout
    assert "clock " in out.stdout and "pseudonym key v1" in out.stdout
    data = json.loads(cli("status", "-c", str(cfg), "--json").stdout)
    assert data["buffer"] is None and "not a usable SQLite database" in data["buffer_error"]


def damage(path: Path, how: str) -> None:
    if how == "random bytes":
        path.write_bytes(random.Random(1).randbytes(path.stat().st_size))
    elif how == "truncated":
        with open(path, "r+b") as f:
            f.truncate(path.stat().st_size // 2)
    else:  # scribbled pages behind a sound header: the file opens, its rows do not read
        size = path.stat().st_size
        with open(path, "r+b") as f:
            f.seek(size // 3)
            f.write(random.Random(3).randbytes(size // 3))


@pytest.mark.parametrize("how", ["random bytes", "truncated", "scribbled pages"])
def test_status_as_root_on_a_corrupt_buffer_says_what_run_will_do_and_run_does_it(tmp_path, how):
    """Issue 11 item 5: a damaged file was reported as a permission problem (to root)."""
    cfg = write(tmp_path, base_config(tmp_path))
    path = tmp_path / "state" / "buffer.db"
    with Buffer(path) as buf:
        old = buf.append([Reading("river-1", "level_m", k * 0.001, 1_732_380_000_000 + k) for k in range(3000)])
    damage(path, how)
    out = cli("status", "-c", str(cfg))
    assert out.returncode == 1 and "Traceback" not in out.stdout + out.stderr
    assert "run as root" not in out.stdout and "service group" not in out.stdout
    hint = next(line for line in out.stdout.splitlines() if line.startswith("  -> "))
    assert "quarantines it" in hint and "buffer.db.corrupt-<time>" in hint and "fresh buffer" in hint
    assert "ids continue above" in hint
    assert json.loads(cli("status", "-c", str(cfg), "--json").stdout)["buffer_corrupt"] is True
    with Buffer(path) as buf:  # what 'run' does with it, as the hint said
        assert buf.append([Reading("river-1", "level_m", 1.0, 1_732_390_000_000)])[0] > max(old)
    assert len(list(path.parent.glob("buffer.db.corrupt-*"))) == 1


def test_status_on_a_buffer_this_user_may_not_read_says_so():
    """The permission hint stays for a real permission problem."""
    with shared_dir() as base:
        cfg = write(base, base_config(base))
        cfg.chmod(0o644)
        path = base / "state" / "buffer.db"
        with Buffer(path) as buf:
            buf.append([Reading("river-1", "level_m", 1.0, 1_732_380_000_000)])
        (base / "state").chmod(0o755)
        path.chmod(unreadable_mode())
        out = subprocess.run([*as_another_user(), sys.executable, "-m", "edge_agent.cli", "status", "-c", str(cfg)],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 1 and "Traceback" not in out.stdout + out.stderr, out.stderr
        assert "its buffer cannot be read" in out.stdout
        assert "run as root or as a member of the service group" in out.stdout
        assert "corrupt" not in out.stdout


def test_read_prints_scaled_points_and_fails_clearly_on_unknown_device(tmp_path):
    with ModbusTestServer({1: {"holding": {0: [1, 3, 1, 2, 123]}}}).start() as server:
        cfg = write(tmp_path, base_config(
            tmp_path,
            buses=[{"name": "b", "protocol": "modbus-tcp", "host": "127.0.0.1", "port": server.port}],
            devices=[{"name": "river-1", "bus": "b", "driver": "qdy_level", "address": 1}]))
        out = cli("read", "-c", str(cfg), "river-1")
        assert out.returncode == 0, out.stderr
        assert "1 request(s)" in out.stdout
        assert "level_m" in out.stdout and "1.23" in out.stdout and "good" in out.stdout
        assert "decimals" not in out.stdout  # internal points are never shown
        out = cli("read", "-c", str(cfg), "river1")
        assert out.returncode == 1 and "did you mean 'river-1'" in out.stderr


def test_read_shows_what_the_buffer_would_store_a_records_sealed_points_as_one_line(tmp_path, capsys):
    """``read`` prints a poll through ``Privacy.apply_records``: a dropped point is absent, a
    bad one says so, and the points to seal are one ``<sealed>`` line naming the key, never a
    value or the ciphertext."""
    from types import SimpleNamespace

    from edge_agent.cli import _print_read
    from edge_agent.model import DataClass, PollResult, Quality
    from edge_agent.platform import generate_platform_keypair
    from edge_agent.privacy.seal import PlatformKey
    from edge_agent.privacy.stage import Privacy
    from edge_agent.settings import PrivacySettings

    _, public = generate_platform_keypair(tmp_path / "platform")
    key = PlatformKey.load(public)
    privacy = Privacy(PrivacySettings(actions={DataClass.HEALTH: "seal"}), None, key)
    device = SimpleNamespace(name="hub-1", driver="wearables_hub", bus="b", address=None)
    result = PollResult(answered=True, requests=1, readings=[
        Reading("hub-1", "hr_bpm", 131, 1, data_class=DataClass.HEALTH, sub="B-1"),
        Reading("hub-1", "spo2_pct", 97, 1, data_class=DataClass.HEALTH, sub="B-1"),
        Reading("hub-1", "battery_pct", None, 1, q=Quality.BAD, sub="B-1"),
        Reading("hub-1", "wearer_name", "张三", 1, data_class=DataClass.NAME, sub="B-1")])
    assert _print_read(device, result, privacy) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split() for line in lines[2:]] == [["battery_pct", "[B-1]", "-", "bad"],
                                                    ["<sealed>", "[B-1]", "for", key.kid]]
    shown = "\n".join(lines).replace(key.kid, "<kid>")  # a random hex kid may hold "97"
    assert not any(word in shown for word in ("131", "97", "张"))


def test_read_with_refused_link_is_one_line(tmp_path):
    port = free_port()
    cfg = write(tmp_path, base_config(
        tmp_path,
        buses=[{"name": "b", "protocol": "modbus-tcp", "host": "127.0.0.1", "port": port, "timeout": "300ms"}],
        devices=[{"name": "m", "bus": "b", "driver": "eastron_meter", "address": 1}]))
    out = cli("read", "-c", str(cfg), "m")
    assert out.returncode == 1
    assert "refused" in out.stderr and "Traceback" not in out.stderr


def free_port() -> int:
    from support.broker import free_port as fp
    return fp()


def test_daemon_keeps_running_with_absent_port_refused_link_and_broker_down_at_start(tmp_path):
    """Broker down at start, one bus on an absent serial port, one TCP bus refusing: each is
    one clear log line; the working bus is polled and its readings arrive once the broker is
    up; the daemon never exits."""
    broker = Mosquitto(tmp_path)
    with ModbusTestServer({1: {"holding": {0: [1, 3, 1, 1, 42]}}}).start() as server:
        cfg = write(tmp_path, base_config(
            tmp_path,
            mqtt={"host": "127.0.0.1", "port": broker.port, "reconnect_min": "200ms", "reconnect_max": "1s"},
            buffer={"commit_interval": "50ms"},
            buses=[{"name": "ok", "protocol": "modbus-tcp", "host": "127.0.0.1", "port": server.port},
                   {"name": "gone", "protocol": "modbus-rtu", "serial": "/dev/ttyUSB-absent-9"},
                   {"name": "refused", "protocol": "modbus-tcp", "host": "127.0.0.1", "port": free_port()}],
            devices=[{"name": "river-1", "bus": "ok", "driver": "qdy_level", "address": 1, "interval": "200ms"},
                     {"name": "river-2", "bus": "gone", "driver": "qdy_level", "address": 1, "interval": "200ms"},
                     {"name": "meter-9", "bus": "refused", "driver": "eastron_meter", "address": 1,
                      "interval": "200ms"}]))
        log = tmp_path / "agent.log"
        agent = start_agent(cfg, log)
        try:
            time.sleep(2.0)
            assert agent.poll() is None, log.read_text()
            with broker, Subscriber(broker, "edge/v1/#") as platform:
                platform.wait_for(lambda ms: any(m.topic.endswith("/telemetry") and b'"river-1"' in m.payload
                                                 for m in ms), 20, "readings from the working bus")
                assert agent.poll() is None
        finally:
            stop_agent(agent, log, timeout=20)
    text = log.read_text()
    assert "Traceback" not in text
    errors = [line for line in text.splitlines() if " ERROR " in line]
    assert any("river-2" in e and "/dev/ttyUSB-absent-9" in e and "not found" in e for e in errors), text
    assert any("meter-9" in e and "refused" in e for e in errors), text
    assert any("cannot connect" in e for e in errors), text
    # the first failure is logged once at ERROR, the repeats at DEBUG
    assert sum("river-2" in e for e in errors) == 1, errors


def test_tail_prints_buffered_rows_filtered_by_device_and_point(tmp_path):
    from edge_agent.buffer.outbox import Buffer
    from edge_agent.model import Event, Priority, Record

    cfg = write(tmp_path, base_config(tmp_path))
    with Buffer(tmp_path / "state" / "buffer.db") as buf:
        buf.append([Record("river-1", 1732380000000, {"level_m": 1.25}),
                    Record("meter-1", 1732380000001, {"power_W": 5.0, "voltage_V": None}, q={"voltage_V": "bad"}),
                    Event("gate-1", "passage", Priority.NORMAL, 1732380000002, {"plate": "p1:ABC"}),
                    Record("hub-1", 1732380000003, {"hr_bpm": 71}, sub="B-1", clk_synced=False,
                           sealed={"kid": "97d5c0ffee", "ct": "AAAA"})])
        buf.mark_sent([1])  # sent or not, tail shows it
    out = cli("tail", "-c", str(cfg), "--no-follow")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 4
    assert lines[0].split() == ["1", "2024-11-23T16:40:00.000Z", "river-1", "level_m=1.25"]
    assert lines[1].split()[2:] == ["meter-1", "power_W=5.0", "voltage_V=null", "(bad)"]
    assert "event passage [normal]" in lines[2] and '"p1:ABC"' in lines[2]
    assert lines[3].split()[2:] == ["hub-1[B-1]", "hr_bpm=71", "<sealed>", "clk=unsynced"]  # never the ciphertext
    out = cli("tail", "-c", str(cfg), "--no-follow", "--device", "meter-1", "--point", "power_W")
    assert [line.split()[2:] for line in out.stdout.splitlines()] == [["meter-1", "power_W=5.0"]]  # only that point
    out = cli("tail", "-c", str(cfg), "--no-follow", "--point", "level_m", "--point", "hr_bpm")
    assert [line.split()[0] for line in out.stdout.splitlines()] == ["1", "4"]
    out = cli("tail", "-c", str(cfg), "--no-follow", "-n", "1")
    assert out.stdout.splitlines() == [lines[3]]


def test_tail_without_a_buffer_is_one_line(tmp_path):
    cfg = write(tmp_path, base_config(tmp_path))
    out = cli("tail", "-c", str(cfg), "--no-follow")
    assert out.returncode == 1 and "no buffer database" in out.stderr and "Traceback" not in out.stderr
