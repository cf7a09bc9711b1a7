#!/usr/bin/env bash
# A real single-node Slurm cluster on this machine (Debian slurm-wlm + munge), for the fan-out
# tests and for trying `reprobox run --on slurm` by hand. Idempotent: installs the packages when
# missing, (re)writes the configuration, starts munged, slurmctld and slurmd unless they answer,
# and waits until the node is idle. No systemd needed (daemons are started directly and stopped
# by their pid files: `bash scripts/start-slurm.sh stop`).
#
# Advertises SLURM_CPUS CPUs (default 4) whatever the machine has (SlurmdParameters=
# config_overrides), so an array of several tasks runs side by side.
set -euo pipefail
cpus="${SLURM_CPUS:-4}"
conf=/etc/slurm/slurm.conf
state=/var/lib/slurm/reprobox
run=/run/slurm-reprobox

stop() {
  for pid in "$run/slurmd.pid" "$run/slurmctld.pid"; do
    if [ -s "$pid" ] && kill -0 "$(cat "$pid")" 2>/dev/null; then kill "$(cat "$pid")"; fi
  done
}
if [ "${1:-}" = stop ]; then stop; exit 0; fi

if ! command -v slurmctld >/dev/null 2>&1 || ! command -v munged >/dev/null 2>&1; then
  echo "start-slurm: installing slurm-wlm and munge" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
fi

# munge: its key, its socket folder, the daemon as the munge user (postinst starts nothing here).
mkdir -p /run/munge /etc/munge /var/lib/munge /var/log/munge
chown munge:munge /run/munge /var/lib/munge /var/log/munge
chmod 0755 /run/munge
if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  if command -v runuser >/dev/null 2>&1; then
    runuser -u munge -- munged --force
  else
    su -s /bin/sh munge -c "munged --force"
  fi
  for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
fi

host="$(hostname -s)"
mkdir -p /etc/slurm "$state/ctld" "$state/d" "$run" /var/log/slurm
chown -R slurm:slurm "$state" "$run" /var/log/slurm
new="$(mktemp)"
cat > "$new" <<CONF
# Written by reprobox scripts/start-slurm.sh: one node, this machine.
ClusterName=reprobox
SlurmctldHost=${host}(127.0.0.1)
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SlurmUser=slurm
SlurmdUser=root
SlurmctldPidFile=${run}/slurmctld.pid
SlurmdPidFile=${run}/slurmd.pid
SlurmdSpoolDir=${state}/d
StateSaveLocation=${state}/ctld
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
MinJobAge=3600
MaxArraySize=10001
KillWait=10
JobCompType=jobcomp/filetxt
JobCompLoc=/var/log/slurm/jobcomp.log
MailProg=/bin/true
NodeName=${host} NodeAddr=127.0.0.1 CPUs=${cpus} State=UNKNOWN
PartitionName=debug Nodes=${host} Default=YES MaxTime=INFINITE State=UP
CONF
changed=0
if ! cmp -s "$new" "$conf"; then install -m 0644 "$new" "$conf"; changed=1; fi
rm -f "$new"

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
if [ "$changed" = 1 ]; then stop; sleep 0.5; fi  # plugins change only with a restart
alive "$run/slurmctld.pid" || slurmctld
alive "$run/slurmd.pid" || slurmd

for _ in $(seq 100); do
  st="$(sinfo -h -n "$host" -o %t 2>/dev/null || true)"
  case "$st" in idle|mix|alloc) break ;; down*|drain*) scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true ;; esac
  sleep 0.2
done
st="$(sinfo -h -n "$host" -o %t 2>/dev/null || true)"
case "$st" in
  idle|mix|alloc) echo "start-slurm: node $host $st with $cpus CPUs" >&2 ;;
  *) echo "start-slurm: node $host is '$st'; see /var/log/slurm/slurmctld.log and slurmd.log" >&2; exit 1 ;;
esac
