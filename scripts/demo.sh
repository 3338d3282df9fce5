#!/usr/bin/env bash
# A real covey job on a private local engine, from nothing:
#   installs what is missing, starts a private dockerd (scripts/engine.sh, name "demo"),
#   runs one job and a small batch, then takes the engine down again.
# Your own Docker engine, if you run one, is never touched.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ ! -x .venv/bin/covey ]]; then
    echo "demo: installing covey into .venv" >&2
    python3 -m venv .venv
    .venv/bin/python -m pip install --quiet -e .
fi
trap 'bash scripts/engine.sh down --name demo >/dev/null 2>&1 || true' EXIT
eval "$(bash scripts/engine.sh up --name demo)"
export COVEY_DB="${COVEY_DB:-$PWD/.engine/demo.db}"

echo "demo: covey run covey-test/busybox sh -c 'echo hello from \$(hostname); exit 3'" >&2
set +e
.venv/bin/covey run covey-test/busybox sh -c 'echo hello from $(hostname); echo to stderr >&2; exit 3'
echo "demo: exit code $? (the job's own)" >&2
set -e

batch=$(mktemp --suffix=.yaml)
cat > "$batch" <<'YAML'
defaults:
  image: covey-test/busybox
  deploy: {resources: {reservations: {cpus: "0.5", memory: 16M}}}
  timeout: 1m
jobs:
  - name: square
    command: ["sh", "-c", "echo $((COVEY_ITEM * COVEY_ITEM))"]
    for_each: {range: [1, 21]}
YAML
echo "demo: covey batch (20 jobs, 0.5 CPU reserved each)" >&2
.venv/bin/covey batch "$batch"
.venv/bin/covey ls --limit 5
rm -f "$batch"
