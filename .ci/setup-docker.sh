#!/usr/bin/env bash
# Make sure this machine has a Docker daemon that answers and debootstrap (for `reprobox base`).
#
# Installs docker.io and debootstrap with apt-get when they are missing, starts the daemon when
# none answers (systemd when it runs, else dockerd in the background) and waits until it answers.
# Idempotent: on a machine that is already set up it only checks. Needs root to install or start
# anything. Debian's docker.io client (20.10) carries BuildKit itself, so builds get cache mounts
# and secrets without the buildx plugin.
set -euo pipefail

log() { echo "setup-docker: $*" >&2; }

client=""
for candidate in /usr/bin/docker "$(command -v docker 2>/dev/null || true)"; do
  if [ -n "$candidate" ] && [ -x "$candidate" ]; then client="$candidate"; break; fi
done

answers() { [ -n "$client" ] && timeout 20 "$client" info >/dev/null 2>&1; }

need=()
[ -x /usr/bin/docker ] || command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    log "missing ${need[*]}; run this script as root (or install them: apt-get install ${need[*]})"
    exit 1
  fi
  log "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" ca-certificates >/dev/null
  client=/usr/bin/docker
fi

if answers; then
  log "the Docker daemon answers ($("$client" version --format '{{.Server.Version}}' 2>/dev/null))"
  exit 0
fi

if [ "$(id -u)" != 0 ]; then
  log "no Docker daemon answers and only root can start one: sudo $0"
  exit 1
fi

if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  log "starting docker with systemd"
  systemctl start docker || true
fi
if ! answers; then
  dockerd_bin="$(command -v dockerd || echo /usr/sbin/dockerd)"
  if ! pgrep -x dockerd >/dev/null 2>&1; then
    log "starting $dockerd_bin in the background (log: /var/log/dockerd.log)"
    nohup setsid "$dockerd_bin" >/var/log/dockerd.log 2>&1 </dev/null &
  fi
fi

for _ in $(seq 1 60); do
  if answers; then
    log "the Docker daemon answers"
    exit 0
  fi
  sleep 1
done
log "the Docker daemon did not answer within 60 s; see /var/log/dockerd.log"
tail -n 20 /var/log/dockerd.log >&2 2>/dev/null || true
exit 1
