#!/usr/bin/env bash
# Set up this machine (scripts/setup.sh) and run the whole test suite: unit tests, then the
# integration tests against a real Docker daemon, real git, real DVC and the real package index.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
bash scripts/setup.sh || { echo "test: setup failed" >&2; exit 1; }
export PATH="$here/.venv/bin:$PATH"
lint=0
if [ $# -eq 0 ]; then
  # The whole suite starts with the house rules: formatted, lint-clean, typed. A failure fails
  # the run, after the tests have said what they have to say too.
  bash scripts/lint.sh || { echo "test: scripts/lint.sh failed (see above)" >&2; lint=1; }
fi
if [ $# -gt 0 ]; then
  .venv/bin/python -m pytest "$@"
  rc=$?
else
  # The scenario tests (tests/scenarios) run apart, in parallel workers: each case's capture is
  # shared by its two backend tests, which --dist loadscope keeps on one worker.
  .venv/bin/python -m pytest --ignore=tests/scenarios
  rc=$?
  .venv/bin/python -m pytest tests/scenarios -n "${REPROBOX_SCENARIO_WORKERS:-3}" --dist loadscope
  rc2=$?
  if [ "$rc" -eq 0 ]; then rc=$rc2; fi
fi
if [ "$rc" -eq 0 ] && [ "$lint" -ne 0 ]; then
  rc=1
fi
if [ "$rc" -eq 5 ]; then
  echo "test: pytest collected no tests: that is a failure, not a pass" >&2
  exit 1
fi
exit "$rc"
