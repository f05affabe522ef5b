#!/usr/bin/env bash
# Stop the single-node CI Slurm cluster started by .ci/slurm-up.sh: cancel
# every job, then stop slurmd, slurmctld and munged. Quiet; never fails.
# Leaves the packages, /etc/slurm/slurm.conf, the munge key, the sacct shim
# and $SLURM_TMP (state, logs) in place; slurm-up.sh starts it all again.
set -uo pipefail

SLURM_TMP="${SLURM_TMP:-/tmp/gk-slurm}"

# stop PIDFILE NAME: TERM, wait up to 5 s, then KILL; only if the pid file's
# process really is NAME (never a stale pid that now belongs to someone else).
stop() {
    local pidfile="$1" name="$2" pid
    [ -s "$pidfile" ] || return 0
    pid="$(cat "$pidfile" 2>/dev/null)"
    if [ -n "$pid" ] && [ "$(cat /proc/"$pid"/comm 2>/dev/null)" = "$name" ]; then
        kill "$pid" 2>/dev/null
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null
    fi
    rm -f "$pidfile"
}

{
    if command -v scancel >/dev/null 2>&1 && [ -s "$SLURM_TMP/run/slurmctld.pid" ]; then
        ids="$(timeout 10 squeue -h -o %A 2>/dev/null | sort -u)"
        # shellcheck disable=SC2086
        [ -n "$ids" ] && timeout 15 scancel --quiet $ids
        # Give slurmd a moment to signal the job steps before it goes away.
        for _ in $(seq 1 20); do
            [ -z "$(timeout 5 squeue -h -t running,completing -o %i 2>/dev/null)" ] && break
            sleep 0.5
        done
    fi
    stop "$SLURM_TMP/run/slurmd.pid" slurmd
    stop "$SLURM_TMP/run/slurmctld.pid" slurmctld
    stop /run/munge/munged.pid munged
    rm -f /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock
} >/dev/null 2>&1

exit 0
