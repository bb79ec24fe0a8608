#!/usr/bin/env bash
# The test suite, as CI runs it: installs what is missing, then runs every test with real
# parts (mosquitto, Modbus servers over TCP and pseudo-terminals, SQLite files, signals).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "test: pytest collected no tests; that is a failure" >&2
  exit 1
fi
exit "$rc"
