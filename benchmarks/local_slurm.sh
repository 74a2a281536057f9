#!/usr/bin/env bash
# A single-node Slurm on this machine, for trying `benchmarks/run.py --cluster slurm` and for the tests (.ci/run).
#
#     benchmarks/local_slurm.sh start     # install (Debian, as root) when missing, then start munged, slurmctld, slurmd
#     export SLURM_CONF=/tmp/dqn-slurm/slurm.conf        # what `start` prints: the clients' configuration
#     sinfo; python benchmarks/run.py --cluster slurm --scripts dqn.py --seeds 1 2
#     benchmarks/local_slurm.sh status    # the daemons' state and the queue
#     benchmarks/local_slurm.sh stop      # stop the three daemons (the folder and its logs stay)
#
# Everything lives in one folder ($DQN_SLURM_DIR, default /tmp/dqn-slurm): its own munge key and socket, slurm.conf,
# state, spool and logs, so the machine's /etc is not touched. One node (localhost) with every core of this machine in
# one partition, `debug`; no cgroups (proctrack/linuxproc, task/none), which containers often lack. Jobs run as the
# user who started the daemons. Idempotent: `start` with the daemons up rereads slurm.conf and starts nothing.
set -euo pipefail
DIR=${DQN_SLURM_DIR:-/tmp/dqn-slurm}
CONF=$DIR/slurm.conf

install_packages() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null &&
        command -v sbatch >/dev/null && return 0
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        echo "error: slurmctld, slurmd, munged and sbatch are not installed (Debian: apt-get install slurmctld" \
            "slurmd slurm-client munge)" >&2
        return 1
    fi
    apt-get update -qq </dev/null >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmctld slurmd slurm-client munge </dev/null >/dev/null
}

write_config() {
    mkdir -p "$DIR"/state "$DIR"/spool "$DIR"/log
    chmod 700 "$DIR"
    if [ ! -s "$DIR/munge.key" ]; then
        (umask 077 && dd if=/dev/urandom of="$DIR/munge.key" bs=1024 count=1 status=none)
    fi
    local cpus memory user
    cpus=$(nproc)
    memory=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 9 / 10))  # MB, leaving the system a tenth
    user=$(id -un)
    cat >"$CONF" <<EOF
# written by benchmarks/local_slurm.sh: one node, this machine
ClusterName=dqn-local
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=$user
SlurmdUser=$user
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$DIR/munge.socket
SlurmctldPort=${DQN_SLURMCTLD_PORT:-6817}
SlurmdPort=${DQN_SLURMD_PORT:-6818}
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MpiDefault=none
# a job cut by scancel, preemption or its time limit gets SIGTERM, then this many seconds before SIGKILL
KillWait=30
InactiveLimit=0
MinJobAge=300
SlurmctldTimeout=30
SlurmdTimeout=60
DefMemPerCPU=$((memory / cpus))
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
    echo "CgroupAutomount=no" >"$DIR/cgroup.conf"  # slurmd reads it even with no cgroup plugin
}

running() {  # running PIDFILE: the daemon whose pid is in PIDFILE is alive (a daemon removes its file as it exits)
    local pid
    pid=$(cat "$1" 2>/dev/null) && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

start() {
    install_packages
    write_config
    if ! running "$DIR/munged.pid"; then
        munged --key-file="$DIR/munge.key" --socket="$DIR/munge.socket" --pid-file="$DIR/munged.pid" \
            --log-file="$DIR/log/munged.log" --seed-file="$DIR/munged.seed" --force
    fi
    export SLURM_CONF=$CONF
    if running "$DIR/slurmctld.pid"; then scontrol reconfigure; else slurmctld -f "$CONF"; fi
    if ! running "$DIR/slurmd.pid"; then slurmd -f "$CONF" -N localhost; fi
    local waited=0
    until sinfo -h -n localhost -o %t 2>/dev/null | grep -Eq '^(idle|mix|alloc)'; do
        if [ "$waited" -ge 60 ]; then
            echo "error: the node did not come up within 60 s; logs in $DIR/log" >&2
            sinfo -N -l >&2 || true
            return 1
        fi
        scontrol update nodename=localhost state=resume >/dev/null 2>&1 || true
        sleep 1
        waited=$((waited + 1))
    done
    echo "Slurm is up (one node, $(nproc) CPUs, partition debug): export SLURM_CONF=$CONF"
}

stop() {
    local name
    for name in slurmd slurmctld munged; do
        if running "$DIR/$name.pid"; then
            kill "$(cat "$DIR/$name.pid" 2>/dev/null)" 2>/dev/null || true
            for _ in $(seq 50); do running "$DIR/$name.pid" || break; sleep 0.2; done
        fi
    done
    echo "Slurm stopped (state and logs kept in $DIR)"
}

status() {
    local name
    for name in munged slurmctld slurmd; do
        if running "$DIR/$name.pid"; then echo "$name: running"; else echo "$name: stopped"; fi
    done
    if running "$DIR/slurmctld.pid"; then SLURM_CONF=$CONF sinfo; SLURM_CONF=$CONF squeue; fi
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status (the folder: DQN_SLURM_DIR, default /tmp/dqn-slurm)" >&2; exit 2 ;;
esac
