#!/usr/bin/env bash
# Set up a fresh Debian/Ubuntu machine for reprobox: system tools, a running Docker daemon, and a
# virtualenv (.venv) with reprobox and its test tools installed. Idempotent: safe to run again.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"

need=()
command -v git >/dev/null 2>&1 || need+=(git)
command -v jq >/dev/null 2>&1 || need+=(jq)   # the GitHub Actions examples' scripts, run by the tests
# Libraries the scenario tests' projects load (tests/scenarios/*/recipe.toml, debian-packages):
# libmagic (also `reprobox record`'s tests) and libpng through ctypes, libGL and GLib for opencv-python.
for pkg in libmagic1 libgl1 libglib2.0-0 libpng16-16; do
  dpkg-query -W -f '${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# Interpreters the scenario tests ask for besides the default one (recipe.toml, python): pyenv
# builds them when it is there and they are missing.
if command -v pyenv >/dev/null 2>&1 || [ -x "$HOME/.pyenv/bin/pyenv" ]; then
  pyenv_bin="$(command -v pyenv || echo "$HOME/.pyenv/bin/pyenv")"
  for version in 3.10.13; do
    "$pyenv_bin" versions --bare 2>/dev/null | grep -qx "$version" \
      || "$pyenv_bin" install -s "$version" \
      || echo "setup: could not install CPython $version with pyenv" >&2
  done
fi

# Docker daemon + debootstrap (for `reprobox base`): installed and started when missing.
bash "$here/.ci/setup-docker.sh"

# A local OCI registry on 127.0.0.1:5000 (Debian's docker-registry) for `reprobox push` and its
# tests, and Podman as the second container engine: both installed and started when missing.
bash "$here/scripts/start-registry.sh"
bash "$here/scripts/setup-podman.sh"
# A single-node Slurm (slurm-wlm + munge) for the fan-out tests: installed and started when
# missing (the fan-out tests also start it, and the local registry, themselves).
if [ "$(id -u)" = 0 ]; then
  bash "$here/scripts/start-slurm.sh"
fi

py="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($py --version 2>&1)" >&2
  "$py" -m venv .venv
fi
# The host's pip configuration (index, extra indexes, CA bundle) applies as is.
.venv/bin/python -m pip install -q -e ".[test]"
git config --global user.email >/dev/null 2>&1 || git config --global user.email "reprobox@localhost"
git config --global user.name >/dev/null 2>&1 || git config --global user.name "reprobox"
echo "setup: ready ($(.venv/bin/reprobox --version))" >&2
