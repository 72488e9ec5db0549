#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, with accounting (slurmdbd on a private MariaDB), for the cluster
# test tier and for trying glossy's SLURM sweeps by hand.
#
#   scripts/slurm_local.sh start    install (Debian packages, when missing), configure and start; idempotent
#   scripts/slurm_local.sh stop     stop exactly the daemons this script started (by their pid files)
#   scripts/slurm_local.sh status   which of them run; the line that points SLURM's commands at this cluster
#
# Everything lives in $GLOSSY_SLURM_DIR (default /tmp/glossy-slurm): the configuration, a munge key of its own,
# the database, the spool and state folders, logs and pid files. /etc/slurm and /etc/munge are not touched,
# the daemons listen on their own ports (GLOSSY_SLURM_PORT, default 16817, and the next two; MariaDB on
# GLOSSY_SLURM_DB_PORT, default 13306, 127.0.0.1 only), so a system SLURM is left alone. Clients (sbatch,
# squeue, sacct, submitit) find the cluster through SLURM_CONF=$GLOSSY_SLURM_DIR/slurm.conf.
# Needs root (the daemons run as root, as in a container) and, for the install, Debian's package registry.
set -euo pipefail

S="${GLOSSY_SLURM_DIR:-/tmp/glossy-slurm}"
PORT="${GLOSSY_SLURM_PORT:-16817}"
DB_PORT="${GLOSSY_SLURM_DB_PORT:-13306}"
HOST="$(hostname -s)"
export SLURM_CONF="$S/slurm.conf"
DAEMONS=(slurmd slurmctld slurmdbd mariadbd munged)   # the order they are stopped in

say() { echo "slurm_local: $*" >&2; }
die() { say "error: $*"; exit 1; }

# the pid a pid file names, when that process is alive and is the daemon the file belongs to
alive() {
  local name="$1" pid
  [ -f "$S/$name.pid" ] || return 1
  pid="$(tr -dc 0-9 < "$S/$name.pid")"
  [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] || return 1
  [ "$(cat "/proc/$pid/comm")" = "$name" ] || return 1
  echo "$pid"
}

wait_for() {  # wait_for <seconds> <what> <command...>
  local n="$1" what="$2"
  shift 2
  for _ in $(seq "$((n * 5))"); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  die "$what did not come up within ${n}s (logs in $S)"
}

install() {
  local missing=()
  for cmd in slurmctld slurmd slurmdbd munged mariadbd sbatch sacct; do
    command -v "$cmd" >/dev/null || missing+=("$cmd")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" = 0 ] || die "missing ${missing[*]}; install slurm-wlm slurmdbd munge mariadb-server as root"
  command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them with"
  say "installing slurm-wlm, slurmdbd, munge and mariadb-server (missing: ${missing[*]})"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm slurmdbd munge mariadb-server >/dev/null 2>&1 \
    || die "apt-get install slurm-wlm slurmdbd munge mariadb-server failed"
}

configure() {
  mkdir -p "$S"/{ctld,spool,mysql}
  chmod 700 "$S"
  if [ ! -s "$S/munge.key" ]; then
    (umask 077 && dd if=/dev/urandom of="$S/munge.key" bs=1024 count=1 status=none)
  fi
  # this machine's CPUs, sockets and memory, as slurmd reads them
  local node
  node="$(slurmd -C | head -n1)"
  [[ "$node" == NodeName=* ]] || die "slurmd -C did not describe this node: $node"
  cat > "$S/slurm.conf" <<EOF
# written by scripts/slurm_local.sh
ClusterName=glossy
SlurmctldHost=$HOST
SlurmUser=root
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
AuthType=auth/munge
AuthInfo=socket=$S/munge.socket
CredType=cred/munge
StateSaveLocation=$S/ctld
SlurmdSpoolDir=$S/spool
SlurmctldPidFile=$S/slurmctld.pid
SlurmdPidFile=$S/slurmd.pid
SlurmctldLogFile=$S/slurmctld.log
SlurmdLogFile=$S/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$((PORT + 2))
AccountingStoragePass=$S/munge.socket
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
KillWait=10
MinJobAge=600
InactiveLimit=0
SlurmdTimeout=60
${node%% UpTime=*} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  (umask 077 && cat > "$S/slurmdbd.conf" <<EOF
# written by scripts/slurm_local.sh
AuthType=auth/munge
AuthInfo=socket=$S/munge.socket
DbdHost=localhost
DbdPort=$((PORT + 2))
SlurmUser=root
PidFile=$S/slurmdbd.pid
LogFile=$S/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=glossy-local
StorageLoc=glossy_slurm_acct_db
EOF
  )
}

start_munge() {
  alive munged >/dev/null && return 0
  rm -f "$S/munge.socket" "$S/munge.socket.lock"
  # --force: munged runs as root here and $S sits under a world-writable /tmp
  munged --force --key-file="$S/munge.key" --socket="$S/munge.socket" --pid-file="$S/munged.pid" \
    --log-file="$S/munged.log" --seed-file="$S/munged.seed" 2>>"$S/munged.log"
  wait_for 10 munged munge --socket="$S/munge.socket" -n
}

sql() { mariadb --socket="$S/mysqld.sock" -uroot "$@"; }

start_db() {
  if ! alive mariadbd >/dev/null; then
    if [ ! -d "$S/mysql/mysql" ]; then
      mariadb-install-db --user=root --datadir="$S/mysql" --auth-root-authentication-method=normal \
        --skip-test-db >"$S/mysqld-install.log" 2>&1 || die "mariadb-install-db failed (see $S/mysqld-install.log)"
    fi
    setsid mariadbd --user=root --datadir="$S/mysql" --socket="$S/mysqld.sock" --pid-file="$S/mariadbd.pid" \
      --port="$DB_PORT" --bind-address=127.0.0.1 --log-error="$S/mysqld.log" --innodb-buffer-pool-size=64M \
      </dev/null >/dev/null 2>&1 &
    wait_for 60 MariaDB sql -e "SELECT 1"
  fi
  sql -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'glossy-local';
          CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'glossy-local';
          GRANT ALL ON glossy_slurm_acct_db.* TO 'slurm'@'localhost';
          GRANT ALL ON glossy_slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
}

start_slurm() {
  if ! alive slurmdbd >/dev/null; then
    slurmdbd 2>>"$S/slurmdbd.log"  # reads slurmdbd.conf beside $SLURM_CONF
    wait_for 60 slurmdbd timeout 10 sacctmgr -n list cluster
  fi
  sacctmgr -n list cluster format=cluster | grep -qw glossy || sacctmgr -i add cluster glossy >/dev/null
  if ! alive slurmctld >/dev/null; then
    slurmctld -f "$S/slurm.conf" 2>>"$S/slurmctld.log"
    wait_for 60 slurmctld scontrol ping
  fi
  if ! alive slurmd >/dev/null; then
    slurmd -f "$S/slurm.conf" 2>>"$S/slurmd.log"
  fi
  wait_for 60 "node $HOST" bash -c "sinfo -h -n '$HOST' -o %T | grep -Eq '^(idle|mixed|allocated)'"
}

start() {
  [ "$(id -u)" = 0 ] || die "the local cluster's daemons run as root: run this as root"
  install
  configure
  start_munge
  start_db
  start_slurm
  say "up: node $HOST, partition debug, accounting through slurmdbd"
  echo "export SLURM_CONF=$SLURM_CONF"
}

stop() {
  local pid
  for name in "${DAEMONS[@]}"; do
    if pid="$(alive "$name")"; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 150); do [ -d "/proc/$pid" ] || break; sleep 0.2; done
      [ -d "/proc/$pid" ] && { say "$name ($pid) did not stop in 30 s; killing it"; kill -9 "$pid" 2>/dev/null || true; }
      say "stopped $name ($pid)"
    fi
    rm -f "$S/$name.pid"
  done
}

status() {
  local pid up=0
  for name in "${DAEMONS[@]}"; do
    if pid="$(alive "$name")"; then echo "$name: running ($pid)"; up=$((up + 1)); else echo "$name: not running"; fi
  done
  echo "export SLURM_CONF=$SLURM_CONF"
  [ "$up" = "${#DAEMONS[@]}" ]
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
