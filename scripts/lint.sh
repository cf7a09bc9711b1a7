#!/usr/bin/env bash
# The house rules, checked: `ruff format` (formatted as committed), `ruff check` and mypy.
# scripts/test.sh runs this before the suite; run it alone with `bash scripts/lint.sh`.
set -uo pipefail
cd "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin=.venv/bin
rc=0
"$bin/ruff" format --check reprobox tests benchmarks || rc=1
"$bin/ruff" check reprobox tests benchmarks || rc=1
"$bin/mypy" reprobox || rc=1
exit "$rc"
