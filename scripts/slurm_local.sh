#!/usr/bin/env bash
# A single-node Slurm on this machine, from the distribution's packages, for trying survae's
# cluster path (hydra/launcher=slurm) and for its cluster tests.
#
#   sudo scripts/slurm_local.sh start    # install slurm-wlm + munge if missing, start the daemons
#   eval "$(scripts/slurm_local.sh env)" # point sinfo/sbatch/run.py at it (SLURM_CONF)
#   scripts/slurm_local.sh status        # the daemons and `sinfo`
#   sudo scripts/slurm_local.sh stop     # stop exactly the daemons `start` started
#
# Everything lives under SURVAE_SLURM_DIR (default /tmp/survae-slurm): slurm.conf, its own
# munge key and socket, state, logs and PID files; nothing under /etc is changed and a system
# Slurm or munge already running is left alone (set SURVAE_SLURM_PORT if it uses 6817/6818).
# One partition `debug` with this machine's CPUs and memory; jobs may be requeued
# (JobRequeue=1, PreemptMode=REQUEUE) and a requeued job starts again after
# SURVAE_SLURM_REQUEUE_DELAY seconds (default 10; Slurm's own default is 120).
set -euo pipefail

DIR=${SURVAE_SLURM_DIR:-/tmp/survae-slurm}
PORT=${SURVAE_SLURM_PORT:-6817}
DELAY=${SURVAE_SLURM_REQUEUE_DELAY:-10}
CONF=$DIR/slurm.conf
DAEMONS=(munged slurmctld slurmd)

say() { echo "[slurm_local] $*"; }
die() { echo "[slurm_local] error: $*" >&2; exit 1; }

pidfile() { echo "$DIR/run/$1.pid"; }

running() { # running NAME: the daemon's PID file names a live process of that name
    local f pid
    f=$(pidfile "$1")
    [[ -s $f ]] || return 1
    pid=$(<"$f")
    [[ -r /proc/$pid/comm && $(</proc/$pid/comm) == "$1"* ]]
}

install_packages() {
    local missing=()
    command -v munged >/dev/null || missing+=(munge)
    command -v slurmctld >/dev/null || missing+=(slurmctld)
    command -v slurmd >/dev/null || missing+=(slurmd)
    command -v sbatch >/dev/null || missing+=(slurm-client)
    [[ ${#missing[@]} -eq 0 ]] && return
    say "installing ${missing[*]} (apt-get)"
    command -v apt-get >/dev/null || die "no apt-get: install slurm-wlm and munge yourself"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
}

write_config() {
    local cpus mem_mb
    cpus=$(nproc)
    mem_mb=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
    mkdir -p "$DIR"/{run,log,state,spool,munge}
    chmod 755 "$DIR" "$DIR/munge"
    cat >"$CONF" <<EOF
# written by scripts/slurm_local.sh: a one-node Slurm for trying survae's cluster path
ClusterName=survae-local
SlurmctldHost=localhost
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$DIR/munge/munge.socket,cred_expire=$DELAY
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/log/jobcomp.log
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
SlurmdParameters=config_overrides
ReturnToService=2
JobRequeue=1
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
KillWait=30
MinJobAge=3600
MailProg=/bin/true
SlurmctldPidFile=$(pidfile slurmctld)
SlurmdPidFile=$(pidfile slurmd)
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP PreemptMode=REQUEUE
EOF
    if [[ ! -s $DIR/munge/munge.key ]]; then
        (umask 077 && dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none)
    fi
}

start() {
    [[ $(id -u) -eq 0 ]] || die "start needs root (the daemons run jobs as their users): sudo $0 start"
    install_packages
    local name
    for name in "${DAEMONS[@]}"; do
        running "$name" && die "$name already runs (PID $(<"$(pidfile "$name")")); '$0 stop' first"
    done
    write_config
    export SLURM_CONF=$CONF
    munged --force --socket="$DIR/munge/munge.socket" --key-file="$DIR/munge/munge.key" \
        --pid-file="$(pidfile munged)" --log-file="$DIR/log/munged.log" \
        --seed-file="$DIR/munge/munged.seed"
    wait_for "munged" running munged
    # -c: a fresh controller state (no jobs of an earlier start); -i: ignore stale node state
    slurmctld -c -i -f "$CONF"
    wait_for "slurmctld" running slurmctld
    slurmd -N localhost -f "$CONF"
    wait_for "slurmd" running slurmd
    wait_for "the node to be idle (sinfo)" node_idle
    say "up: partition debug, $(nproc) CPUs; use it with: eval \"\$($0 env)\""
}

node_idle() { sinfo -h -N -o '%T' 2>/dev/null | grep -qx 'idle'; }

wait_for() { # wait_for WHAT COMMAND...: up to 60 s
    local what=$1
    shift
    for _ in $(seq 120); do
        "$@" && return 0
        sleep 0.5
    done
    die "timed out waiting for $what; see $DIR/log/"
}

stop() {
    local name pid
    for name in slurmd slurmctld munged; do  # reverse order of start
        if running "$name"; then
            pid=$(<"$(pidfile "$name")")
            kill "$pid"
            for _ in $(seq 60); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.5
            done
            kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
            say "stopped $name (PID $pid)"
        fi
        rm -f "$(pidfile "$name")"
    done
}

status() {
    local name rc=0
    for name in "${DAEMONS[@]}"; do
        if running "$name"; then
            say "$name: running (PID $(<"$(pidfile "$name")"))"
        else
            say "$name: not running"
            rc=1
        fi
    done
    [[ $rc -eq 0 ]] && SLURM_CONF=$CONF sinfo
    return $rc
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    status) status ;;
    env) echo "export SLURM_CONF=$CONF" ;;
    *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
