#!/usr/bin/env bash
# Whole-system transfer benchmark: upload and download of one large file
# through the recon binary on loopback, with peak RSS of client and server.
#
#   bench/transfer.sh [SIZE_MIB] [RUNS]      (defaults: 1024 MiB, 3 runs)
#
# With PIN=1, one core per end: the server runs on CPU 1 and the client on
# CPU 0 (taskset), and each run also prints the CPU seconds per GiB of the
# client and of the server.
#
# Prints one line per run and the medians. Uses /usr/bin/time (Debian
# package "time") for the client's peak RSS and /proc/PID/status (VmHWM) for
# the server's.
set -euo pipefail
umask 077
size_mib=${1:-1024}
runs=${2:-3}
repo=$(cd "$(dirname "$0")/.." && pwd)
command -v /usr/bin/time >/dev/null || apt-get install -y -qq time >/dev/null
(cd "$repo" && CGO_ENABLED=0 go build -o bin/recon ./cmd/recon)
recon="$repo/bin/recon"
tmp=$(mktemp -d -p "${BENCH_DIR:-/tmp}")
server_pid=
cleanup() {
  [ -n "$server_pid" ] && kill -TERM "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT

# The script hands the input back as the result (a hard link would be
# skipped, so copy; reflink where the file system can).
cat > "$tmp/script.sh" <<'SH'
#!/bin/sh
for f in "$1"/*; do cp --reflink=auto "$f" "$3/$(basename "$f").out"; done
SH
chmod +x "$tmp/script.sh"
key=$("$recon" keygen)
cat > "$tmp/recon.opts" <<OPTS
SERVER_HOSTNAME = 127.0.0.1
SERVER_PORT = 0
SHARED_KEY = $key
SERVER_ADMIN_PORT = 0
SERVER_ADMIN_SHARED_KEY = $("$recon" keygen)
RECON_SCRIPT_PATH = $tmp/script.sh
RECON_SERVER_BASE_PFILE_DIR = data/inputs
RECON_JOB_OUTPUT_BASE_DIR = data/outputs
RECON_SERVER_STATE_DIR = data/state
LOG_FILEPATH = recon.log
# No pause for CPU load: the demo's own BART run must not hold it up.
MAX_CPU_LOAD_PERCENT = 100
MIN_FREE_DISK_MB = 256
OPTS
srv_launch=(); cli_launch=()
if [ "${PIN:-0}" = 1 ]; then srv_launch=(taskset -c 1); cli_launch=(taskset -c 0); fi
"${srv_launch[@]}" "$recon" server --opts "$tmp/recon.opts" 2>"$tmp/server.err" &
server_pid=$!
addr=
for _ in $(seq 1 100); do
  addr=$(sed -n 's/.*clients on \([^,]*\),.*/\1/p' "$tmp/server.err")
  [ -n "$addr" ] && break
  sleep 0.1
done
[ -n "$addr" ] || { cat "$tmp/server.err" >&2; exit 1; }
printf 'SERVER_HOSTNAME = %s\nSERVER_PORT = %s\nSHARED_KEY = %s\n' "${addr%:*}" "${addr##*:}" "$key" > "$tmp/client.opts"

head -c $((size_mib << 20)) /dev/urandom > "$tmp/input.raw"
bytes=$((size_mib << 20))
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -r)"
echo "file: $size_mib MiB; runs: $runs"
printf '%-4s %12s %12s %14s %14s\n' run "upload MB/s" "down MB/s" "client up RSS" "client dn RSS"
ups=(); downs=(); rss_up=(); rss_down=()
for i in $(seq 1 "$runs"); do
  srv_cs() { awk '{print $14 + $15}' "/proc/$server_pid/stat"; }
  s0=$(srv_cs)
  /usr/bin/time -f '%e %M %U %S' -o "$tmp/t.up" "${cli_launch[@]}" "$recon" submit --opts "$tmp/client.opts" --no-wait --new "$tmp/input.raw" > "$tmp/id"
  id=$(cat "$tmp/id")
  # Wait for the job to finish before timing the download alone.
  for _ in $(seq 1 600); do
    "$recon" status --opts "$tmp/client.opts" --json "$id" | grep -q '"state": "succeeded"' && break
    sleep 0.1
  done
  s1=$(srv_cs)
  /usr/bin/time -f '%e %M %U %S' -o "$tmp/t.down" "${cli_launch[@]}" "$recon" fetch --opts "$tmp/client.opts" --output "$tmp/out-$i" "$id" > /dev/null
  cmp -s "$tmp/input.raw" "$tmp/out-$i/input.raw.out" || { echo "run $i: downloaded file differs" >&2; exit 1; }
  rm -rf "$tmp/out-$i"
  s2=$(srv_cs)
  read -r up_s up_kb up_u up_sys < "$tmp/t.up"
  read -r down_s down_kb down_u down_sys < "$tmp/t.down"
  up=$(awk -v b="$bytes" -v s="$up_s" 'BEGIN{printf "%.0f", b/s/1e6}')
  down=$(awk -v b="$bytes" -v s="$down_s" 'BEGIN{printf "%.0f", b/s/1e6}')
  ups+=("$up"); downs+=("$down"); rss_up+=("$up_kb"); rss_down+=("$down_kb")
  printf '%-4s %12s %12s %11s MiB %11s MiB\n' "$i" "$up" "$down" $((up_kb / 1024)) $((down_kb / 1024))
  # CPU s/GiB of each end (the server's download figure includes the
  # status polling between the two, which is small).
  awk -v b="$bytes" -v cu="$up_u" -v su="$up_sys" -v cd="$down_u" -v sd="$down_sys" -v s0="$s0" -v s1="$s1" -v s2="$s2" \
    'BEGIN{g=b/1073741824; printf "     CPU s/GiB: upload client %.2f server %.2f; download client %.2f server %.2f\n", (cu+su)/g, (s1-s0)/100/g, (cd+sd)/g, (s2-s1)/100/g}'

done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
server_hwm=$(awk '/VmHWM/{print int($2/1024)}' "/proc/$server_pid/status")
echo "median: upload $(median "${ups[@]}") MB/s, download $(median "${downs[@]}") MB/s; peak RSS: client $(( $(median "${rss_up[@]}" "${rss_down[@]}") / 1024 )) MiB (max $(( $(printf '%s\n' "${rss_up[@]}" "${rss_down[@]}" | sort -n | tail -1) / 1024 )) MiB), server $server_hwm MiB"
