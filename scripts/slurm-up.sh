#!/usr/bin/env bash
# Start a single-node Slurm cluster (munged, slurmctld, slurmd) for the
# tests: everything under one directory, every daemon on 127.0.0.1,
# proctrack/cgroup so that scancel kills daemonised children too, and
# batch_sched_delay=0 so that a trivial job takes about 1 s.
#
#   scripts/slurm-up.sh [DIR]    # prints DIR (a new temporary one by default)
#   . DIR/env.sh                 # SLURM_CONF for sbatch, squeue, ...
#   DIR/restart-ctld.sh          # stop and start slurmctld (tests use it)
#   scripts/slurm-down.sh DIR    # stop everything, remove DIR
#
# Installs the Debian packages (slurmctld slurmd slurm-client munge) when
# they are missing, with a policy-rc.d that keeps their init scripts from
# starting system-wide daemons. Runs as root. Settings: SLURM_NODE_CPUS
# (default 8: the node claims more CPUs than the machine has, so that
# tests can run several one-CPU jobs at once).
set -euo pipefail

log() { echo "slurm-up: $*" >&2; }
die() { log "$*"; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root"

install_packages() {
	local need=()
	for b in slurmctld:slurmctld slurmd:slurmd sbatch:slurm-client munged:munge; do
		command -v "${b%%:*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${b%%:*}" ] || need+=("${b#*:}")
	done
	[ ${#need[@]} -eq 0 ] && return
	log "installing ${need[*]}"
	local made_policy=""
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod 755 /usr/sbin/policy-rc.d
		made_policy=1
	fi
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >&2 || true
	apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
	[ -n "$made_policy" ] && rm -f /usr/sbin/policy-rc.d
	return 0
}
install_packages

dir=${1:-$(mktemp -d /tmp/recon-slurm.XXXXXX)}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
chmod 755 "$dir"
mkdir -p "$dir"/{etc,state,spool,log,run,munge-key,munge-run}
chmod 700 "$dir/munge-key"
chmod 755 "$dir/munge-run"

node=$(hostname -s)
getent hosts "$node" >/dev/null || log "warning: host name $node does not resolve; slurmd may not find its node"
cpus=${SLURM_NODE_CPUS:-8}

# Two free ports on 127.0.0.1, chosen by the kernel.
read -r ctld_port slurmd_port < <(python3 - <<'EOF' 2>/dev/null || echo "$((20000 + RANDOM % 20000)) $((40000 + RANDOM % 20000))"
import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(*(x.getsockname()[1] for x in s))
EOF
)

dd if=/dev/urandom of="$dir/munge-key/munge.key" bs=1024 count=1 status=none
chmod 400 "$dir/munge-key/munge.key"
sock="$dir/munge-run/munge.socket"
/usr/sbin/munged -f --key-file="$dir/munge-key/munge.key" --socket="$sock" \
	--pid-file="$dir/run/munged.pid" --log-file="$dir/log/munged.log" --seed-file="$dir/run/munge.seed"

cat >"$dir/etc/slurm.conf" <<EOF
ClusterName=recontest
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$sock
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/cgroup
TaskPlugin=task/none
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
MailProg=/bin/true
KillWait=5
MinJobAge=300
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=4096 State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
cat >"$dir/etc/cgroup.conf" <<EOF
CgroupPlugin=cgroup/v1
CgroupMountpoint=/sys/fs/cgroup
CgroupAutomount=no
EOF

cat >"$dir/env.sh" <<EOF
export SLURM_CONF=$dir/etc/slurm.conf
EOF
cat >"$dir/restart-ctld.sh" <<EOF
#!/bin/sh
# Stop slurmctld and start it again, on the same state.
pid=\$(cat "$dir/run/slurmctld.pid" 2>/dev/null) && kill "\$pid" 2>/dev/null
i=0
while [ -n "\$pid" ] && kill -0 "\$pid" 2>/dev/null && [ "\$(ps -o stat= -p "\$pid" | cut -c1)" != Z ] && [ \$i -lt 100 ]; do
	sleep 0.1; i=\$((i + 1))
done
SLURM_CONF=$dir/etc/slurm.conf /usr/sbin/slurmctld -f "$dir/etc/slurm.conf"
EOF
chmod 755 "$dir/restart-ctld.sh"
export SLURM_CONF="$dir/etc/slurm.conf"

/usr/sbin/slurmctld -c -f "$SLURM_CONF"
/usr/sbin/slurmd -f "$SLURM_CONF"

# Up when the node is idle.
for _ in $(seq 1 150); do
	state=$(sinfo -h -n "$node" -o '%t' 2>/dev/null || true)
	case "$state" in
	idle*) log "cluster up in $dir (node $node, $cpus CPUs, ports $ctld_port/$slurmd_port)"; echo "$dir"; exit 0 ;;
	esac
	sleep 0.1
done
log "the node did not become idle (state: ${state:-none}); logs in $dir/log"
tail -n 20 "$dir/log/slurmctld.log" "$dir/log/slurmd.log" >&2 || true
exit 1
