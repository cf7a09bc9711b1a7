#!/usr/bin/env bash
# The scikit-learn example end to end, in a throwaway folder:
#   1. a demo git repository with train.py and a virtualenv (pinned requirements from the index);
#   2. train, then `reprobox capture` (environment, code, metrics, model sha256);
#   3. commit, push to a bare "origin", clone it fresh elsewhere (no venv, no image there);
#   4. `reprobox run baseline` in the clone: rebuild the environment, rerun, compare.
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
python="${PYTHON:-python3}"
backend="${BACKEND:-auto}"
work="${1:-$(mktemp -d "${TMPDIR:-/tmp}/reprobox-sklearn-XXXXXX")}"
mkdir -p "$work"
work="$(cd "$work" && pwd)"

step() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }
show() { printf '$ %s\n' "$*" >&2; "$@"; }

step "1. a demo project in $work/project"
rm -rf "$work/project" "$work/origin.git" "$work/clone"
mkdir -p "$work/project"
cp -r "$here/project/." "$work/project/"
cd "$work/project"
git init -q -b main
git config user.email "demo@example.org"
git config user.name "reprobox demo"
show "$python" -m venv .venv
show .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt
git add . && git commit -q -m "scikit-learn digits classifier"

step "2. train, then capture"
# Thread counts and hash seed are replayable variables: recorded now, set again on the rerun.
export OMP_NUM_THREADS=1 PYTHONHASHSEED=0
(
  export VIRTUAL_ENV="$work/project/.venv" PATH="$work/project/.venv/bin:$PATH"
  show python train.py
  show "$reprobox" capture --name baseline --cmd "python train.py" \
    --metrics metrics.json --output model.pkl
)
git add .reprobox && git commit -q -m "reprobox: baseline"
git init -q --bare -b main "$work/origin.git"
git remote add origin "$work/origin.git"
git push -q origin main

step "3. a fresh clone elsewhere: no venv, no metrics, no model"
unset OMP_NUM_THREADS PYTHONHASHSEED
show git clone -q "$work/origin.git" "$work/clone"
cd "$work/clone"

if [ "$backend" != "venv" ] && docker info >/dev/null 2>&1; then
  # No registry may be reachable: build the Python base image locally when it is missing.
  base="$("$reprobox" build baseline --dry-run 2>/dev/null | sed -n 's/^FROM //p' | head -n1)"
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
show "$reprobox" run baseline --backend "$backend"
status=$?
set -e
echo "run-example: reprobox run exited with $status (0 reproduced, 1 differs); files in $work" >&2
exit "$status"
