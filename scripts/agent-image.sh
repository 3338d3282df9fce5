#!/usr/bin/env bash
# agent-image.sh - build the image of the covey agent: a python3 interpreter made from Debian
# packages (no registry needed) plus busybox-static, imported into one engine.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

usage() {
    cat <<'EOF'
usage: scripts/agent-image.sh [--host DOCKER_HOST] [--tag NAME:TAG] [--rebuild]

Builds a small image with Debian's python3 (the version the apt sources offer for python3-minimal)
and busybox-static's sh, from .deb files fetched with `apt-get download`, and imports it into the
engine at DOCKER_HOST as NAME:TAG. Only the interpreter, its standard library (without tests,
tkinter, idlelib, ensurepip, lib2to3, docs) and the shared libraries of the modules kept are in
it; extension modules whose libraries are left out (ssl, hashlib's OpenSSL part, curses, dbm,
sqlite3, readline, nis, crypt) are removed. The root filesystem tarball is cached under
.engine/.cache/ (keyed on the package versions and this script) and reused; an image already
holding that tarball is not imported again.

options
  --host HOST      the engine (default: $DOCKER_HOST, else unix:///var/run/docker.sock)
  --tag NAME:TAG   the image name (default covey/agent-python:latest)
  --rebuild        build the tarball again even if it is cached
  -h, --help       this text
Needs root (apt-get update when the package lists are missing, chroot to test the result).
Prints the image name on stdout; everything else goes to stderr.
EOF
}

# shellcheck source=lib-engine.sh
. "$(dirname "$0")/lib-engine.sh"
COVEY_PROG=agent-image.sh

HOST=${DOCKER_HOST:-unix:///var/run/docker.sock}
TAG=covey/agent-python:latest
REBUILD=0
ORIG_ARGS=("$@")
while [ $# -gt 0 ]; do
    case $1 in
    -h | --help)
        usage
        exit 0
        ;;
    --host | --tag)
        [ $# -ge 2 ] || die "$1 needs a value"
        if [ "$1" = --host ]; then HOST=$2; else TAG=$2; fi
        shift
        ;;
    --host=*) HOST=${1#--host=} ;;
    --tag=*) TAG=${1#--tag=} ;;
    --rebuild) REBUILD=1 ;;
    *)
        usage >&2
        die "unknown argument: $1"
        ;;
    esac
    shift
done
require_root "${ORIG_ARGS[@]}"

# the shared-library packages taken along (others are left out with the modules that need them)
LIB_PACKAGES='libc6|zlib1g|libexpat1|libffi[0-9]+|libbz2-[0-9.]+|liblzma[0-9]+|libuuid[0-9]+'
# parts of the standard library nobody needs in an agent container
DROP_STDLIB=(test idlelib tkinter turtledemo turtle.py ensurepip lib2to3 pydoc_data
    __phello__ __hello__.py)
SMOKE='import ctypes, http.client, json, os, signal, socket, sys, threading, time, typing, urllib.parse
ctypes.CDLL("libgcc_s.so.1")
print("python", sys.version.split()[0], "works")'
# prints the modules named in its arguments that cannot be imported
TRY_IMPORTS='import importlib, sys
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except ImportError:
        print(name)'
CACHE=$COVEY_ENGINE_ROOT/.cache
PY='' TAR=''
PKGS=()
TMP=

cleanup() { if [ -n "$TMP" ]; then rm -rf --one-file-system "$TMP"; fi; }
trap cleanup EXIT

# apt-get update, one at a time (as lib-engine.sh's ensure_packages does)
apt_update() {
    log "apt-get update"
    (
        flock -w 900 8 || die "timed out waiting for another package installation"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null >&2
    ) 8</var/lib/apt
}

# python3.N: the interpreter python3-minimal depends on in the apt sources
python_version() {
    apt-cache depends python3-minimal 2>/dev/null |
        sed -n 's/^ *\(Pre\)\{0,1\}Depends: \(python3\.[0-9][0-9]*\)-minimal$/\2/p' | head -n1
}

# the packages to unpack: the interpreter, its library packages, busybox-static
package_list() {
    local py=$1
    # (glibc loads libgcc_s when a thread exits or is cancelled, e.g. at the interpreter's exit)
    printf '%s\n' "$py-minimal" "lib$py-minimal" "lib$py-stdlib" busybox-static libgcc-s1
    apt-cache depends --no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces \
        --no-enhances "$py-minimal" "lib$py-minimal" "lib$py-stdlib" |
        awk '$1 ~ /Depends:$/ {print $2}' | grep -E "^($LIB_PACKAGES)(t64)?$" | sort -u
}

# "package=candidate version" lines (one apt-cache call: each takes a second or more)
versions() {
    apt-cache show --no-all-versions "$@" 2>/dev/null |
        awk '/^Package: / {p = $2} /^Version: / {print p "=" $2}' | sort -u
}

# in_root ROOT CMD... - run CMD inside the root filesystem, with a clean environment
in_root() {
    local r=$1
    shift
    env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin chroot "$r" "$@"
}

download() {
    local dir=$1
    shift
    mkdir -p "$dir"
    # (the private directory is not readable by apt's sandbox user _apt)
    (cd "$dir" && apt-get -o APT::Sandbox::User=root download -qq "$@" </dev/null >&2)
}

# merge /bin, /sbin, /lib* into /usr as Debian does (some packages still ship files there)
merge_usr() {
    local r=$1 d
    for d in bin sbin lib lib32 lib64 libx32; do
        if [ -d "$r/$d" ] && [ ! -L "$r/$d" ]; then
            mkdir -p "$r/usr/$d"
            cp -a "$r/$d/." "$r/usr/$d/"
            rm -rf "${r:?}/$d"
        fi
        if [ -d "$r/usr/$d" ]; then ln -sfn "usr/$d" "$r/$d"; fi
    done
}

# prune ROOT PY - drop what an interpreter in a container does not use
prune() {
    local r=$1 py=$2 f lib=$1/usr/lib/$2 dyn=$1/usr/lib/$2/lib-dynload name names
    rm -rf "${r:?}/usr/share" "${r:?}/usr/lib/binfmt.d"
    mkdir -p "$r/usr/share"
    # glibc: iconv modules, debugging and profiling helpers
    find "$r/usr/lib" -maxdepth 2 \( -name gconv -o -name audit \) -type d -prune \
        -exec rm -rf {} +
    find "$r/usr/lib" -maxdepth 2 \( -name 'libmemusage.so' -o -name 'libpcprofile.so' \
        -o -name 'libc_malloc_debug.so*' -o -name 'libthread_db.so*' \) -delete
    for f in "${DROP_STDLIB[@]}"; do rm -rf "${lib:?}/$f"; done
    rm -f "$dyn"/_test*.so "$dyn"/xx*.so "$dyn"/_xx*.so "$dyn"/_ctypes_test*.so
    # extension modules whose shared libraries were left out
    names=()
    for f in "$dyn"/*.so; do
        name=${f##*/}
        names+=("${name%%.*}")
    done
    mapfile -t names < <(in_root "$r" "/usr/bin/$py" -S -c "$TRY_IMPORTS" "${names[@]}")
    for name in "${names[@]}"; do rm -f "$dyn/$name".*; done
    log "left out the modules whose shared libraries are not in the image: ${names[*]}"
    compgen -G "$dyn/_curses.*" >/dev/null || rm -rf "$lib/curses"
    compgen -G "$dyn/_sqlite3.*" >/dev/null || rm -rf "$lib/sqlite3"
    find "$r" -name __pycache__ -type d -prune -exec rm -rf {} +
}

# build_rootfs TAR PY - unpack the packages in $TMP/debs, prune, test, pack the root filesystem
build_rootfs() {
    local out=$1 py=$2 r=$TMP/rootfs deb a
    mkdir -p "$r"
    for deb in "$TMP"/debs/*.deb; do dpkg-deb -x "$deb" "$r"; done
    merge_usr "$r"
    mkdir -p "$r/etc" "$r/root" "$r/tmp" "$r/proc" "$r/sys" "$r/dev" "$r/var" "$r/usr/local/bin"
    chmod 1777 "$r/tmp"
    ln -sfn "$py" "$r/usr/bin/python3"
    for a in $("$r/usr/bin/busybox" --list); do
        [ -e "$r/usr/bin/$a" ] || [ -e "$r/usr/sbin/$a" ] || ln -s busybox "$r/usr/bin/$a"
    done
    printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' \
        'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' >"$r/etc/passwd"
    printf '%s\n' 'root:x:0:' 'nogroup:x:65534:' >"$r/etc/group"
    prune "$r" "$py"
    # this also leaves the compiled modules the agent imports (only those) in __pycache__
    in_root "$r" python3 -c "$SMOKE" >&2 || die "the python3 in the image does not work"
    in_root "$r" sh -c 'true' || die "the sh in the image does not work"
    tar --numeric-owner --owner=0 --group=0 -C "$r" -cf "$TMP/rootfs.tar" .
    find "$CACHE" -maxdepth 1 -name 'agent-python*.tar' ! -name "${out##*/}" -delete
    mv -f "$TMP/rootfs.tar" "$out"
    rm -rf --one-file-system "$TMP"
    TMP=
}

# resolve - set PY, PKGS, TAR from the apt sources
resolve() {
    local p key
    PY=$(python_version)
    [ -n "$PY" ] || return 1
    mapfile -t PKGS < <(package_list "$PY")
    for p in libc6 zlib1g libexpat1; do
        printf '%s\n' "${PKGS[@]}" | grep -qE "^$p(t64)?$" || die "no $p among the dependencies of $PY"
    done
    # the cache key: every package's candidate version, and this script
    key=$(versions "${PKGS[@]}" | cat - "${BASH_SOURCE[0]}" | sha256sum | cut -c1-16)
    TAR=$CACHE/agent-$PY-$key.tar
}

main() {
    local t0=$SECONDS have size
    command -v apt-get >/dev/null 2>&1 || die "needs apt-get (Debian or a derivative)"
    command -v docker >/dev/null 2>&1 || die "needs the docker CLI"
    # no package lists yet (a fresh machine): apt-cache knows only the installed packages
    apt-cache policy python3-minimal 2>/dev/null | grep -qE '^ +[0-9]+ [a-z+]+:' || apt_update
    resolve || die "the apt sources offer no python3-minimal"
    mkdir -p "$CACHE"
    if [ "$REBUILD" -eq 1 ] || [ ! -s "$TAR" ]; then
        log "building the root filesystem of $PY from ${PKGS[*]}"
        TMP=$(mktemp -d "$CACHE/agent-rootfs.XXXXXX")
        if ! download "$TMP/debs" "${PKGS[@]}"; then
            # a stale package list names files the mirror no longer has
            apt_update
            resolve || die "the apt sources offer no python3-minimal"
            rm -rf "$TMP/debs"
            download "$TMP/debs" "${PKGS[@]}" || die "apt-get download failed"
        fi
        build_rootfs "$TAR" "$PY"
        log "root filesystem $TAR ($(du -h "$TAR" | cut -f1)) built in $((SECONDS - t0))s"
    else
        log "reusing $TAR"
    fi
    have=$(dk "$HOST" image inspect --format '{{.Id}} {{index .Config.Labels "covey.rootfs"}}' \
        "$TAG" 2>/dev/null) || have=
    if [ "${have#* }" != "${TAR##*/}" ]; then
        dk "$HOST" import \
            -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            -c "LABEL covey.rootfs=${TAR##*/}" \
            -c 'CMD ["python3"]' "$TAR" "$TAG" >/dev/null
        # the image this one replaces, unless a container still uses it
        if [ -n "$have" ]; then dk "$HOST" rmi "${have%% *}" >/dev/null 2>&1 || true; fi
    fi
    size=$(dk "$HOST" image inspect --format '{{.Size}}' "$TAG")
    log "$TAG on $HOST: $((size / 1000)) kB ($((SECONDS - t0))s)"
    echo "$TAG"
}

main
