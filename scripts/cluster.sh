#!/usr/bin/env bash
# cluster.sh - a private multi-node Docker Swarm (one manager, N workers) on this one machine.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

usage() {
    cat <<'EOF'
usage: scripts/cluster.sh COMMAND [NODE] [--name NAME] [--workers N]
       scripts/cluster.sh push SRC DEST [--name NAME]

A swarm of private engines (see scripts/engine.sh): nodes NAME-manager and NAME-worker1..N, each
a dockerd + containerd in its own network namespace "covey-NAME-<node>" with its own hostname,
state under .engine/NAME.cluster/<node>/ and cgroup parent covey-NAME-<node>. The nodes are
wired by veth pairs to a bridge in a private namespace "covey-NAME-hub" (10.231.0.0/24, manager
10.231.0.10, workerK 10.231.0.(10+K)); nothing appears in the host network namespace.
The manager uses --dispatcher-heartbeat 3s so a lost node is marked down within seconds.

Two image registries (Debian's docker-registry 2.8) run in the hub namespace, on the bridge's
address 10.231.0.2, with storage and logs under .engine/NAME.cluster/registry/:
  10.231.0.2:5000  open: anyone pulls and pushes
  10.231.0.2:5001  private: htpasswd basic auth, user "covey" and a random password made by
                   `up` (kept in .engine/NAME.cluster/registry/password, mode 0600)
Both speak plain HTTP: every node's dockerd runs with --insecure-registry 10.231.0.0/24, an
insecure-registries entry rather than TLS (no CA to make and trust, nothing written to the
host's /etc/docker/certs.d). Nodes get registry images only by pulling them, as in a real
swarm: the test image is imported on the manager alone, and the manager drops a registry name
again after pushing it. Logins use a throwaway DOCKER_CONFIG, never ~/.docker.

commands
  up               create the cluster (idempotent; reclaims a stale one of the same name),
                   import the test image covey-test/busybox:latest on the manager, push it as
                   10.231.0.2:5000/covey-test/busybox:latest and
                   10.231.0.2:5001/covey-test/private:latest, label every node
                   covey.node=<hostname>. Prints on stdout:
                     export DOCKER_HOST=unix:///...manager.../docker.sock
                     NODE <hostname> <node-id> <docker_host> <ip>      (one line per node)
                     export COVEY_REGISTRY=10.231.0.2:5000
                     export COVEY_PRIVATE_REGISTRY=10.231.0.2:5001
                     export COVEY_REGISTRY_USER=covey
                     export COVEY_REGISTRY_PASSWORD=<password>
  down             stop and remove everything (idempotent; also after kill-node/cut/failures)
  status           human-readable status
  agent-image      build covey's agent image (scripts/agent-image.sh, Debian's python3) on the
                   manager and push it to the open registry; prints
                     export COVEY_AGENT_IMAGE=10.231.0.2:5000/covey/agent-python:latest
                   (`up` prints COVEY_AGENT_SOCKET: each node's socket, by hostname)
  push SRC DEST    tag the manager's local image SRC as DEST (a name on one of the two
                   registries) and push it, logging in first when DEST is on the private one
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
Needs root (uses sudo -n when not root); installs the packages docker-registry and
apache2-utils (htpasswd -B: the registry takes bcrypt only) with apt when they are missing.
Everything except the `up` lines goes to stderr.
EOF
}

# shellcheck source=lib-engine.sh
. "$(dirname "$0")/lib-engine.sh"
COVEY_PROG=cluster.sh

CMD=
NODE_ARG=
PUSH_SRC=
PUSH_DEST=
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
    up | down | status | agent-image)
        [ -z "$CMD" ] || die "only one command, please"
        CMD=$1
        ;;
    push)
        [ -z "$CMD" ] || die "only one command, please"
        [ $# -ge 3 ] || die "push needs SRC and DEST"
        CMD=$1
        PUSH_SRC=$2
        PUSH_DEST=$3
        shift 2
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
# the registries listen on the hub's bridge
REGISTRY_IP=$SUBNET_PREFIX.2
REGISTRY=$REGISTRY_IP:5000
PRIVATE_REGISTRY=$REGISTRY_IP:5001
REGISTRY_USER=covey
REGISTRY_IMAGE=$REGISTRY/covey-test/busybox:latest
PRIVATE_IMAGE=$PRIVATE_REGISTRY/covey-test/private:latest
RG_DIR=$CL_DIR/registry

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

# ---------------------------------------------------------------------------------------------
# the registries: docker-registry processes in the hub namespace, "open" (:5000) and "private"
# (:5001, htpasswd), each with $RG_DIR/<kind>/{config.yml,data/,registry.log,registry.pid}

# docker-registry and htpasswd (apache2-utils) from apt when missing, one installer at a time
# (the same lock as ensure_packages)
ensure_registry_packages() {
    local missing=()
    command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
    command -v htpasswd >/dev/null 2>&1 || missing+=(apache2-utils)
    [ ${#missing[@]} -eq 0 ] && return 0
    command -v apt-get >/dev/null 2>&1 || die "missing packages (${missing[*]}) and no apt-get"
    log "installing ${missing[*]} with apt-get"
    (
        flock -w 900 8 || die "timed out waiting for another package installation"
        # the package would start a registry service of the host (on the host's port 5000):
        # a policy-rc.d that forbids starting services stops that during the installation
        local policy=/usr/sbin/policy-rc.d own=0
        if [ ! -e "$policy" ]; then
            printf '#!/bin/sh\n# written by covey cluster.sh during an apt-get install\nexit 101\n' \
                >"$policy"
            chmod 0755 "$policy"
            own=1
            trap 'rm -f "$policy"' EXIT
        fi
        env DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null >&2
        env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null >&2
        if [[ " ${missing[*]} " == *" docker-registry "* ]]; then
            # ... nor at the next boot (the package enables it for systemd and sysvinit)
            if [ -d /run/systemd/system ]; then
                systemctl disable --now docker-registry.service >/dev/null 2>&1 || true
            fi
            # (also removes the systemd unit's link when systemd is not running)
            if command -v update-rc.d >/dev/null 2>&1; then
                update-rc.d docker-registry disable >/dev/null 2>&1 || true
            fi
        fi
        if [ $own -eq 1 ]; then rm -f "$policy"; fi
    ) 8</var/lib/apt
    command -v docker-registry >/dev/null 2>&1 || die "docker-registry is still missing"
    command -v htpasswd >/dev/null 2>&1 || die "htpasswd is still missing"
}

registry_port() { case $1 in open) echo 5000 ;; private) echo 5001 ;; esac; }

# registry_pid KIND - the pid of the running registry KIND
registry_pid() {
    local pid
    pid=$(read_pid "$RG_DIR/$1/registry.pid") || return 1
    pid_is "$pid" docker-registry "$RG_DIR/$1/config.yml" && echo "$pid"
}

# Every registry process of this cluster, also those whose pid file is gone
registry_pids() {
    local f pid comm
    {
        registry_pid open || true
        registry_pid private || true
        grep -laF "$RG_DIR/" /proc/[0-9]*/cmdline 2>/dev/null | while read -r f; do
            pid=${f#/proc/}
            pid=${pid%/cmdline}
            read -r comm 2>/dev/null <"/proc/$pid/comm" || continue
            if [ "$comm" = docker-registry ]; then echo "$pid"; fi
        done
    } | sort -un | while read -r pid; do
        is_zombie_or_gone "$pid" || echo "$pid"
    done
}

# registry_code KIND - the HTTP status of GET /v2/ (000: no answer), asked in the hub namespace
# with bash's /dev/tcp (curl may be missing, and busybox-static's wget crashes on bookworm)
registry_code() {
    local out
    [ -e "/run/netns/$HUB" ] || {
        echo 000
        return 0
    }
    # shellcheck disable=SC2016  # $1/$2 belong to the inner shell
    out=$(timeout 5 nsenter --net="/run/netns/$HUB" bash -c '
        exec 3<>"/dev/tcp/$1/$2" || exit 1
        printf "GET /v2/ HTTP/1.0\r\nHost: %s:%s\r\n\r\n" "$1" "$2" >&3
        read -r _ code _ <&3 && echo "$code"' \
        bash "$REGISTRY_IP" "$(registry_port "$1")" 2>/dev/null) || true
    [[ $out =~ ^[0-9]{3}$ ]] || out=000
    echo "$out"
}

registry_expect() { case $1 in open) echo 200 ;; private) echo 401 ;; esac; }

# Do both registries run and answer as they should?
registry_healthy() {
    local kind
    [ -s "$RG_DIR/password" ] || return 1
    for kind in open private; do
        registry_pid "$kind" >/dev/null || return 1
        [ "$(registry_code "$kind")" = "$(registry_expect "$kind")" ] || return 1
    done
}

# random hex (no characters a shell, a URL or YAML would mind)
random_hex() { od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'; }

# registry_configure - the password, the htpasswd file and both registries' configuration
registry_configure() {
    local kind old_umask
    old_umask=$(umask)
    umask 077
    mkdir -p "$RG_DIR"
    random_hex 16 >"$RG_DIR/password"
    # bcrypt: registry 2.8 accepts nothing else; the password goes through stdin, not argv
    htpasswd -niB "$REGISTRY_USER" <"$RG_DIR/password" >"$RG_DIR/htpasswd" 2>/dev/null ||
        die "htpasswd failed"
    for kind in open private; do
        mkdir -p "$RG_DIR/$kind/data"
        cat >"$RG_DIR/$kind/config.yml" <<EOF
# the $kind registry of covey cluster $NAME (written by scripts/cluster.sh)
version: 0.1
log:
  level: info
  formatter: text
storage:
  filesystem:
    rootdirectory: $RG_DIR/$kind/data
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: $REGISTRY_IP:$(registry_port "$kind")
  secret: $(random_hex 16)
EOF
        if [ "$kind" = private ]; then
            cat >>"$RG_DIR/$kind/config.yml" <<EOF
auth:
  htpasswd:
    realm: covey-$NAME
    path: $RG_DIR/htpasswd
EOF
        fi
    done
    umask "$old_umask"
}

# registry_start KIND - start it in the hub namespace, detached, with a clean environment (the
# registry reads REGISTRY_* variables as configuration)
registry_start() {
    local kind=$1 d=$RG_DIR/$1
    registry_pid "$kind" >/dev/null && return 0
    rm -f "$d/registry.pid"
    # shellcheck disable=SC2016  # $1 belongs to the inner shell
    setsid nsenter --net="/run/netns/$HUB" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin sh -c \
        'echo $$ >"$1"; shift; exec "$@"' sh "$d/registry.pid" \
        docker-registry serve "$d/config.yml" </dev/null >>"$d/registry.log" 2>&1 3>&- 8>&- 9<&- &
}

# registry_wait KIND TIMEOUT - until GET /v2/ answers as it should, else print the log tail
registry_wait() {
    local kind=$1 end=$((SECONDS + $2)) want code
    want=$(registry_expect "$kind")
    while :; do
        code=$(registry_code "$kind")
        [ "$code" = "$want" ] && return 0
        if spawned_died "$RG_DIR/$kind/registry.pid" || [ $SECONDS -ge $end ]; then
            log "the $kind registry does not answer (GET /v2/: $code, want $want);" \
                "last lines of $RG_DIR/$kind/registry.log:"
            tail -n 20 "$RG_DIR/$kind/registry.log" >&2 || true
            return 1
        fi
        sleep 0.1
    done
}

registry_stop() {
    local pid
    for pid in $(registry_pids); do stop_pid "$pid" 5 "docker-registry"; done
}

# registry_push SRC DEST - tag the manager's SRC as DEST, push it, drop the DEST name again.
# The CLI gets a throwaway DOCKER_CONFIG whose config.json names DEST's registry: with an
# "auths" entry the CLI keeps to that file (it would otherwise look for a credential helper).
registry_push() {
    local src=$1 dest=$2 mh cfg reg rc=0
    reg=${dest%%/*}
    mh=$(manager_host)
    dk "$mh" tag "$src" "$dest" || return 1
    cfg=$(mktemp -d "$RG_DIR/docker-config.XXXXXX")
    printf '{"auths": {"%s": {}}}\n' "$reg" >"$cfg/config.json"
    if [ "$reg" = "$PRIVATE_REGISTRY" ]; then
        DOCKER_CONFIG=$cfg dk "$mh" login --username "$REGISTRY_USER" --password-stdin "$reg" \
            <"$RG_DIR/password" >/dev/null 2>"$cfg/login.err" || {
            log "docker login $reg failed: $(cat "$cfg/login.err")"
            rc=1
        }
    fi
    if [ $rc -eq 0 ]; then
        DOCKER_CONFIG=$cfg dk "$mh" push --quiet "$dest" >/dev/null || rc=1
    fi
    rm -rf "$cfg"
    # untag (never delete: SRC may be an image id whose only name is DEST)
    if [ "$(dk "$mh" image inspect --format '{{len .RepoTags}}' "$dest" 2>/dev/null)" -gt 1 ] \
        2>/dev/null; then
        dk "$mh" rmi "$dest" >/dev/null || rc=1
    fi
    return $rc
}

print_up_lines() {
    socket_links
    local n h
    echo "export DOCKER_HOST=$(manager_host)" >&3
    for n in "${NODES[@]}"; do
        node_load "$n"
        h=$(node_hostname "$n")
        echo "NODE $h $(node_id "$h") $I_HOST $(node_ip "$n")" >&3
    done
    echo "export COVEY_REGISTRY=$REGISTRY" >&3
    echo "export COVEY_PRIVATE_REGISTRY=$PRIVATE_REGISTRY" >&3
    echo "export COVEY_REGISTRY_USER=$REGISTRY_USER" >&3
    echo "export COVEY_REGISTRY_PASSWORD=$(cat "$RG_DIR/password")" >&3
    echo "export COVEY_AGENT_SOCKET=$CL_DIR/sockets/{{.Node.Hostname}}.sock" >&3
}

# The nodes share this machine's file system but each has its own socket: a link per node,
# named by hostname, lets one bind mount with a {{.Node.Hostname}} template reach each node's
# own engine (how covey's agent, a global service, is deployed here).
socket_links() {
    local n
    mkdir -p "$CL_DIR/sockets"
    for n in "${NODES[@]}"; do
        node_load "$n"
        ln -sfn "${I_HOST#unix://}" "$CL_DIR/sockets/$(node_hostname "$n").sock"
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
    registry_healthy || return 1
    wait_ready 5 "${hosts[@]}" 2>/dev/null
}

cluster_exists() {
    local n
    [ -e "$CL_DIR" ] || [ -e "/run/netns/$HUB" ] || [ -e "$COVEY_REG/active/$REG_KEY" ] && return 0
    for n in "${NODES[@]}"; do
        node_load "$n"
        inst_exists && return 0
    done
    [ -n "$(registry_pids)" ]
}

cluster_teardown() {
    local n pids=() rc=0 p stale
    # nodes of an older, bigger cluster of the same name (not the registry's directory)
    for stale in "$CL_DIR"/*/; do
        [ -d "$stale" ] || continue
        stale=${stale%/}
        stale=${stale##*/}
        [[ $stale =~ ^(manager|worker[0-9]+)$ ]] || continue
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
    registry_stop &
    pids+=($!)
    for p in "${pids[@]}"; do wait "$p" || rc=1; done
    if [ -n "$(registry_pids)" ]; then
        log "warning: registry processes left: $(registry_pids | tr '\n' ' ')"
        rc=1
    fi
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
    for n in open private; do
        if [ -f "$RG_DIR/$n/registry.log" ]; then
            cp -f "$RG_DIR/$n/registry.log" "$COVEY_ENGINE_ROOT/$NAME-$n.failed-registry.log" ||
                true
        fi
    done
    log "dockerd and registry logs kept in $COVEY_ENGINE_ROOT/$NAME-*.failed-*.log"
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
    # the cluster's registries speak plain HTTP (see usage)
    printf '%s\n' --insecure-registry "$SUBNET_PREFIX.0/24" >>"$I_CONF/dockerd.args"
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

cmd_up() {
    local t0=$SECONDS n hosts=() h id mh kind
    ensure_packages
    ensure_registry_packages
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
    ip -n "$HUB" addr add "$REGISTRY_IP/24" dev br0
    ip -n "$HUB" link set br0 up
    registry_configure
    for kind in open private; do registry_start "$kind"; done
    for n in "${NODES[@]}"; do node_create "$n"; done
    run_parallel "starting the engines" node_start "${NODES[@]}"
    log "engines up after $((SECONDS - t0))s"
    for kind in open private; do
        registry_wait "$kind" "$COVEY_WAIT" || die "the $kind registry did not start"
    done

    mh=$(manager_host)
    dk "$mh" swarm init --advertise-addr "$MANAGER_IP" --listen-addr "$MANAGER_IP:2377" \
        --dispatcher-heartbeat 3s --task-history-limit 1 \
        --default-addr-pool 10.232.0.0/16 >/dev/null
    dk "$mh" swarm join-token -q worker >"$CL_DIR/worker-token"
    image_ensure "$mh"
    run_parallel "joining the swarm" node_join "${NODES[@]:1}"
    registry_push "$COVEY_IMAGE" "$REGISTRY_IMAGE" || die "could not push $REGISTRY_IMAGE"
    registry_push "$COVEY_IMAGE" "$PRIVATE_IMAGE" || die "could not push $PRIVATE_IMAGE"
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
    local n pid state kind
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
    for kind in open private; do
        pid=$(registry_pid "$kind") || pid="-"
        printf '  %-20s %-15s pid %-8s GET /v2/ %s\n' "registry $kind" \
            "$REGISTRY_IP:$(registry_port "$kind")" "$pid" "$(registry_code "$kind")"
    done
    node_load manager
    if inst_answers; then
        dk "$(manager_host)" node ls | sed 's/^/  /'
    else
        echo "  manager does not answer"
    fi
}

cmd_agent_image() {
    local image dest
    node_load manager
    inst_answers || die "the manager of cluster $NAME does not answer"
    registry_healthy || die "the registries of cluster $NAME are not up"
    image=$(bash "$(dirname "$0")/agent-image.sh" --host "$(manager_host)") ||
        die "could not build the agent image"
    dest=$REGISTRY/covey/agent-python:latest
    registry_push "$image" "$dest" || die "could not push $dest"
    log "pushed $dest"
    echo "export COVEY_AGENT_IMAGE=$dest" >&3
}

cmd_push() {
    case $PUSH_DEST in
    "$REGISTRY"/* | "$PRIVATE_REGISTRY"/*) ;;
    *) die "DEST must be on the cluster's registries ($REGISTRY/... or $PRIVATE_REGISTRY/...)" ;;
    esac
    node_load manager
    inst_answers || die "the manager of cluster $NAME does not answer"
    registry_healthy || die "the registries of cluster $NAME are not up"
    dk "$(manager_host)" image inspect "$PUSH_SRC" >/dev/null 2>&1 ||
        die "the manager has no image $PUSH_SRC"
    registry_push "$PUSH_SRC" "$PUSH_DEST" || die "could not push $PUSH_DEST"
    log "pushed $PUSH_DEST"
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
push) cmd_push ;;
agent-image) cmd_agent_image ;;
kill-node) cmd_kill_node ;;
start-node) cmd_start_node ;;
cut) cmd_link down ;;
heal) cmd_link up ;;
drain) cmd_availability drain ;;
activate) cmd_availability active ;;
esac
