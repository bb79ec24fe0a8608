"""scripts/install.sh into a throwaway root, and the systemd unit it installs.

One real install (a venv with the package and its dependencies from the checkout) serves the
module; a second run over it must change nothing it should not. The lifecycle test works on a
copy: upgrade from a wheel, --uninstall (data kept), --purge. Nothing here touches the system:
every run uses --root, and the error tests stop at their checks before anything is written.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from support.paths import ROOT

SCRIPT = ROOT / "scripts" / "install.sh"
UNIT_SRC = ROOT / "systemd" / "edge-agent.service"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed (package systemd)")


def install(*args: str | Path, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    run_env = {k: v for k, v in os.environ.items() if k != "DESTDIR"}
    run_env.update(env or {})
    return subprocess.run(["bash", str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=run_env, cwd=ROOT)


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, f"rc={result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def snapshot(root: Path) -> dict[str, tuple[str, int, int]]:
    """Every file under etc/ and var/: content hash, mode and mtime (ns)."""
    out = {}
    for top in ("etc", "var"):
        for path in sorted((root / top).rglob("*")):
            if path.is_file():
                st = path.stat()
                out[str(path.relative_to(root))] = (hashlib.sha256(path.read_bytes()).hexdigest(),
                                                    stat.S_IMODE(st.st_mode), st.st_mtime_ns)
    return out


class Installed:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.conf = root / "etc/edge-agent/gateway.yaml"
        self.key = root / "etc/edge-agent/keys/pseudonym.key"
        self.state = root / "var/lib/edge-agent"
        self.unit = root / "etc/systemd/system/edge-agent.service"
        self.bin = root / "opt/edge-agent/venv/bin/edge-agent"
        self.link = root / "usr/local/bin/edge-agent"
        self.first = self.second = ""
        self.before: dict = {}
        self.after: dict = {}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    inst = Installed(tmp_path_factory.mktemp("install") / "root")
    inst.first = ok(install("--root", inst.root))
    with inst.conf.open("a", encoding="utf-8") as f:  # the installer's own edit: must survive re-runs
        f.write("# edited by the installer\n")
    inst.before = snapshot(inst.root)
    inst.second = ok(install("--root", inst.root))
    inst.after = snapshot(inst.root)
    return inst


def test_first_run_lays_out_program_config_state_keys_and_unit(installed):
    i = installed
    assert "created venv" in i.first and "from the example" in i.first and "created key" in i.first
    assert os.access(i.bin, os.X_OK) and i.link.resolve() == i.bin.resolve()
    assert stat.S_IMODE(i.conf.stat().st_mode) == 0o640
    assert stat.S_IMODE(i.conf.parent.stat().st_mode) == 0o750
    assert stat.S_IMODE(i.key.stat().st_mode) == 0o600
    assert stat.S_IMODE(i.key.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(i.state.stat().st_mode) == 0o750
    # a new config points into the throwaway root, never at the real /etc or /var/lib
    text = i.conf.read_text(encoding="utf-8")
    assert f"state_dir: {i.state}" in text
    assert set(re.findall(r"([^\s:]*)/(?:etc|var/lib)/edge-agent", text)) == {str(i.root)}
    unit = i.unit.read_text(encoding="utf-8")
    assert f"ExecStart={i.bin} run -c {i.conf}\n" in unit
    assert f"ReadWritePaths={i.state}\n" in unit
    assert "no systemctl" in i.first  # --root: noted, not done


def test_second_run_changes_no_config_key_or_state(installed):
    i = installed
    assert i.before == i.after
    assert i.conf.read_text(encoding="utf-8").endswith("# edited by the installer\n")
    assert "kept" in i.second and "never overwritten" in i.second and f"kept key {i.key}" in i.second
    assert "created" not in i.second and "installed /" not in i.second  # no new venv, config, key or unit
    assert "up to date: edge-agent" in i.second  # same program, same unit: a running service would stay up


def test_installed_check_accepts_the_example_config(installed):
    """The example is valid; the broker's and the platform's files it names are not there yet
    (warnings, so --strict fails), the key the installer made is."""
    out = subprocess.run([str(installed.link), "check", "-c", str(installed.conf)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    *warnings, last = out.stdout.splitlines()
    assert last.startswith(f"{installed.conf}: ok") and last.endswith(f", {len(warnings)} warning(s))")
    assert warnings and all(": warning: " in line and " does not exist" in line for line in warnings)
    assert not any("privacy.key_file" in line for line in warnings)
    strict = subprocess.run([str(installed.link), "check", "--strict", "-c", str(installed.conf)],
                            capture_output=True, text=True, timeout=60)
    assert strict.returncode == 1 and strict.stdout.splitlines() == warnings


@needs_analyze
def test_installed_unit_passes_verify(installed):
    out = subprocess.run([ANALYZE, "verify", str(installed.unit)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "edge-agent.service" not in out.stdout + out.stderr  # no warning about our unit either


def exposure(unit: Path) -> float:
    out = subprocess.run([ANALYZE, "security", "--offline=true", unit.name], capture_output=True, text=True,
                         timeout=60, cwd=unit.parent)
    match = re.search(r"Overall exposure level for edge-agent\.service: (\d+(?:\.\d+)?)", out.stdout)
    assert match, out.stdout[-2000:] + out.stderr
    return float(match.group(1))


@needs_analyze
@pytest.mark.parametrize("which", ["repo", "installed"])
def test_security_exposure_is_at_most_2(installed, which):
    unit = UNIT_SRC if which == "repo" else installed.unit
    assert exposure(unit) <= 2.0


def directives(unit: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in unit.read_text(encoding="utf-8").splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def test_unit_keeps_what_the_daemon_needs():
    """A better score must not come from breaking the daemon: serial ports, the broker, the
    notify socket, the state dir and the clock-state query all stay reachable."""
    d = directives(UNIT_SRC)
    assert d["Type"] == ["notify"] and d["NotifyAccess"] == ["main"] and d["Restart"] == ["on-failure"]
    assert re.fullmatch(r"\d+s", d["WatchdogSec"][0])
    assert d["ExecStart"] == ["/opt/edge-agent/venv/bin/edge-agent run -c /etc/edge-agent/gateway.yaml"]
    assert d["User"] == ["edge-agent"] and d["SupplementaryGroups"] == ["dialout"]
    assert d["StateDirectory"] == ["edge-agent"] and d["ProtectSystem"] == ["strict"]
    assert d["DevicePolicy"] == ["closed"]
    for group in ("ttyS", "ttyUSB", "ttyACM", "ttyAMA"):
        assert f"char-{group} rw" in d["DeviceAllow"]
    assert d["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    # PrivateUsers hides the dialout group from device permission checks; MemoryDenyWriteExecute
    # can break libffi (ctypes, cffi); ProtectClock and PrivateDevices block adjtimex / the ports
    for setting in ("PrivateUsers", "MemoryDenyWriteExecute", "ProtectClock", "PrivateDevices",
                    "PrivateNetwork", "ProcSubset"):
        assert setting not in d, setting
    assert d["SystemCallFilter"][-1].split()[0] == "adjtimex"  # allowed last: after ~@privileged


def test_upgrade_from_wheel_keeps_config_then_uninstall_keeps_data_then_purge(installed, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(installed.root, root, symlinks=True)
    conf = root / "etc/edge-agent/gateway.yaml"
    key = root / "etc/edge-agent/keys/pseudonym.key"
    key_bytes = key.read_bytes()
    broken = "gateway: [a config being edited\n"  # an existing config is never replaced, even a broken one
    conf.write_text(broken, encoding="utf-8")
    conf.chmod(0o600)

    # upgrade from a wheel built from the checkout
    src, wheels = tmp_path / "src", tmp_path / "wheels"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__",
                                                             "tests", "bench"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--disable-pip-version-check",
                    "-w", str(wheels), str(src)], check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("edge_agent-*.whl")
    out = ok(install("--root", root, "--wheel", wheel))
    assert f"installed {wheel.name}" in out and "upgraded" in out  # the unit moved with the copy
    assert f"kept {conf}" in out and "does not load" in out  # keys not checked: said, not fatal
    assert conf.read_text(encoding="utf-8") == broken and stat.S_IMODE(conf.stat().st_mode) == 0o600
    assert key.read_bytes() == key_bytes

    out = ok(install("--root", root, "--uninstall"))
    assert "kept" in out
    assert not (root / "opt/edge-agent").exists()
    assert not (root / "etc/systemd/system/edge-agent.service").exists()
    assert not (root / "usr/local/bin/edge-agent").is_symlink()
    assert conf.is_file() and key.read_bytes() == key_bytes
    assert (root / "var/lib/edge-agent").is_dir()

    out = ok(install("--root", root, "--purge"))
    assert "purged" in out
    for gone in ("etc/edge-agent", "var/lib/edge-agent", "opt/edge-agent"):
        assert not (root / gone).exists(), gone


# -- one clear line for each refusal -----------------------------------------------------------------

def one_line_error(result: subprocess.CompletedProcess, *phrases: str) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("install.sh: error: "), result.stderr
    for phrase in phrases:
        assert phrase in lines[0]
    return lines[0]


def test_refuses_without_root(tmp_path):
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("needs setpriv to drop root")
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "bash", "-s"]
        result = subprocess.run(cmd, input=SCRIPT.read_text(encoding="utf-8"), capture_output=True, text=True,
                                timeout=60, cwd="/")
    else:
        result = install()
    one_line_error(result, "run as root")


@pytest.mark.skipif(os.geteuid() != 0, reason="the OS check follows the root check")
def test_refuses_an_unsupported_os(tmp_path):
    release = tmp_path / "os-release"
    release.write_text('ID=fedora\nID_LIKE="rhel centos"\n', encoding="utf-8")
    one_line_error(install(env={"EDGE_AGENT_OS_RELEASE": str(release)}), "unsupported OS 'fedora'")


def test_refuses_python_older_than_3_11(tmp_path):
    fake = tmp_path / "python3.9"
    fake.write_text('#!/bin/sh\ncase "$2" in *exit*) exit 1 ;; *version_info*) echo 3.9 ;; esac\n', encoding="utf-8")
    fake.chmod(0o755)
    root = tmp_path / "root"
    one_line_error(install("--root", root, "--python", fake), "needs Python 3.11 or later", "3.9")
    assert not root.exists()  # refused before writing anything


def test_bad_usage_exits_2():
    result = install("--frobnicate")
    assert result.returncode == 2 and "unknown option '--frobnicate'" in result.stderr
