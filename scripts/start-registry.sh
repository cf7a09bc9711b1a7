#!/usr/bin/env bash
# A local OCI registry for reprobox's registry tests and for trying `reprobox push` by hand:
# Debian's docker-registry (distribution 2.x) on 127.0.0.1:${REPROBOX_REGISTRY_PORT:-5000}, plain
# HTTP (Docker and reprobox treat 127.0.0.0/8 as an insecure-allowed registry), filesystem storage
# under ${REPROBOX_REGISTRY_DIR:-/var/tmp/reprobox-registry}, deletes enabled, no authentication.
# Installs the package when missing; idempotent: a registry already answering there is kept.
#   scripts/start-registry.sh          start (or keep) it
#   scripts/start-registry.sh stop     stop the one this script started (by its pid file)
# REPROBOX_REGISTRY_READONLY=1 starts it in read-only maintenance mode (it refuses every push).
set -euo pipefail
port="${REPROBOX_REGISTRY_PORT:-5000}"
dir="${REPROBOX_REGISTRY_DIR:-/var/tmp/reprobox-registry}"
addr="127.0.0.1:$port"
pidfile="$dir/registry.pid"

answers() { curl -fsS -o /dev/null --max-time 2 "http://$addr/v2/" 2>/dev/null; }

if [ "${1:-start}" = "stop" ]; then
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    kill "$(cat "$pidfile")"
    for _ in $(seq 50); do answers || break; sleep 0.1; done
  fi
  rm -f "$pidfile"
  exit 0
fi

if answers; then
  echo "start-registry: a registry already answers at $addr" >&2
  exit 0
fi

need=()
command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)
command -v curl >/dev/null 2>&1 || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
  echo "start-registry: installing ${need[*]}" >&2
  # Debian's postinst would start the packaged service with its own (auth, all interfaces)
  # configuration where an init system runs; this script only ever runs its own.
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
bin="$(command -v docker-registry || echo /usr/bin/docker-registry)"

readonly=false
[ "${REPROBOX_REGISTRY_READONLY:-0}" = 1 ] && readonly=true
mkdir -p "$dir/storage"
cat > "$dir/config.yml" <<CONFIG
# written by reprobox scripts/start-registry.sh
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $dir/storage
  delete:
    enabled: true
  maintenance:
    readonly:
      enabled: ${readonly}
  cache:
    blobdescriptor: inmemory
http:
  addr: $addr
  headers:
    X-Content-Type-Options: [nosniff]
CONFIG

nohup "$bin" serve "$dir/config.yml" >"$dir/registry.log" 2>&1 &
echo $! > "$pidfile"
for _ in $(seq 100); do
  if answers; then
    echo "start-registry: registry at $addr (storage $dir/storage, pid $(cat "$pidfile"))" >&2
    exit 0
  fi
  sleep 0.1
done
echo "start-registry: the registry did not answer at $addr; its log:" >&2
tail -20 "$dir/registry.log" >&2 || true
exit 1
