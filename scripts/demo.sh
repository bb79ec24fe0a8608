#!/usr/bin/env bash
# The demo, end to end on one machine: a real Mosquitto broker, simulated Modbus devices (a
# meter over Modbus TCP, a water level sensor over RTU on a pseudo-terminal serial line),
# the agent, and the platform's view of what arrives. Run as root on Debian/Raspberry Pi OS.
# DEMO_SECONDS (default 30) sets how long the platform view watches.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

seconds="${DEMO_SECONDS:-30}"
work="$(mktemp -d /tmp/edge-agent-demo.XXXXXX)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "demo: logs and state kept in $work" >&2
}
trap cleanup EXIT

free_port() { .venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() {  # wait_for FILE PATTERN: until the file has a line matching PATTERN (10 s)
  for _ in $(seq 100); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "demo: timed out waiting for '$2' in $1" >&2; cat "$1" >&2; exit 1
}

broker_port="$(free_port)"
modbus_port="$(free_port)"
cat > "$work/mosquitto.conf" <<CONF
listener $broker_port 127.0.0.1
allow_anonymous true
persistence false
log_dest file $work/mosquitto.log
user $(id -un)
CONF
mosquitto -c "$work/mosquitto.conf" & pids+=($!)
echo "demo: mosquitto on 127.0.0.1:$broker_port"

.venv/bin/edge-agent simulate modbus --tcp "127.0.0.1:$modbus_port" --device 2:eastron_meter \
  > "$work/sim-tcp.log" 2>&1 & pids+=($!)
.venv/bin/edge-agent simulate modbus --pty --baud 9600 --device 1:qdy_level:rise_m_per_min=0.6 \
  > "$work/sim-rtu.log" 2>&1 & pids+=($!)
wait_for "$work/sim-tcp.log" "modbus TCP on"
wait_for "$work/sim-rtu.log" "/dev/pts/"
serial_path="$(grep -o '/dev/pts/[0-9]*' "$work/sim-rtu.log" | head -1)"
echo "demo: simulated meter on 127.0.0.1:$modbus_port, level sensor on serial $serial_path"

.venv/bin/python - "$work" "$broker_port" "$modbus_port" "$serial_path" <<'PY'
import sys, yaml
work, broker, modbus, serial = sys.argv[1:]
cfg = yaml.safe_load(open("config/demo.yaml"))
cfg["gateway"]["state_dir"] = f"{work}/state"
cfg["mqtt"]["port"] = int(broker)
cfg["buses"][0]["port"] = int(modbus)
cfg["buses"][1]["serial"] = serial
yaml.safe_dump(cfg, open(f"{work}/gateway.yaml", "w"), sort_keys=False)
PY
.venv/bin/edge-agent check -c "$work/gateway.yaml"
.venv/bin/edge-agent keys init -c "$work/gateway.yaml"   # the site pseudonym key: run refuses to start without it

.venv/bin/python scripts/platform_view.py --port "$broker_port" --seconds "$seconds" > "$work/platform.log" &
view_pid=$!
sleep 1
.venv/bin/edge-agent run -c "$work/gateway.yaml" > "$work/agent.log" 2>&1 & pids+=($!)
echo "demo: agent running; the platform view follows for ${seconds}s"
echo
tail -n +1 -f "$work/platform.log" & tail_pid=$!
wait "$view_pid" || true
sleep 0.5
kill "$tail_pid" 2>/dev/null || true
echo
echo "demo: a technician's view of the gateway:"
.venv/bin/edge-agent read -c "$work/gateway.yaml" meter-1 || true
.venv/bin/edge-agent status -c "$work/gateway.yaml"
