"""The doctor's local checks: serial ports, clock, state directory, disk, key files, systemd.

Each function returns one ``Finding`` (or a list) and never raises on what it finds; the
wording of every finding is listed in docs/troubleshooting.md. The busy-port logic is
``scan``'s (``port_problem``, ``holders``, ``_busy``, ``_is_daemon``): doctor and
``edge-agent scan`` must agree on what "in use" means.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

from .finding import FAIL, OK, SERVICE_USER, TIMEOUT_S, WARN, Finding, Who

__all__ = ["check_config_file", "check_serial", "check_clock", "check_state_dir", "check_disk", "check_keys", "check_unsigned",
           "check_systemd", "owner_text"]

RW = os.R_OK | os.W_OK


def owner_text(st: os.stat_result) -> str:
    """``crw-rw---- root:dialout``."""
    try:
        user = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        user = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return f"{stat.filemode(st.st_mode)} {user}:{group}"


def _restart(who: Who) -> str:
    return "systemctl restart edge-agent" if who.name == SERVICE_USER else "log in again"


def check_config_file(config: str, who: Who) -> Finding:
    """The service user must read the config the technician just had checked."""
    path = Path(config)
    if who.may(path, os.R_OK):
        return Finding(OK, "config file", f"{path} readable by {who.name}")
    return Finding(FAIL, "config file", f"{path} is not readable by {who.name} ({owner_text(path.stat())})",
                   f"chgrp {who.name} {path} && chmod g+r {path}")


# -- serial ports --------------------------------------------------------------------------------

def _no_access_fix(path: str, st: os.stat_result, who: Who) -> str:
    group = owner_text(st).split(":")[1]
    if st.st_mode & 0o060 == 0o060 and st.st_gid != 0:
        sudo = "" if os.geteuid() == 0 else "sudo "
        return f"{sudo}usermod -aG {group} {who.name}, then {_restart(who)}"
    return (f"give the port to the dialout group with a udev rule (SUBSYSTEM==\"tty\", GROUP=\"dialout\", "
            f"MODE=\"0660\"), then usermod -aG dialout {who.name}")


def check_serial(bus: Any, who: Who) -> Finding:
    """``serial BUS``: present, a character device, read/write for ``who``, a tty, not held."""
    from .. import scan

    check, path = f"serial {bus.name}", bus.serial
    where = f"set buses[{bus.name}].serial to the adapter's path"
    if not os.path.exists(path):
        return Finding(FAIL, check, f"{path} not found",
                       f"plug the adapter in, or {where}: 'ls -l /dev/serial/by-id/' lists the ports present "
                       "(a by-id path survives re-plugging and reboots)")
    st = os.stat(path)
    if not stat.S_ISCHR(st.st_mode):
        return Finding(FAIL, check, f"{path} is not a character device, so not a serial port",
                       f"{where} (/dev/ttyUSB0, /dev/ttyAMA0, /dev/serial/by-id/...)")
    if not who.may(path, RW):
        return Finding(FAIL, check, f"{path} is not readable and writable by {who.name} ({owner_text(st)})",
                       _no_access_fix(path, st, who))
    problem, locked = scan.port_problem(path)
    if problem:
        fix = ("stop the program holding it exclusively (fuser -v " + path + ")" if "busy" in problem
               else where if "not a serial device" in problem
               else "look at 'dmesg | tail' for the adapter's errors; re-plug it")
        return Finding(FAIL, check, problem, fix)
    procs = scan.holders(path)
    if procs and all(scan._is_daemon(cmd) for _, cmd in procs):
        pids = ", ".join(str(pid) for pid, _ in procs)
        return Finding(OK, check, f"{path} is open by the edge-agent daemon (PID {pids}), as it should be")
    if procs or locked:
        text, fix = scan._busy(path, procs)
        if any("ModemManager" in cmd for _, cmd in procs):
            fix = "systemctl disable --now ModemManager (it probes every new serial port)"
        elif not procs:
            fix = f"find it with 'fuser -v {path}' (as root) and stop it"
        return Finding(FAIL, check, text, fix + ": two programs on one line garble each other")
    return Finding(OK, check, f"{path} is a serial port, read/write for {who.name}, no other process has it open")


# -- clock ---------------------------------------------------------------------------------------

CLOCK_FIX = ("the gateway needs NTP (UDP 123) to a time server: 'timedatectl status' shows the state, "
             "'systemctl status systemd-timesyncd' the client; a Raspberry Pi has no clock of its own")


def check_clock() -> Finding:
    from ...clock import clock_state

    state = clock_state(slow=True)
    said = f" ({state.source}: {state.detail})"
    if state.synced:
        return Finding(OK, "clock", f"synchronised{said}")
    if state.synced is None:
        return Finding(WARN, "clock", f"cannot tell whether the clock is synchronised, so readings are not marked"
                       f"{said}", "check by hand: timedatectl status (\"System clock synchronized: yes\")")
    return Finding(WARN, "clock", f"not synchronised: readings and events carry clk: \"unsynced\"{said}", CLOCK_FIX)


# -- state directory and disk --------------------------------------------------------------------

def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_state_dir(settings: Any, who: Who) -> Finding:
    """The directories the daemon writes (state_dir, the buffer's) and the files it keeps there."""
    from ...commands.ledger import ledger_files

    dirs = dict.fromkeys([Path(settings.gateway.state_dir), Path(settings.buffer.path).parent])
    fix_dir = " ".join(str(d) for d in dirs)
    for d in dirs:
        base = _existing(d)
        if not base.is_dir():
            return Finding(FAIL, "state dir", f"{base} is not a directory", "remove it, or point gateway.state_dir "
                           "and buffer.path elsewhere")
        if not who.may(base, os.W_OK | os.X_OK):
            what = (f"{d} is not writable by {who.name}" if base == d
                    else f"{d} does not exist and {who.name} cannot create it in {base}")
            return Finding(FAIL, "state dir", f"{what} ({owner_text(base.stat())})",
                           f"mkdir -p {fix_dir} && chown -R {who.name}: {fix_dir}")
    buf = Path(settings.buffer.path)
    files = [buf, *(buf.with_name(buf.name + s) for s in ("-wal", "-shm", ".ids", ".lock"))]
    files += ledger_files(settings.gateway.state_dir)
    for f in files:
        if f.exists() and not who.may(f, RW):
            return Finding(FAIL, "state dir", f"{f} is not writable by {who.name} ({owner_text(f.stat())}); was "
                           "the agent once run as another user?", f"chown -R {who.name}: {fix_dir}")
    return Finding(OK, "state dir", f"{fix_dir} writable by {who.name}")


def _mount_point(path: Path) -> Path:
    path = path.resolve()
    while not os.path.ismount(path):
        path = path.parent
    return path


def check_disk(buffer: Any) -> Finding:
    """Free space where the buffer lives against ``buffer.max_bytes``; what the buffer already
    holds counts as room (it is inside the cap)."""
    from ...units import format_size

    path = Path(buffer.path)
    base = _existing(path.parent)
    vfs = os.statvfs(base)
    free = vfs.f_bavail * vfs.f_frsize
    held = sum(p.stat().st_size for p in (path, path.with_name(path.name + "-wal")) if p.exists())
    room, cap = free + held, buffer.max_bytes
    where = f"{format_size(free)} free on {_mount_point(base)}"
    tail = f" for the buffer {path} (buffer.max_bytes {format_size(cap)}" + \
        (f", {format_size(held)} already in use)" if held else ")")
    if room < cap:
        return Finding(FAIL, "disk", f"{where}{tail}: the cap cannot fit; a full disk stops buffering",
                       f"lower buffer.max_bytes below {format_size(max(room // 2, 0))}, or free space on "
                       f"{_mount_point(base)} (journalctl --vacuum-size=100M, apt-get clean)")
    if room < 2 * cap:
        return Finding(WARN, "disk", f"{where}{tail}: less than twice the cap (the WAL, logs and upgrades need "
                       "room beside it)", f"lower buffer.max_bytes to {format_size(room // 2)} or less, or free space")
    return Finding(OK, "disk", f"{where}{tail}")


# -- key files -----------------------------------------------------------------------------------

def _readable(check: str, path: Path, who: Who, *, secret: bool, missing: str) -> Finding | None:
    """Present, readable by ``who``; a secret also 0600 (or stricter) and owned by ``who``.
    ``missing``: the fix when the file is absent."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return Finding(FAIL, check, f"{path} does not exist", missing)
    except OSError as exc:
        return Finding(FAIL, check, f"{path}: {exc.strerror}", "check the path and its directories")
    if not stat.S_ISREG(st.st_mode):
        return Finding(FAIL, check, f"{path} is not a regular file", "point the config at the file itself")
    if secret and stat.S_IMODE(st.st_mode) & 0o077:
        what = "readable" if st.st_mode & 0o044 else "accessible"
        owned = who.uid == 0 or st.st_uid == who.uid  # the fix must leave the agent able to read it
        return Finding(FAIL, check, f"{path} is {what} by group or others ({owner_text(st)})",
                       f"chmod 600 {path}" if owned else f"chown {who.name}: {path} && chmod 600 {path}")
    if not who.may(path, os.R_OK):
        return Finding(FAIL, check, f"{path} is not readable by {who.name} ({owner_text(st)})",
                       f"chown {who.name}: {path}" + ("" if secret else f" or chmod a+r {path}"))
    if secret and who.uid != 0 and st.st_uid != who.uid:
        return Finding(FAIL, check, f"{path} is owned by {owner_text(st).split()[1].split(':')[0]}, not {who.name}",
                       f"chown {who.name}: {path}")
    return None


def _pseudonym(settings: Any, who: Who, config: str) -> Finding | None:
    from ...privacy.keys import KeyFileError, load_keyring
    from ...privacy.stage import DEFAULT_ACTIONS

    used = set({**DEFAULT_ACTIONS, **settings.privacy.actions}.values()) | set(settings.privacy_overrides.values())
    path = settings.privacy.key_file
    if path is None or "pseudonymize" not in used:
        return None
    as_user = f"sudo -u {who.name} " if os.geteuid() == 0 and who.uid != 0 else ""
    problem = _readable("pseudonym key", Path(path), who, secret=True,
                        missing=f"{as_user}edge-agent keys init -c {config} (the agent refuses to start without it)")
    if problem is not None:
        return problem
    try:
        ring = load_keyring(path)
    except KeyFileError as exc:
        return Finding(FAIL, "pseudonym key", str(exc).replace("-c CONFIG", f"-c {config}"),
                       "restore the file from its backup; a new key ('keys init' after moving it away) changes "
                       "every pseudonym the platform knows")
    return Finding(OK, "pseudonym key", f"{path} v{ring.active} {ring.fingerprints()[ring.active]}, "
                                        f"{owner_text(Path(path).stat())}")


def _platform(settings: Any, who: Who) -> Finding | None:
    from ...privacy.seal import PlatformKey, SealError

    path = settings.privacy.platform_key_file
    if path is None:
        return None
    problem = _readable("platform key", Path(path), who, secret=False,
                        missing="ask the platform operator for the public key ('edge-agent platform keygen DIR' "
                                f"makes DIR/platform.pub) and copy it to {path}; the agent refuses to start without it")
    if problem is not None:
        return problem
    try:
        key = PlatformKey.load(path)
    except SealError as exc:
        return Finding(FAIL, "platform key", str(exc), "ask the platform operator for platform.pub again")
    return Finding(OK, "platform key", f"{path} kid {key.kid}, readable by {who.name}")


def _command_keys(settings: Any, who: Who) -> list[Finding]:
    from ...commands.signing import SigningKeyError, key_id, load_public_key

    out = []
    for trusted in settings.commands.keys:
        path = Path(trusted.public_key_file)
        check = f"command key {trusted.id or path.name}"
        problem = _readable(check, path, who, secret=False,
                            missing="ask the platform operator for command.pub ('edge-agent platform signkey DIR' "
                                    f"makes it) and copy it to {path}")
        if problem is None:
            try:
                problem = Finding(OK, check, f"{path} {key_id(load_public_key(path))}, readable by {who.name}")
            except SigningKeyError as exc:
                problem = Finding(FAIL, check, str(exc), "ask the platform operator for command.pub again")
        out.append(problem)
    return out


def _mqtt_files(settings: Any, who: Who) -> list[Finding]:
    out = []
    mqtt = settings.mqtt
    if mqtt.username_file is not None:
        out.append(_readable("mqtt user name", Path(mqtt.username_file), who, secret=True,
                             missing=f"write the user name (access token) there (one line), chmod 600, "
                                     f"chown {who.name}:")
                   or Finding(OK, "mqtt user name", f"{mqtt.username_file} private to {who.name}"))
    if mqtt.password_file is not None:
        out.append(_readable("mqtt password", Path(mqtt.password_file), who, secret=True,
                             missing=f"write the broker password there (one line), chmod 600, chown {who.name}:")
                   or Finding(OK, "mqtt password", f"{mqtt.password_file} private to {who.name}"))
    tls = mqtt.tls
    if tls.enabled:
        files = [(p, False) for p in (tls.ca_file, tls.cert_file) if p]
        files += [(tls.key_file, True)] if tls.key_file else []
        problems = [_readable("tls files", Path(p), who, secret=secret,
                              missing="copy the file there, or correct mqtt.tls (ca_file, cert_file, key_file)")
                    for p, secret in files]
        bad = [p for p in problems if p is not None]
        if bad:
            out.append(bad[0])
        elif files:
            out.append(Finding(OK, "tls files", f"{', '.join(str(p) for p, _ in files)} readable by {who.name}"))
    return out


def check_keys(settings: Any, who: Who, config: str) -> list[Finding]:
    """``pseudonym key`` (when some action pseudonymizes), ``platform key`` (seal), ``command key
    ID`` (each trusted command key), ``mqtt password`` and ``tls files``."""
    found = [_pseudonym(settings, who, config), _platform(settings, who)]
    return [f for f in found if f is not None] + _command_keys(settings, who) + _mqtt_files(settings, who)


def check_unsigned(settings: Any) -> list[Finding]:
    """A WARN per op that a command without our signature may run in the configured dialect
    (``commands.unsigned``: ThingsBoard RPC and Sparkplug DCMD carry none); nothing otherwise."""
    dialect = settings.mqtt.dialect
    ops = settings.commands.unsigned.get(dialect, ()) if dialect != "edge" else ()
    return [Finding(WARN, "unsigned commands", f"{op} is allowed without a signature in the {dialect} dialect: "
                    "anyone who may publish to the gateway's command topic on the broker can run it",
                    f"keep the broker's ACL tight, or remove {op} from commands.unsigned.{dialect}")
            for op in ops]


# -- systemd -------------------------------------------------------------------------------------

UNIT = "edge-agent"
NO_SYSTEMD = ("not been booted with systemd", "Failed to connect to bus", "Host is down")


def _systemctl(tool: str, verb: str) -> tuple[str, str]:
    done = subprocess.run([tool, verb, UNIT], capture_output=True, text=True, timeout=TIMEOUT_S - 1,
                          stdin=subprocess.DEVNULL)
    return done.stdout.strip().splitlines()[0] if done.stdout.strip() else "", done.stderr.strip()


def _substate(tool: str) -> str:
    done = subprocess.run([tool, "show", "-p", "SubState", "--value", UNIT], capture_output=True, text=True,
                          timeout=TIMEOUT_S - 1, stdin=subprocess.DEVNULL)
    return done.stdout.strip()


def check_systemd() -> Finding:
    tool = shutil.which("systemctl")
    if tool is None:
        return Finding(WARN, "systemd", "systemctl not found: the unit's state is not checked (no systemd here?)",
                       "start the agent the way this system starts services: edge-agent run -c FILE")
    enabled, err = _systemctl(tool, "is-enabled")
    if not enabled and ("No such file" in err or "not-found" in err) or enabled == "not-found":
        return Finding(WARN, "systemd", f"{UNIT}.service is not installed",
                       "scripts/install.sh installs and enables it")
    active, err = _systemctl(tool, "is-active")
    running = any(t in err for t in NO_SYSTEMD)
    state = f"{UNIT}.service {enabled or 'unknown'}, " + ("state unknown (systemd is not running here)"
                                                        if running else active or "unknown")
    if enabled == "masked":
        return Finding(FAIL, "systemd", state, f"systemctl unmask {UNIT} && systemctl enable --now {UNIT}")
    if active == "activating" and _substate(tool) == "auto-restart":  # the unit never gives up: no "failed"
        return Finding(FAIL, "systemd", state + " (auto-restart: it keeps failing and restarting)",
                       f"'journalctl -u {UNIT} -n 50' says why; fix that, then systemctl restart {UNIT}")
    if active == "failed":
        return Finding(FAIL, "systemd", state, f"'journalctl -u {UNIT} -n 50' says why; fix that, then "
                       f"systemctl restart {UNIT}")
    if enabled not in ("enabled", "enabled-runtime", "static", "indirect", "alias", "generated"):
        return Finding(WARN, "systemd", state + ": it will not start at boot", f"systemctl enable --now {UNIT}")
    if running:
        return Finding(WARN, "systemd", state, "run doctor on the gateway itself, where systemd runs")
    if active not in ("active", "activating", "reloading"):
        return Finding(WARN, "systemd", state + ": the agent is not running", f"systemctl start {UNIT}; then "
                       f"'journalctl -u {UNIT} -f' shows it start")
    return Finding(OK, "systemd", state)
