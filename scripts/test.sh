#!/usr/bin/env bash
# The test suite, as CI runs it: installs what is missing, then runs every test with real
# parts (mosquitto, Modbus servers over TCP and pseudo-terminals, SQLite files, signals).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Headless Chromium for the technician's page tests (Debian's package; test-only, so not in setup.sh)
if ! command -v chromium >/dev/null; then
  echo "test: installing chromium with apt-get (the web page tests drive it headless)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi
# RabbitMQ for the three-node failover test (tests/system/test_failover_rabbitmq.py; test-only).
# The cluster script installs it the way it needs: apt-get behind a policy-rc.d guard, so the
# package's own service never starts (the test's nodes are started by the script itself).
if [ ! -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then
  echo "test: installing rabbitmq-server with apt-get (the RabbitMQ failover test runs a three-node cluster)" >&2
  bash scripts/rabbitmq_cluster.sh install
fi
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "test: pytest collected no tests; that is a failure" >&2
  exit 1
fi
exit "$rc"
