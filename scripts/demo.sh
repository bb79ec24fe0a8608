#!/usr/bin/env bash
# The demo, end to end on one machine: a small residential community. A real Mosquitto broker;
# simulated devices (a water level sensor rising into a flood alarm on Modbus RTU, two DL/T 645
# electricity meters sharing one RS-485 line, a CJ/T 188 water meter behind a TCP converter, a
# wearables hub whose residents send vitals and one SOS, a gate controller with car passages);
# the agent; and the platform's view of what arrives, identities masked. Serial lines are
# pseudo-terminal pairs. Run as root on Debian/Raspberry Pi OS.
# DEMO_SECONDS (default 40) sets how long the platform view watches.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

seconds="${DEMO_SECONDS:-40}"
work="$(mktemp -d /tmp/edge-agent-demo.XXXXXX)"
pids=()
cleanup() {  # newest first: the agent stops (and drains) before its devices and broker go
  for ((i=${#pids[@]}-1; i>=0; i--)); do
    kill "${pids[i]}" 2>/dev/null || true
    wait "${pids[i]}" 2>/dev/null || true
  done
  echo "demo: logs and state kept in $work" >&2
}
trap cleanup EXIT

free_port() { .venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() {  # wait_for FILE PATTERN: until the file has a line matching PATTERN (10 s)
  for _ in $(seq 100); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "demo: timed out waiting for '$2' in $1" >&2; cat "$1" >&2; exit 1
}

broker_port="$(free_port)"
water_port="$(free_port)"
gate_port="$(free_port)"
cat > "$work/mosquitto.conf" <<CONF
listener $broker_port 127.0.0.1
allow_anonymous true
persistence false
log_dest file $work/mosquitto.log
user $(id -un)
CONF
mosquitto -c "$work/mosquitto.conf" & pids+=($!)
echo "demo: mosquitto on 127.0.0.1:$broker_port"

sim() {  # sim NAME ARGS...: start 'edge-agent simulate ARGS' with its output in $work/sim-NAME.log
  local name="$1"; shift
  .venv/bin/edge-agent simulate "$@" > "$work/sim-$name.log" 2>&1 & pids+=($!)
}
pty_of() { wait_for "$work/sim-$1.log" "/dev/pts/"; grep -o '/dev/pts/[0-9]*' "$work/sim-$1.log" | head -1; }
sim river modbus --pty --baud 9600 --device 1:qdy_level:level_m=2.4,rise_m_per_min=1.5
sim elec dlt645 --pty --baud 2400 --meter 000000000101 --meter 000000000102
sim water cjt188 --tcp "127.0.0.1:$water_port" --meter 00000000000101
sim hub hub --pty --baud 115200 --residents 6 --seed 7 --vitals-every 5s --sos-after 12s
sim gate gate --tcp "127.0.0.1:$gate_port" --passage-every 4s
river_path="$(pty_of river)"; elec_path="$(pty_of elec)"; hub_path="$(pty_of hub)"
wait_for "$work/sim-water.log" "TCP on"
wait_for "$work/sim-gate.log" "TCP on"
echo "demo: level sensor on $river_path, meters on $elec_path, hub on $hub_path," \
     "water meter on 127.0.0.1:$water_port, gate on 127.0.0.1:$gate_port"

.venv/bin/python - "$work" "$broker_port" "$river_path" "$elec_path" "$water_port" "$hub_path" "$gate_port" <<'PY'
import sys, yaml
work, broker, river, elec, water, hub, gate = sys.argv[1:]
cfg = yaml.safe_load(open("config/demo.yaml"))
cfg["gateway"]["state_dir"] = f"{work}/state"
cfg["mqtt"]["port"] = int(broker)
buses = {b["name"]: b for b in cfg["buses"]}
buses["river-rs485"]["serial"] = river
buses["meters-rs485"]["serial"] = elec
buses["water-tcp"]["port"] = int(water)
buses["hub-serial"]["serial"] = hub
buses["gate-tcp"]["port"] = int(gate)
cfg["commands"]["keys"][0]["public_key_file"] = f"{work}/platform/command.pub"
yaml.safe_dump(cfg, open(f"{work}/gateway.yaml", "w"), sort_keys=False, allow_unicode=True)
PY
# the platform's command-signing key pair (the gateway trusts its public half), and a stranger's
.venv/bin/edge-agent platform signkey "$work/platform" > /dev/null
.venv/bin/edge-agent platform signkey "$work/stranger" > /dev/null
.venv/bin/edge-agent keys init -c "$work/gateway.yaml"   # the site pseudonym key: run refuses to start without it
.venv/bin/edge-agent check --strict -c "$work/gateway.yaml"   # every file it names is there now

.venv/bin/python scripts/platform_view.py --port "$broker_port" --seconds "$seconds" >> "$work/platform.log" &
view_pid=$!
sleep 1
.venv/bin/edge-agent run -c "$work/gateway.yaml" > "$work/agent.log" 2>&1 & pids+=($!)
echo "demo: agent running; the platform view follows for ${seconds}s"
echo
tail -n +1 -f "$work/platform.log" & tail_pid=$!
send_command() {  # send_command KEY_DIR: a signed 'open lane 1' for gate-1, published on R/cmd
  .venv/bin/edge-agent platform sign --key "$1/command.key" --kid platform-1 --op device.write \
    --target gate-1 --args '{"point": "barrier", "value": "open", "lane": 1}' --ttl 60s |
    mosquitto_pub -h 127.0.0.1 -p "$broker_port" -q 1 -t "edge/v1/demo-community/gw-demo/cmd" -s
}
sleep 15
echo ">>> the platform opens the gate with a signed command" >> "$work/platform.log"
send_command "$work/platform"
sleep 2
echo ">>> a forged command (signed by a key the gateway does not trust) is refused" >> "$work/platform.log"
send_command "$work/stranger"
wait "$view_pid" || true
sleep 0.5
kill "$tail_pid" 2>/dev/null || true
echo
echo "demo: a technician's view of the gateway:"
.venv/bin/edge-agent read -c "$work/gateway.yaml" water-101 || true
.venv/bin/edge-agent status -c "$work/gateway.yaml"
echo
echo "demo: the gateway's audit log of the commands (hash-chained; 'audit --verify' checks it):"
.venv/bin/edge-agent audit -c "$work/gateway.yaml" -n 6 || true
