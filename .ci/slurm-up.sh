#!/usr/bin/env bash
# Bring up a single-node Slurm cluster on this machine (Debian 12, as root) so
# that CI can run submitit jobs through it: munged + slurmctld + slurmd, one
# node named after `hostname -s`, one partition `debug`, no accounting daemon.
# Safe to run again while up (it only restarts what is down or reconfigured).
# The config goes to /etc/slurm/slurm.conf so that sbatch/srun/squeue work
# from a plain shell; state, spool, pid and log files go under $SLURM_TMP.
# Stop it with .ci/slurm-down.sh.
set -euo pipefail

SLURM_TMP="${SLURM_TMP:-/tmp/gk-slurm}"
SLURM_WAIT_S="${SLURM_WAIT_S:-60}"
CONF_DIR=/etc/slurm
CONF="$CONF_DIR/slurm.conf"
MUNGE_KEY=/etc/munge/munge.key

log() { echo "slurm-up: $*" >&2; }
die() {
    echo "slurm-up: FAILED: $*" >&2
    local f n
    for f in munged:5 slurmctld:20 slurmd:20; do
        n="${f#*:}"; f="$SLURM_TMP/log/${f%%:*}.log"
        if [ -s "$f" ]; then
            echo "----- last $n lines of $f -----" >&2
            tail -n "$n" "$f" >&2 || true
        fi
    done
    exit 1
}

[ "$(id -u)" -eq 0 ] || die "must run as root (installs packages, runs the daemons as root)"

# ---------------------------------------------------------------- packages
PKGS=(slurm-wlm slurmctld slurmd slurm-client slurm-wlm-basic-plugins munge)
missing=()
for p in "${PKGS[@]}"; do
    if [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" != "install ok installed" ]; then
        missing+=("$p")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]} (apt-get)"
    # Keep the packages' maintainer scripts from starting daemons themselves
    # (this machine has no systemd as PID 1; we start them below, our way).
    policy_made=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        policy_made=1
    fi
    apt_install() {
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            -o Dpkg::Use-Pty=0 slurm-wlm munge >"$SLURM_TMP/apt.log" 2>&1
    }
    mkdir -p "$SLURM_TMP"
    rc=0
    # The package lists may be stale or absent: update once and retry on failure.
    apt_install || { apt-get update -qq >>"$SLURM_TMP/apt.log" 2>&1 || true; apt_install; } || rc=$?
    [ "$policy_made" -eq 1 ] && rm -f /usr/sbin/policy-rc.d
    if [ "$rc" -ne 0 ]; then
        tail -n 20 "$SLURM_TMP/apt.log" >&2 || true
        die "apt-get install slurm-wlm munge failed (see $SLURM_TMP/apt.log)"
    fi
fi

# ---------------------------------------------------------------- folders
mkdir -p "$SLURM_TMP"/{state,spool,log,run} "$CONF_DIR"
mkdir -p /run/munge /var/lib/munge /var/log/munge /etc/munge
chmod 755 /run/munge
chmod 700 /var/lib/munge /var/log/munge /etc/munge

# ---------------------------------------------------------------- munge
if [ ! -s "$MUNGE_KEY" ]; then
    if command -v mungekey >/dev/null 2>&1; then
        mungekey --create --keyfile="$MUNGE_KEY" --force >/dev/null
    else
        dd if=/dev/urandom of="$MUNGE_KEY" bs=1 count=1024 status=none
    fi
fi
# munged runs as root here, so the key (and its folders) must belong to root.
chown root:root "$MUNGE_KEY" /etc/munge /var/lib/munge /var/log/munge /run/munge
chmod 400 "$MUNGE_KEY"

munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }
if ! munge_ok; then
    if [ -s /run/munge/munged.pid ]; then
        kill "$(cat /run/munge/munged.pid)" 2>/dev/null || true
        sleep 1
    fi
    rm -f /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock /run/munge/munged.pid
    munged --force --log-file="$SLURM_TMP/log/munged.log" \
        || die "munged did not start"
    for _ in $(seq 1 50); do munge_ok && break; sleep 0.1; done
    munge_ok || die "munged started but 'munge -n | unmunge' fails"
fi

# ---------------------------------------------------------------- config
node="$(hostname -s)"
cpus="$(nproc)"
mem_mb=$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024 ))
# Leave ~5% (at least 512 MB) for the OS and the daemons.
margin=$(( mem_mb / 20 )); [ "$margin" -lt 512 ] && margin=512
real_mem=$(( mem_mb - margin ))
[ "$real_mem" -lt 512 ] && real_mem=$(( mem_mb / 2 ))
def_mem=$(( real_mem / cpus / 2 ))   # default --mem-per-cpu when a job sets none

new_conf="$(cat <<EOF
# Written by .ci/slurm-up.sh: single-node CI cluster. Do not edit by hand.
ClusterName=gkci
SlurmctldHost=${node}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true
SwitchType=switch/none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SlurmdParameters=config_overrides
ReturnToService=2
# Reject at submission (not pend forever) jobs that ask more than the node has.
EnforcePartLimits=ALL

StateSaveLocation=${SLURM_TMP}/state
SlurmdSpoolDir=${SLURM_TMP}/spool
SlurmctldPidFile=${SLURM_TMP}/run/slurmctld.pid
SlurmdPidFile=${SLURM_TMP}/run/slurmd.pid
SlurmctldLogFile=${SLURM_TMP}/log/slurmctld.log
SlurmdLogFile=${SLURM_TMP}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info

SchedulerType=sched/backfill
SchedulerParameters=sched_min_interval=0,batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=${def_mem}

AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=${SLURM_TMP}/jobcomp.txt

MessageTimeout=10
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
KillWait=5
MinJobAge=86400
WaitTime=0

NodeName=${node} NodeAddr=127.0.0.1 NodeHostname=${node} CPUs=${cpus} RealMemory=${real_mem} State=UNKNOWN
PartitionName=debug Nodes=${node} Default=YES MaxTime=INFINITE State=UP
EOF
)"

conf_changed=1
if [ -f "$CONF" ] && [ "$(cat "$CONF")" = "$new_conf" ]; then
    conf_changed=0
else
    printf '%s\n' "$new_conf" >"$CONF"
fi
chmod 644 "$CONF"

# ---------------------------------------------------------------- sacct shim
# With no slurmdbd the real sacct always fails ("Slurm accounting storage is
# disabled"). submitit polls job states only through
#   sacct -o JobID,State,NodeList --parsable2 -j ID [-j ID ...]
# and, when that fails, keeps every job's state at UNKNOWN: results still
# arrive (it watches the result pickle), but a job that dies without writing
# one (scancel, time limit, SIGKILL) never counts as done and job.result()
# hangs forever. This shim answers such queries from slurmctld's own memory
# (squeue -t all: finished jobs stay there for MinJobAge) and hands any other
# sacct call to the real one. Set SLURM_SACCT_SHIM=0 to not install it.
SHIM=/usr/local/bin/sacct
if [ "${SLURM_SACCT_SHIM:-1}" != "0" ]; then
    mkdir -p /usr/local/bin
    cat >"$SHIM.tmp" <<'SHIM_EOF'
#!/usr/bin/env bash
# Installed by .ci/slurm-up.sh (single-node CI cluster without slurmdbd).
# Answers job-state queries such as submitit's
#   sacct -o JobID,State,NodeList --parsable2 -j 12 -j 13
# from slurmctld (squeue -t all); anything it does not understand goes to
# the real /usr/bin/sacct.
real=/usr/bin/sacct
orig=("$@")
fields="" jobs="" sep="|" trail="" header=1
while [ "$#" -gt 0 ]; do
    case "$1" in
        -o|--format) fields="$2"; shift ;;
        --format=*) fields="${1#*=}" ;;
        -j|--jobs) jobs="${jobs:+$jobs,}$2"; shift ;;
        --jobs=*) jobs="${jobs:+$jobs,}${1#*=}" ;;
        -P|--parsable2) trail="" ;;
        -p|--parsable) trail="|" ;;
        -n|--noheader) header=0 ;;
        -X|--allocations|-a|--allusers) ;;
        *) exec "$real" "${orig[@]}" ;;
    esac
    shift
done
if [ -z "$fields" ] || [ -z "$jobs" ]; then exec "$real" "${orig[@]}"; fi
fmt="" names=""
IFS=, read -r -a flist <<<"$fields"
for f in "${flist[@]}"; do
    name="${f%%%*}"
    case "${name,,}" in
        jobid|jobidraw) c='%i' ;;
        state) c='%T' ;;
        nodelist) c='%N' ;;
        jobname) c='%j' ;;
        partition) c='%P' ;;
        user) c='%u' ;;
        *) exec "$real" "${orig[@]}" ;;
    esac
    fmt="${fmt:+$fmt$sep}$c"
    names="${names:+$names$sep}$name"
done
[ "$header" -eq 1 ] && printf '%s%s\n' "$names" "$trail"
squeue -h -t all -j "$jobs" -o "$fmt" 2>/dev/null | sed "s/\$/$trail/"
exit 0
SHIM_EOF
    chmod 755 "$SHIM.tmp"
    mv -f "$SHIM.tmp" "$SHIM"
    if [ "$(command -v sacct)" != "$SHIM" ]; then
        log "warning: 'sacct' resolves to $(command -v sacct), not $SHIM: put /usr/local/bin first in PATH for submitit"
    fi
elif [ -f "$SHIM" ] && grep -q 'slurm-up.sh' "$SHIM"; then
    rm -f "$SHIM"
fi

# ---------------------------------------------------------------- slurm daemons
alive() {  # alive PIDFILE NAME
    [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null \
        && [ "$(cat /proc/"$(cat "$1")"/comm 2>/dev/null)" = "$2" ]
}
stop_daemon() {  # stop_daemon PIDFILE NAME
    if alive "$1" "$2"; then
        local pid; pid="$(cat "$1")"
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$1"
}

ctld_pid="$SLURM_TMP/run/slurmctld.pid"
slurmd_pid="$SLURM_TMP/run/slurmd.pid"
if [ "$conf_changed" -eq 1 ]; then
    stop_daemon "$slurmd_pid" slurmd
    stop_daemon "$ctld_pid" slurmctld
fi
started=0
if ! alive "$ctld_pid" slurmctld; then
    rm -f "$ctld_pid"
    slurmctld -f "$CONF" || die "slurmctld did not start"
    started=1
fi
if ! alive "$slurmd_pid" slurmd; then
    rm -f "$slurmd_pid"
    slurmd -f "$CONF" -N "$node" || die "slurmd did not start"
    started=1
fi

# ---------------------------------------------------------------- wait for idle
state=""
deadline=$(( SECONDS + SLURM_WAIT_S ))
while [ "$SECONDS" -lt "$deadline" ]; do
    state="$(sinfo -h -N -n "$node" -o '%t' 2>/dev/null | head -n 1 || true)"
    case "$state" in
        idle|mix|alloc) break ;;
        down|drain|drng|down\*|drain\*)
            # ReturnToService=2 should clear this; nudge it once registered.
            scontrol update NodeName="$node" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    sleep 0.5
done
case "$state" in
    idle|mix|alloc) ;;
    *) die "node $node not idle after ${SLURM_WAIT_S}s (sinfo state: '${state:-none}'; reason: $(sinfo -h -N -n "$node" -o '%E' 2>/dev/null || true))" ;;
esac

# After a restart slurmctld reports the node's saved state ("idle") before
# slurmd has registered, and its scheduler only starts a few seconds in: run
# one tiny job so that "up" means jobs really run.
if [ "$started" -eq 1 ] && [ "$state" = idle ]; then
    left=$(( deadline - SECONDS )); [ "$left" -lt 15 ] && left=15
    timeout "$left" srun --quiet -N1 -n1 -t 1 --mem=16M -J slurm-up-check true >/dev/null 2>&1 \
        || die "test job 'srun true' did not run within ${left}s"
fi

echo "slurm up: node ${node}, ${cpus} CPUs, ${real_mem} MB, partition debug (logs: ${SLURM_TMP}/log)"
