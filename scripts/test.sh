#!/usr/bin/env bash
# test.sh - the one test command: lint, typecheck, the tests (unit + real private engines), soak.
#
# usage: scripts/test.sh [PYTEST ARGS...]
#   e.g. scripts/test.sh -k harness -x
#
# Installs what a fresh Debian machine lacks (apt: docker.io busybox-static iproute2, and
# python3-venv/python3-pip when Python lacks them; pip: nox; the cluster tests' registries
# add docker-registry and apache2-utils through scripts/cluster.sh), then runs
#   python3 -m nox -s lint typecheck tests -- PYTEST ARGS
#   python3 -m nox -s browser   (the web dashboard in headless chromium; apt: chromium
#                                chromium-driver; about a minute)
#   python3 -m nox -s soak      (when those pass; about 4 minutes)
# The engines the tests need are started (and stopped) by tests/conftest.py through
# scripts/engine.sh and scripts/cluster.sh; the soak (soak/driver.py: 300 jobs through
# `covey supervise` under kill -9, a dockerd restart, a cut event stream and cancels) starts
# and stops its own engine "soak". Needs root or passwordless sudo.
# Environment: COVEY_KEEP_ENGINE=1 keeps the engines up between runs;
# COVEY_TEST_DOCKER_HOST=unix:///... runs the swarm tests against an engine of yours;
# COVEY_BROWSER=0 skips the browser tests; COVEY_SOAK=0 skips the soak; COVEY_SOAK_SEED=N
# repeats a soak run.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

case ${1:-} in
-h | --help)
    sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
esac

cd "$(dirname "$0")/.."
# shellcheck source=lib-engine.sh
. scripts/lib-engine.sh
COVEY_PROG=test.sh

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi
}

apt_install() {
    log "installing $* with apt-get"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "$@" </dev/null
}

# the engine packages (the same check the engine scripts make)
if [ "$(id -u)" -eq 0 ]; then
    ensure_packages
else
    sudo -n bash -c '. scripts/lib-engine.sh && ensure_packages' </dev/null ||
        die "root or passwordless sudo is needed to install packages and run the engines"
fi

# nox creates virtualenvs: Debian's python3 needs python3-venv (ensurepip) for that
if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    apt_install python3-venv python3-pip
fi

NOX_PY=python3
if ! python3 -c 'import nox' >/dev/null 2>&1 &&
    .nox/.bootstrap/bin/python -c 'import nox' >/dev/null 2>&1; then
    NOX_PY=.nox/.bootstrap/bin/python
elif ! python3 -c 'import nox' >/dev/null 2>&1; then
    log "installing nox with pip"
    if ! python3 -m pip install --quiet nox </dev/null; then
        # Debian's system Python is "externally managed": use a private venv for nox instead
        log "pip refused the system Python; installing nox into .nox/.bootstrap"
        python3 -m venv .nox/.bootstrap
        .nox/.bootstrap/bin/python -m pip install --quiet nox </dev/null
        NOX_PY=.nox/.bootstrap/bin/python
    fi
fi

"$NOX_PY" -m nox -s lint typecheck tests -- "$@" </dev/null
if [ "${COVEY_BROWSER:-1}" = 0 ]; then
    log "COVEY_BROWSER=0: not running the browser tests"
else
    "$NOX_PY" -m nox -s browser </dev/null
fi
if [ "${COVEY_SOAK:-1}" = 0 ]; then
    log "COVEY_SOAK=0: not running the soak"
    exit 0
fi
exec "$NOX_PY" -m nox -s soak </dev/null
