#!/usr/bin/env bash
# cluster.sh - a private multi-node Docker Swarm (one manager, N workers) on this one machine.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

usage() {
    cat <<'EOF'
usage: scripts/cluster.sh COMMAND [NODE] [--name NAME] [--workers N]

A swarm of private engines (see scripts/engine.sh): nodes NAME-manager and NAME-worker1..N, each
a dockerd + containerd in its own network namespace "covey-NAME-<node>" with its own hostname,
state under .engine/NAME.cluster/<node>/ and cgroup parent covey-NAME-<node>. The nodes are
wired by veth pairs to a bridge in a private namespace "covey-NAME-hub" (10.231.0.0/24, manager
10.231.0.10, workerK 10.231.0.(10+K)); nothing appears in the host network namespace.
The manager uses --dispatcher-heartbeat 3s so a lost node is marked down within seconds.

commands
  up               create the cluster (idempotent; reclaims a stale one of the same name),
                   import the test image covey-test/busybox:latest on every node, label every
                   node covey.node=<hostname>. Prints on stdout:
                     export DOCKER_HOST=unix:///...manager.../docker.sock
                     NODE <hostname> <node-id> <docker_host> <ip>      (one line per node)
  down             stop and remove everything (idempotent; also after kill-node/cut/failures)
  status           human-readable status
  kill-node NODE   SIGKILL the node's dockerd (containerd, shims and containers stay)
  start-node NODE  start the node's dockerd again with its state; wait until it is Ready
  cut NODE         partition the node: its link to the hub goes down
  heal NODE        undo cut
  drain NODE       docker node update --availability drain
  activate NODE    docker node update --availability active
NODE is the hostname (NAME-worker1) or the short name (worker1, manager).

options
  --name NAME      cluster name, [a-z0-9-], default "cl"
  --workers N      number of workers for `up` (default 2)
  -h, --help       this text
Needs root (uses sudo -n when not root). Everything except the `up` lines goes to stderr.
EOF
}

# shellcheck source=lib-engine.sh
. "$(dirname "$0")/lib-engine.sh"
COVEY_PROG=cluster.sh

CMD=
NODE_ARG=
NAME=cl
WORKERS=2
ORIG_ARGS=("$@")
while [ $# -gt 0 ]; do
    case $1 in
    -h | --help | help)
        usage
        exit 0
        ;;
    --name)
        [ $# -ge 2 ] || die "--name needs a value"
        NAME=$2
        shift
        ;;
    --name=*) NAME=${1#--name=} ;;
    --workers)
        [ $# -ge 2 ] || die "--workers needs a value"
        WORKERS=$2
        shift
        ;;
    --workers=*) WORKERS=${1#--workers=} ;;
    up | down | status)
        [ -z "$CMD" ] || die "only one command, please"
        CMD=$1
        ;;
    kill-node | start-node | cut | heal | drain | activate)
        [ -z "$CMD" ] || die "only one command, please"
        [ $# -ge 2 ] || die "$1 needs a NODE"
        CMD=$1
        NODE_ARG=$2
        shift
        ;;
    *)
        usage >&2
        die "unknown argument: $1"
        ;;
    esac
    shift
done
[ -n "$CMD" ] || {
    usage >&2
    exit 2
}
valid_name "$NAME" || die "bad --name '$NAME' (use [a-z0-9-], at most 31 characters)"
if ! [[ $WORKERS =~ ^[1-9][0-9]?$ ]] || [ "$WORKERS" -gt 40 ]; then
    die "bad --workers '$WORKERS' (1..40)"
fi

require_root "${ORIG_ARGS[@]}"
exec 3>&1 1>&2

CL_DIR=$COVEY_ENGINE_ROOT/$NAME.cluster
HUB=covey-$NAME-hub
REG_KEY=cluster-$NAME
SUBNET_PREFIX=10.231.0
MANAGER_IP=$SUBNET_PREFIX.10

# the nodes of an existing cluster come from its state, for a new one from --workers
if [ "$CMD" != up ] && [ -f "$CL_DIR/nodes" ]; then
    mapfile -t NODES <"$CL_DIR/nodes"
else
    NODES=(manager)
    for i in $(seq "$WORKERS"); do NODES+=("worker$i"); done
fi
cluster_ids() {
    local n
    echo "$HUB"
    for n in "${NODES[@]}"; do echo "covey-$NAME-$n"; done
}
mapfile -t CL_IDS < <(cluster_ids)
reg_check_free "$REG_KEY" "${CL_IDS[@]}"

node_ip() {
    local n=$1
    case $n in
    manager) echo "$MANAGER_IP" ;;
    worker*) echo "$SUBNET_PREFIX.$((10 + ${n#worker}))" ;;
    esac
}
node_hostname() { echo "$NAME-$1"; }
node_load() { inst_load "covey-$NAME-$1" "$(node_hostname "$1")" "$CL_DIR/$1"; }
veth_of() { echo "v-$1"; } # hub side (lives only in the hub namespace)
link_up() { grep -q 'state UP' <<<"$(ip -n "$HUB" -o link show "$(veth_of "$1")" 2>/dev/null)"; }

# NODE argument -> short node name
resolve_node() {
    local arg=$1 n
    for n in "${NODES[@]}"; do
        if [ "$arg" = "$n" ] || [ "$arg" = "$(node_hostname "$n")" ]; then
            echo "$n"
            return 0
        fi
    done
    die "no node '$arg' in cluster $NAME (nodes: ${NODES[*]})"
}

manager_host() {
    node_load manager
    echo "$I_HOST"
}

# hostname -> node id, from the manager
node_id() {
    dk "$(manager_host)" node ls --format '{{.Hostname}} {{.ID}}' | awk -v h="$1" '$1 == h {print $2}'
}

# wait_ready TIMEOUT HOSTNAME... - until the manager shows every HOSTNAME Ready
wait_ready() {
    local timeout=$1 end h ok mh out
    shift
    end=$((SECONDS + timeout))
    mh=$(manager_host)
    while :; do
        out=$(dk "$mh" node ls --format '{{.Hostname}} {{.Status}}' 2>/dev/null) || out=
        ok=1
        for h in "$@"; do
            grep -qx "$h Ready" <<<"$out" || ok=0
        done
        [ $ok -eq 1 ] && return 0
        if [ $SECONDS -ge $end ]; then
            log "nodes not Ready after ${timeout}s:"
            printf '%s\n' "$out" >&2
            return 1
        fi
        sleep 0.2
    done
}

print_up_lines() {
    local n h
    echo "export DOCKER_HOST=$(manager_host)" >&3
    for n in "${NODES[@]}"; do
        node_load "$n"
        h=$(node_hostname "$n")
        echo "NODE $h $(node_id "$h") $I_HOST $(node_ip "$n")" >&3
    done
}

# Is the cluster as requested and healthy? (used by `up` to be idempotent)
cluster_healthy() {
    local n hosts=()
    [ -f "$CL_DIR/nodes" ] || return 1
    [ "$(cat "$CL_DIR/nodes")" = "$(printf '%s\n' "${NODES[@]}")" ] || return 1
    for n in "${NODES[@]}"; do
        node_load "$n"
        inst_running || return 1
        link_up "$n" || return 1
        hosts+=("$(node_hostname "$n")")
    done
    wait_ready 5 "${hosts[@]}" 2>/dev/null
}

cluster_exists() {
    local n
    [ -e "$CL_DIR" ] || [ -e "/run/netns/$HUB" ] || [ -e "$COVEY_REG/active/$REG_KEY" ] && return 0
    for n in "${NODES[@]}"; do
        node_load "$n"
        inst_exists && return 0
    done
    return 1
}

cluster_teardown() {
    local n pids=() rc=0 p stale
    # nodes of an older, bigger cluster of the same name
    for stale in "$CL_DIR"/*/; do
        [ -d "$stale" ] || continue
        stale=${stale%/}
        stale=${stale##*/}
        [[ " ${NODES[*]} " == *" $stale "* ]] || NODES+=("$stale")
    done
    # heal cut links first: a manager's dockerd takes ~10 s to stop while a peer is unreachable
    for n in "${NODES[@]}"; do
        ip -n "$HUB" link set "$(veth_of "$n")" up 2>/dev/null || true
    done
    for n in "${NODES[@]}"; do
        (
            node_load "$n"
            inst_down
        ) &
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || rc=1; done
    if [ -e "/run/netns/$HUB" ]; then ip netns delete "$HUB" 2>/dev/null || rm -f "/run/netns/$HUB"; fi
    if [ $rc -eq 0 ]; then rm -rf --one-file-system "$CL_DIR"; fi
    reg_remove "$REG_KEY"
    return $rc
}

UP_DONE=0
up_failed() {
    [ $UP_DONE -eq 1 ] && return 0
    log "cluster $NAME failed to come up; tearing it down"
    local n
    mkdir -p "$COVEY_ENGINE_ROOT"
    for n in "${NODES[@]}"; do
        node_load "$n"
        if [ -f "$I_LOG/dockerd.log" ]; then
            cp -f "$I_LOG/dockerd.log" "$COVEY_ENGINE_ROOT/$NAME-$n.failed-dockerd.log" || true
        fi
    done
    log "dockerd logs kept in $COVEY_ENGINE_ROOT/$NAME-*.failed-dockerd.log"
    cluster_teardown || true
}

# run_parallel WHAT FUNCTION - FUNCTION NODE for every node at once; fail if any failed
run_parallel() {
    local what=$1 fn=$2 n pids=() p rc=0
    shift 2
    for n in "$@"; do
        "$fn" "$n" &
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || rc=1; done
    [ $rc -eq 0 ] || die "$what failed"
}

node_create() {
    local n=$1 veth
    node_load "$n"
    veth=$(veth_of "$n")
    inst_prepare
    netns_create "$I_ID"
    # the veth pair is created inside the hub namespace; one end moves to the node
    ip -n "$HUB" link add "$veth" type veth peer name hub0 netns "$I_ID"
    ip -n "$HUB" link set "$veth" master br0 up
    ip -n "$I_ID" addr add "$(node_ip "$n")/24" dev hub0
    ip -n "$I_ID" link set hub0 up
}

node_start() {
    node_load "$1"
    inst_start
}

node_join() {
    local n=$1
    node_load "$n"
    dk "$I_HOST" swarm join --token "$(cat "$CL_DIR/worker-token")" \
        --advertise-addr "$(node_ip "$n")" --listen-addr "$(node_ip "$n"):2377" \
        "$MANAGER_IP:2377" >/dev/null
}

node_image() {
    node_load "$1"
    dk "$(manager_host)" save "$COVEY_IMAGE" "$COVEY_IMAGE_ALIAS" | dk "$I_HOST" load -q >/dev/null
}

cmd_up() {
    local t0=$SECONDS n hosts=() h id mh
    ensure_packages
    if cluster_healthy; then
        log "cluster $NAME already up"
        print_up_lines
        return 0
    fi
    if cluster_exists; then
        log "reclaiming a stale cluster $NAME"
        cluster_teardown
        # cluster_teardown may have added nodes of an older cluster
        NODES=(manager)
        for i in $(seq "$WORKERS"); do NODES+=("worker$i"); done
    fi
    trap up_failed EXIT
    trap 'exit 130' INT TERM
    mkdir -p "$CL_DIR"
    mapfile -t CL_IDS < <(cluster_ids)
    reg_add "$REG_KEY" "$CL_DIR" "${CL_IDS[@]}"
    printf '%s\n' "${NODES[@]}" >"$CL_DIR/nodes"

    netns_create "$HUB"
    ip -n "$HUB" link add br0 type bridge
    ip -n "$HUB" link set br0 up
    for n in "${NODES[@]}"; do node_create "$n"; done
    run_parallel "starting the engines" node_start "${NODES[@]}"
    log "engines up after $((SECONDS - t0))s"

    mh=$(manager_host)
    dk "$mh" swarm init --advertise-addr "$MANAGER_IP" --listen-addr "$MANAGER_IP:2377" \
        --dispatcher-heartbeat 3s --task-history-limit 1 \
        --default-addr-pool 10.232.0.0/16 >/dev/null
    dk "$mh" swarm join-token -q worker >"$CL_DIR/worker-token"
    image_ensure "$mh"
    run_parallel "joining the swarm" node_join "${NODES[@]:1}"
    run_parallel "copying the image" node_image "${NODES[@]:1}"
    for n in "${NODES[@]}"; do hosts+=("$(node_hostname "$n")"); done
    wait_ready "$COVEY_WAIT" "${hosts[@]}" || die "the nodes did not become Ready"
    for h in "${hosts[@]}"; do
        id=$(node_id "$h")
        dk "$mh" node update --label-add "covey.node=$h" "$id" >/dev/null
    done
    UP_DONE=1
    trap - EXIT INT TERM
    log "cluster $NAME up in $((SECONDS - t0))s (${#NODES[@]} nodes)"
    print_up_lines
}

cmd_down() {
    if ! cluster_exists; then
        log "cluster $NAME is not up"
        return 0
    fi
    cluster_teardown
    log "cluster $NAME down"
}

cmd_status() {
    local n pid state
    if ! cluster_exists; then
        echo "cluster $NAME: not up"
        return 0
    fi
    echo "cluster $NAME: $CL_DIR"
    for n in "${NODES[@]}"; do
        node_load "$n"
        pid=$(inst_dockerd_pid) || pid="-"
        state=$(ip -n "$HUB" -o link show "$(veth_of "$n")" 2>/dev/null | grep -o 'state [A-Z]*' || true)
        printf '  %-20s %-14s dockerd %-8s link %-10s %s\n' "$(node_hostname "$n")" "$(node_ip "$n")" \
            "$pid" "${state#state }" "$I_HOST"
    done
    node_load manager
    if inst_answers; then
        dk "$(manager_host)" node ls | sed 's/^/  /'
    else
        echo "  manager does not answer"
    fi
}

cmd_kill_node() {
    local n
    n=$(resolve_node "$NODE_ARG")
    node_load "$n"
    inst_dockerd_pid >/dev/null || {
        log "dockerd of $(node_hostname "$n") is not running"
        return 0
    }
    inst_kill_dockerd
    log "killed dockerd of $(node_hostname "$n")"
}

cmd_start_node() {
    local n t0=$SECONDS
    n=$(resolve_node "$NODE_ARG")
    node_load "$n"
    [ -f "$I_CONF/dockerd.args" ] || die "node $n of cluster $NAME does not exist"
    inst_start || die "could not start $(node_hostname "$n")"
    local want=("$(node_hostname "$n")") m
    if [ "$n" = manager ]; then
        # a restarted manager shows the workers Unknown until they reconnect: wait for those
        # that are running and not cut off
        for m in "${NODES[@]:1}"; do
            if (node_load "$m" && inst_dockerd_pid >/dev/null) && link_up "$m"; then
                want+=("$(node_hostname "$m")")
            fi
        done
    fi
    wait_ready "$COVEY_WAIT" "${want[@]}" || die "${want[*]} not Ready"
    log "$(node_hostname "$n") Ready after $((SECONDS - t0))s"
}

cmd_link() {
    local updown=$1 n
    n=$(resolve_node "$NODE_ARG")
    ip -n "$HUB" link set "$(veth_of "$n")" "$updown"
    log "link of $(node_hostname "$n") $updown"
}

cmd_availability() {
    local avail=$1 n id
    n=$(resolve_node "$NODE_ARG")
    id=$(node_id "$(node_hostname "$n")")
    [ -n "$id" ] || die "the manager does not know $(node_hostname "$n")"
    dk "$(manager_host)" node update --availability "$avail" "$id" >/dev/null
    log "$(node_hostname "$n") availability $avail"
}

case $CMD in
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status >&3 ;;
kill-node) cmd_kill_node ;;
start-node) cmd_start_node ;;
cut) cmd_link down ;;
heal) cmd_link up ;;
drain) cmd_availability drain ;;
activate) cmd_availability active ;;
esac
