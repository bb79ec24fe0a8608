#!/usr/bin/env bash
# Installs edge-agent as a system service on Raspberry Pi OS / Debian (run as root), or upgrades
# an installation in place: run it again from a newer checkout (or with a newer --wheel).
#
#   sudo bash scripts/install.sh                     install or upgrade from this checkout
#   sudo bash scripts/install.sh --wheel FILE.whl    install or upgrade from a built wheel
#   sudo bash scripts/install.sh --uninstall         remove the program; keep config, state, keys
#   sudo bash scripts/install.sh --purge             remove everything, keys and unsent data too
#   bash scripts/install.sh --root /tmp/x            everything under /tmp/x; the system untouched
#
# What it sets up (docs/install.md walks through it):
#   user edge-agent (system user, in dialout)    /opt/edge-agent/venv   the program, in its own venv
#   /etc/edge-agent/gateway.yaml  (root:edge-agent 0640; copied from the example only when absent)
#   /var/lib/edge-agent           (edge-agent 0750: buffer, ledger, control socket)
#   the site key via 'edge-agent keys init' when absent (0600, owned by edge-agent)
#   /etc/systemd/system/edge-agent.service, enabled; restarted on upgrade when running and changed
#   /usr/local/bin/edge-agent -> /opt/edge-agent/venv/bin/edge-agent
# Safe to run again: it never overwrites a config or a key, and changes only what differs.
set -euo pipefail

NAME=edge-agent
SERVICE_USER=edge-agent
SRC=$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." 2>/dev/null && pwd) || SRC=.
ARGS="$*"

say() { printf 'install: %s\n' "$*"; }
note() { printf 'install: note: %s\n' "$*"; }
die() { printf 'install.sh: error: %s\n' "$*" >&2; exit 1; }
usage_error() { printf 'install.sh: %s (see --help)\n' "$*" >&2; exit 2; }

usage() {
  cat <<'EOF'
usage: install.sh [--wheel FILE] [--root DIR] [--prefix DIR] [--python PATH] [--no-system]
                  [--no-start] [--uninstall | --purge]

Install or upgrade edge-agent as a systemd service (Raspberry Pi OS / Debian, as root).

  --wheel FILE    install this wheel instead of the checkout the script sits in
  --root DIR      install under DIR (DESTDIR style: DIR/opt, DIR/etc, DIR/var); the paths in the
                  unit and in a new config point into DIR. Implies --no-system. The DESTDIR
                  environment variable does the same.
  --prefix DIR    where the program goes (default /opt/edge-agent; under --root when given)
  --python PATH   the Python (>= 3.11) that builds the venv (default /usr/bin/python3, the
                  OS's own; python3 from PATH under --root/--no-system)
  --no-system     change nothing outside the install paths: no apt-get, no user, no chown,
                  no systemctl (each skipped step is printed as a note)
  --no-start      do not restart a running service after an upgrade
  --uninstall     stop and disable the service, remove the program and the unit;
                  keep /etc/edge-agent, /var/lib/edge-agent, the keys and the user
  --purge         --uninstall, and remove config, state (unsent data), keys and the user too
EOF
}

# -- arguments -----------------------------------------------------------------------------------
ROOT=${DESTDIR:-}
PREFIX=/opt/edge-agent
PYTHON=
WHEEL=
SYSTEM=1
RESTART=1
ACTION=install
while [ $# -gt 0 ]; do
  case "$1" in
    --wheel) [ $# -ge 2 ] || usage_error "--wheel needs a file"; WHEEL=$2; shift ;;
    --wheel=*) WHEEL=${1#*=} ;;
    --root) [ $# -ge 2 ] || usage_error "--root needs a directory"; ROOT=$2; shift ;;
    --root=*) ROOT=${1#*=} ;;
    --prefix) [ $# -ge 2 ] || usage_error "--prefix needs a directory"; PREFIX=$2; shift ;;
    --prefix=*) PREFIX=${1#*=} ;;
    --python) [ $# -ge 2 ] || usage_error "--python needs a path"; PYTHON=$2; shift ;;
    --python=*) PYTHON=${1#*=} ;;
    --no-system) SYSTEM=0 ;;
    --no-start) RESTART=0 ;;
    --uninstall) ACTION=uninstall ;;
    --purge) ACTION=purge ;;
    -h|--help) usage; exit 0 ;;
    *) usage_error "unknown option '$1'" ;;
  esac
  shift
done
case "$PREFIX" in /*) ;; *) usage_error "--prefix must be an absolute path, not '$PREFIX'" ;; esac

if [ -n "$ROOT" ]; then
  ROOT=$(realpath -m -- "$ROOT")
  [ "$ROOT" != / ] || ROOT=
fi
[ -z "$ROOT" ] || SYSTEM=0   # a throwaway root never touches users, ownership or systemd
PYTHON_GIVEN=${PYTHON:+1}
if [ -z "$PYTHON" ]; then   # a system service runs on the OS's own Python where there is one
  if [ "$SYSTEM" = 1 ] && [ -x /usr/bin/python3 ]; then PYTHON=/usr/bin/python3; else PYTHON=python3; fi
fi

VENV=$ROOT$PREFIX/venv
BIN=$VENV/bin/$NAME
CONF_DIR=$ROOT/etc/$NAME
CONF=$CONF_DIR/gateway.yaml
STATE_DIR=$ROOT/var/lib/$NAME
LOG_DIR=$ROOT/var/log/$NAME
UNIT_DIR=$ROOT/etc/systemd/system
UNIT=$UNIT_DIR/$NAME.service
LINK=$ROOT/usr/local/bin/$NAME

# -- checks: one line each -----------------------------------------------------------------------
if [ "$SYSTEM" = 1 ] && [ "$(id -u)" != 0 ]; then
  die "run as root (sudo bash $0${ARGS:+ $ARGS}), or use --root DIR / --no-system for an install that touches no system files"
fi

os_release=${EDGE_AGENT_OS_RELEASE:-/etc/os-release}   # the variable is for tests only
if [ "$SYSTEM" = 1 ]; then
  os_id=unknown os_like=
  if [ -r "$os_release" ]; then
    # shellcheck disable=SC1090
    os_id=$(. "$os_release" && printf '%s' "${ID:-unknown}")
    # shellcheck disable=SC1090
    os_like=$(. "$os_release" && printf '%s' "${ID_LIKE:-}")
  fi
  case " $os_id $os_like " in
    *" debian "*|*" raspbian "*) ;;
    *) die "unsupported OS '$os_id': this script installs on Debian and Raspberry Pi OS (12 'bookworm' or later); elsewhere use --no-system and set up the user and unit by hand" ;;
  esac
fi

systemd_up() { [ "$SYSTEM" = 1 ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null; }
user_exists() { getent passwd "$SERVICE_USER" >/dev/null 2>&1; }

# chown only where a service user exists and the system is ours to change
own() {  # own OWNER:GROUP PATH...
  local who=$1; shift
  if [ "$SYSTEM" = 1 ] && user_exists; then chown "$who" "$@"; fi
}

# -- uninstall / purge ---------------------------------------------------------------------------
key_path_of() {  # the site key file the config points at (empty when unknown)
  [ -x "$VENV/bin/python" ] && [ -f "$CONF" ] || return 0
  "$VENV/bin/python" -I - "$CONF" 2>/dev/null <<'PY' || true
import sys
from edge_agent.config.schema import load_settings
s = load_settings(sys.argv[1])
print(s.privacy.key_file or s.gateway.state_dir / "keys" / "pseudonym.key")
PY
}

if [ "$ACTION" != install ]; then
  key_file=$(key_path_of)
  if systemd_up && [ -f "$UNIT" ]; then
    systemctl disable --now "$NAME.service" >/dev/null 2>&1 || true
    say "stopped and disabled $NAME.service"
  elif [ "$SYSTEM" = 0 ]; then
    note "no systemctl (--root/--no-system): nothing stopped or disabled"
  fi
  for path in "$UNIT" "$LINK"; do
    if [ -e "$path" ] || [ -L "$path" ]; then rm -f "$path"; say "removed $path"; fi
  done
  if systemd_up; then systemctl daemon-reload; fi
  for path in "$VENV" "$ROOT$PREFIX/docs"; do   # only what this script puts there
    if [ -e "$path" ]; then rm -rf "$path"; say "removed $path"; fi
  done
  rmdir "$ROOT$PREFIX" 2>/dev/null || true
  if [ "$ACTION" = uninstall ]; then
    say "kept $CONF_DIR (config, keys), $STATE_DIR (buffer, ledger) and the user $SERVICE_USER;" \
        "'--purge' removes them"
    exit 0
  fi
  for path in "$CONF_DIR" "$STATE_DIR" "$LOG_DIR"; do
    if [ -e "$path" ]; then rm -rf "$path"; say "removed $path"; fi
  done
  if [ -n "$key_file" ] && [ -e "$key_file" ]; then
    note "the key file $key_file is outside $CONF_DIR and $STATE_DIR: kept; delete it yourself"
  fi
  if [ "$SYSTEM" = 1 ] && user_exists; then
    if userdel "$SERVICE_USER" >/dev/null 2>&1; then say "removed user $SERVICE_USER"; fi
    if getent group "$SERVICE_USER" >/dev/null 2>&1; then groupdel "$SERVICE_USER" >/dev/null 2>&1 || true; fi
  fi
  say "purged"
  exit 0
fi

# -- install / upgrade ---------------------------------------------------------------------------
if [ -n "$WHEEL" ]; then
  [ -f "$WHEEL" ] || die "wheel $WHEEL not found"
  case "$WHEEL" in *.whl) ;; *) die "--wheel expects a .whl file, not $WHEEL" ;; esac
  WHEEL=$(cd "$(dirname "$WHEEL")" && pwd)/$(basename "$WHEEL")
else
  if [ ! -f "$SRC/pyproject.toml" ] || [ ! -d "$SRC/edge_agent" ]; then
    die "$SRC is not an edge-agent checkout; give a wheel with --wheel FILE"
  fi
fi
[ -f "$SRC/systemd/$NAME.service" ] || die "$SRC/systemd/$NAME.service is missing"
[ -f "$SRC/config/example.yaml" ] || die "$SRC/config/example.yaml is missing"

# Python and venv: on a fresh image python3-venv may be missing; apt brings it (system mode only)
if [ "$SYSTEM" = 1 ] && [ -z "$PYTHON_GIVEN" ]; then
  missing=()
  command -v "$PYTHON" >/dev/null || missing+=(python3)
  if command -v "$PYTHON" >/dev/null && ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
    missing+=(python3-venv)
  fi
  if [ "${#missing[@]}" -gt 0 ]; then
    say "installing ${missing[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || die "apt-get update failed; check the network, then run this again"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
      || die "apt-get install ${missing[*]} failed"
  fi
fi
command -v "$PYTHON" >/dev/null 2>&1 || die "no Python at '$PYTHON'; install python3 (3.11 or later)"
py_version=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) \
  || die "'$PYTHON' does not run"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || die "edge-agent needs Python 3.11 or later; $PYTHON is $py_version (Raspberry Pi OS 12 'bookworm' has 3.11)"
"$PYTHON" -c 'import ensurepip, venv' 2>/dev/null \
  || die "$PYTHON cannot make a venv; install python3-venv (apt-get install python3-venv)"

# the service user: a system account without a login, in dialout for the serial ports
if [ "$SYSTEM" = 1 ]; then
  if ! user_exists; then
    useradd --system --user-group --home-dir "/var/lib/$NAME" --no-create-home \
      --shell /usr/sbin/nologin --comment "edge-agent gateway" "$SERVICE_USER"
    say "created system user $SERVICE_USER"
  fi
  if ! id -nG "$SERVICE_USER" | tr ' ' '\n' | grep -qx dialout; then
    usermod -a -G dialout "$SERVICE_USER"
    say "added $SERVICE_USER to group dialout"
  fi
else
  note "no user, group or ownership changes (--root/--no-system); files stay owned by $(id -un)"
fi

# what the service runs, before this run changes it: decides whether a running service restarts
fingerprint() {
  {
    if [ -x "$VENV/bin/python" ]; then
      "$VENV/bin/python" -m pip freeze --disable-pip-version-check 2>/dev/null | grep -vi '^edge.agent' || true
      "$VENV/bin/python" -I - 2>/dev/null <<'PY' || true
import hashlib, pathlib
try:
    import edge_agent
except ImportError:
    raise SystemExit
root = pathlib.Path(edge_agent.__file__).parent
digest = hashlib.sha256()
for path in sorted(root.parent.glob("edge_agent/**/*.py")):
    digest.update(path.read_bytes())
print(digest.hexdigest())
PY
    fi
    if [ -f "$UNIT" ]; then cat "$UNIT"; fi
  } | sha256sum | cut -d' ' -f1
}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
before=$(fingerprint)
upgrade=0
[ -x "$BIN" ] && upgrade=1

# the venv: made anew when missing, or when its Python is gone or is not $PYTHON (an OS upgrade)
py_id() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2], sys.base_prefix)' 2>/dev/null || echo none; }
if [ -x "$VENV/bin/python" ]; then
  venv_id=$(py_id "$VENV/bin/python")
  if [ "$venv_id" != "$(py_id "$PYTHON")" ]; then
    say "the venv's Python ($venv_id) is not $PYTHON ($(py_id "$PYTHON")): making the venv anew"
    rm -rf "$VENV"
  fi
fi
if [ ! -x "$VENV/bin/python" ]; then
  mkdir -p "$ROOT$PREFIX"
  "$PYTHON" -m venv "$VENV" || die "could not create the venv $VENV"
  say "created venv $VENV"
fi

if [ "$SYSTEM" = 1 ] && ! runuser -u "$SERVICE_USER" -- "$VENV/bin/python" -c '' 2>/dev/null; then
  die "the service user $SERVICE_USER cannot run $VENV/bin/python (is $PYTHON under a private home?); use --python /usr/bin/python3"
fi

pip_install() {
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q "$@" \
    2> >(grep -v "^WARNING: Location\|^\[notice\]" >&2) \
    || die "pip install failed (see above); the previous version, if any, is still in place"
}
if [ -n "$WHEEL" ]; then
  pip_install --upgrade "$WHEEL"
  pip_install --force-reinstall --no-deps "$WHEEL"   # a rebuilt wheel of the same version too
  say "installed $(basename "$WHEEL") into $VENV"
else
  # build from a copy, so root leaves no build/ or *.egg-info behind in the user's checkout
  build=$work/src
  mkdir "$build"
  tar -C "$SRC" --exclude=./.git --exclude=./.venv --exclude=./build --exclude='*.egg-info' \
    --exclude=__pycache__ --exclude=./tests --exclude=./bench -cf - . | tar -C "$build" -xf -
  pip_install --upgrade "$build"
  say "installed edge-agent from $SRC into $VENV"
fi
version=$("$BIN" --version 2>/dev/null) || die "$BIN does not run after the install"

mkdir -p "$(dirname "$LINK")"
if [ "$(readlink "$LINK" 2>/dev/null)" != "$BIN" ]; then
  ln -sfn "$BIN" "$LINK"
  say "linked $LINK -> $BIN"
fi
if [ -d "$SRC/docs" ]; then
  mkdir -p "$ROOT$PREFIX/docs"
  cp -p "$SRC"/docs/*.md "$ROOT$PREFIX/docs/"
fi

# paths: the defaults, or the same under --root
relocate() {  # stdin -> stdout with the standard paths moved under ROOT/PREFIX
  sed -e "s#/opt/edge-agent#$ROOT$PREFIX#g" -e "s#/etc/edge-agent#$CONF_DIR#g" \
      -e "s#/var/lib/edge-agent#$STATE_DIR#g"
}

# config: the example only when there is none; an existing file is never touched
mkdir -p "$CONF_DIR"
chmod 0750 "$CONF_DIR"
own root:"$SERVICE_USER" "$CONF_DIR"
new_example=$work/gateway.example.yaml
relocate < "$SRC/config/example.yaml" > "$new_example"
if ! cmp -s "$new_example" "$CONF_DIR/gateway.example.yaml"; then
  install -m 0640 "$new_example" "$CONF_DIR/gateway.example.yaml"
  own root:"$SERVICE_USER" "$CONF_DIR/gateway.example.yaml"
fi
if [ -e "$CONF" ]; then
  say "kept $CONF (never overwritten; the current example is $CONF_DIR/gateway.example.yaml)"
else
  install -m 0640 "$CONF_DIR/gateway.example.yaml" "$CONF"
  own root:"$SERVICE_USER" "$CONF"
  say "created $CONF from the example: edit it (buses, devices, broker, TLS files) before starting"
fi

# state: the daemon's (systemd's StateDirectory= makes the same on start)
mkdir -p "$STATE_DIR"
chmod 0750 "$STATE_DIR"
own "$SERVICE_USER:$SERVICE_USER" "$STATE_DIR"

# keys: created as the service user, so they are born owned by it with mode 0600
as_service_user() {
  if [ "$SYSTEM" = 1 ]; then runuser -u "$SERVICE_USER" -- "$@"; else "$@"; fi
}
key_file=$(key_path_of)
if [ -z "$key_file" ]; then
  note "$CONF does not load ('$NAME check -c $CONF' says why); keys not checked." \
       "Fix it, then run: sudo -u $SERVICE_USER $NAME keys init -c $CONF"
elif [ -e "$key_file" ]; then
  say "kept key $key_file"
else
  key_dir=$(dirname "$key_file")
  if [ ! -d "$key_dir" ]; then
    mkdir -p "$key_dir"
    chmod 0700 "$key_dir"
    own "$SERVICE_USER:$SERVICE_USER" "$key_dir"
  fi
  if out=$(as_service_user "$BIN" keys init -c "$CONF" 2>&1); then
    if [ "$SYSTEM" = 1 ]; then key_owner=$SERVICE_USER; else key_owner=$(id -un); fi
    say "created key $key_file (0600, owner $key_owner)"
    printf '%s\n' "$out" | sed -n 's/^site key /install:   site key /p'
  else
    note "keys init failed: $(printf '%s' "$out" | tail -1)"
  fi
fi

# the unit
new_unit=$work/$NAME.service
if [ "$STATE_DIR" != /var/lib/$NAME ]; then
  # StateDirectory= always means /var/lib/edge-agent: a relocated state dir must be writable too
  relocate < "$SRC/systemd/$NAME.service" \
    | sed "s#^StateDirectory=.*#&\nReadWritePaths=$STATE_DIR#" > "$new_unit"
else
  relocate < "$SRC/systemd/$NAME.service" > "$new_unit"
fi
unit_changed=0
if ! cmp -s "$new_unit" "$UNIT"; then
  mkdir -p "$UNIT_DIR"
  install -m 0644 "$new_unit" "$UNIT"
  unit_changed=1
  say "installed $UNIT"
fi

after=$(fingerprint)
if systemd_up; then
  [ "$unit_changed" = 0 ] || systemctl daemon-reload
  if ! systemctl is-enabled --quiet "$NAME.service" 2>/dev/null; then
    systemctl enable --quiet "$NAME.service"
    say "enabled $NAME.service (starts at boot)"
  fi
  if systemctl is-active --quiet "$NAME.service"; then
    if [ "$before" = "$after" ]; then
      say "$NAME.service is running and nothing changed: not restarted"
    elif [ "$RESTART" = 1 ]; then
      systemctl restart "$NAME.service"
      say "restarted $NAME.service"
    else
      note "$NAME.service still runs the old version (--no-start): systemctl restart $NAME"
    fi
  fi
elif [ "$SYSTEM" = 1 ]; then
  note "systemd is not running here: the unit is installed but not enabled; on the gateway run:" \
       "systemctl enable $NAME"
else
  note "no systemctl (--root/--no-system): the unit is not enabled or started"
fi

if [ "$upgrade" = 1 ] && [ "$before" = "$after" ]; then
  say "up to date: $version"
elif [ "$upgrade" = 1 ]; then
  say "upgraded: $version"
else
  say "installed: $version. Next: edit $CONF, then '$NAME check --strict -c $CONF'," \
      "'$NAME doctor -c $CONF', 'systemctl start $NAME' (docs/install.md)"
fi
