#!/usr/bin/env bash
# Installs what edge-agent's demo and tests need on a fresh Debian 12 / Raspberry Pi OS
# (Bookworm) machine, as root: mosquitto (the real broker the tests start), Python's venv,
# and the package with its test extras in ./.venv. Safe to run again: it skips what is there.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v python3 >/dev/null || missing+=(python3)
{ command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ]; } || missing+=(mosquitto)
command -v mosquitto_sub >/dev/null || missing+=(mosquitto-clients)
if command -v python3 >/dev/null && ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
  missing+=(python3-venv)
fi
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]} with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python3 - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"setup: edge-agent needs Python >= 3.11, this is {sys.version.split()[0]}")
PY

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test]" 2> >(grep -v "^WARNING: Location" >&2)
# The Sparkplug B host the tests judge the sparkplug dialect with: another library (pysparkplug),
# in a venv of its own (tests/support/spb_host.py runs with it).
if ! tests/.spb-venv/bin/python -c 'import pysparkplug' 2>/dev/null; then
  python3 -m venv tests/.spb-venv
  tests/.spb-venv/bin/python -m pip install -q --disable-pip-version-check "pysparkplug==0.6.1" \
    2> >(grep -v "^WARNING: Location" >&2)
fi
# A Prometheus text-format parser (prometheus_client's) to judge /metrics with, in a venv of its
# own: the agent never imports it (tests/web/test_metrics.py runs it by subprocess).
if ! tests/.prom-venv/bin/python -c 'import prometheus_client.parser' 2>/dev/null; then
  python3 -m venv tests/.prom-venv
  tests/.prom-venv/bin/python -m pip install -q --disable-pip-version-check "prometheus_client==0.26.0" \
    2> >(grep -v "^WARNING: Location" >&2)
fi
echo "setup: ready ($(.venv/bin/edge-agent --version), mosquitto $(mosquitto -h 2>/dev/null | head -1 | awk '{print $3}'))" >&2
