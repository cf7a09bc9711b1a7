#!/usr/bin/env bash
# Set up this machine and run reprobox's main job on the scikit-learn example:
# train, `reprobox capture`, push, clone fresh elsewhere, `reprobox run` (rebuild + rerun + compare).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$here/scripts/setup.sh"
export PATH="$here/.venv/bin:$PATH"
exec bash "$here/examples/sklearn-train/run-example.sh" "$@"
