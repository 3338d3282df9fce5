# shellcheck shell=bash
# lib-engine.sh - helpers shared by scripts/engine.sh and scripts/cluster.sh.
# Source it; do not run it.
#
# An "instance" is one private Docker engine: a dockerd plus its own containerd, both living in
# their own network namespace (and UTS namespace, for the hostname), with their own data root,
# exec root, pid files, sockets and cgroup parent. Nothing is shared with a Docker engine the
# user may run on the host: an instance never talks to /run/containerd/containerd.sock, never
# reads /etc/docker/daemon.json, never writes /etc/docker/key.json, and never changes anything in
# the host network namespace.
#
# Host-wide state that the engines do touch anyway (a few directories under /run that dockerd,
# containerd's shims and `ip netns` create, and a few global sysctls) is snapshotted when the
# first instance of any engine or cluster comes up and restored when the last one goes down.
# The bookkeeping lives in /run/covey-engines, guarded by flock; it is removed with the last engine.

COVEY_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
COVEY_ENGINE_ROOT=${COVEY_ENGINE_ROOT:-$COVEY_REPO/.engine}
COVEY_REG=/run/covey-engines
COVEY_IMAGE=covey-test/busybox:latest
COVEY_IMAGE_ALIAS=busybox:latest
COVEY_WAIT=${COVEY_ENGINE_TIMEOUT:-90}    # seconds to wait for a dockerd to answer

# Host state recorded before the first engine starts and restored after the last one stops.
# Global (not per network namespace) sysctls that dockerd may raise:
COVEY_HOST_SYSCTLS=(kernel/keys/root_maxkeys kernel/keys/root_maxbytes fs/may_detach_mounts
    net/ipv4/ip_forward net/ipv6/conf/all/forwarding
    net/bridge/bridge-nf-call-iptables net/bridge/bridge-nf-call-ip6tables)
# Directories created on the host by `ip netns add`, dockerd and containerd-shim (children first):
COVEY_HOST_DIRS=(/run/netns /run/docker/plugins /run/docker /run/containerd/s /run/containerd)

log() { printf '%s: %s\n' "${COVEY_PROG:-covey-engine}" "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# ---------------------------------------------------------------------------------------------
# prerequisites

# Re-run the calling script as root through passwordless sudo when needed.
require_root() {
    [ "$(id -u)" -eq 0 ] && return 0
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        exec sudo -n --preserve-env=COVEY_ENGINE_ROOT,COVEY_ENGINE_TIMEOUT,CI,PATH \
            bash "$0" "$@"
    fi
    die "must run as root (network namespaces, cgroups, mounts) and passwordless sudo is missing"
}

busybox_is_static() {
    local bb
    bb=$(command -v busybox 2>/dev/null) || return 1
    if command -v dpkg-query >/dev/null 2>&1; then
        [ "$(dpkg-query -W -f='${Status}' busybox-static 2>/dev/null)" = "install ok installed" ]
        return
    fi
    # not Debian: a static binary has no program interpreter
    ! LC_ALL=C grep -aq 'ld-linux' "$bb"
}

# Install docker.io, busybox-static and iproute2 with apt when something is missing.
ensure_packages() {
    local missing=() tool
    for tool in dockerd containerd containerd-shim-runc-v2 runc docker-init docker; do
        command -v "$tool" >/dev/null 2>&1 || { missing+=(docker.io); break; }
    done
    busybox_is_static || missing+=(busybox-static)
    command -v ip >/dev/null 2>&1 || missing+=(iproute2)
    for tool in nsenter unshare flock mountpoint setsid; do
        command -v "$tool" >/dev/null 2>&1 || { missing+=(util-linux); break; }
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    command -v apt-get >/dev/null 2>&1 || die "missing packages (${missing[*]}) and no apt-get"
    log "installing ${missing[*]} with apt-get"
    # one installer at a time when several engines start on a fresh machine
    (
        flock -w 900 8 || die "timed out waiting for another package installation"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq </dev/null >&2
        apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null >&2
    ) 8</var/lib/apt
    busybox_is_static || die "busybox is still not the static build"
}

# dk HOST ARGS... - the docker CLI aimed at one engine, ignoring the caller's context/TLS setup
dk() {
    local host=$1
    shift
    env -u DOCKER_CONTEXT -u DOCKER_TLS_VERIFY -u DOCKER_CERT_PATH docker -H "$host" "$@"
}

valid_name() { [[ $1 =~ ^[a-z0-9][a-z0-9-]{0,30}$ ]]; }

# ---------------------------------------------------------------------------------------------
# bookkeeping of host-wide state (/run/covey-engines)

# Take the registry lock on fd 9 (a lock on the directory itself, so it can be removed safely).
reg_lock() {
    local _
    for _ in $(seq 50); do
        mkdir -p "$COVEY_REG"
        exec 9<"$COVEY_REG"
        flock -w 300 9 || die "timed out waiting for the lock on $COVEY_REG"
        # the last engine's `down` may have removed the directory while we waited
        if [ "$(stat -Lc %d:%i /proc/self/fd/9)" = "$(stat -c %d:%i "$COVEY_REG" 2>/dev/null)" ]
        then
            mkdir -p "$COVEY_REG/active"
            return 0
        fi
        exec 9<&-
    done
    die "could not lock $COVEY_REG"
}
reg_unlock() { exec 9<&-; }

# Drop entries whose state directory is gone (their owner was removed by hand).
reg_prune() {
    local f dir
    for f in "$COVEY_REG"/active/*; do
        [ -f "$f" ] || continue
        dir=$(head -n1 "$f")
        [ -d "$dir" ] || rm -f "$f"
    done
}

reg_count() {
    local n=0 f
    for f in "$COVEY_REG"/active/*; do [ -f "$f" ] && n=$((n + 1)); done
    echo "$n"
}

host_snapshot() {
    local s d out=$COVEY_REG/host-state
    {
        for s in "${COVEY_HOST_SYSCTLS[@]}"; do
            [ -r "/proc/sys/$s" ] && printf 'sysctl %s %s\n' "$s" "$(tr -s '\t ' ' ' <"/proc/sys/$s")"
        done
        for d in "${COVEY_HOST_DIRS[@]}"; do
            if [ -e "$d" ]; then printf 'dir %s present\n' "$d"; else printf 'dir %s absent\n' "$d"; fi
        done
        if mountpoint -q /run/netns 2>/dev/null; then echo "mount /run/netns yes"; else echo "mount /run/netns no"; fi
    } >"$out.tmp"
    mv -f "$out.tmp" "$out"
}

host_restore() {
    local kind path value now
    [ -f "$COVEY_REG/host-state" ] || return 0
    while read -r kind path value; do
        case $kind in
        sysctl)
            [ -w "/proc/sys/$path" ] || continue
            now=$(tr -s '\t ' ' ' <"/proc/sys/$path")
            if [ "$now" != "$value" ]; then
                log "restoring host sysctl $path: $now -> $value"
                echo "$value" >"/proc/sys/$path" || log "warning: could not restore $path"
            fi
            ;;
        dir)
            if [ "$value" != absent ] || [ ! -d "$path" ]; then continue; fi
            if [ "$path" = /run/netns ]; then
                # `ip netns add` bind-mounts /run/netns onto itself; undo that once it is empty
                [ -z "$(ls -A /run/netns 2>/dev/null)" ] || continue
                if mountpoint -q /run/netns; then umount /run/netns 2>/dev/null || continue; fi
            fi
            rmdir "$path" 2>/dev/null || true
            ;;
        mount)
            if [ "$value" = no ] && mountpoint -q "$path" && [ -z "$(ls -A "$path")" ]; then
                umount "$path" 2>/dev/null || true
            fi
            ;;
        esac
    done <"$COVEY_REG/host-state"
}

# reg_check_free KEY ID... - die if another registered engine/cluster owns one of the IDs
# (e.g. engine "cl-manager" and the manager of cluster "cl" would share namespace covey-cl-manager)
reg_check_free() {
    local key=$1 f id
    shift
    for f in "$COVEY_REG"/active/*; do
        if [ ! -f "$f" ] || [ "$f" = "$COVEY_REG/active/$key" ]; then continue; fi
        for id in "$@"; do
            if grep -qxF -- "$id" "$f" 2>/dev/null; then
                die "namespace $id belongs to ${f##*/}: choose another --name"
            fi
        done
    done
}

# reg_add KEY STATEDIR ID... - register an engine/cluster (snapshot the host if it is the first).
# Fails if one of the IDs (netns names) is claimed by another entry.
reg_add() {
    local key=$1 dir=$2 f id
    shift 2
    reg_lock
    reg_prune
    for f in "$COVEY_REG"/active/*; do
        if [ ! -f "$f" ] || [ "$f" = "$COVEY_REG/active/$key" ]; then continue; fi
        for id in "$@"; do
            if grep -qxF -- "$id" "$f"; then
                reg_unlock
                die "namespace $id is already used by ${f##*/} (choose another --name)"
            fi
        done
    done
    [ "$(reg_count)" -eq 0 ] && host_snapshot
    printf '%s\n' "$dir" "$@" >"$COVEY_REG/active/$key"
    reg_unlock
}

# reg_remove KEY - unregister; the last one out restores the host and removes the bookkeeping.
reg_remove() {
    local key=$1
    [ -d "$COVEY_REG" ] || return 0
    reg_lock
    rm -f "$COVEY_REG/active/$key"
    reg_prune
    if [ "$(reg_count)" -eq 0 ]; then
        host_restore
        rm -f "$COVEY_REG/host-state"
        rmdir "$COVEY_REG/active" 2>/dev/null || true
        rmdir "$COVEY_REG" 2>/dev/null || true
    fi
    reg_unlock
}

# ---------------------------------------------------------------------------------------------
# one engine instance

# inst_load ID HOSTNAME STATEDIR - set the I_* variables describing one instance.
inst_load() {
    I_ID=$1 I_HOSTNAME=$2 I_DIR=$3
    I_NETNS=/run/netns/$I_ID
    I_RUN=$I_DIR/run
    # unix socket paths are limited to 107 bytes; the longest under the exec root is about
    # <exec-root>/libnetwork/<12 hex>.sock, so keep the run directory short
    if [ ${#I_RUN} -gt 60 ]; then I_RUN=/run/$I_ID; fi
    I_SOCK=$I_RUN/docker.sock
    I_HOST=unix://$I_SOCK
    I_CTD_SOCK=$I_RUN/containerd/containerd.sock
    I_DOCKERD_PID=$I_RUN/dockerd.pid
    I_CTD_PID=$I_RUN/containerd.pid
    I_CONF=$I_DIR/conf
    I_LOG=$I_DIR/log
}

# pid_is PID COMM NEEDLE - is PID alive, named COMM, with NEEDLE in its command line?
pid_is() {
    local pid=$1 comm=$2 needle=$3 c state rest
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [ -r "/proc/$pid/comm" ] || return 1
    read -r c <"/proc/$pid/comm" 2>/dev/null || return 1
    [ "$c" = "$comm" ] || return 1
    rest=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
    rest=${rest##*) }
    state=${rest%% *}
    [ "$state" != Z ] || return 1
    grep -aqF -- "$needle" "/proc/$pid/cmdline" 2>/dev/null
}

read_pid() { [ -r "$1" ] && head -c 20 "$1" | tr -dc 0-9; }

inst_dockerd_pid() {
    local pid
    pid=$(read_pid "$I_DOCKERD_PID") || return 1
    pid_is "$pid" dockerd "$I_DIR/data/docker" && echo "$pid"
}
inst_ctd_pid() {
    local pid
    pid=$(read_pid "$I_CTD_PID") || return 1
    pid_is "$pid" containerd "$I_CONF/containerd.toml" && echo "$pid"
}

# Does the instance's dockerd answer?
inst_answers() {
    [ -S "$I_SOCK" ] && timeout 10 env -u DOCKER_CONTEXT -u DOCKER_TLS_VERIFY \
        docker -H "$I_HOST" version --format '{{.Server.Version}}' >/dev/null 2>&1
}

inst_running() { inst_dockerd_pid >/dev/null && inst_answers; }

# Anything left of this instance (state, run dir, netns)?
inst_exists() { [ -e "$I_DIR" ] || [ -e "$I_RUN" ] || [ -e "$I_NETNS" ]; }

netns_create() {
    local ns=$1
    ip netns add "$ns"
    ip -n "$ns" link set lo up
}

# inst_prepare - create directories and configuration files
inst_prepare() {
    mkdir -p "$I_DIR/data" "$I_RUN" "$I_CONF" "$I_LOG"
    chmod 0711 "$I_DIR" "$I_RUN"
    cat >"$I_CONF/containerd.toml" <<EOF
# private containerd of covey engine $I_ID (written by scripts/lib-engine.sh)
version = 2
root = "$I_DIR/data/containerd"
state = "$I_RUN/containerd"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "$I_CTD_SOCK"

[ttrpc]
  address = "$I_CTD_SOCK.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "$I_DIR/data/containerd-opt"
EOF
    # dockerd 20.10 would otherwise create /etc/docker/key.json (no command-line flag for it)
    printf '{"deprecated-key-path": "%s"}\n' "$I_CONF/key.json" >"$I_CONF/daemon.json"
    # one argument per line, read back by inst_start_dockerd (also for restarts)
    printf '%s\n' \
        --config-file "$I_CONF/daemon.json" \
        --data-root "$I_DIR/data/docker" \
        --exec-root "$I_RUN/docker" \
        --pidfile "$I_DOCKERD_PID" \
        --host "$I_HOST" \
        --containerd "$I_CTD_SOCK" \
        --cgroup-parent "$I_ID" \
        --bip 10.233.0.1/24 \
        --default-address-pool base=10.234.0.0/16,size=24 \
        --shutdown-timeout 3 \
        --iptables=true >"$I_CONF/dockerd.args"
    if [ -n "${SUDO_GID:-}" ]; then printf '%s\n' --group "$SUDO_GID" >>"$I_CONF/dockerd.args"; fi
    printf 'ID=%s\nHOSTNAME=%s\nRUN=%s\n' "$I_ID" "$I_HOSTNAME" "$I_RUN" >"$I_DIR/instance.env"
}

# Record the cgroups the daemons were started from: the cgroup parent is relative to them.
inst_record_cgroup() {
    local pid=$1
    [ -n "$pid" ] && [ -r "/proc/$pid/cgroup" ] || return 0
    cut -d: -f3- "/proc/$pid/cgroup" | cat - "$I_CONF/cgroup.origin" 2>/dev/null |
        sort -u >"$I_CONF/cgroup.origin.tmp" || true
    mv -f "$I_CONF/cgroup.origin.tmp" "$I_CONF/cgroup.origin"
}

# inst_spawn LOGFILE PIDFILE CMD... - run CMD inside the instance's netns and a new UTS
# namespace named after the instance, detached (new session, no inherited fds). The pid of CMD
# (the wrappers exec it) is written to PIDFILE.
inst_spawn() {
    local logf=$1 pidf=$2
    shift 2
    rm -f "$pidf"
    # shellcheck disable=SC2016  # $1/$2 belong to the inner shell
    setsid nsenter --net="$I_NETNS" unshare --uts sh -c \
        'echo "$1" >/proc/sys/kernel/hostname || exit 1
         echo $$ >"$2"
         shift 2; exec "$@"' \
        sh "$I_HOSTNAME" "$pidf" "$@" </dev/null >>"$logf" 2>&1 3>&- 8>&- 9<&- &
}

# spawned_died PIDFILE - did the process started by inst_spawn exit already?
spawned_died() {
    local pid
    pid=$(read_pid "$1") || return 1
    [ -n "$pid" ] && is_zombie_or_gone "$pid"
}

inst_start_containerd() {
    local pid _
    if pid=$(inst_ctd_pid); then return 0; fi
    rm -f "$I_CTD_SOCK" "$I_CTD_SOCK.ttrpc"
    mkdir -p "$I_RUN/containerd"
    inst_spawn "$I_LOG/containerd.log" "$I_CTD_PID" containerd --config "$I_CONF/containerd.toml"
    for _ in $(seq 200); do
        [ -S "$I_CTD_SOCK" ] && break
        spawned_died "$I_CTD_PID" && break
        sleep 0.1
    done
    if [ ! -S "$I_CTD_SOCK" ]; then
        log "containerd of $I_ID did not start; last lines of $I_LOG/containerd.log:"
        tail -n 20 "$I_LOG/containerd.log" >&2 || true
        return 1
    fi
    inst_record_cgroup "$(read_pid "$I_CTD_PID")"
}

inst_start_dockerd() {
    local pid args
    if pid=$(inst_dockerd_pid); then return 0; fi
    # a SIGKILLed dockerd leaves its pidfile behind, and dockerd refuses to start if that pid
    # happens to be alive again
    rm -f "$I_DOCKERD_PID" "$I_SOCK"
    mapfile -t args <"$I_CONF/dockerd.args"
    inst_spawn "$I_LOG/dockerd.log" "$I_RUN/dockerd.launched" dockerd "${args[@]}"
}

# inst_wait_answer TIMEOUT - wait until the dockerd answers, else print its log tail and fail
inst_wait_answer() {
    local timeout=$1 start=$SECONDS
    while ! inst_answers; do
        if spawned_died "$I_RUN/dockerd.launched"; then
            log "dockerd of $I_ID exited during startup; last lines of $I_LOG/dockerd.log:"
            tail -n 30 "$I_LOG/dockerd.log" >&2 || true
            return 1
        fi
        if [ $((SECONDS - start)) -ge "$timeout" ]; then
            log "dockerd of $I_ID did not answer on $I_HOST within ${timeout}s;" \
                "last lines of $I_LOG/dockerd.log:"
            tail -n 30 "$I_LOG/dockerd.log" >&2 || true
            return 1
        fi
        sleep 0.2
    done
    inst_record_cgroup "$(read_pid "$I_RUN/dockerd.launched")"
    return 0
}

# inst_start - containerd (if not running), then dockerd, then wait for it
inst_start() {
    inst_start_containerd && inst_start_dockerd && inst_wait_answer "$COVEY_WAIT"
}

# wait_gone TIMEOUT PID... - wait until no PID is alive (zombies count as gone)
wait_gone() {
    local timeout=$1 end pid alive
    shift
    end=$((SECONDS + timeout))
    while :; do
        alive=0
        for pid in "$@"; do
            is_zombie_or_gone "$pid" || alive=1
        done
        [ $alive -eq 0 ] && return 0
        [ $SECONDS -ge $end ] && return 1
        sleep 0.1
    done
}

# stop_pid PID TIMEOUT WHAT - SIGTERM, wait, SIGKILL
stop_pid() {
    local pid=$1 timeout=$2 what=$3
    kill -TERM "$pid" 2>/dev/null || return 0
    if ! wait_gone "$timeout" "$pid"; then
        log "$what (pid $pid) still running after ${timeout}s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        wait_gone 10 "$pid" || log "warning: $what (pid $pid) does not die"
    fi
}

inst_stop_dockerd() {
    local timeout=${1:-20} pid
    if pid=$(inst_dockerd_pid); then
        stop_pid "$pid" "$timeout" "dockerd of $I_ID"
    fi
    rm -f "$I_DOCKERD_PID" "$I_RUN/dockerd.launched"
}

inst_kill_dockerd() {
    local pid
    pid=$(inst_dockerd_pid) || return 0
    kill -KILL "$pid"
    wait_gone 10 "$pid" || true
}

# Processes in a cgroup below the instance's cgroup parent (its containers)
inst_cgroup_pids() {
    grep -lE "^[0-9]+:[^:]*:(.*/)?$I_ID(/.*)?\$" /proc/[0-9]*/cgroup 2>/dev/null |
        cut -d/ -f3 | while read -r pid; do
        is_zombie_or_gone "$pid" || echo "$pid"
    done
}

# Processes that belong to the instance, whatever state it is in:
#  - everything in its network namespace (dockerd, containerd, shims, docker-proxy, host-network
#    containers),
#  - everything in a cgroup below its cgroup parent (the containers),
#  - engine binaries whose command line names its paths (shims after the netns is gone).
inst_pids() {
    local ino f pid comm
    {
        if [ -e "$I_NETNS" ]; then
            ino=$(stat -Lc %i "$I_NETNS" 2>/dev/null) || ino=
            if [ -n "$ino" ] && [ "$ino" != "$(stat -Lc %i /proc/self/ns/net)" ]; then
                # shellcheck disable=SC2012  # ls -l is the cheap way to read 200 links
                ls -l /proc/[0-9]*/ns/net 2>/dev/null |
                    awk -v t="net:[$ino]" '$NF == t {split($(NF-2), p, "/"); print p[3]}'
            fi
        fi
        inst_cgroup_pids
        grep -laF -e "$I_DIR/" -e "$I_RUN/" /proc/[0-9]*/cmdline 2>/dev/null | while read -r f; do
            pid=${f#/proc/}
            pid=${pid%/cmdline}
            read -r comm <"/proc/$pid/comm" 2>/dev/null || continue
            case $comm in
            dockerd | containerd | containerd-shim* | runc | docker-proxy | docker-init) echo "$pid" ;;
            esac
        done
    } | sort -un | grep -vx -e "$$" -e "${BASHPID:-$$}" | while read -r pid; do
        is_zombie_or_gone "$pid" || echo "$pid"
    done
}

is_zombie_or_gone() {
    local st
    st=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
    st=${st##*) }
    [ "${st%% *}" = Z ]
}

# Remove the sockets containerd-shim leaves in /run/containerd/s when it is killed:
# their name is sha256("<containerd address>/<namespace>/<container id>").
inst_remove_shim_sockets() {
    local d ns id h
    [ -d /run/containerd/s ] || return 0
    for d in "$I_RUN"/containerd/io.containerd.runtime.v2.task/*/*; do
        [ -d "$d" ] || continue
        id=${d##*/}
        ns=${d%/*}
        ns=${ns##*/}
        h=$(printf '%s' "$I_CTD_SOCK/$ns/$id" | sha256sum | cut -d' ' -f1)
        if [ -S "/run/containerd/s/$h" ]; then rm -f "/run/containerd/s/$h"; fi
    done
}

# Mount points at or below a directory, deepest first
mounts_below() {
    local dir=$1
    awk '{print $5}' /proc/self/mountinfo | while read -r m; do
        m=${m//\\040/ }
        m=${m//\\011/$'\t'}
        m=${m//\\134/\\}
        case $m in "$dir" | "$dir"/*) echo "$m" ;; esac
    done | awk '{print length, $0}' | sort -rn | cut -d' ' -f2-
}

unmount_below() {
    local dir=$1 m _
    for _ in 1 2 3; do
        local any=0
        while read -r m; do
            [ -n "$m" ] || continue
            any=1
            umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
        done < <(mounts_below "$dir")
        [ $any -eq 0 ] && return 0
    done
    [ -z "$(mounts_below "$dir")" ] || { log "warning: mounts left under $dir"; return 1; }
}

# Cgroup directories named after the instance: <hierarchy>/<origin>/<ID>. A relative
# --cgroup-parent ends up below the cgroup the runtime runs in (cgroup v1) or its parent (v2).
inst_cgroup_dirs() {
    local mnt origin
    local -a origins=(/)
    if [ -r "$I_CONF/cgroup.origin" ]; then mapfile -t -O 1 origins <"$I_CONF/cgroup.origin"; fi
    awk '{for (i = 7; i <= NF; i++) if ($i == "-") { if ($(i+1) ~ /^cgroup2?$/) print $5; break }}' \
        /proc/self/mountinfo | while read -r mnt; do
        for origin in "${origins[@]}"; do
            origin=${origin%/}
            if [ -d "$mnt$origin/$I_ID" ]; then echo "$mnt$origin/$I_ID"; fi
            # runc puts a relative path below the parent of its own cgroup on cgroup v2
            origin=${origin%/*}
            if [ -d "$mnt$origin/$I_ID" ]; then echo "$mnt$origin/$I_ID"; fi
        done
    done | sort -u
}

inst_remove_cgroups() {
    local d _ left
    for _ in $(seq 20); do
        left=0
        while read -r d; do
            [ -n "$d" ] || continue
            find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
            [ -d "$d" ] && left=1
        done < <(inst_cgroup_dirs)
        [ $left -eq 0 ] && return 0
        sleep 0.2
    done
    log "warning: could not remove cgroups: $(inst_cgroup_dirs | tr '\n' ' ')"
}

# inst_down - stop and remove everything of the instance; safe in any state, idempotent
inst_down() {
    local pid pids _
    # the workloads first: everything is thrown away anyway, and dockerd would otherwise give
    # every running swarm task its stop grace period (10 s by default) before exiting
    mapfile -t pids < <(inst_cgroup_pids)
    if [ ${#pids[@]} -gt 0 ]; then
        kill -KILL "${pids[@]}" 2>/dev/null || true
        wait_gone 5 "${pids[@]}" || true
    fi
    inst_stop_dockerd 20
    if pid=$(inst_ctd_pid); then stop_pid "$pid" 10 "containerd of $I_ID"; fi
    for _ in 1 2 3; do
        mapfile -t pids < <(inst_pids)
        [ ${#pids[@]} -eq 0 ] && break
        log "killing ${#pids[@]} leftover process(es) of $I_ID: ${pids[*]}"
        kill -KILL "${pids[@]}" 2>/dev/null || true
        wait_gone 10 "${pids[@]}" || true
    done
    inst_remove_shim_sockets
    unmount_below "$I_RUN" || true
    unmount_below "$I_DIR" || true
    if [ -e "$I_NETNS" ]; then ip netns delete "$I_ID" 2>/dev/null || rm -f "$I_NETNS"; fi
    inst_remove_cgroups
    if [ -z "$(mounts_below "$I_DIR")$(mounts_below "$I_RUN")" ]; then
        rm -rf --one-file-system "$I_RUN" "$I_DIR"
    else
        log "warning: not removing $I_DIR: still mounted"
        return 1
    fi
}

# ---------------------------------------------------------------------------------------------
# the test image

# Build (once, cached) a root filesystem tarball: static busybox plus a symlink per applet.
image_tarball() {
    local cache=$COVEY_ENGINE_ROOT/.cache tar bb tmp a
    tar=$cache/busybox-rootfs.tar
    bb=$(readlink -f "$(command -v busybox)")
    if [ -s "$tar" ] && [ "$tar" -nt "$bb" ]; then
        echo "$tar"
        return 0
    fi
    mkdir -p "$cache"
    tmp=$(mktemp -d "$cache/rootfs.XXXXXX")
    mkdir -p "$tmp/r/bin" "$tmp/r/etc" "$tmp/r/root" "$tmp/r/tmp" "$tmp/r/usr" \
        "$tmp/r/proc" "$tmp/r/sys" "$tmp/r/dev" "$tmp/r/var"
    chmod 1777 "$tmp/r/tmp"
    cp "$bb" "$tmp/r/bin/busybox"
    for a in $("$bb" --list); do
        [ -e "$tmp/r/bin/$a" ] || ln -s busybox "$tmp/r/bin/$a"
    done
    ln -s bin "$tmp/r/sbin"
    ln -s ../bin "$tmp/r/usr/bin"
    ln -s ../bin "$tmp/r/usr/sbin"
    printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' 'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' \
        >"$tmp/r/etc/passwd"
    printf '%s\n' 'root:x:0:' 'nogroup:x:65534:' >"$tmp/r/etc/group"
    tar --numeric-owner --owner=0 --group=0 -C "$tmp/r" -cf "$tmp/rootfs.tar" .
    mv -f "$tmp/rootfs.tar" "$tar"
    rm -rf "$tmp"
    echo "$tar"
}

# image_ensure HOST - import the test image (and its busybox alias) into an engine
image_ensure() {
    local host=$1 tar
    if ! dk "$host" image inspect "$COVEY_IMAGE" >/dev/null 2>&1; then
        tar=$(image_tarball)
        dk "$host" import \
            -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            -c 'CMD ["sh"]' "$tar" "$COVEY_IMAGE" >/dev/null
    fi
    dk "$host" tag "$COVEY_IMAGE" "$COVEY_IMAGE_ALIAS"
}
