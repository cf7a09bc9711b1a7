#!/usr/bin/env bash
# Podman as reprobox's second container engine (`--engine podman`): Debian's podman, plus the one
# fix it needs in a container (no systemd, inherited rlimits): every `podman run` fails with
# "error setting rlimit type 7" until default_ulimits names the real hard limits. Idempotent.
set -euo pipefail
if ! command -v podman >/dev/null 2>&1; then
  echo "setup-podman: installing podman" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman >/dev/null
fi
nofile="$(ulimit -Hn)"
nproc="$(cat /proc/sys/kernel/pid_max)"
[ "$nofile" = unlimited ] && nofile=1048576
conf_dir=/etc/containers/containers.conf.d
conf="$conf_dir/50-reprobox-ulimits.conf"
want="# written by reprobox scripts/setup-podman.sh: the host's real hard limits
[containers]
default_ulimits = [\"nofile=$nofile:$nofile\", \"nproc=$nproc:$nproc\"]"
mkdir -p "$conf_dir"
if [ ! -f "$conf" ] || [ "$(cat "$conf")" != "$want" ]; then
  printf '%s\n' "$want" > "$conf"
  echo "setup-podman: wrote $conf" >&2
fi
podman info --format '{{.Host.OCIRuntime.Name}}' >/dev/null
echo "setup-podman: $(podman --version)" >&2
