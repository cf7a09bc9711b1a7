#!/usr/bin/env bash
# Set up a fresh Debian/Ubuntu machine for reprobox: system tools, a running Docker daemon, and a
# virtualenv (.venv) with reprobox and its test tools installed. Idempotent: safe to run again.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"

need=()
command -v git >/dev/null 2>&1 || need+=(git)
command -v jq >/dev/null 2>&1 || need+=(jq)   # the GitHub Actions examples' scripts, run by the tests
command -v readelf >/dev/null 2>&1 || need+=(binutils)   # the ELF parser is checked against readelf
command -v openssl >/dev/null 2>&1 || need+=(openssl)    # a TLS test index with its own certificate
command -v curl >/dev/null 2>&1 || need+=(curl)
# Libraries the scenario tests' projects load (tests/scenarios/*/recipe.toml, debian-packages):
# libmagic (also `reprobox record`'s tests) and libpng through ctypes, libGL and GLib for opencv-python.
for pkg in libmagic1 libgl1 libglib2.0-0 libpng16-16; do
  dpkg-query -W -f '${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# Interpreters the tests ask for, built by pyenv (installed into ~/.pyenv when missing):
# - 3.11.7 with a shared libpython: the one that runs the tests (.venv; the conda tests package
#   it, `reprobox base` stages it) and the scenarios' default (tests/scenarios/*/recipe.toml);
# - 3.10.13: the python-3-10 scenario;
# - 3.8, 3.9, 3.12, 3.13: the probe runs on each (tests/integration/test_probe_real.py);
# - 2.7.18: a too-old interpreter is refused by name (tests/unit/capture/test_python.py).
# A version already built is left alone, so a second run only checks.
PYENV_ROOT="${PYENV_ROOT:-$HOME/.pyenv}"
pythons=(3.11.7 3.10.13 3.8.18 3.9.18 3.12.1 3.13.0 2.7.18)
missing=()
for version in "${pythons[@]}"; do
  [ -x "$PYENV_ROOT/versions/$version/bin/python${version%.*}" ] || missing+=("$version")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ ! -x "$PYENV_ROOT/bin/pyenv" ] && ! command -v pyenv >/dev/null 2>&1; then
    echo "setup: installing pyenv into $PYENV_ROOT" >&2
    git clone -q --depth 1 https://github.com/pyenv/pyenv.git "$PYENV_ROOT"
  fi
  # What CPython's build needs for the modules the tests use (ssl, sqlite3, lzma, ctypes...).
  build=()
  for pkg in build-essential libssl-dev zlib1g-dev libbz2-dev libreadline-dev libsqlite3-dev \
             libffi-dev liblzma-dev libncurses-dev tk-dev uuid-dev; do
    dpkg-query -W -f '${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
      || build+=("$pkg")
  done
  if [ ${#build[@]} -gt 0 ]; then
    echo "setup: installing the CPython build dependencies ${build[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${build[@]}" >/dev/null
  fi
  pyenv_bin="$(command -v pyenv || echo "$PYENV_ROOT/bin/pyenv")"
  for version in "${missing[@]}"; do
    echo "setup: building CPython $version with pyenv" >&2
    # (2.7.18's ssl module needs OpenSSL 1.1: where only OpenSSL 3 is installed pyenv refuses the
    # build, and the one test that runs 2.7 says so.)
    PYENV_ROOT="$PYENV_ROOT" PYTHON_CONFIGURE_OPTS="--enable-shared" \
      "$pyenv_bin" install -s "$version" \
      || echo "setup: could not build CPython $version with pyenv (its tests fail on CI)" >&2
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

# The tests run on pyenv's 3.11.7 (a relocatable build with a shared libpython) when it is there.
default_py="python3"
pyenv311="$PYENV_ROOT/versions/3.11.7/bin/python3.11"
[ -x "$pyenv311" ] && default_py="$pyenv311"
py="${PYTHON:-$default_py}"
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($py --version 2>&1)" >&2
  "$py" -m venv .venv
fi
# The host's pip configuration (index, extra indexes, CA bundle) applies as is.
.venv/bin/python -m pip install -q -e ".[test]"
git config --global user.email >/dev/null 2>&1 || git config --global user.email "reprobox@localhost"
git config --global user.name >/dev/null 2>&1 || git config --global user.name "reprobox"
echo "setup: ready ($(.venv/bin/reprobox --version))" >&2
