#!/usr/bin/env bash
# Stop the cluster scripts/slurm-up.sh started in DIR: cancel its jobs,
# stop slurmd, slurmctld and munged, remove slurmd's cgroups and DIR.
#
#   scripts/slurm-down.sh DIR
set -uo pipefail

dir=${1:?usage: slurm-down.sh DIR}
[ -f "$dir/etc/slurm.conf" ] || { echo "slurm-down: $dir holds no cluster" >&2; exit 1; }
export SLURM_CONF="$dir/etc/slurm.conf"

scancel --full --quiet --user=root >/dev/null 2>&1 || true

alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null && [ "$(ps -o stat= -p "$1" 2>/dev/null | cut -c1)" != Z ]; }

for d in slurmd slurmctld munged; do
	pid=$(cat "$dir/run/$d.pid" 2>/dev/null) || continue
	kill "$pid" 2>/dev/null || continue
	for _ in $(seq 1 50); do alive "$pid" || break; sleep 0.1; done
	alive "$pid" && kill -9 "$pid" 2>/dev/null
done

# Processes of jobs that outlived slurmd, then slurmd's cgroups.
node=$(hostname -s)
for cg in /sys/fs/cgroup/*/slurm_"$node" /sys/fs/cgroup/*/slurm; do
	[ -d "$cg" ] || continue
	find "$cg" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -9 2>/dev/null
	find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null
done
rm -rf "$dir"
