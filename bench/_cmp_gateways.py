"""The two gateways of the side-by-side bench, each started from a config this module writes.

- ThingsBoard IoT Gateway 3.8.5 from PyPI, in a venv of its own (``ensure_tb_venv``: never
  the project's; ``pymodbus==3.9.2``, pyserial and pyserial-asyncio go in first, since its
  Modbus connector pip-installs them at its first start otherwise). Started as its packaged
  service starts it, ``thingsboard_gateway.tb_gateway.daemon()``, its update check made a
  no-op (it posts to an outside server at start and hourly; a bench talks to loopback only), with
  ``TB_GW_CONFIG_DIR`` holding ``tb_gateway.json`` (its shipped settings, but SQLite storage,
  QoS 1, statistics and remote configuration off), ``modbus.json`` and ``logs.json``
  (warnings and errors to one file, as our agent runs with ``--log-level warning``).
  ``style="range"``: one ``"0-19"`` range tag per device (tag ``r${address}``), one request a
  device a poll; ``style="tags"``: one tag per register, its usual configuration (400 requests
  a poll for 20 x 20).
- edge-agent: ``python -m edge_agent.cli run`` on a config of 20 ``modbus_generic`` devices
  of 20 ``uint16`` holding registers on one ``modbus-tcp`` bus, every other setting default;
  this working tree, or a revision ``export_revision`` took out with ``git archive`` (a tree
  that others are editing is not always runnable, and a figure should name what it measured).

Both name unit ``u`` ``dev{u:02d}`` and register ``r`` ``r{r}`` (``_cmp_values``).
``Gateway`` starts, kills (-9), restarts and stops one of them by its own pid, and says which
files hold its buffer.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from _cmp_values import dev_name, point_name

__all__ = ["TB_VERSION", "TB_PYMODBUS", "ensure_tb_venv", "Gateway", "tb_gateway", "edge_gateway", "export_revision",
           "edge_env", "cpu_seconds"]

ROOT = Path(__file__).resolve().parents[1]
TB_VERSION = "3.8.5"
TB_PYMODBUS = "3.9.2"
# what its Modbus connector pip-installs at its first start when missing (pymodbus too, forced)
TB_FIRST_START = (f"pymodbus=={TB_PYMODBUS}", "pyserial==3.5", "pyserial-asyncio==0.6")
# its service posts to an update server at start and hourly (TBUpdater): these machines reach no
# such address, and a bench sends nothing past loopback, so the check is a no-op here
TB_LAUNCH = ("import thingsboard_gateway.tb_utility.tb_updater as u\n"
             "u.TBUpdater.check_for_new_version = lambda self: None\n"
             "from thingsboard_gateway.tb_gateway import daemon\n"
             "daemon()\n")
UNITS, REGISTERS = 20, 20


# -- ThingsBoard's venv --------------------------------------------------------------------
def _tb_ready(python: Path) -> bool:
    if not python.exists():
        return False
    code = ("import importlib.metadata as m, serial_asyncio; "
            "print(m.version('thingsboard-gateway'), m.version('pymodbus'))")
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=60)
    return out.returncode == 0 and out.stdout.split() == [TB_VERSION, TB_PYMODBUS]


def ensure_tb_venv(venv: Path, log=print) -> Path:  # type: ignore[no-untyped-def]
    """The venv's python, with thingsboard-gateway 3.8.5 and pymodbus 3.9.2 (reused when there)."""
    python = venv / "bin" / "python"
    if _tb_ready(python):
        return python
    log(f"installing thingsboard-gateway=={TB_VERSION} ({', '.join(TB_FIRST_START)} first) into {venv} ...")
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run(pip + list(TB_FIRST_START), check=True)
    subprocess.run(pip + [f"thingsboard-gateway=={TB_VERSION}"], check=True)
    if not _tb_ready(python):
        raise RuntimeError(f"{venv}: thingsboard-gateway {TB_VERSION} with pymodbus {TB_PYMODBUS} did not install")
    return python


# -- /proc -----------------------------------------------------------------------------------
_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """utime + stime + cutime + cstime of ``pid`` (children it waited for included), seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return sum(int(x) for x in fields[11:15]) / _TICK  # fields 14-17 of stat(5)


# -- one gateway -----------------------------------------------------------------------------
class Gateway:
    """One gateway process, started from ``args`` in ``workdir`` with ``env``; stopped by its pid."""

    def __init__(self, name: str, args: list[str], workdir: Path, *, env: dict[str, str] | None = None,
                 stop_signal: int = signal.SIGTERM, storage: Path) -> None:
        self.name, self.args, self.workdir = name, args, workdir
        self.env = {**os.environ, **(env or {})}
        self.stop_signal, self.storage = stop_signal, storage
        self.log = workdir / "gateway.out"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> "Gateway":
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.args, cwd=self.workdir, env=self.env, stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=subprocess.STDOUT)
        self.starts += 1
        return self

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, grace: float = 20.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(self.stop_signal)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)

    def storage_files(self) -> list[Path]:
        """The files holding its buffer now (SQLite db, -wal, -shm, and any log beside them)."""
        if not self.storage.exists():
            return []
        return sorted(p for p in self.storage.iterdir() if p.is_file() and _is_buffer_file(p.name))

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no output)"


def _is_buffer_file(name: str) -> bool:
    # the buffer's files, not the gateway's keys, command ledger, locks or pid files
    return not (name.endswith((".lock", ".pid", ".key", ".pem", ".json")) or "key" in name
                or name.startswith(("commands", "ledger")))


# -- ThingsBoard gateway ---------------------------------------------------------------------
def _tb_main(broker_port: int) -> dict[str, Any]:
    return {
        "thingsboard": {
            "host": "127.0.0.1", "port": broker_port,
            "remoteShell": False, "remoteConfiguration": False, "latencyDebugMode": False,
            "statistics": {"enable": False, "statsSendPeriodInSeconds": 3600, "customStatsSendPeriodInSeconds": 3600},
            "deviceFiltering": {"enable": False, "filterFile": "list.json"},
            # the shipped values from here on
            "maxPayloadSizeBytes": 8196, "minPackSendDelayMS": 50, "minPackSizeToSend": 500,
            "checkConnectorsConfigurationInSeconds": 60, "handleDeviceRenaming": True,
            "security": {"type": "accessToken", "accessToken": "bench-gateway"},
            "qos": 1,
            "reportStrategy": {"type": "ON_RECEIVED"},
            "checkingDeviceActivity": {"checkDeviceInactivity": False, "inactivityTimeoutSeconds": 300,
                                       "inactivityCheckPeriodSeconds": 10},
            "rateLimits": "DEFAULT_TELEMETRY_RATE_LIMIT", "dpRateLimits": "DEFAULT_TELEMETRY_DP_RATE_LIMIT",
            "messagesRateLimits": "DEFAULT_MESSAGES_RATE_LIMIT",
            "deviceMessagesRateLimits": "DEFAULT_MESSAGES_RATE_LIMIT",
            "deviceRateLimits": "DEFAULT_TELEMETRY_RATE_LIMIT",
            "deviceDpRateLimits": "DEFAULT_TELEMETRY_DP_RATE_LIMIT",
        },
        "storage": {"type": "sqlite", "data_file_path": "./data/", "messages_ttl_check_in_hours": 1,
                    "messages_ttl_in_days": 7},
        "grpc": {"enabled": False},
        "connectors": [{"type": "modbus", "name": "Modbus", "configuration": "modbus.json"}],
    }


def _tb_modbus(sim_port: int, interval_ms: int, style: str) -> dict[str, Any]:
    if style == "range":
        series = [{"tag": "r${address}", "type": "16uint", "functionCode": 3, "objectsCount": 1,
                   "address": f"0-{REGISTERS - 1}", "maxRegistersPerRequest": REGISTERS}]
    elif style == "tags":
        series = [{"tag": point_name(r), "type": "16uint", "functionCode": 3, "objectsCount": 1, "address": r}
                  for r in range(REGISTERS)]
    else:
        raise ValueError(f"style {style!r}: range or tags")
    slaves = [{"host": "127.0.0.1", "port": sim_port, "type": "tcp", "method": "socket", "unitId": unit,
               "deviceName": dev_name(unit), "deviceType": "default", "timeout": 35,
               "byteOrder": "BIG", "wordOrder": "BIG", "retries": 3, "retryOnEmpty": True, "retryOnInvalid": True,
               "pollPeriod": interval_ms, "connectAttemptTimeMs": 5000, "connectAttemptCount": 5,
               "waitAfterFailedAttemptsMs": 300000, "attributes": [], "timeseries": series,
               "attributeUpdates": [], "rpc": []} for unit in range(1, UNITS + 1)]
    return {"master": {"slaves": slaves}}


def _tb_logs(path: Path) -> dict[str, Any]:
    names = ("database", "service", "connector", "converter", "tb_connection", "storage", "extension")
    return {
        "version": 1, "disable_existing_loggers": False,
        "formatters": {"f": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
        "handlers": {"file": {"class": "logging.FileHandler", "formatter": "f", "filename": str(path),
                              "level": "WARNING"}},
        "loggers": {n: {"handlers": ["file"], "level": "WARNING", "propagate": False} for n in names},
        "root": {"level": "WARNING", "handlers": ["file"]},
    }


def tb_gateway(python: Path, workdir: Path, *, broker_port: int, sim_port: int, interval_ms: int,
               style: str = "range") -> Gateway:
    conf = workdir / "config"
    conf.mkdir(parents=True, exist_ok=True)
    (workdir / "data").mkdir(exist_ok=True)
    (workdir / "logs").mkdir(exist_ok=True)
    (conf / "tb_gateway.json").write_text(json.dumps(_tb_main(broker_port), indent=2))
    (conf / "modbus.json").write_text(json.dumps(_tb_modbus(sim_port, interval_ms, style), indent=2))
    (conf / "logs.json").write_text(json.dumps(_tb_logs(workdir / "logs" / "gateway.log"), indent=2))
    args = [str(python), "-c", TB_LAUNCH]
    return Gateway("tb" if style == "range" else "tb-tags", args, workdir,
                   env={"TB_GW_CONFIG_DIR": str(conf) + os.sep}, stop_signal=signal.SIGINT,
                   storage=workdir / "data")


# -- edge-agent --------------------------------------------------------------------------------
def _duration(ms: int) -> str:
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def export_revision(rev: str, dest: Path) -> Path:
    """``git archive REV`` of this repository into ``dest``, importable with PYTHONPATH=dest.

    The drivers folder goes where the installed package has it (``edge_agent.drivers``)."""
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", rev], capture_output=True,
                             check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    (dest / "edge_agent" / "drivers").symlink_to(dest / "drivers", target_is_directory=True)
    return dest


def edge_env(source: Path | None) -> dict[str, str]:
    """The environment that makes ``python -m edge_agent...`` run ``source`` (None: this tree)."""
    return {**os.environ, "PYTHONPATH": str(source)} if source else dict(os.environ)


def edge_gateway(workdir: Path, *, broker_port: int, sim_port: int, interval_ms: int,
                 source: Path | None = None, compress: bool = False,
                 overrides: dict[str, Any] | None = None) -> Gateway:
    """Our agent; ``source``: an exported revision to run instead of this working tree;
    ``compress``: ``mqtt.compress: true`` (xz payloads for a metered link); ``overrides``: dotted
    config keys set on top (``{"buffer.commit_interval": "20ms"}``)."""
    import yaml

    state = workdir / "state"
    points = [{"name": point_name(r), "reg": "holding", "address": r, "type": "uint16"} for r in range(REGISTERS)]
    cfg = {
        "gateway": {"id": "gw-bench", "site": "bench", "state_dir": str(state)},
        "mqtt": {"host": "127.0.0.1", "port": broker_port, **({"compress": True} if compress else {})},
        "buses": [{"name": "sim", "protocol": "modbus-tcp", "host": "127.0.0.1", "port": sim_port}],
        "devices": [{"name": dev_name(unit), "bus": "sim", "driver": "modbus_generic", "address": unit,
                     "interval": _duration(interval_ms), "points": points} for unit in range(1, UNITS + 1)],
    }
    for dotted, value in (overrides or {}).items():
        *parents, leaf = dotted.split(".")
        node = cfg
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    # the site pseudonym key the privacy stage needs, as an installer makes it
    out = subprocess.run([sys.executable, "-m", "edge_agent.cli", "keys", "init", "-c", str(path)],
                         cwd=source or ROOT, env=edge_env(source), capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise RuntimeError(f"edge-agent keys init failed: {out.stderr.strip() or out.stdout.strip()}")
    args = [sys.executable, "-m", "edge_agent.cli", "run", "-c", str(path), "--log-level", "warning"]
    return Gateway("edge-xz" if compress else "edge", args, workdir, env=edge_env(source), storage=state)
