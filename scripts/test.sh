#!/usr/bin/env bash
# Set up this machine (scripts/setup.sh) and run the whole test suite: unit tests, then the
# integration tests against a real Docker daemon, real git, real DVC and the real package index.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
bash scripts/setup.sh || { echo "test: setup failed" >&2; exit 1; }
export PATH="$here/.venv/bin:$PATH"
.venv/bin/python -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "test: pytest collected no tests: that is a failure, not a pass" >&2
  exit 1
fi
exit "$rc"
