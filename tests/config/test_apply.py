"""config.apply: the new config checked, written atomically with backups, and rolled back.

Three layers, each proved on its own:

- ``config_apply`` alone (no agent): what ``prepare`` refuses and why, what ``install`` writes
  (backups, the pending record, the new file) and what ``restore`` puts back.
- The daemon's supervision (``supervisor.Supervisor``) in-process, with a real Mosquitto and a real
  Modbus simulator but a fake apply trigger (the test calls the running agent's
  ``command_view().apply_config`` itself, as the command worker would): a good config swaps the
  agent and the result is ok once its uplink is connected; a wrong broker address is rolled back
  within ``rollback_after`` with nothing buffered lost; a pending record found at start rolls back.
- End to end: commands signed with ``edge-agent platform sign``, sent through Mosquitto to the
  agent process (``edge-agent run``), answered on ``R/cmd/result`` and audited; a SIGKILL during
  the trial rolls back at the next start.
"""

from __future__ import annotations

import json
import stat
import threading
import time
from pathlib import Path

import pytest
import yaml

from edge_agent.commands.types import Command, CommandRejected
from edge_agent.config.schema import load_settings
from edge_agent.config.apply import (PENDING_NAME, PendingApply, clear_pending, install, prepare, read_pending,
                                     restore, sha256_file)
from edge_agent.agent.supervisor import Supervisor
from edge_agent.commands.signing import generate
from edge_agent.sim.devices import LevelSensor
from edge_agent.sim.modbus import ModbusSimulator
from support.agent import cli, start_agent, stop_agent, wait_until
from support.broker import Mosquitto, Subscriber, free_port
from support.keys import init_keys
from support.wire import records


def command(text: object, cmd_id: str = "c-apply-1") -> Command:
    return Command(id=cmd_id, op="config.apply", target=None, args={"config": text}, iat=0, exp=1,
                   signer="k-test")


def base_config(tmp_path: Path, **overrides: object) -> dict:
    cfg = {
        "gateway": {"id": "gw-ap", "site": "ap-site", "state_dir": "state"},
        "mqtt": {"host": "127.0.0.1", "port": 1883},
        "buses": [{"name": "plant", "protocol": "modbus-tcp", "host": "127.0.0.1", "port": 5020}],
        "devices": [{"name": "river-1", "bus": "plant", "driver": "qdy_level", "address": 1, "interval": "1s"}],
        "commands": {"keys": [], "rollback_after": "5s", "config_backups": 2},
    }
    cfg.update(overrides)
    return cfg


def write(tmp_path: Path, cfg: dict) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    path.chmod(0o640)
    (tmp_path / "state").mkdir(exist_ok=True)
    init_keys(path)
    return path


@pytest.fixture
def current(tmp_path: Path):
    return load_settings(write(tmp_path, base_config(tmp_path)))


def refused(current, text: object) -> CommandRejected:
    with pytest.raises(CommandRejected) as raised:
        prepare(command(text), current)
    assert raised.value.cmd_id == "c-apply-1" and raised.value.signer == "k-test"
    return raised.value


# --- prepare ----------------------------------------------------------------------------------

def test_a_valid_config_is_read_as_if_it_were_the_running_file(tmp_path, current) -> None:
    cfg = base_config(tmp_path)
    cfg["devices"][0]["interval"] = "2s"
    text, new = prepare(command(yaml.safe_dump(cfg)), current)
    assert new.device("river-1").interval_s == 2.0
    assert new.source == current.source  # relative paths resolve from the config's own directory
    assert new.gateway.state_dir == tmp_path / "state" == current.gateway.state_dir


@pytest.mark.parametrize("args", [None, "", "   ", 42, ["a"]])
def test_args_must_carry_the_config_text(current, args) -> None:
    exc = refused(current, args)
    assert exc.code == "bad_request" and '{"config": "<the whole new config' in exc.message


def test_an_invalid_config_is_refused_with_check_lines(tmp_path, current) -> None:
    text = yaml.safe_dump(base_config(tmp_path), sort_keys=False).replace("port: 1883", "port: 99999")
    text = text.replace("driver: qdy_level", "driver: qdy_levl")
    exc = refused(current, text)
    assert exc.code == "bad_request"
    assert exc.message == ("invalid config: config.apply:7: mqtt.port: 99999 is outside 1..65535; config.apply:16: "
                           "devices[0].driver: unknown driver 'qdy_levl' (did you mean 'qdy_level'?)")


def test_many_problems_are_summarised_on_one_line(current) -> None:
    exc = refused(current, "gateway: 1\nmqtt: 2\nbuses: 3\ndevices: 4\nextra: 5\n")
    assert exc.code == "bad_request" and "\n" not in exc.message and exc.message.endswith("more)")


def test_yaml_that_is_not_a_mapping_is_refused(current) -> None:
    assert refused(current, "- just\n- a list\n").code == "bad_request"


@pytest.mark.parametrize("key,change", [
    ("gateway.id", lambda c: c["gateway"].update(id="gw-other")),
    ("gateway.state_dir", lambda c: c["gateway"].update(state_dir="elsewhere")),
    ("buffer.path", lambda c: c.update(buffer={"path": "state/other.db"})),
])
def test_where_data_lives_cannot_change(tmp_path, current, key, change) -> None:
    cfg = base_config(tmp_path)
    change(cfg)
    exc = refused(current, yaml.safe_dump(cfg))
    assert exc.code == "not_allowed" and exc.message.startswith(f"{key} cannot be changed by config.apply")


@pytest.mark.parametrize("spelling", ["{tmp}/state/buffer.db", "state/buffer.db", "./state//buffer.db",
                                      "state/../state/buffer.db", "link/buffer.db"])
def test_the_same_buffer_path_written_differently_is_no_change(tmp_path, current, spelling) -> None:
    """The running config leaves buffer.path to its default (state_dir/buffer.db); the new one
    names that same file in another spelling and changes an interval: accepted, and read as the
    new config with the same buffer."""
    (tmp_path / "state").mkdir(exist_ok=True)
    (tmp_path / "link").symlink_to(tmp_path / "state")
    cfg = base_config(tmp_path, buffer={"path": spelling.format(tmp=tmp_path)})
    cfg["devices"][0]["interval"] = "2s"
    text = yaml.safe_dump(cfg)
    returned, new = prepare(command(text), current)  # not refused as a buffer.path change
    assert returned == text
    assert new.buffer.path.resolve() == current.buffer.path.resolve() == (tmp_path / "state" / "buffer.db").resolve()
    assert new.device("river-1").interval_s == 2.0 and current.device("river-1").interval_s == 1.0


def test_a_key_file_the_new_config_names_must_load(tmp_path, current) -> None:
    cfg = base_config(tmp_path, privacy={"key_file": "keys/absent.key"})
    exc = refused(current, yaml.safe_dump(cfg))
    assert exc.code == "bad_request" and "absent.key" in exc.message
    cfg = base_config(tmp_path)
    cfg["commands"]["keys"] = [{"id": "k1", "public_key_file": "keys/platform.pub"}]
    exc = refused(current, yaml.safe_dump(cfg))
    assert exc.code == "bad_request" and "platform.pub" in exc.message


# --- install and restore ------------------------------------------------------------------------

def test_install_keeps_backups_records_the_apply_and_replaces_the_file(tmp_path, current) -> None:
    config = current.source
    first = config.read_bytes()
    text, _ = prepare(command(yaml.safe_dump(base_config(tmp_path, mqtt={"host": "10.9.9.9"}))), current)
    pending = install(command(text), current, text, now_ms=1_000_000)
    assert config.read_text(encoding="utf-8") == text
    assert stat.S_IMODE(config.stat().st_mode) == 0o640  # the file keeps its permissions
    assert (tmp_path / "gateway.yaml.1").read_bytes() == first
    assert pending == read_pending(current.gateway.state_dir)
    assert (pending.cmd_id, pending.signer, pending.backup) == ("c-apply-1", "k-test", tmp_path / "gateway.yaml.1")
    assert pending.deadline_ms == 1_000_000 + 5000 and pending.sha256 == sha256_file(config)
    assert not list(tmp_path.glob(".*tmp*"))  # no temp file left behind


def test_backups_rotate_and_only_config_backups_are_kept(tmp_path, current) -> None:
    texts = [current.source.read_text()]
    for n in range(4):
        text = yaml.safe_dump(base_config(tmp_path, mqtt={"host": f"10.0.0.{n}"}))
        install(command(text, f"c-{n}"), current, text)
        texts.append(text)
    backups = sorted(p.name for p in tmp_path.glob("gateway.yaml.*"))
    assert backups == ["gateway.yaml.1", "gateway.yaml.2"]  # config_backups: 2
    assert (tmp_path / "gateway.yaml.1").read_text() == texts[-2]
    assert (tmp_path / "gateway.yaml.2").read_text() == texts[-3]


def test_restore_puts_the_previous_config_back_once(tmp_path, current) -> None:
    before = current.source.read_bytes()
    text = yaml.safe_dump(base_config(tmp_path, mqtt={"host": "10.9.9.9"}))
    pending = install(command(text), current, text)
    assert restore(pending)
    assert current.source.read_bytes() == before
    assert (tmp_path / "gateway.yaml.failed").read_text() == text  # kept for the technician
    assert not restore(pending)  # the new text is no longer in place: nothing to undo


def test_install_failure_leaves_the_running_config(tmp_path, current, monkeypatch) -> None:
    before = current.source.read_bytes()
    import edge_agent.config.apply as config_apply

    real = config_apply.write_atomic

    def failing(path: Path, data: bytes, mode: int = 0o644) -> None:
        if path == current.source:
            raise OSError(28, "No space left on device", str(path))
        real(path, data, mode)

    monkeypatch.setattr(config_apply, "write_atomic", failing)
    with pytest.raises(CommandRejected) as raised:
        install(command("x: 1"), current, "x: 1")
    assert raised.value.code == "internal" and "No space left on device" in raised.value.message
    assert current.source.read_bytes() == before


def test_an_unreadable_record_is_dropped(current) -> None:
    state = current.gateway.state_dir
    (state / PENDING_NAME).write_text("{not json")
    assert read_pending(state) is None and not (state / PENDING_NAME).exists()
    clear_pending(state)  # absent: no error


def test_record_round_trip() -> None:
    p = PendingApply("c-1", "k-a", Path("/etc/g.yaml"), Path("/etc/g.yaml.1"), "ab" * 32, 5, 2.5, 3)
    assert PendingApply.from_json(p.to_json()) == p
    assert json.loads(p.to_json())["v"] == 1


# --- the daemon's supervision, with a fake apply trigger ---------------------------------------
# The test plays the command worker: it calls the running agent's view's apply_config(command)
# itself (the supervisor's hand-over). Everything else is real: the agent, its buffer and uplink, Mosquitto, a simulated level sensor.

ROOT = "edge/v1/ap-site/gw-ap"
ROLLBACK_AFTER_S = 3.0


def broker_in(directory: Path) -> Mosquitto:
    directory.mkdir(exist_ok=True)
    return Mosquitto(directory)


class FakeService:
    """Stands in for commands.CommandService: no key, no ledger; R/cmd is not the trigger here."""

    def __init__(self) -> None:
        self.started = self.stopped = False

    def submit(self, payload: bytes) -> None:
        pass

    def start(self, publish_result) -> None:
        self.started = True

    def stop(self) -> None:
        self.stopped = True


@pytest.fixture
def sim():
    simulator = ModbusSimulator({1: LevelSensor(rise_m_per_min=1.0)})
    _, port = simulator.serve_tcp("127.0.0.1", 0)
    yield port
    simulator.stop()


def live_config(tmp_path: Path, broker_port: int, modbus_port: int, **commands: object) -> dict:
    """Commands on (a real platform key: apply checks that the new config's key files load), with
    the fake service: nothing arrives on R/cmd in these tests."""
    if not (tmp_path / "platform" / "command.pub").exists():
        generate(tmp_path / "platform")
    return base_config(
        tmp_path,
        mqtt={"host": "127.0.0.1", "port": broker_port, "reconnect_min": "100ms", "reconnect_max": "500ms"},
        buffer={"commit_interval": "50ms"},
        buses=[{"name": "plant", "protocol": "modbus-tcp", "host": "127.0.0.1", "port": modbus_port}],
        devices=[{"name": "river-1", "bus": "plant", "driver": "qdy_level", "address": 1, "interval": "100ms"}],
        commands={"keys": [{"id": "platform", "public_key_file": "platform/command.pub"}],
                  "rollback_after": f"{ROLLBACK_AFTER_S:g}s", "config_backups": 3, **commands})


class Running:
    """A Supervisor on its own thread, as ``run()`` would drive it."""

    def __init__(self, settings) -> None:
        self.stop_event = threading.Event()
        self.services: list[FakeService] = []
        self.sup = Supervisor(settings, self.stop_event, build_service=self._service)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, name="test-supervisor", daemon=True)

    def apply(self, command: Command) -> dict | None:
        """What the command worker does with a config.apply (``CommandOps.apply``)."""
        return self.sup.agent.command_view().apply_config(command)

    def _service(self, settings, view) -> FakeService:
        self.services.append(FakeService())
        return self.services[-1]

    def _main(self) -> None:
        try:
            self.sup.run()
        except BaseException as exc:  # shown by stop()
            self.error = exc

    def __enter__(self) -> "Running":
        self.thread.start()
    
        wait_until(lambda: self.sup.agent is not None or self.error is not None, 10, "the first agent")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.thread.join(30)
        assert not self.thread.is_alive(), "the supervisor did not stop"
        if self.error is not None:
            raise self.error


def results(platform) -> list[dict]:
    return [json.loads(m.payload) for m in platform.messages if m.topic == f"{ROOT}/cmd/result"]


def record_ids(platform) -> list[int]:
    """Ids of the records on R/telemetry (one point, level_m, each: as many as polls)."""
    return [r["id"] for r in records(platform.messages, f"{ROOT}/telemetry", gw="gw-ap")]


def test_a_good_config_is_applied_and_ok_is_sent_once_the_new_uplink_is_up(tmp_path, sim) -> None:
    """Moving to another broker: the result comes from the new uplink, on the new broker."""

    with broker_in(tmp_path / "b1") as first, broker_in(tmp_path / "b2") as second, \
            Subscriber(second, f"{ROOT}/#") as platform:
        path = write(tmp_path, live_config(tmp_path, first.port, sim))
        with Running(load_settings(path)) as running:
            old_agent = running.sup.agent
            wait_until(lambda: old_agent.uplink.connected, 10, "the first uplink")
            new_text = yaml.safe_dump(live_config(tmp_path, second.port, sim))
            assert running.apply(command(new_text, "c-good")) is None  # the result comes later
            platform.wait_for(lambda ms: results(platform), 15)
            new_agent = running.sup.agent
            assert new_agent is not old_agent and new_agent.settings.mqtt.port == second.port
            assert new_agent.uplink.connected and not old_agent.uplink.connected
            assert running.services[0].stopped and running.services[1].started  # the service follows the agent
            wait_until(lambda: record_ids(platform), 10, "records through the new broker")
            time.sleep(0.5)
        (answer,) = results(platform)  # once
        assert answer["id"] == "c-good" and answer["ok"] is True
        assert answer["data"]["config"] == "gateway.yaml" and answer["data"]["backup"] == "gateway.yaml.1"
        assert 0 <= answer["data"]["connected_after_ms"] < ROLLBACK_AFTER_S * 1000
    assert path.read_text() == new_text
    assert read_pending(tmp_path / "state") is None  # the apply is over


def test_an_invalid_config_is_refused_and_the_old_one_keeps_running(tmp_path, sim) -> None:

    with broker_in(tmp_path / "b1") as broker:
        path = write(tmp_path, live_config(tmp_path, broker.port, sim))
        before = path.read_bytes()
        with Running(load_settings(path)) as running:
            agent = running.sup.agent
            wait_until(lambda: agent.uplink.connected, 10, "the uplink")
            with pytest.raises(CommandRejected) as raised:
                running.apply(command("gateway: {id: gw-ap}\n", "c-bad"))
            assert raised.value.code == "bad_request"
            time.sleep(1.0)
            assert running.sup.agent is agent and agent.uplink.connected  # never restarted
            # and the next apply is not blocked by the refused one
            assert running.apply(command(before.decode(), "c-same")) == \
                {"changed": False, "config": "gateway.yaml"}
    assert path.read_bytes() == before and not list(tmp_path.glob("gateway.yaml.*"))


def test_a_wrong_broker_is_rolled_back_in_time_and_nothing_buffered_is_lost(tmp_path, sim) -> None:

    with broker_in(tmp_path / "b1") as broker, Subscriber(broker, f"{ROOT}/#") as platform:
        path = write(tmp_path, live_config(tmp_path, broker.port, sim))
        before = path.read_bytes()
        with Running(load_settings(path)) as running:
            wait_until(lambda: len(record_ids(platform)) >= 5, 10, "records before the apply")
            bad_text = yaml.safe_dump(live_config(tmp_path, free_port(), sim))  # nobody listens there
            id_before = running.sup.agent.buffer.max_id()
            started = time.monotonic()
            assert running.apply(command(bad_text, "c-wrong-broker")) is None
            platform.wait_for(lambda ms: results(platform), ROLLBACK_AFTER_S + 10)
            took = time.monotonic() - started
            assert running.sup.agent.settings.mqtt.port == broker.port
            last = running.sup.agent.buffer.max_id()
            assert last - id_before >= 10  # records were buffered while the new config was on trial
            wait_until(lambda: max(record_ids(platform)) >= last, 15, "the backlog of the trial to drain")
        (answer,) = results(platform)
        assert answer["id"] == "c-wrong-broker" and answer["ok"] is False
        assert answer["error"]["code"] == "rolled_back"
        assert answer["error"]["message"] == (f"the uplink did not connect within {ROLLBACK_AFTER_S:g} s with the new "
                                              "config; the previous config is running again")
        assert answer["data"] == {"restored": "gateway.yaml.1"}
        print(f"rollback measured: result {took:.2f} s after the apply (rollback_after {ROLLBACK_AFTER_S:g} s)")
        assert ROLLBACK_AFTER_S <= took < ROLLBACK_AFTER_S + 5
        ids = sorted(set(record_ids(platform)))
        assert ids == list(range(ids[0], ids[-1] + 1)), "a record buffered around the apply never arrived"
    assert path.read_bytes() == before
    assert (tmp_path / "gateway.yaml.failed").read_text() == bad_text
    assert read_pending(tmp_path / "state") is None


def test_a_new_config_that_cannot_start_is_rolled_back_at_once(tmp_path, sim) -> None:

    with broker_in(tmp_path / "b1") as broker, Subscriber(broker, f"{ROOT}/#") as platform:
        path = write(tmp_path, live_config(tmp_path, broker.port, sim, rollback_after="60s"))
        with Running(load_settings(path)) as running:
            wait_until(lambda: running.sup.agent.uplink.connected, 10, "the uplink")
            cfg = live_config(tmp_path, broker.port, sim, rollback_after="60s")
            cfg["buffer"]["max_bytes"] = "1MiB"  # passes check; this test's agent refuses it below
            real = running.sup.build_service

            def refuse_small_buffers(settings, view):
                if settings.buffer.max_bytes == 1024**2:
                    raise RuntimeError("cannot start: a test fault")
                return running._service(settings, view)

            running.sup.build_service = refuse_small_buffers
            started = time.monotonic()
            running.apply(command(yaml.safe_dump(cfg), "c-nostart"))
            platform.wait_for(lambda ms: results(platform), 15)
            assert time.monotonic() - started < 10  # not the 60 s of rollback_after
            running.sup.build_service = real
        (answer,) = results(platform)
        assert answer["error"]["code"] == "rolled_back"
        assert answer["error"]["message"].startswith("the new config failed to start (cannot start: a test fault)")


def test_an_apply_interrupted_by_a_crash_rolls_back_at_the_next_start(tmp_path, sim) -> None:
    """The record and the new file are in place, as after a power cut during the trial."""

    with broker_in(tmp_path / "b1") as broker, Subscriber(broker, f"{ROOT}/#") as platform:
        path = write(tmp_path, live_config(tmp_path, broker.port, sim))
        before = path.read_bytes()
        current = load_settings(path)
        new_text = yaml.safe_dump(live_config(tmp_path, broker.port, sim, config_backups=4))
        install(command(new_text, "c-crash"), current, new_text)
        with Running(load_settings(path)) as running:  # the daemon reads the new file at start
            platform.wait_for(lambda ms: results(platform), 15)
            assert running.sup.agent.settings.commands.config_backups == 3  # the previous config runs
        (answer,) = results(platform)
        assert answer["id"] == "c-crash" and answer["error"]["code"] == "rolled_back"
        assert "stopped before the new config was confirmed" in answer["error"]["message"]
    assert path.read_bytes() == before and read_pending(tmp_path / "state") is None


# --- end to end: signed commands through Mosquitto to the agent process ------------------------

def sign_apply(tmp_path: Path, cfg: dict | str, cmd_id: str) -> bytes:
    """``edge-agent platform sign --op config.apply --args {"config": TEXT}``, as a platform would."""
    text = cfg if isinstance(cfg, str) else yaml.safe_dump(cfg, sort_keys=False)
    out = cli("platform", "sign", "--key", str(tmp_path / "platform" / "command.key"), "--kid", "platform",
              "--op", "config.apply", "--args", json.dumps({"config": text}), "--id", cmd_id, "--ttl", "5m")
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().encode()


def agent_config(tmp_path: Path, broker_port: int, modbus_port: int, **commands: object) -> dict:
    cfg = live_config(tmp_path, broker_port, modbus_port, ops=["agent.ping", "config.apply"],
                      max_bytes="64KiB", **commands)
    cfg["gateway"]["state_dir"] = str(tmp_path / "state")
    return cfg


def audit_rows(config: Path, cmd_id: str) -> list[tuple[str, str | None]]:
    out = cli("audit", "-c", str(config), "--json")
    assert out.returncode == 0, out.stderr
    return [(r["outcome"], r["code"]) for r in json.loads(out.stdout)["rows"] if r["cmd_id"] == cmd_id]


def answer_to(platform: Subscriber, cmd_id: str, timeout: float) -> dict:
    platform.wait_for(lambda ms: any(r["id"] == cmd_id for r in results(platform)), timeout, f"the result of {cmd_id}")
    found = [r for r in results(platform) if r["id"] == cmd_id]
    assert len(found) == 1, found
    return found[0]


def test_config_apply_end_to_end(tmp_path, sim) -> None:
    """Refused, rolled back, applied: each answered once on R/cmd/result and audited."""
    log = tmp_path / "agent.log"
    with broker_in(tmp_path / "b1") as broker, Subscriber(broker, f"{ROOT}/#") as platform:
        path = write(tmp_path, agent_config(tmp_path, broker.port, sim))
        original = path.read_text()
        agent = start_agent(path, log)
        try:
            wait_until(lambda: record_ids(platform), 20, "telemetry")
            topic = f"{ROOT}/cmd"

            # invalid: refused at once, nothing written, the agent never restarted
            platform.client.publish(topic, sign_apply(tmp_path, "gateway: {id: gw-ap}\n", "c-e2e-bad"), qos=1)
            bad = answer_to(platform, "c-e2e-bad", 15)
            assert bad["error"]["code"] == "bad_request" and bad["error"]["message"].startswith(
                "invalid config: config.apply: mqtt: required key is missing; ")
            assert path.read_text() == original and agent.poll() is None

            # wrong broker port: rolled back within rollback_after, records of the trial delivered
            wrong = agent_config(tmp_path, free_port(), sim)
            sent = time.monotonic()
            platform.client.publish(topic, sign_apply(tmp_path, wrong, "c-e2e-wrong"), qos=1)
            rolled = answer_to(platform, "c-e2e-wrong", ROLLBACK_AFTER_S + 15)
            took = time.monotonic() - sent
            print(f"end to end: rolled_back result {took:.2f} s after the command was sent "
                  f"(rollback_after {ROLLBACK_AFTER_S:g} s)")
            assert rolled["error"]["code"] == "rolled_back" and ROLLBACK_AFTER_S <= took < ROLLBACK_AFTER_S + 8
            assert path.read_text() == original

            # a good one: a slower poll; ok once the uplink is back
            good = agent_config(tmp_path, broker.port, sim)
            good["devices"][0]["interval"] = "200ms"
            platform.client.publish(topic, sign_apply(tmp_path, good, "c-e2e-good"), qos=1)
            ok = answer_to(platform, "c-e2e-good", 15)
            assert ok["ok"] is True and ok["data"]["backup"] == "gateway.yaml.1"
            assert yaml.safe_load(path.read_text())["devices"][0]["interval"] == "200ms"
            count = len(record_ids(platform))
            wait_until(lambda: len(record_ids(platform)) > count + 5, 10, "telemetry under the new config")
        finally:
            stop_agent(agent, log)
        ids = sorted(set(record_ids(platform)))
        assert ids == list(range(ids[0], ids[-1] + 1)), "a buffered record never arrived"
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]
    assert audit_rows(path, "c-e2e-bad") == [("accepted", None), ("failed", "bad_request")]
    assert audit_rows(path, "c-e2e-wrong") == [("accepted", None), ("failed", "rolled_back")]
    assert audit_rows(path, "c-e2e-good") == [("accepted", None), ("done", None)]
    assert cli("audit", "-c", str(path), "--verify").returncode == 0
    assert sorted(p.name for p in tmp_path.glob("gateway.yaml.*")) == \
        ["gateway.yaml.1", "gateway.yaml.2", "gateway.yaml.failed"]


def test_a_crash_during_the_trial_rolls_back_at_the_next_start(tmp_path, sim) -> None:
    """SIGKILL while the new config is on trial: the next start restores the previous file and
    sends the rolled_back result, once."""
    log = tmp_path / "agent.log"
    with broker_in(tmp_path / "b1") as broker, Subscriber(broker, f"{ROOT}/#") as platform:
        path = write(tmp_path, agent_config(tmp_path, broker.port, sim, rollback_after="10m"))
        original = path.read_text()
        agent = start_agent(path, log)
        try:
            wait_until(lambda: record_ids(platform), 20, "telemetry")
            wrong = agent_config(tmp_path, free_port(), sim, rollback_after="10m")
            platform.client.publish(f"{ROOT}/cmd", sign_apply(tmp_path, wrong, "c-e2e-crash"), qos=1)
            wait_until(lambda: read_pending(tmp_path / "state") is not None and path.read_text() != original, 15,
                       "the new config on trial")
            time.sleep(0.5)
        finally:
            agent.kill()
            agent.wait()
        assert not results(platform)  # nothing said yet: the trial was cut short
        agent = start_agent(path, log)
        try:
            rolled = answer_to(platform, "c-e2e-crash", 20)
            assert rolled["error"]["code"] == "rolled_back"
            assert path.read_text() == original
        finally:
            stop_agent(agent, log)
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]
    assert read_pending(tmp_path / "state") is None
    assert audit_rows(path, "c-e2e-crash") == [("accepted", None), ("failed", "rolled_back")]
