#!/usr/bin/env bash
# The DVC pipeline example end to end, in a throwaway folder:
#   1. a demo git + DVC repository and a virtualenv (pinned requirements from the index); the
#      raw data is generated, `dvc add`ed and pushed to a local DVC remote (a plain folder);
#   2. `dvc repro` (prepare -> train), `dvc push`, then `reprobox capture` (no --cmd: the
#      command is the DVC pipeline, the metrics are DVC's);
#   3. commit, push to a bare "origin", clone it fresh elsewhere: no data there, no DVC cache;
#   4. `reprobox run pipeline` in the clone: pull the data from the DVC remote, rebuild the
#      environment, rerun every stage (`dvc repro --force`), compare metrics and outputs.
# The exit status is reprobox run's: 0 reproduced, 1 differs.
#
# Usage: run-example.sh [WORKDIR]      (default: a new folder under $TMPDIR)
# Environment: PYTHON (interpreter for the demo venv, default python3), BACKEND (auto|docker|venv,
# default auto), REPROBOX (the reprobox command, default: the one on PATH).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
reprobox="${REPROBOX:-$(command -v reprobox || true)}"
if [ -z "$reprobox" ]; then
  echo "run-example: reprobox is not on PATH; run scripts/setup.sh and add .venv/bin to PATH" >&2
  exit 2
fi
dvc="${DVC:-$(command -v dvc || true)}"
if [ -z "$dvc" ]; then
  echo "run-example: DVC is not on PATH: pip install dvc (scripts/setup.sh installs it)" >&2
  exit 2
fi
python="${PYTHON:-python3}"
backend="${BACKEND:-auto}"
work="${1:-$(mktemp -d "${TMPDIR:-/tmp}/reprobox-dvc-XXXXXX")}"
mkdir -p "$work"
work="$(cd "$work" && pwd)"

step() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }
show() { printf '$ %s\n' "$*" >&2; "$@"; }

step "1. a demo project in $work/project"
rm -rf "$work/project" "$work/origin.git" "$work/clone" "$work/dvc-remote"
mkdir -p "$work/project"
cp -r "$here/project/." "$work/project/"
cd "$work/project"
git init -q -b main
git config user.email "demo@example.org"
git config user.name "reprobox demo"
show "$python" -m venv .venv
show .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt
show "$dvc" init -q
show "$dvc" remote add -d storage "$work/dvc-remote"
export VIRTUAL_ENV="$work/project/.venv" PATH="$work/project/.venv/bin:$PATH"
show python generate_data.py
show "$dvc" add -q data/raw.csv
git add . && git commit -q -m "pipeline: prepare -> train, raw data in DVC"

step "2. run the pipeline, push the data, capture"
# Thread counts and hash seed are replayable variables: recorded now, set again on the rerun.
export OMP_NUM_THREADS=1 PYTHONHASHSEED=0
show "$dvc" repro
show "$dvc" push -q
git add -A && git commit -q -m "pipeline results"
show "$reprobox" capture --name pipeline
git add .reprobox && git commit -q -m "reprobox: pipeline"
unset VIRTUAL_ENV
export PATH="${PATH#"$work/project/.venv/bin:"}"
git init -q --bare -b main "$work/origin.git"
git remote add origin "$work/origin.git"
git push -q origin main

step "3. a fresh clone elsewhere: no venv, no data, no DVC cache"
unset OMP_NUM_THREADS PYTHONHASHSEED
show git clone -q "$work/origin.git" "$work/clone"
cd "$work/clone"

if [ "$backend" != "venv" ] && docker info >/dev/null 2>&1; then
  # No registry may be reachable: build the Python base image locally when it is missing.
  base="$("$reprobox" build pipeline --dry-run 2>/dev/null | sed -n 's/^FROM //p' | head -n1)"
  case "$base" in
    python:*-slim-*)
      if ! docker image inspect "$base" >/dev/null 2>&1; then
        pyver="${base#python:}"; pyver="${pyver%%-slim-*}"
        show "$reprobox" base --python "$pyver" --os "${base##*-slim-}"
      fi ;;
  esac
fi

step "4. reproduce"
set +e
show "$reprobox" run pipeline --backend "$backend"
status=$?
set -e
echo "run-example: reprobox run exited with $status (0 reproduced, 1 differs); files in $work" >&2
exit "$status"
