#!/usr/bin/env bash
# A three-node RabbitMQ cluster with the MQTT plugin on loopback, for failover tests and the
# fleet bench (issue 16). Debian 12, as root, no systemd needed. Idempotent.
#
#   scripts/rabbitmq_cluster.sh start [BASE] [PORT1 PORT2 PORT3]
#       (with no node running: a fresh cluster, the old data deleted)
#       installs rabbitmq-server when missing, starts rabbit1@localhost..rabbit3@localhost
#       (the prefix is $EDGE_RABBIT_NAME, below),
#       joins 2 and 3 to 1, prints one line: "mqtt 127.0.0.1:P1 127.0.0.1:P2 127.0.0.1:P3"
#   scripts/rabbitmq_cluster.sh install                only install rabbitmq-server (when missing)
#   scripts/rabbitmq_cluster.sh stop-node N [BASE]     stop one node (its Erlang VM)
#   scripts/rabbitmq_cluster.sh start-node N [BASE]    start it again (it rejoins by itself)
#   scripts/rabbitmq_cluster.sh status [BASE]          per node: running or not, ports, memory
#   scripts/rabbitmq_cluster.sh stop [BASE]            all nodes, and epmd if we started it and
#                                                      no other node is registered with it
#   scripts/rabbitmq_cluster.sh clean [BASE]           stop, then delete BASE
#
# BASE (default /tmp/edge-rabbit, or $EDGE_RABBIT_BASE) holds everything: per node its config,
# enabled-plugins file, data (mnesia) and logs; home/.erlang.cookie, the cluster's shared cookie
# (the script's rabbitmqctl calls run with HOME=BASE/home). MQTT ports default to 21883..21885
# (or what the first start was given: BASE/ports); AMQP listens on 25671..25673, Erlang
# distribution on 25681..25683, all on 127.0.0.1. Management is off (not enabled). MQTT allows
# anonymous clients (user guest, loopback only). By hand:
#   HOME=/tmp/edge-rabbit/home rabbitmqctl -n rabbit1@localhost cluster_status
#
# Node names are ${EDGE_RABBIT_NAME}1@localhost..3 (default prefix "rabbit"), so two clusters can
# run side by side (the test suite's "edgetest" beside a bench's "rabbit") when they also differ in
# BASE and in ports (EDGE_RABBIT_AMQP_BASE, EDGE_RABBIT_DIST_BASE, the MQTT port arguments).
# start records the prefix in BASE/name; the other commands take it from there (a different
# EDGE_RABBIT_NAME is refused), so stop and clean only ever stop that BASE's own nodes.
set -euo pipefail

RBIN=/usr/lib/rabbitmq/bin
AMQP_BASE=${EDGE_RABBIT_AMQP_BASE:-25670}   # node N: AMQP_BASE+N
DIST_BASE=${EDGE_RABBIT_DIST_BASE:-25680}   # node N: DIST_BASE+N
DEFAULT_MQTT=(21883 21884 21885)
START_TIMEOUT=${EDGE_RABBIT_START_TIMEOUT:-90}
NAME=${EDGE_RABBIT_NAME:-rabbit}            # node N: ${NAME}N@localhost

die() { echo "rabbitmq_cluster: $*" >&2; exit 1; }
[[ "$NAME" =~ ^[A-Za-z][A-Za-z0-9_-]*$ ]] || die "EDGE_RABBIT_NAME: letters, digits, _ and - (a letter first), not '$NAME'"

log() { echo "rabbitmq_cluster: $*" >&2; }

install_rabbitmq() {
    [ -x "$RBIN/rabbitmq-server" ] && return 0
    [ "$(id -u)" = 0 ] || die "rabbitmq-server is not installed, and installing it needs root"
    log "installing rabbitmq-server (apt-get)"
    # no daemon from the package's maintainer scripts: our nodes are started below
    local policy=/usr/sbin/policy-rc.d created=0
    if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; created=1; fi
    apt-get update -qq || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q rabbitmq-server >&2 || { [ $created = 1 ] && rm -f "$policy"; die "apt-get install rabbitmq-server failed"; }
    if [ $created = 1 ]; then rm -f "$policy"; fi
    [ -x "$RBIN/rabbitmq-server" ] || die "rabbitmq-server installed but $RBIN/rabbitmq-server is missing"
}

# The package's own node (rabbit@<host>) must not run alongside: stop it under systemd, or by
# its cookie when it was started some other way.
stop_default_node() {
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
        if systemctl is-active --quiet rabbitmq-server 2>/dev/null; then
            log "stopping and disabling the package's rabbitmq-server service"
            systemctl stop rabbitmq-server || true
        fi
        systemctl disable --quiet rabbitmq-server 2>/dev/null || true
    fi
    if command -v epmd >/dev/null && epmd -names 2>/dev/null | grep -q '^name rabbit at port'; then
        local host; host=$(hostname -s)
        log "stopping the default node rabbit@$host"
        HOME=/var/lib/rabbitmq "$RBIN/rabbitmqctl" -n "rabbit@$host" stop >/dev/null 2>&1 || true
    fi
}

node() { echo "${NAME}$1@localhost"; }  # node N's Erlang node name

# the prefix BASE was started with (BASE/name; "rabbit" for a BASE from before the file existed):
# a command for BASE acts on those nodes only, never on another cluster's
use_base_name() {
    local recorded=rabbit
    if [ -s "$BASE/name" ]; then recorded=$(cat "$BASE/name"); fi
    if [ -n "${EDGE_RABBIT_NAME:-}" ] && [ "$EDGE_RABBIT_NAME" != "$recorded" ]; then
        die "$BASE holds the nodes ${recorded}1..3@localhost, not ${EDGE_RABBIT_NAME}1..3 (EDGE_RABBIT_NAME)"
    fi
    NAME=$recorded
}

node_env() {  # the environment of node N (also what rabbitmqctl needs: cookie, names)
    local n=$1 d="$BASE/node$1"
    echo "HOME=$BASE/home"
    echo "RABBITMQ_NODENAME=$(node "$n")"
    echo "RABBITMQ_USE_LONGNAME=false"
    echo "RABBITMQ_NODE_IP_ADDRESS=127.0.0.1"
    echo "RABBITMQ_NODE_PORT=$((AMQP_BASE + n))"
    echo "RABBITMQ_DIST_PORT=$((DIST_BASE + n))"
    echo "RABBITMQ_CONFIG_FILE=$d/rabbitmq.conf"
    echo "RABBITMQ_ADVANCED_CONFIG_FILE=$d/advanced.config"
    echo "RABBITMQ_CONF_ENV_FILE=$d/rabbitmq-env.conf"
    echo "RABBITMQ_ENABLED_PLUGINS_FILE=$d/enabled_plugins"
    echo "RABBITMQ_MNESIA_BASE=$d/mnesia"
    echo "RABBITMQ_LOG_BASE=$d/log"
    echo "RABBITMQ_PID_FILE=$d/pid"
    # no busy-waiting schedulers: three nodes and 100 agents share two cores
    echo "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=+sbwt none +sbwtdcpu none +sbwtdio none"
}

with_node() {  # with_node N CMD...: run CMD in node N's environment
    local n=$1; shift
    local -a envs; mapfile -t envs < <(node_env "$n")
    env "${envs[@]}" "$@"
}

ctl() {  # ctl N ARGS...: rabbitmqctl against node N
    local n=$1; shift
    with_node "$n" "$RBIN/rabbitmqctl" -q -n "$(node "$n")" "$@"
}

mqtt_port() { sed -n "${1}p" "$BASE/ports"; }

write_node_files() {
    local n=$1 d="$BASE/node$1"
    mkdir -p "$d/mnesia" "$d/log"
    cat >"$d/rabbitmq.conf" <<EOF
# node $(node "$n") (scripts/rabbitmq_cluster.sh)
listeners.tcp.default = 127.0.0.1:$((AMQP_BASE + n))
mqtt.listeners.tcp.default = 127.0.0.1:$(mqtt_port "$n")
mqtt.allow_anonymous = true
mqtt.default_user = guest
mqtt.default_pass = guest
mqtt.vhost = /
loopback_users.guest = true
log.file.level = info
log.console = false
EOF
    echo '[].' >"$d/advanced.config"
    : >"$d/rabbitmq-env.conf"
    [ -s "$d/enabled_plugins" ] || with_node "$n" "$RBIN/rabbitmq-plugins" --offline -q enable rabbitmq_mqtt >/dev/null
}

node_running() {  # the Erlang VM of node N answers
    ctl "$1" ping >/dev/null 2>&1
}

start_epmd() {
    if ! epmd -names >/dev/null 2>&1; then
        epmd -daemon
        echo ours >"$BASE/epmd.started"
        for _ in $(seq 50); do epmd -names >/dev/null 2>&1 && break; sleep 0.1; done
    fi
}

launch_node() {  # start node N's VM in the background (no wait)
    local n=$1 d="$BASE/node$1"
    vm_pid "$n" >/dev/null && return 0
    write_node_files "$n"
    with_node "$n" setsid "$RBIN/rabbitmq-server" >>"$d/log/console.log" 2>&1 </dev/null &
    disown || true
}

await_node() {
    local n=$1 deadline=$((SECONDS + START_TIMEOUT))
    while ! ctl "$n" await_startup --timeout 5 >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || { tail -20 "$BASE/node$n/log/console.log" >&2 || true; die "$(node "$n") did not start within ${START_TIMEOUT}s (logs: $BASE/node$n/log)"; }
        sleep 0.5
    done
}

in_cluster() {  # node N is a member of node 1's cluster
    ctl 1 cluster_status --formatter json 2>/dev/null | grep -q "\"$(node "$1")\""
}

join_node() {
    local n=$1
    in_cluster "$n" && return 0
    log "joining $(node "$n") to $(node 1)"
    local out step
    # the CLI logs harmless errors while the node's app is stopped: shown only when a step fails
    for step in stop_app reset "join_cluster $(node 1)" start_app; do  # reset: a fresh node
        # shellcheck disable=SC2086
        out=$(ctl "$n" $step 2>&1) || { echo "$out" >&2; die "$(node "$n"): $step failed"; }
    done
}

vm_pid() {  # the pid of node N's VM when it is alive: a beam with that node name and this BASE's
    # HOME, never another cluster's (a pid file outlives its VM, and pids are reused)
    local pid; pid=$(cat "$BASE/node$1/pid" 2>/dev/null || true)
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && grep -q beam "/proc/$pid/cmdline" 2>/dev/null || return 1
    local environ; environ=$(tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null) || return 1
    grep -qx "RABBITMQ_NODENAME=$(node "$1")" <<<"$environ" && grep -qx "HOME=$BASE/home" <<<"$environ" && echo "$pid"
}

stop_node() {  # returns when node N's VM is gone (rabbitmqctl stop returns before the VM exits)
    local n=$1 pid; pid=$(vm_pid "$n" || true)
    if node_running "$n"; then ctl "$n" stop >/dev/null 2>&1 || true; fi
    [ -n "$pid" ] || return 0
    for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
    log "$(node "$n") (pid $pid) still alive 30 s after stop: killed"
    kill -9 "$pid" 2>/dev/null || true
}

print_ports() {
    echo "mqtt 127.0.0.1:$(mqtt_port 1) 127.0.0.1:$(mqtt_port 2) 127.0.0.1:$(mqtt_port 3)"
}

check_n() { [[ "${1:-}" =~ ^[123]$ ]] || die "node number 1, 2 or 3, not '${1:-}'"; }

cmd=${1:-}; shift || true
case "$cmd" in
start)
    BASE=${EDGE_RABBIT_BASE:-/tmp/edge-rabbit}
    if [ $# -eq 1 ] || [ $# -eq 4 ]; then BASE=$1; shift; fi
    [ $# -eq 0 ] || [ $# -eq 3 ] || die "usage: start [BASE] [PORT1 PORT2 PORT3]"
    install_rabbitmq
    mkdir -p "$BASE/home"
    BASE=$(cd "$BASE" && pwd)
    if [ -s "$BASE/name" ] && [ "$(cat "$BASE/name")" != "$NAME" ]; then
        if [ -z "${EDGE_RABBIT_NAME:-}" ]; then NAME=$(cat "$BASE/name")  # the cluster BASE holds
        else
            wanted=$NAME; NAME=$(cat "$BASE/name")
            for n in 1 2 3; do
                if vm_pid "$n" >/dev/null; then die "$BASE runs the nodes ${NAME}1..3@localhost: stop them first"; fi
            done
            NAME=$wanted  # none of the old prefix runs: a fresh cluster under the new one
        fi
    fi
    echo "$NAME" >"$BASE/name"
    if [ $# -eq 3 ]; then printf '%s\n' "$@" >"$BASE/ports"
    elif [ ! -s "$BASE/ports" ]; then printf '%s\n' "${DEFAULT_MQTT[@]}" >"$BASE/ports"; fi
    if [ ! -s "$BASE/home/.erlang.cookie" ]; then
        (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' | tr a-f A-F >"$BASE/home/.erlang.cookie")
    fi
    chmod 400 "$BASE/home/.erlang.cookie"
    stop_default_node
    start_epmd
    # With no node running, a fresh cluster: a whole 3.10 cluster restarted from its data sat
    # ~100 s waiting for the MQTT plugin's Raft cluster (client-id tracking) to elect a leader.
    # Nodes missing from a running cluster are started on their data and rejoin by themselves.
    any=0; for n in 1 2 3; do if vm_pid "$n" >/dev/null; then any=1; fi; done
    if [ $any = 0 ]; then rm -rf "$BASE"/node[123]; fi
    # all three at once: faster than one after the other
    for n in 1 2 3; do launch_node "$n"; done
    for n in 1 2 3; do await_node "$n"; done
    join_node 2
    join_node 3
    print_ports
    ;;
install)
    install_rabbitmq
    ;;
stop-node|start-node)
    check_n "${1:-}"; n=$1; shift
    BASE=${1:-${EDGE_RABBIT_BASE:-/tmp/edge-rabbit}}
    [ -s "$BASE/ports" ] || die "no cluster in $BASE (start it first)"
    BASE=$(cd "$BASE" && pwd)
    use_base_name
    if [ "$cmd" = stop-node ]; then stop_node "$n"; else start_epmd; launch_node "$n"; await_node "$n"; fi
    ;;
status)
    BASE=$(cd "${1:-${EDGE_RABBIT_BASE:-/tmp/edge-rabbit}}" 2>/dev/null && pwd) || die "no cluster base directory"
    [ -s "$BASE/ports" ] || die "no cluster in $BASE"
    use_base_name
    for n in 1 2 3; do
        pid=$(cat "$BASE/node$n/pid" 2>/dev/null || true)
        if node_running "$n"; then
            rss=$(awk '/VmRSS/ {printf "%.0f MiB", $2/1024}' "/proc/$pid/status" 2>/dev/null || echo "?")
            echo "$(node "$n") running pid $pid mqtt 127.0.0.1:$(mqtt_port "$n") amqp $((AMQP_BASE + n)) dist $((DIST_BASE + n)) rss $rss"
        else
            echo "$(node "$n") stopped mqtt 127.0.0.1:$(mqtt_port "$n")"
        fi
    done
    for n in 1 2 3; do
        if node_running "$n"; then
            echo "cluster (as seen by $(node "$n")): $(ctl "$n" eval 'lists:sort(rabbit_nodes:all_running()).' 2>/dev/null | tr -d '\n')"
            break
        fi
    done
    print_ports
    ;;
stop|clean)
    BASE=${1:-${EDGE_RABBIT_BASE:-/tmp/edge-rabbit}}
    if [ -d "$BASE" ]; then
        BASE=$(cd "$BASE" && pwd)
        use_base_name
        if [ -s "$BASE/ports" ]; then
            # the last node to stop must be the first to start: stop 3, 2, then 1
            for n in 3 2 1; do stop_node "$n"; done
        fi
        if [ -f "$BASE/epmd.started" ]; then
            # epmd is shared by every Erlang node of the machine (another cluster, a CLI call):
            # killed only when no node at all is registered (epmd -kill itself also refuses then)
            if ! epmd -names 2>/dev/null | grep -q '^name '; then epmd -kill >/dev/null 2>&1 || true; fi
            rm -f "$BASE/epmd.started"
        fi
        if [ "$cmd" = clean ]; then rm -rf "$BASE"; fi
    fi
    ;;
*)
    sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
