#!/usr/bin/env bash
# engine.sh - a private, throw-away Docker engine (single-node swarm) for covey's tests.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

usage() {
    cat <<'EOF'
usage: scripts/engine.sh COMMAND [--name NAME] [--no-swarm]

Runs a private dockerd (with its own containerd) in its own network namespace "covey-NAME",
with data, exec root, pid files and socket under .engine/NAME/ in the repository, and the
cgroup parent covey-NAME. It never touches a Docker engine of the host.

commands
  up               start the engine (idempotent; reclaims a stale one of the same name),
                   make it a single-node swarm manager (unless --no-swarm) and import the test
                   image covey-test/busybox:latest (also tagged busybox:latest).
                   Prints exactly one line on stdout:  export DOCKER_HOST=unix:///.../docker.sock
                   so that   eval "$(scripts/engine.sh up)"   works.
  env              print that export line for a running engine (exit 1 if it is not running)
  status           human-readable status
  down             stop and remove everything the engine started (idempotent; also after a
                   SIGKILLed dockerd or a failed run)
  restart-dockerd  stop the dockerd (SIGTERM; SIGKILL after 30 s) and start it again with the
                   same state (swarm kept); waits until it answers

options
  --name NAME      engine name, [a-z0-9-], default "covey"
  --no-swarm       (up) plain engine, not a swarm member
  -h, --help       this text

environment
  COVEY_ENGINE_ROOT     where the state goes (default <repo>/.engine)
  COVEY_ENGINE_TIMEOUT  seconds to wait for dockerd to answer (default 90)
All output except the export line goes to stderr. Needs root (uses sudo -n when not root).
EOF
}

# shellcheck source=lib-engine.sh
. "$(dirname "$0")/lib-engine.sh"
COVEY_PROG=engine.sh

CMD=
NAME=covey
SWARM=1
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
    --no-swarm) SWARM=0 ;;
    up | down | env | status | restart-dockerd)
        [ -z "$CMD" ] || die "only one command, please"
        CMD=$1
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

require_root "${ORIG_ARGS[@]}"
# everything but the export line goes to stderr
exec 3>&1 1>&2

inst_load "covey-$NAME" "$NAME" "$COVEY_ENGINE_ROOT/$NAME"
REG_KEY=engine-$NAME
reg_check_free "$REG_KEY" "$I_ID"
MODE=$([ $SWARM -eq 1 ] && echo swarm || echo plain)

print_env() { echo "export DOCKER_HOST=$I_HOST" >&3; }

recorded_mode() { sed -n 's/^MODE=//p' "$I_DIR/instance.env" 2>/dev/null; }

swarm_ensure() {
    local state
    state=$(dk "$I_HOST" info --format '{{.Swarm.LocalNodeState}}')
    case $state in
    active) ;;
    inactive)
        log "swarm init"
        dk "$I_HOST" swarm init --advertise-addr 127.0.0.1 --task-history-limit 1 >/dev/null
        ;;
    *) die "swarm is in state '$state'" ;;
    esac
}

# wait until the swarm manager serves the control API (after a restart raft needs a moment)
swarm_wait() {
    local end=$((SECONDS + COVEY_WAIT))
    until dk "$I_HOST" node ls -q >/dev/null 2>&1; do
        [ $SECONDS -lt $end ] || die "swarm manager of $I_ID not ready after ${COVEY_WAIT}s"
        sleep 0.2
    done
}

UP_DONE=0
up_failed() {
    [ $UP_DONE -eq 1 ] && return 0
    log "engine $NAME failed to come up; tearing it down"
    mkdir -p "$COVEY_ENGINE_ROOT"
    if [ -f "$I_LOG/dockerd.log" ]; then
        cp -f "$I_LOG/dockerd.log" "$COVEY_ENGINE_ROOT/$NAME.failed-dockerd.log" || true
        log "dockerd log kept in $COVEY_ENGINE_ROOT/$NAME.failed-dockerd.log"
    fi
    inst_down || true
    reg_remove "$REG_KEY" || true
}

cmd_up() {
    local t0=$SECONDS
    ensure_packages
    if inst_running && [ "$(recorded_mode)" = "$MODE" ]; then
        log "engine $NAME already running"
        if [ $SWARM -eq 1 ]; then swarm_ensure; fi
        image_ensure "$I_HOST"
        print_env
        return 0
    fi
    if inst_running; then
        log "engine $NAME runs as a $(recorded_mode) engine: recreating it as a $MODE one"
        inst_down
        reg_remove "$REG_KEY"
    elif inst_exists || [ -e "$COVEY_REG/active/$REG_KEY" ]; then
        log "reclaiming a stale engine $NAME"
        inst_down
        reg_remove "$REG_KEY"
    fi
    trap up_failed EXIT
    trap 'exit 130' INT TERM
    mkdir -p "$I_DIR"
    reg_add "$REG_KEY" "$I_DIR" "$I_ID"
    inst_prepare
    echo "MODE=$MODE" >>"$I_DIR/instance.env"
    netns_create "$I_ID"
    inst_start_containerd
    inst_start_dockerd
    inst_wait_answer "$COVEY_WAIT"
    if [ $SWARM -eq 1 ]; then swarm_ensure; fi
    image_ensure "$I_HOST"
    UP_DONE=1
    trap - EXIT INT TERM
    log "engine $NAME up in $((SECONDS - t0))s ($MODE, $I_HOST)"
    print_env
}

cmd_down() {
    if ! inst_exists && [ ! -e "$COVEY_REG/active/$REG_KEY" ]; then
        log "engine $NAME is not up"
        return 0
    fi
    inst_down
    reg_remove "$REG_KEY"
    log "engine $NAME down"
}

cmd_env() {
    inst_running || {
        log "engine $NAME is not running"
        exit 1
    }
    print_env
}

cmd_status() {
    local pid ctd
    if ! inst_exists; then
        echo "engine $NAME: not up"
        return 0
    fi
    pid=$(inst_dockerd_pid) || pid="not running"
    ctd=$(inst_ctd_pid) || ctd="not running"
    echo "engine $NAME ($(recorded_mode || true))"
    echo "  state dir:  $I_DIR"
    echo "  DOCKER_HOST=$I_HOST"
    echo "  netns:      $I_ID $([ -e "$I_NETNS" ] && echo present || echo MISSING)"
    echo "  dockerd:    $pid"
    echo "  containerd: $ctd"
    if inst_answers; then
        dk "$I_HOST" info --format '  swarm:      {{.Swarm.LocalNodeState}}  containers: {{.Containers}} (running {{.ContainersRunning}})  images: {{.Images}}'
        if [ "$(dk "$I_HOST" info --format '{{.Swarm.ControlAvailable}}')" = true ]; then
            echo "  services:   $(dk "$I_HOST" service ls -q | wc -l)"
        fi
    else
        echo "  dockerd does not answer"
    fi
}

cmd_restart_dockerd() {
    local t0=$SECONDS
    [ -f "$I_CONF/dockerd.args" ] || die "engine $NAME is not up"
    log "restarting dockerd of engine $NAME"
    inst_stop_dockerd 30
    inst_start_containerd
    inst_start_dockerd
    inst_wait_answer "$COVEY_WAIT" || die "dockerd of $NAME did not come back"
    if [ "$(recorded_mode)" = swarm ]; then swarm_wait; fi
    log "dockerd of engine $NAME restarted in $((SECONDS - t0))s"
}

case $CMD in
up) cmd_up ;;
down) cmd_down ;;
env) cmd_env ;;
status) cmd_status >&3 ;;
restart-dockerd) cmd_restart_dockerd ;;
esac
