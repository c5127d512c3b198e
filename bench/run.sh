#!/usr/bin/env bash
# Whole-system benchmark of recon, side by side with OpenSSH on the same
# machine in the same run (make bench). It starts a private sshd on
# 127.0.0.1 with its own config and keys in a temporary directory, recon
# servers and a relay on 127.0.0.1, and measures:
#
#   0. the headline: 1 GiB upload and download with one core per end (the
#      client and scp pinned to core 0 with taskset, `recon server` and sshd
#      to core 1), recon vs scp aes128-gcm on tmpfs, with the CPU seconds
#      per GiB of each end and the plain-copy floor beside them;
#   1. 1 GiB upload and download: recon vs scp and sftp (aes128-gcm and the
#      default cipher), on tmpfs and on disk, both ends sharing all cores;
#   2. peak RSS of recon's client and server during 1 GiB and 4 GiB transfers;
#   3. a whole small job (1 KiB, no-op script): CLI and client package, p50
#      and p90, against `ssh host true`;
#   4. jobs per second through the client package with concurrent clients;
#   5. 256 concurrent clients each submitting 1 MiB;
#   6. upload through the relay against direct;
#   7. restart of a server holding 10,000 queued jobs.
#
# Runs alternate between the tools; the table (medians, the single runs and
# the ratios) goes to docs/PERFORMANCE.md with a description of the machine.
#
# Settings (environment):
#   RUNS=3              runs of each transfer (at least 3)
#   RELAY_RUNS=9        runs of the relay comparison (noisier: three processes)
#   BENCH_DIR=/dev/shm  where data lives for the main comparison (tmpfs)
#   DISK_DIR=/var/tmp   a directory on disk, for the disk rows and the 4 GiB run
#   SIZE_MIB=1024       the transfer size;  BIG_MIB=4096  the large one
#   QUEUED=10000        jobs queued before the restart
#   OUT=docs/PERFORMANCE.md
#   HEADLINE_ONLY=1     section 0 alone, printed, docs/PERFORMANCE.md untouched
#
# Needs root only to install openssh-server (apt-get) when sshd is missing.
set -euo pipefail
umask 077

repo=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-3}
RELAY_RUNS=${RELAY_RUNS:-$(( RUNS > 9 ? RUNS : 9 ))}
BENCH_DIR=${BENCH_DIR:-/dev/shm}
DISK_DIR=${DISK_DIR:-/var/tmp}
SIZE_MIB=${SIZE_MIB:-1024}
BIG_MIB=${BIG_MIB:-4096}
QUEUED=${QUEUED:-10000}
OUT=${OUT:-$repo/docs/PERFORMANCE.md}
bench_start=$(date +%s)

log() { printf '[%4ds] %s\n' $(($(date +%s) - bench_start)) "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- tools ---

ensure_tools() {
  local need=()
  [ -x /usr/sbin/sshd ] || need+=(openssh-server)
  command -v scp >/dev/null && command -v sftp >/dev/null && command -v ssh-keygen >/dev/null || need+=(openssh-client)
  [ -x /usr/bin/time ] || need+=(time)
  command -v taskset >/dev/null || need+=(util-linux)
  [ ${#need[@]} -eq 0 ] && return
  [ "$(id -u)" -eq 0 ] || die "missing ${need[*]}; install them (apt-get install ${need[*]})"
  log "installing ${need[*]}"
  # Keep the package from starting a system sshd: policy-rc.d 101 denies
  # service starts during the install (left alone if one exists already).
  local policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
    policy=1
  fi
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  [ -n "$policy" ] && rm -f /usr/sbin/policy-rc.d
  return 0
}

# --------------------------------------------------------- housekeeping ---

pids=()     # every process started here, stopped by pid at the end
made_run_sshd=
cleanup() {
  local p
  for p in "${pids[@]}"; do
    kill -TERM "$p" 2>/dev/null || true
  done
  for p in "${pids[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  rm -rf "${tmp:-}" "${dtmp:-}"
  [ -n "$made_run_sshd" ] && rmdir /run/sshd 2>/dev/null
  return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END{if (NR%2) print a[(NR+1)/2]; else printf "%.6g\n", (a[NR/2]+a[NR/2+1])/2}'; }
med() { median ${1}; }
maxof() { printf '%s\n' "$@" | sort -g | tail -1; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b > 0) printf "%.2f", a/b; else print "-" }'; }
mbps() { awk -v b="$1" -v ms="$2" 'BEGIN{printf "%.0f", b/(ms/1000)/1e6}'; }
now_ms() { local t=${EPOCHREALTIME/[.,]/}; echo $((t / 1000)); }  # no fork
hwm_mib() { awk '/VmHWM/{printf "%.0f", $2/1024}' "/proc/$1/status"; }
joined() { local IFS=', '; echo "$*"; }

# proc_cs PID MODE: CPU time of process PID in 1/100 s: its own ("own"), or
# with that of its children that have ended ("tree": sshd's sessions).
proc_cs() { awk -v m="$2" '{s = $14 + $15; if (m == "tree") s += $16 + $17; print s}' "/proc/$1/stat"; }

# timed VAR PEER MODE CMD...: run CMD with its output in $tmp/cmd.out. VAR
# gets its wall time in ms; cpu_cs the CPU time (1/100 s) of CMD with its
# children plus that of the serving process PEER meanwhile (see proc_cs),
# which other work on a shared machine does not inflate, and cli_cs and
# peer_cs the two parts; rss_kb CMD's peak RSS.
timed() {
  local var=$1 peer=$2 mode=$3 t0 t1 p0 u s
  shift 3
  p0=$(proc_cs "$peer" "$mode")
  t0=$(now_ms)
  /usr/bin/time -f '%U %S %M' -o "$tmp/time.out" "$@" > "$tmp/cmd.out"
  t1=$(now_ms)
  if [ "$mode" = tree ]; then sleep 0.3; fi # sshd reaps the session
  read -r u s rss_kb < <(tail -1 "$tmp/time.out")
  peer_cs=$(($(proc_cs "$peer" "$mode") - p0))
  cli_cs=$(awk -v u="$u" -v s="$s" 'BEGIN{printf "%.0f", (u + s) * 100}')
  cpu_cs=$((cli_cs + peer_cs))
  printf -v "$var" '%s' $((t1 - t0))
}
# cpu_per_gib CS BYTES: CPU seconds per GiB.
cpu_per_gib() { awk -v c="$1" -v b="$2" 'BEGIN{printf "%.1f", c/100/(b/1073741824)}'; }

# ---------------------------------------------------------------- setup ---

ensure_tools
[ "$RUNS" -ge 3 ] || die "RUNS must be at least 3"
mkdir -p "$BENCH_DIR" "$DISK_DIR"
tmp=$(mktemp -d -p "$BENCH_DIR" recon-bench.XXXXXX)
dtmp=$(mktemp -d -p "$DISK_DIR" recon-bench.XXXXXX)
log "building recon and bench/reconbench"
(cd "$repo" && CGO_ENABLED=0 go build -o bin/recon ./cmd/recon && go build -o "$tmp/reconbench" ./bench/reconbench)
recon=$repo/bin/recon
rb=$tmp/reconbench
bytes=$((SIZE_MIB << 20))
big_bytes=$((BIG_MIB << 20))

# The reconstruction script: with option COPY=1 it returns each input as a
# result (the download tests); otherwise it does nothing.
cat > "$tmp/script.sh" <<'SH'
#!/bin/sh
[ "${RECON_OPT_COPY:-}" = 1 ] || exit 0
for f in "$1"/*; do cp "$f" "$3/$(basename "$f").out"; done
SH
chmod 755 "$tmp/script.sh"

# start_server NAME DIR [ITEM=VALUE...]: a recon server with its data in
# DIR/NAME; sets srv_pid and writes DIR/NAME/client.opts. With srv_pin set
# to a CPU list, the server runs on those CPUs only (taskset).
srv_pin=
start_server() {
  local name=$1 base=$2 d addr kv k
  shift 2
  d=$base/$name
  mkdir -p "$d"
  local -A item=(
    [SERVER_HOSTNAME]=127.0.0.1 [SERVER_PORT]=0 [SHARED_KEY]=$("$recon" keygen)
    [SERVER_ADMIN_HOSTNAME]=127.0.0.1 [SERVER_ADMIN_PORT]=0 [SERVER_ADMIN_SHARED_KEY]=$("$recon" keygen)
    [RECON_SCRIPT_PATH]=$tmp/script.sh [RECON_SERVER_BASE_PFILE_DIR]=data/inputs
    [RECON_JOB_OUTPUT_BASE_DIR]=data/outputs [RECON_SERVER_STATE_DIR]=data/state [LOG_FILEPATH]=recon.log
    [MAX_CPU_LOAD_PERCENT]=100 [MIN_AVAILABLE_MEMORY_MB]=0 [MIN_FREE_DISK_MB]=256 [MAX_CONCURRENT_JOBS]=2
  )
  for kv in "$@"; do item[${kv%%=*}]=${kv#*=}; done
  for k in "${!item[@]}"; do echo "$k = ${item[$k]}"; done > "$d/recon.opts"
  local launch=()
  [ -n "$srv_pin" ] && launch=(taskset -c "$srv_pin")
  "${launch[@]}" "$recon" server --opts "$d/recon.opts" 2> "$d/server.err" &
  srv_pid=$!
  pids+=("$srv_pid")
  addr=
  for _ in $(seq 1 100); do
    addr=$(sed -n 's/.*clients on \([^,]*\),.*/\1/p' "$d/server.err")
    [ -n "$addr" ] && break
    kill -0 "$srv_pid" 2>/dev/null || break
    sleep 0.1
  done
  [ -n "$addr" ] || { cat "$d/server.err" >&2; die "server $name did not start"; }
  printf 'SERVER_HOSTNAME = %s\nSERVER_PORT = %s\nSHARED_KEY = %s\n' "${addr%:*}" "${addr##*:}" \
    "$(sed -n 's/^SHARED_KEY = //p' "$d/recon.opts")" > "$d/client.opts"
}

stop_pid() {
  kill -TERM "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

# wait_job OPTS ID: until the job has succeeded (at most 120 s).
wait_job() {
  local i
  for i in $(seq 1 1200); do
    if "$recon" status --opts "$1" --json "$2" | grep -q '"state": "succeeded"'; then return 0; fi
    sleep 0.1
  done
  die "job $2 did not succeed in time"
}

# cli_launch: what the client commands below run under (taskset in the
# one-core-per-end rows, nothing otherwise).
cli_launch=()

# warm_memory: before a timed transfer, write and delete twice its size in
# the directory it writes to (WARM=1, the default). This VM hands memory
# it frees back to its host (virtio-balloon free page reporting), and the
# first write into such a page costs about 1.2 CPU s per GiB more (measured:
# 1 GiB into tmpfs, 1.69 s against 0.33 s), for whichever tool comes to it
# first; the figures then measured the VM, not the tools. Memory just freed
# is the VM's own again for a second or two, so each tool writes into memory
# the VM holds, as on a physical machine. The warm-up is not timed.
warm_memory() {
  [ "${WARM:-1}" = 1 ] || return 0
  local d=$1
  dd if=/dev/zero of="$d/.warm" bs=1M count=$((2 * SIZE_MIB)) status=none 2>/dev/null || true
  rm -f "$d/.warm"
}

# recon_up SERVER_PID OPTS FILE [--option ...]: upload; sets up_ms, up_kb,
# up_id and cpu_cs.
recon_up() {
  local pid=$1 opts=$2 file=$3
  shift 3
  warm_memory "$(dirname "$opts")"
  timed up_ms "$pid" own "${cli_launch[@]}" "$recon" submit --opts "$opts" --no-wait --new "$@" "$file"
  up_kb=$rss_kb; up_id=$(tail -1 "$tmp/cmd.out")
}

# recon_down SERVER_PID OPTS ID DIR: download; sets down_ms, down_kb and
# cpu_cs.
recon_down() {
  warm_memory "$(dirname "$4")"
  timed down_ms "$1" own "${cli_launch[@]}" "$recon" fetch --opts "$2" --output "$4" "$3"
  down_kb=$rss_kb
}

# --------------------------------------------------------- the machine ---

cpu_model=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)
cpu_flags=$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -xE 'aes|vaes|pclmulqdq|vpclmulqdq|sha_ni|avx2|avx512f' | xargs)
mem_gib=$(awk '/MemTotal/{printf "%.0f", $2/1048576}' /proc/meminfo)
fs_of() { df -PT "$1" | awk 'NR==2{print $2 " (" $1 ")"}'; }
bench_fs=$(fs_of "$tmp")
disk_fs=$(fs_of "$dtmp")
ssh_version=$(ssh -V 2>&1)
go_version=$(go version | awk '{print $3, $4}')
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

log "disk write speed (dd, 1 GiB, conv=fdatasync) in $DISK_DIR"
dd_line=$(dd if=/dev/zero of="$dtmp/dd.bin" bs=1M count=1024 conv=fdatasync 2>&1 | tail -1)
rm -f "$dtmp/dd.bin"
dd_s=$(echo "$dd_line" | awk -F, '{print $(NF-1)}' | awk '{print $1}')
dd_mbps=$(awk -v s="$dd_s" 'BEGIN{printf "%.0f", 1073741824/s/1e6}')
log "disk: $dd_mbps MB/s ($dd_line)"
log "per-byte work on one core (SHA-256, AES-GCM)"
limits_line=$("$rb" limits -copy-dir "$BENCH_DIR" -copy-mib "$SIZE_MIB" | grep '^RESULT')
sha_mbps=$(sed -n 's/.*sha256_mbps=\([0-9]*\).*/\1/p' <<< "$limits_line")
aes256_mbps=$(sed -n 's/.*aes256gcm_mbps=\([0-9]*\).*/\1/p' <<< "$limits_line")
aes128_mbps=$(sed -n 's/.*aes128gcm_mbps=\([0-9]*\).*/\1/p' <<< "$limits_line")
b3_mbps=$(sed -n 's/.*blake3_mbps=\([0-9]*\).*/\1/p' <<< "$limits_line")
copy_mbps=$(sed -n 's/.*copy_mbps=\([0-9]*\).*/\1/p' <<< "$limits_line")
copy_cpu=$(sed -n 's/.*copy_cpu_s_per_gib=\([0-9.]*\).*/\1/p' <<< "$limits_line")

# ----------------------------------------------------------- the sshd ---

log "starting a private sshd on 127.0.0.1"
sshd_dir=$tmp/ssh
mkdir -p "$sshd_dir"
ssh-keygen -q -t ed25519 -N '' -f "$sshd_dir/host_ed25519" -C bench-host
ssh-keygen -q -t ed25519 -N '' -f "$sshd_dir/user_ed25519" -C bench-user
cp "$sshd_dir/user_ed25519.pub" "$sshd_dir/authorized_keys"
ssh_port=$("$rb" freeport)
cat > "$sshd_dir/sshd_config" <<EOF
Port $ssh_port
ListenAddress 127.0.0.1
HostKey $sshd_dir/host_ed25519
PidFile $sshd_dir/sshd.pid
AuthorizedKeysFile $sshd_dir/authorized_keys
AuthenticationMethods publickey
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
UseDNS no
Subsystem sftp internal-sftp
EOF
cat > "$sshd_dir/ssh_config" <<EOF
Host bench
  HostName 127.0.0.1
  Port $ssh_port
  User $(id -un)
  IdentityFile $sshd_dir/user_ed25519
  IdentitiesOnly yes
  StrictHostKeyChecking no
  UserKnownHostsFile /dev/null
  LogLevel ERROR
  BatchMode yes
EOF
if [ ! -d /run/sshd ] && [ "$(id -u)" -eq 0 ]; then mkdir -p /run/sshd && made_run_sshd=1; fi
/usr/sbin/sshd -D -e -f "$sshd_dir/sshd_config" 2> "$sshd_dir/sshd.log" &
sshd_pid=$!
pids+=("$sshd_pid")
for _ in $(seq 1 50); do
  ssh -F "$sshd_dir/ssh_config" bench true 2>/dev/null && break
  sleep 0.1
done
ssh -F "$sshd_dir/ssh_config" bench true || { cat "$sshd_dir/sshd.log" >&2; die "private sshd did not start"; }
default_cipher=$(ssh -F "$sshd_dir/ssh_config" -G bench | awk '/^ciphers /{split($2, c, ","); print c[1]}')
GCM=aes128-gcm@openssh.com
SSH=(-q -F "$sshd_dir/ssh_config")

# ------------------------------------------------------ 1. transfers ---

log "making a $SIZE_MIB MiB random file"
mkdir -p "$tmp/src" "$tmp/dl" "$tmp/sshdst" "$dtmp/dl" "$dtmp/sshdst"
head -c "$bytes" /dev/urandom > "$tmp/src/input.raw"
cp "$tmp/src/input.raw" "$tmp/sshdst/served.raw"   # what scp and sftp download

# Section 1's server (both ends sharing all cores); section 0 comes first.
start_server A "$tmp"; pid_A=$srv_pid
start_server B "$dtmp"; pid_B=$srv_pid

# The tools, in the order each round runs them.
tools=(recon scp-gcm scp-def sftp-gcm sftp-def)
declare -A up down
# ssh_copy VAR TOOL SRC DST: time one scp or sftp transfer (SRC or DST is
# bench:PATH), with the CPU of the client and of sshd's session.
ssh_copy() {
  local var=$1 t=$2 src=$3 dst=$4 cipher=()
  case $t in *-gcm) cipher=(-c "$GCM") ;; esac
  warm_memory "$(dirname "${dst#bench:}")"
  case $t in
    scp-*) timed "$var" "$sshd_pid" tree "${cli_launch[@]}" scp "${SSH[@]}" "${cipher[@]}" "$src" "$dst" ;;
    sftp-*)
      if [[ $src == bench:* ]]; then echo "get ${src#bench:} $dst"; else echo "put $src ${dst#bench:}"; fi > "$tmp/sftp.batch"
      timed "$var" "$sshd_pid" tree "${cli_launch[@]}" sftp "${SSH[@]}" "${cipher[@]}" -b "$tmp/sftp.batch" bench ;;
  esac
}

# cores_bench: the per-end Go benchmarks (internal/secure BenchmarkMemEnd*:
# one end of a transfer, file, hash and AES-GCM, over a transport that
# costs nothing) with the end on one core (taskset, GOMAXPROCS 1) and on
# all cores (GOMAXPROCS = cores): what a second core gives one end.
# Sets cores_rows (the table's rows).
cores_rows=
cores_bench() {
  [ "$ncores" -ge 2 ] || return 0
  log "per-end pipeline on one core and on $ncores (Go benchmarks)"
  (cd "$repo" && go test -c -o "$tmp/secure.test" ./internal/secure) || die "building the secure benchmarks"
  local one all
  one=$(cd "$tmp" && RECON_BENCH_DIR=$BENCH_DIR taskset -c 0 ./secure.test -test.run '^$' -test.bench 'BenchmarkMemEnd(Send|Receive)/Copy\+' \
    -test.cpu 1 -test.benchtime 20x -test.count 3 | grep '^Benchmark')
  all=$(cd "$tmp" && RECON_BENCH_DIR=$BENCH_DIR ./secure.test -test.run '^$' -test.bench 'BenchmarkMemEnd(Send|Receive)/Copy\+' \
    -test.cpu "$ncores" -test.benchtime 20x -test.count 3 | grep '^Benchmark')
  # field: the value before the unit ("MB/s", "cpu-ns/B") on a benchmark's lines.
  field() { awk -v n="$2" -v u="$3" '{sub(/-[0-9]+$/, "", $1)} $1 == n {for (i = 2; i <= NF; i++) if ($i == u) printf (u == "MB/s" ? "%.0f\n" : "%.2f\n"), $(i-1)}' <<< "$1"; }
  local b n m1 m2
  for b in Send/Copy+BLAKE3 Receive/Copy+BLAKE3 Send/Copy+SHA256 Receive/Copy+SHA256; do
    n=BenchmarkMemEnd$b
    m1=$(median $(field "$one" "$n" MB/s)); m2=$(median $(field "$all" "$n" MB/s))
    cores_rows+="| ${b%%/*}, ${b##*+} | **$m1** | $(joined $(field "$one" "$n" MB/s)) | $(median $(field "$one" "$n" cpu-ns/B)) | **$m2** | $(joined $(field "$all" "$n" MB/s)) | $(median $(field "$all" "$n" cpu-ns/B)) | $(ratio "$m2" "$m1")× |"$'\n'
  done
}

# cores_section: the table of cores_bench.
cores_section() {
  [ -n "$cores_rows" ] || return 0
  cat <<EOT
### One end on one core and on $ncores

Go benchmarks of one end alone (\`internal/secure\` \`BenchmarkMemEndSend\`: read the file, hash, seal, write;
\`BenchmarkMemEndReceive\`: read, open, hash, write the file; 64 MiB from and to $BENCH_DIR, over a transport
that costs nothing, so that neither the peer nor the kernel's TCP copy takes a core), the end pinned to one
core (\`taskset -c 0\`, GOMAXPROCS 1) and free on all $ncores (GOMAXPROCS $ncores); 3 runs each, medians in bold.
Reading, hashing and writing run in goroutines of their own over a fixed set of buffers (\`xfer.Copy\`), so a
second core takes the hash off the path of the rest.

| end, hash | one core MB/s | runs | cpu-ns/B | $ncores cores MB/s | runs | cpu-ns/B | gain |
|---|---|---|---|---|---|---|---|
${cores_rows}
EOT
}

# pin_section: the table of section 0 (one core per end).
pin_section() {
  if [ "$ncores" -lt 2 ]; then
    printf '## 0. One core per end\n\nNot measured: this machine has %s core.\n\n' "$ncores"
    return
  fi
  local rup rdown sup sdown
  rup=$(med "${pup[recon]}"); rdown=$(med "${pdown[recon]}"); sup=$(med "${pup[scp-gcm]}"); sdown=$(med "${pdown[scp-gcm]}")
  cat <<EOT
## 0. One core per end (headline)

As on two machines: the client (\`recon submit\`/\`recon fetch\`; \`scp\` with its \`ssh\`) pinned to CPU 0
with \`taskset -c 0\`, \`recon server\` and \`sshd\` (with the session processes it forks) to CPU 1; data on
\`$BENCH_DIR\` (tmpfs); $SIZE_MIB MiB each way, $RUNS runs alternating between the tools, medians in bold.
Each recon process runs with GOMAXPROCS 1 (the Go runtime follows the CPU affinity). "CPU s/GiB" is the
user and system time of that end alone per GiB (client: \`/usr/bin/time\`; server: \`/proc/PID/stat\`, for
sshd including its finished sessions), median: the steadier measure on a shared machine, where the MB/s
figures are noisy (other work runs on both cores; load average in the machine table).

| | recon MB/s | runs | scp -c aes128-gcm MB/s | runs | recon ÷ scp | recon CPU s/GiB client / server | scp CPU s/GiB client / sshd |
|---|---|---|---|---|---|---|---|
| upload | **$rup** | $(joined ${pup[recon]}) | **$sup** | $(joined ${pup[scp-gcm]}) | **$(ratio "$rup" "$sup")×** | $(med "${pcli_up[recon]}") / $(med "${psrv_up[recon]}") | $(med "${pcli_up[scp-gcm]}") / $(med "${psrv_up[scp-gcm]}") |
| download | **$rdown** | $(joined ${pdown[recon]}) | **$sdown** | $(joined ${pdown[scp-gcm]}) | **$(ratio "$rdown" "$sdown")×** | $(med "${pcli_down[recon]}") / $(med "${psrv_down[recon]}") | $(med "${pcli_down[scp-gcm]}") / $(med "${psrv_down[scp-gcm]}") |

The floor beside them: a plain copy with neither crypto nor hashing (file → loopback TCP → file, 256 KiB
blocks, \`reconbench limits\`, both ends in one process, unpinned, the least CPU of 3 runs) costs **$copy_cpu
CPU s/GiB for both ends together**, about half of it per end. On one core, SHA-256 runs at $sha_mbps MB/s,
BLAKE3 at $b3_mbps MB/s and AES-256-GCM at $aes256_mbps MB/s (Go). \`recon submit\` and \`recon fetch\` check files
with BLAKE3 (protocol 3, docs/PROTOCOL.md), so the crypto work alone costs the uploading client (BLAKE3 and
sealing) $(awk -v s="$b3_mbps" -v a="$aes256_mbps" 'BEGIN{printf "%.2f", (1/s + 1/a)*1073.741824}') CPU s/GiB
($(awk -v s="$sha_mbps" -v a="$aes256_mbps" 'BEGIN{printf "%.2f", (1/s + 1/a)*1073.741824}') with SHA-256), and the receiving server (opening and BLAKE3) the same; in a
download the server does not hash the results again (their SHA-256 and BLAKE3 are taken when they are
collected) and seals only, $(awk -v a="$aes256_mbps" 'BEGIN{printf "%.2f", 1073.741824/a}') CPU s/GiB.
Before each timed transfer of either tool the bench writes and deletes twice its size where the transfer
writes (\`WARM=1\`, the default; \`WARM=0\` turns it off): this VM hands freed memory back to its host, and the
first write into such a page costs about 1.2 CPU s/GiB more, for whichever tool comes to it first
(bench/NOTES.md). Issue 21's goal is recon ≥ 1.5× scp each way in this setting.

$(cores_section)

EOT
}

# ------------------------------------------- 0. one core per end ---

# The headline: each end on its own core, as on two machines. The client
# and scp (with its ssh) run on core 0; recon server and sshd (with the
# session processes it forks) on core 1. The Go runtime sizes GOMAXPROCS
# to the CPUs it may use, so each recon process runs with GOMAXPROCS 1.
pin_tools=(recon scp-gcm)
declare -A pup pdown pcli_up pcli_down psrv_up psrv_down
ncores=$(nproc)
if [ "$ncores" -ge 2 ]; then
  srv_pin=1
  start_server P "$tmp"; pid_P=$srv_pid
  srv_pin=
  taskset -pc 1 "$sshd_pid" > /dev/null
  cli_launch=(taskset -c 0)
  for i in $(seq 1 "$RUNS"); do
    log "one core per end (client on CPU 0, server and sshd on CPU 1): round $i of $RUNS"
    for k in 0 1; do
      t=${pin_tools[$(((k + i - 1) % 2))]}
      if [ "$t" = recon ]; then
        recon_up "$pid_P" "$tmp/P/client.opts" "$tmp/src/input.raw" --option COPY=1
        pup[$t]+="$(mbps "$bytes" "$up_ms") "; pcli_up[$t]+="$(cpu_per_gib "$cli_cs" "$bytes") "; psrv_up[$t]+="$(cpu_per_gib "$peer_cs" "$bytes") "
        wait_job "$tmp/P/client.opts" "$up_id"
        recon_down "$pid_P" "$tmp/P/client.opts" "$up_id" "$tmp/dl/recon"
        pdown[$t]+="$(mbps "$bytes" "$down_ms") "; pcli_down[$t]+="$(cpu_per_gib "$cli_cs" "$bytes") "; psrv_down[$t]+="$(cpu_per_gib "$peer_cs" "$bytes") "
        cmp -s "$tmp/src/input.raw" "$tmp/dl/recon/input.raw.out" || die "recon download differs (one core per end)"
        rm -rf "$tmp/dl/recon"
      else
        ssh_copy ms "$t" "$tmp/src/input.raw" "bench:$tmp/sshdst/up.raw"
        pup[$t]+="$(mbps "$bytes" "$ms") "; pcli_up[$t]+="$(cpu_per_gib "$cli_cs" "$bytes") "; psrv_up[$t]+="$(cpu_per_gib "$peer_cs" "$bytes") "
        rm -f "$tmp/sshdst/up.raw"
        ssh_copy ms "$t" "bench:$tmp/sshdst/served.raw" "$tmp/dl/ssh.raw"
        pdown[$t]+="$(mbps "$bytes" "$ms") "; pcli_down[$t]+="$(cpu_per_gib "$cli_cs" "$bytes") "; psrv_down[$t]+="$(cpu_per_gib "$peer_cs" "$bytes") "
        cmp -s "$tmp/src/input.raw" "$tmp/dl/ssh.raw" || die "$t download differs (one core per end)"
        rm -f "$tmp/dl/ssh.raw"
      fi
    done
  done
  cli_launch=()
  taskset -pc "0-$((ncores - 1))" "$sshd_pid" > /dev/null
  stop_pid "$pid_P"
else
  log "one core per end: skipped, this machine has $ncores core"
fi

cores_bench

# HEADLINE_ONLY=1: section 0 alone, its table to stdout, docs untouched.
if [ "${HEADLINE_ONLY:-0}" = 1 ]; then
  pin_section
  exit 0
fi

rss_up_1=(); rss_down_1=()
declare -A cpu_up cpu_down
for i in $(seq 1 "$RUNS"); do
  log "transfers on $BENCH_DIR: round $i of $RUNS"
  # Each round starts with the next tool, so none always goes first.
  for k in $(seq 0 $((${#tools[@]} - 1))); do
    t=${tools[$(((k + i - 1) % ${#tools[@]}))]}
    if [ "$t" = recon ]; then
      recon_up "$pid_A" "$tmp/A/client.opts" "$tmp/src/input.raw" --option COPY=1
      up[$t]+="$(mbps "$bytes" "$up_ms") "; rss_up_1+=("$up_kb"); cpu_up[$t]+="$(cpu_per_gib "$cpu_cs" "$bytes") "
      wait_job "$tmp/A/client.opts" "$up_id"
      recon_down "$pid_A" "$tmp/A/client.opts" "$up_id" "$tmp/dl/recon"
      down[$t]+="$(mbps "$bytes" "$down_ms") "; rss_down_1+=("$down_kb"); cpu_down[$t]+="$(cpu_per_gib "$cpu_cs" "$bytes") "
      cmp -s "$tmp/src/input.raw" "$tmp/dl/recon/input.raw.out" || die "recon download differs"
      rm -rf "$tmp/dl/recon"
    else
      ssh_copy ms "$t" "$tmp/src/input.raw" "bench:$tmp/sshdst/up.raw"; up[$t]+="$(mbps "$bytes" "$ms") "; cpu_up[$t]+="$(cpu_per_gib "$cpu_cs" "$bytes") "
      rm -f "$tmp/sshdst/up.raw"
      ssh_copy ms "$t" "bench:$tmp/sshdst/served.raw" "$tmp/dl/ssh.raw"; down[$t]+="$(mbps "$bytes" "$ms") "; cpu_down[$t]+="$(cpu_per_gib "$cpu_cs" "$bytes") "
      cmp -s "$tmp/src/input.raw" "$tmp/dl/ssh.raw" || die "$t download differs"
      rm -f "$tmp/dl/ssh.raw"
    fi
  done
done
hwm_A_1g=$(hwm_mib "$pid_A")

log "ssh connection setup: ssh host true"
ssh_true=()
ssh_true_cpu=()
for _ in $(seq 1 10); do
  timed ms "$sshd_pid" tree ssh -F "$sshd_dir/ssh_config" bench true
  ssh_true+=("$ms"); ssh_true_cpu+=("$((cpu_cs * 10))")
done

# The disk row: the same file (read from tmpfs) written to disk by the
# receiving side, fsynced by recon; recon and scp aes128-gcm.
cp "$tmp/src/input.raw" "$dtmp/sshdst/served.raw"
sync
disk_tools=(recon scp-gcm)
declare -A dup ddown
for i in $(seq 1 "$RUNS"); do
  log "transfers to disk ($DISK_DIR): round $i of $RUNS"
  for t in "${disk_tools[@]}"; do
    if [ "$t" = recon ]; then
      recon_up "$pid_B" "$dtmp/B/client.opts" "$tmp/src/input.raw" --option COPY=1
      dup[$t]+="$(mbps "$bytes" "$up_ms") "
      wait_job "$dtmp/B/client.opts" "$up_id"
      recon_down "$pid_B" "$dtmp/B/client.opts" "$up_id" "$dtmp/dl/recon"
      ddown[$t]+="$(mbps "$bytes" "$down_ms") "
      rm -rf "$dtmp/dl/recon"
    else
      ssh_copy ms "$t" "$tmp/src/input.raw" "bench:$dtmp/sshdst/up.raw"; dup[$t]+="$(mbps "$bytes" "$ms") "
      rm -f "$dtmp/sshdst/up.raw"
      ssh_copy ms "$t" "bench:$dtmp/sshdst/served.raw" "$dtmp/dl/ssh.raw"; ddown[$t]+="$(mbps "$bytes" "$ms") "
      rm -f "$dtmp/dl/ssh.raw"
    fi
  done
done
rm -f "$dtmp/sshdst/served.raw"
stop_pid "$pid_B"

# ------------------------------------------------------ 2. peak RSS, 4 GiB ---

log "peak RSS during a $BIG_MIB MiB upload and download (server data on disk)"
for _ in $(seq 1 $((BIG_MIB / SIZE_MIB))); do cat "$tmp/src/input.raw"; done > "$dtmp/big.raw"
start_server C "$dtmp"; pid_C=$srv_pid
recon_up "$pid_C" "$dtmp/C/client.opts" "$dtmp/big.raw" --option COPY=1
big_up_ms=$up_ms; big_up_kb=$up_kb
rm -f "$dtmp/big.raw"
wait_job "$dtmp/C/client.opts" "$up_id"
recon_down "$pid_C" "$dtmp/C/client.opts" "$up_id" "$dtmp/dl/big"
big_down_ms=$down_ms; big_down_kb=$down_kb
rm -rf "$dtmp/dl/big"
hwm_C_4g=$(hwm_mib "$pid_C")
stop_pid "$pid_C"

# ------------------------------------------------------- 6. relay ---

log "relay: upload through a relay against direct"
mkdir -p "$tmp/relay"
relay_key=$("$recon" keygen)
cat > "$tmp/relay/relay.opts" <<EOF
RELAY_HOSTNAME = 127.0.0.1
RELAY_PORT = 0
SHARED_KEY_RELAY_TO_CLIENTS = $relay_key
BACKEND_SERVERS = $(sed -n 's/^SERVER_HOSTNAME = //p' "$tmp/A/client.opts"):$(sed -n 's/^SERVER_PORT = //p' "$tmp/A/client.opts")
BACKEND_SHARED_KEY = $(sed -n 's/^SHARED_KEY = //p' "$tmp/A/client.opts")
BACKEND_HEALTH_INTERVAL_SECONDS = 1
RELAY_STATE_DIR = state
RELAY_ADMIN_HOSTNAME = 127.0.0.1
RELAY_ADMIN_PORT = 0
RELAY_ADMIN_SHARED_KEY = $("$recon" keygen)
LOG_FILEPATH = relay.log
EOF
"$recon" relay --opts "$tmp/relay/relay.opts" 2> "$tmp/relay/relay.err" &
pid_relay=$!
pids+=("$pid_relay")
raddr=
for _ in $(seq 1 100); do
  raddr=$(sed -n 's/.*clients on \([^,]*\),.*/\1/p' "$tmp/relay/relay.err")
  [ -n "$raddr" ] && break
  sleep 0.1
done
[ -n "$raddr" ] || { cat "$tmp/relay/relay.err" >&2; die "relay did not start"; }
printf 'SERVER_HOSTNAME = %s\nSERVER_PORT = %s\nSHARED_KEY = %s\n' "${raddr%:*}" "${raddr##*:}" "$relay_key" > "$tmp/relay/client.opts"
for _ in $(seq 1 100); do "$recon" status --opts "$tmp/relay/client.opts" >/dev/null 2>&1 && break; sleep 0.1; done
relay_up=(); direct_up=(); direct_cpu=(); relayed_cpu=(); relay_cpu=()
for i in $(seq 1 "$RELAY_RUNS"); do
  recon_up "$pid_A" "$tmp/A/client.opts" "$tmp/src/input.raw"; direct_up+=("$(mbps "$bytes" "$up_ms")")
  direct_cpu+=("$(cpu_per_gib "$cpu_cs" "$bytes")") # client and server
  s0=$(proc_cs "$pid_A" own); r0=$(proc_cs "$pid_relay" own)
  recon_up "$pid_relay" "$tmp/relay/client.opts" "$tmp/src/input.raw"; relay_up+=("$(mbps "$bytes" "$up_ms")")
  s1=$(proc_cs "$pid_A" own); r1=$(proc_cs "$pid_relay" own)
  relay_cpu+=("$(cpu_per_gib "$((r1 - r0))" "$bytes")")
  relayed_cpu+=("$(cpu_per_gib "$((cpu_cs + s1 - s0))" "$bytes")") # client, relay and server
done
hwm_relay=$(hwm_mib "$pid_relay")
stop_pid "$pid_relay"
stop_pid "$pid_A"

# ------------------------------------------------ 3, 4. small jobs ---

printf 'x%.0s' $(seq 1 1024) > "$tmp/small.raw"
small_jobs() { # DIR LABEL: sets cli_p50 cli_p90 pkg_new_* pkg_one_* jps
  local d=$1 i t0 t1 lat=()
  for i in $(seq 1 60); do
    t0=$(now_ms)
    "$recon" submit --opts "$d/client.opts" --new "$tmp/small.raw" > /dev/null
    t1=$(now_ms)
    lat+=($((t1 - t0)))
  done
  read -r cli_p50 cli_p90 < <(printf '%s\n' "${lat[@]}" | sort -n | awk '{a[NR]=$1} END{print a[int(NR*0.5+0.5)], a[int(NR*0.9+0.5)]}')
  read -r pkg_new_p50 pkg_new_p90 < <("$rb" smalljob -opts "$d/client.opts" -dir "$tmp" -n 200 -session new | awk '/^RESULT/{sub(/p50_ms=/,"",$2); sub(/p90_ms=/,"",$3); print $2, $3}')
  read -r pkg_one_p50 pkg_one_p90 < <("$rb" smalljob -opts "$d/client.opts" -dir "$tmp" -n 200 -session one | awk '/^RESULT/{sub(/p50_ms=/,"",$2); sub(/p90_ms=/,"",$3); print $2, $3}')
  local r=()
  for i in $(seq 1 "$RUNS"); do
    r+=("$("$rb" throughput -opts "$d/client.opts" -dir "$tmp" -clients 8 -duration 3s | awk '/^RESULT/{sub(/jobs_per_s=/,"",$2); print $2}')")
  done
  jps=$(median "${r[@]}"); jps_runs=$(joined "${r[@]}")
}
log "small jobs on $BENCH_DIR"
start_server D "$tmp"; pid_D=$srv_pid
small_jobs "$tmp/D"
s_cli=("$cli_p50" "$cli_p90"); s_new=("$pkg_new_p50" "$pkg_new_p90"); s_one=("$pkg_one_p50" "$pkg_one_p90"); s_jps=$jps; s_jps_runs=$jps_runs
stop_pid "$pid_D"
log "small jobs on disk ($DISK_DIR)"
start_server D "$dtmp"; pid_D=$srv_pid
small_jobs "$dtmp/D"
d_cli=("$cli_p50" "$cli_p90"); d_new=("$pkg_new_p50" "$pkg_new_p90"); d_one=("$pkg_one_p50" "$pkg_one_p90"); d_jps=$jps; d_jps_runs=$jps_runs
stop_pid "$pid_D"

# ---------------------------------------------- 5. 256 clients at once ---

log "256 concurrent clients, 1 MiB each"
start_server E "$tmp"; pid_E=$srv_pid
burst_out=$("$rb" burst -opts "$tmp/E/client.opts" -dir "$tmp" -clients 256 -size $((1 << 20)))
printf '%s\n' "$burst_out" >&2
burst_line=$(grep '^RESULT' <<< "$burst_out")
burst_ok=$(echo "$burst_line" | sed -n 's/.*ok=\([0-9]*\).*/\1/p')
burst_s=$(echo "$burst_line" | sed -n 's/.*seconds=\([0-9.]*\).*/\1/p')
burst_retries=$(echo "$burst_line" | sed -n 's/.*retries=\([0-9]*\).*/\1/p')
hwm_E=$(hwm_mib "$pid_E")
stop_pid "$pid_E"

# ------------------------------------------------ 7. restart, 10k queued ---

log "restart with $QUEUED queued jobs: filling the queue"
# MIN_AVAILABLE_MEMORY_MB far above the machine's memory pauses every
# worker (resource gate), so the jobs stay queued.
start_server G "$tmp" MIN_AVAILABLE_MEMORY_MB=1000000000 MAX_QUEUED_JOBS=$((QUEUED + 100))
pid_G=$srv_pid
fill_out=$("$rb" fill -opts "$tmp/G/client.opts" -dir "$tmp" -n "$QUEUED" -clients 8)
printf '%s\n' "$fill_out" >&2
fill_s=$(sed -n 's/^RESULT.*seconds=\([0-9.]*\).*/\1/p' <<< "$fill_out")
# A crash, then timed restarts (each ended by SIGKILL too). The restarts
# listen on the same port, now fixed in the config.
kill -KILL "$pid_G"; wait "$pid_G" 2>/dev/null || true
sed -i "s/^SERVER_PORT = 0$/SERVER_PORT = $(sed -n 's/^SERVER_PORT = //p' "$tmp/G/client.opts")/" "$tmp/G/recon.opts"
log "restart with $QUEUED queued jobs: timing"
restart_out=$("$rb" restart -opts "$tmp/G/client.opts" -recon "$recon" -server-opts "$tmp/G/recon.opts" -runs "$RUNS" -want-queued "$QUEUED")
printf '%s\n' "$restart_out" >&2
restart_line=$(grep '^RESULT' <<< "$restart_out")
restart_p50=$(echo "$restart_line" | sed -n 's/.*p50_ms=\([0-9.]*\).*/\1/p')
restart_max=$(echo "$restart_line" | sed -n 's/.*max_ms=\([0-9.]*\).*/\1/p')

load_after=$(cut -d' ' -f1-3 /proc/loadavg)

# --------------------------------------------------------------- report ---

recon_up_m=$(med "${up[recon]}"); recon_down_m=$(med "${down[recon]}")
gcm_up_m=$(med "${up[scp-gcm]}"); gcm_down_m=$(med "${down[scp-gcm]}")
ssh_true_m=$(median "${ssh_true[@]}")
rss_client_1g=$(( $(maxof "${rss_up_1[@]}" "${rss_down_1[@]}") / 1024 ))
rss_client_4g=$(( $(maxof "$big_up_kb" "$big_down_kb") / 1024 ))
relay_m=$(median "${relay_up[@]}"); direct_m=$(median "${direct_up[@]}")
relay_pct=$(awk -v a="$relay_m" -v b="$direct_m" 'BEGIN{printf "%.1f", 100*a/b}')
pair_pct=()
for i in "${!relay_up[@]}"; do
  pair_pct+=("$(awk -v a="${relay_up[$i]}" -v b="${direct_up[$i]}" 'BEGIN{printf "%.1f", 100*a/b}')")
done
pair_m=$(median "${pair_pct[@]}")
direct_cpu_m=$(median "${direct_cpu[@]}"); relayed_cpu_m=$(median "${relayed_cpu[@]}"); relay_cpu_m=$(median "${relay_cpu[@]}")
cpu_pct=$(awk -v a="$direct_cpu_m" -v b="$relayed_cpu_m" 'BEGIN{printf "%.0f", 100*a/b}')
gcm_up_setup=$(awk -v b="$bytes" -v mbs="$gcm_up_m" -v s="$ssh_true_m" 'BEGIN{t=b/mbs/1e6 - s/1000; printf "%.0f", b/t/1e6}')
gcm_down_setup=$(awk -v b="$bytes" -v mbs="$gcm_down_m" -v s="$ssh_true_m" 'BEGIN{t=b/mbs/1e6 - s/1000; printf "%.0f", b/t/1e6}')
verdict() { awk -v v="$1" -v op="$2" -v t="$3" 'BEGIN{ok = (op == ">=") ? v >= t : v <= t; print ok ? "met" : "**not met**"}'; }
up_ratio=$(ratio "$recon_up_m" "$gcm_up_m"); down_ratio=$(ratio "$recon_down_m" "$gcm_down_m")
ncpu=$(nproc)
up_ceiling=$(awk -v s="$b3_mbps" -v a="$aes256_mbps" -v n="$ncpu" 'BEGIN{printf "%.0f", n/(2/s + 2/a)}')
down_ceiling=$(awk -v s="$b3_mbps" -v a="$aes256_mbps" -v n="$ncpu" 'BEGIN{printf "%.0f", n/(1/s + 2/a)}')
up_cpu_ceiling=$(awk -v c="$(med "${cpu_up[recon]}")" -v n="$ncpu" 'BEGIN{printf "%.0f", n/c*1073.741824}')
down_cpu_ceiling=$(awk -v c="$(med "${cpu_down[recon]}")" -v n="$ncpu" 'BEGIN{printf "%.0f", n/c*1073.741824}')
# The floor: the plain copy's CPU plus the crypto's, per GiB.
up_floor=$(awk -v c="$copy_cpu" -v s="$b3_mbps" -v a="$aes256_mbps" 'BEGIN{printf "%.2f", c + (2/s + 2/a)*1073.741824}')
down_floor=$(awk -v c="$copy_cpu" -v s="$b3_mbps" -v a="$aes256_mbps" 'BEGIN{printf "%.2f", c + (1/s + 2/a)*1073.741824}')
up_floor_ceiling=$(awk -v c="$up_floor" -v n="$ncpu" 'BEGIN{printf "%.0f", n/c*1073.741824}')
down_floor_ceiling=$(awk -v c="$down_floor" -v n="$ncpu" 'BEGIN{printf "%.0f", n/c*1073.741824}')
up_target=$(awk -v g="$gcm_up_m" 'BEGIN{printf "%.0f", 2*g}')
down_target=$(awk -v g="$gcm_down_m" 'BEGIN{printf "%.0f", 1.5*g}')

# pin_targets: the rows of issue 21's targets (one core per end).
pin_targets() {
  [ "$ncores" -ge 2 ] || return 0
  local r
  r=$(ratio "$(med "${pup[recon]}")" "$(med "${pup[scp-gcm]}")")
  printf '| one core per end: upload ≥ 1.5× scp aes128-gcm (issue 21) | %s× (section 0) | %s |\n' "$r" "$(verdict "$r" ">=" 1.5)"
  r=$(ratio "$(med "${pdown[recon]}")" "$(med "${pdown[scp-gcm]}")")
  printf '| one core per end: download ≥ 1.5× scp aes128-gcm (issue 21) | %s× (section 0) | %s |' "$r" "$(verdict "$r" ">=" 1.5)"
}


mkdir -p "$(dirname "$OUT")"
{
cat <<EOF
# Performance

Written by \`make bench\` (\`bench/run.sh\`) on $(date -u '+%Y-%m-%d %H:%M UTC'); every figure is from that
one run on this machine. recon and OpenSSH ran side by side, alternating run by run ($RUNS runs of each
transfer); tables give the median in bold and then every run. MB/s is 10^6 bytes per second of wall time
of the whole command (process start, connection set-up, transfer, fsync), as a user waits for it.

## The machine

| | |
|---|---|
| CPU | $(nproc) cores, $cpu_model ($cpu_flags) |
| memory | $mem_gib GiB |
| kernel | $(uname -sr) |
| Go | $go_version |
| OpenSSH | $ssh_version; default cipher \`$default_cipher\` |
| data, main rows | \`$BENCH_DIR\`: $bench_fs, in memory |
| data, disk rows | \`$DISK_DIR\`: $disk_fs; \`dd if=/dev/zero bs=1M count=1024 conv=fdatasync\`: **$dd_mbps MB/s** |
| load average | $load_before before, $load_after after (a shared machine: expect noise) |

Client and server (and sshd) run on this one machine. In section 0 (the headline) each end has a core of
its own; in the other sections they share all $(nproc) cores.

EOF
pin_section
cat <<EOF
## 1. Transfers of $SIZE_MIB MiB

On $BENCH_DIR (tmpfs): the sender reads from memory and the receiver writes to memory, so the figures
measure the tools, not a disk. "× scp" is the row's median over scp aes128-gcm's median. "CPU s/GiB"
is the CPU time of the client (with the processes it starts) and of the serving process (\`recon server\`;
sshd with its session processes) per GiB, median: unlike wall time, other work on the machine hardly
changes it.

| tool | upload MB/s | runs | CPU s/GiB | download MB/s | runs | CPU s/GiB | upload × scp-gcm | download × scp-gcm |
|---|---|---|---|---|---|---|---|---|
EOF
for t in "${tools[@]}"; do
  case $t in
    recon) label="recon (AES-256-GCM, BLAKE3 both ends, fsync)" ;;
    scp-gcm) label="scp -c aes128-gcm@openssh.com" ;;
    scp-def) label="scp (default: $default_cipher)" ;;
    sftp-gcm) label="sftp -c aes128-gcm@openssh.com" ;;
    sftp-def) label="sftp (default: $default_cipher)" ;;
  esac
  mu=$(med "${up[$t]}"); md=$(med "${down[$t]}")
  printf '| %s | **%s** | %s | %s | **%s** | %s | %s | %s | %s |\n' "$label" "$mu" "$(joined ${up[$t]})" "$(med "${cpu_up[$t]}")" \
    "$md" "$(joined ${down[$t]})" "$(med "${cpu_down[$t]}")" "$(ratio "$mu" "$gcm_up_m")" "$(ratio "$md" "$gcm_down_m")"
done
cat <<EOF

On disk: the receiver writes to \`$DISK_DIR\` ($disk_fs; the sender still reads from tmpfs). recon
fsyncs every file it receives before it reports success, so its upload and download cannot beat the
disk's own write speed with \`conv=fdatasync\`, **$dd_mbps MB/s** in this run; scp does not fsync.

| tool | upload MB/s | runs | download MB/s | runs | upload × scp-gcm | download × scp-gcm |
|---|---|---|---|---|---|---|
EOF
dgcm_up=$(med "${dup[scp-gcm]}"); dgcm_down=$(med "${ddown[scp-gcm]}")
for t in "${disk_tools[@]}"; do
  case $t in
    recon) label="recon, to disk" ;;
    scp-gcm) label="scp -c aes128-gcm@openssh.com, to disk" ;;
  esac
  mu=$(med "${dup[$t]}"); md=$(med "${ddown[$t]}")
  printf '| %s | **%s** | %s | **%s** | %s | %s | %s |\n' "$label" "$mu" "$(joined ${dup[$t]})" "$md" "$(joined ${ddown[$t]})" \
    "$(ratio "$mu" "$dgcm_up")" "$(ratio "$md" "$dgcm_down")"
done
cat <<EOF

The scp and sftp times include OpenSSH's connection set-up (\`ssh host true\`: $ssh_true_m ms and
$(median "${ssh_true_cpu[@]}") ms of CPU, mostly its post-quantum key exchange; section 3);
without it scp aes128-gcm would reach about $gcm_up_setup MB/s up and $gcm_down_setup MB/s down. recon's
set-up (process start, handshake) is a few milliseconds (section 3).

### What bounds a transfer here

Both ends share the machine's $(nproc) cores, and every byte recon moves is hashed by the sender and again
by the receiver (the integrity check of the design; BLAKE3, the hash \`recon submit\` and \`recon fetch\`
choose, protocol 3), besides being sealed and opened with AES-256-GCM. On one core of this machine
(\`reconbench limits\`): BLAKE3 **$b3_mbps MB/s** (SHA-256, which version-2 clients and the Python client
use, $sha_mbps MB/s), AES-256-GCM **$aes256_mbps MB/s** (AES-128-GCM, OpenSSH's aes128-gcm, $aes128_mbps MB/s
in Go; OpenSSL's is faster). A result's SHA-256 and BLAKE3 are taken when it is collected, after the script
and before any transfer.

| | upload | download |
|---|---|---|
| per-byte crypto work (both ends) | 2 × BLAKE3 + 2 × AES-GCM | 1 × BLAKE3 + 2 × AES-GCM |
| ceiling from that work alone, all $(nproc) cores busy, no copying or system calls | $up_ceiling MB/s | $down_ceiling MB/s |
| a plain copy with neither crypto nor hashing (file → loopback TCP → file, \`reconbench limits\`, the least CPU of 3 runs): $copy_mbps MB/s, CPU per GiB | $copy_cpu s | $copy_cpu s |
| floor: that copy plus the crypto work, CPU per GiB | $up_floor s | $down_floor s |
| ceiling from the floor, all $(nproc) cores busy | $up_floor_ceiling MB/s | $down_floor_ceiling MB/s |
| recon's measured CPU per GiB (client and server processes, median) | $(med "${cpu_up[recon]}") s | $(med "${cpu_down[recon]}") s |
| ceiling from that, all $(nproc) cores busy | $up_cpu_ceiling MB/s | $down_cpu_ceiling MB/s |
| target (2× and 1.5× scp aes128-gcm's median) | $up_target MB/s | $down_target MB/s |

The rest of recon's CPU time is the kernel's: reading the file, the loopback TCP copies, and writing the
received file to tmpfs (which allocates and charges every page; \`dd\` to tmpfs costs about as much).
The plain copy measures that share alone; recon's own CPU per GiB above the floor (its framing, pipeline
and system-call pattern) is the difference between the two CPU rows.
scp spends more CPU per GiB than recon (table above) but needs no hashing, and its two processes per end
overlap on the two cores.

## 2. Peak memory (RSS)

Client: \`/usr/bin/time\` (maximum resident set). Server: \`VmHWM\` of \`/proc/PID/status\` of a server
started for the measurement, after the upload and the download.

| transfer | client, upload | client, download | server | target |
|---|---|---|---|---|
| $SIZE_MIB MiB ($RUNS each way, tmpfs) | $(( $(maxof "${rss_up_1[@]}") / 1024 )) MiB | $(( $(maxof "${rss_down_1[@]}") / 1024 )) MiB | $hwm_A_1g MiB | client ≤ 32 MiB, server ≤ 48 MiB |
| $BIG_MIB MiB (one each way, disk) | $((big_up_kb / 1024)) MiB | $((big_down_kb / 1024)) MiB | $hwm_C_4g MiB | client ≤ 32 MiB, server ≤ 48 MiB |

The $BIG_MIB MiB transfers ran at $(mbps "$big_bytes" "$big_up_ms") MB/s up and $(mbps "$big_bytes" "$big_down_ms") MB/s down (to disk).

## 3. A whole small job

A 1 KiB file and a script that does nothing: submit and wait for the end (there are no results to fetch).
MAX_CONCURRENT_JOBS = 2.

| path | data on | p50 ms | p90 ms |
|---|---|---|---|
| \`recon submit\` (CLI: a new process and session per job; 60 jobs) | tmpfs | **${s_cli[0]}** | ${s_cli[1]} |
| client package, a new session per job (200 jobs) | tmpfs | **${s_new[0]}** | ${s_new[1]} |
| client package, one session for all (200 jobs) | tmpfs | **${s_one[0]}** | ${s_one[1]} |
| \`recon submit\` (CLI) | disk | **${d_cli[0]}** | ${d_cli[1]} |
| client package, a new session per job | disk | **${d_new[0]}** | ${d_new[1]} |
| client package, one session for all | disk | **${d_one[0]}** | ${d_one[1]} |
| \`ssh host true\` (OpenSSH connection, no work; 10 runs) | – | **$ssh_true_m** | $(printf '%s\n' "${ssh_true[@]}" | sort -n | awk '{a[NR]=$1} END{print a[int(NR*0.9+0.5)]}') |

## 4. Jobs per second

8 clients through the client package, each on its own session running whole small jobs one after another
for 3 s; MAX_CONCURRENT_JOBS = 2 (each job also starts the script: one process).

| data on | jobs/s | runs |
|---|---|---|
| tmpfs | **$s_jps** | $s_jps_runs |
| disk | **$d_jps** | $d_jps_runs |

## 5. 256 clients at once

256 clients started together, each dialling its own session and submitting 1 MiB (server on tmpfs).

| succeeded | wall time | server peak RSS | dials refused and retried |
|---|---|---|---|
| **$burst_ok of 256** | $burst_s s | $hwm_E MiB | $burst_retries |

All clients come from 127.0.0.1, and a server admits at most 128 connections and 16 handshakes in progress
per address (\`internal/listen\`); a client beyond that is refused at once and retries after a short,
jittered pause (\`bench/reconbench\`), as the count of retries shows.

## 6. Relay

Upload of $SIZE_MIB MiB through a relay (one backend, all on 127.0.0.1, tmpfs) against the same upload
straight to the server, alternating, $RELAY_RUNS runs each (client, relay and server share the 2 cores,
so this comparison is the noisiest of all; the ratio of the medians is the one held against the target,
the pair-by-pair ratios show the spread). The relay's own work per byte is a second decryption and
encryption and two more socket copies, on the same cores: it opens each record of the client's session in
its read buffer and seals it for the backend from there (\`secure.Forward\`), with no copy in between.

| path | upload MB/s | runs |
|---|---|---|
| direct | **$direct_m** | $(joined "${direct_up[@]}") |
| through the relay | **$relay_m** | $(joined "${relay_up[@]}") |
| relay / direct (of the medians) | **$relay_pct %** | |
| relay / direct, pair by pair | $pair_m % (median) | $(joined "${pair_pct[@]}") |

CPU time per GiB of the processes involved, the steadier measure on a shared machine (\`/usr/bin/time\` for
the client, \`/proc/PID/stat\` for server and relay):

| CPU s/GiB | median | runs |
|---|---|---|
| direct: client and server | **$direct_cpu_m** | $(joined "${direct_cpu[@]}") |
| through the relay: client, relay and server | **$relayed_cpu_m** | $(joined "${relayed_cpu[@]}") |
| of that, the relay | **$relay_cpu_m** | $(joined "${relay_cpu[@]}") |

With both cores busy all the time, throughput goes as the inverse of the CPU time per GiB: by CPU time alone,
the relay would reach **$cpu_pct %** of direct.

The relay's peak RSS (\`VmHWM\`) after all its uploads: **$hwm_relay MiB**.

## 7. Restart with $QUEUED queued jobs

The queue was filled through the client package ($QUEUED submissions of 1 KiB, 8 clients, $fill_s s;
the resource gate held every job). The server was then killed with SIGKILL and started again $RUNS times
(each start ended by SIGKILL too): the time from starting the process to the first successful status
request, which also checks that all $QUEUED jobs are still queued.

| p50 | max |
|---|---|
| **$restart_p50 ms** | $restart_max ms |

## Targets

Issue 3 (server core) set absolute targets when scp aes128-gcm measured 435 MB/s on this machine; in
this run it measured $gcm_up_m MB/s. Issue 9 (performance) set targets relative to OpenSSH in the same run.

| target | measured | |
|---|---|---|
| 1 GiB upload ≥ 650 MB/s (issue 3) | $recon_up_m MB/s (tmpfs; at most about $up_floor_ceiling MB/s on this machine from the floor of section 1, $up_cpu_ceiling MB/s from recon's CPU per GiB) | $(verdict "$recon_up_m" ">=" 650) |
| peak RSS ≤ 64 MiB each at 1 and 4 GiB (issue 3) | client $(( $(maxof "${rss_up_1[@]}" "${rss_down_1[@]}") / 1024 )) and $rss_client_4g MiB, server $hwm_A_1g and $hwm_C_4g MiB | $(verdict "$(maxof "$hwm_A_1g" "$hwm_C_4g" "$rss_client_4g" $(( $(maxof "${rss_up_1[@]}" "${rss_down_1[@]}") / 1024 )))" "<=" 64) |
| small job through the client package on one connection, p50 ≤ 10 ms (issue 3) | ${s_one[0]} ms (tmpfs), ${d_one[0]} ms (disk) | $(verdict "${d_one[0]}" "<=" 10) |
$(pin_targets)
| upload ≥ 2× scp aes128-gcm | ${up_ratio}× ($recon_up_m vs $gcm_up_m MB/s; CPU bound: at most about $up_cpu_ceiling MB/s here, section 1) | $(verdict "$up_ratio" ">=" 2) |
| download ≥ 1.5× scp aes128-gcm | ${down_ratio}× ($recon_down_m vs $gcm_down_m MB/s; at most about $down_cpu_ceiling MB/s here) | $(verdict "$down_ratio" ">=" 1.5) |
| server peak RSS ≤ 48 MiB ($BIG_MIB MiB) | $hwm_C_4g MiB | $(verdict "$hwm_C_4g" "<=" 48) |
| client peak RSS ≤ 32 MiB ($BIG_MIB MiB) | $rss_client_4g MiB | $(verdict "$rss_client_4g" "<=" 32) |
| small job via the CLI p50 ≤ 30 ms | ${s_cli[0]} ms (tmpfs), ${d_cli[0]} ms (disk) | $(verdict "${s_cli[0]}" "<=" 30) |
| ≥ 300 jobs/s via the client package | $s_jps (tmpfs), $d_jps (disk) | $(verdict "$s_jps" ">=" 300) |
| relay ≥ 70 % of direct | $relay_pct % | $(verdict "$relay_pct" ">=" 70) |
| relay peak RSS ≤ 64 MiB | $hwm_relay MiB | $(verdict "$hwm_relay" "<=" 64) |
| restart with $QUEUED queued ≤ 1 s | $restart_p50 ms | $(verdict "$restart_p50" "<=" 1000) |
EOF
if [ -f "$repo/bench/NOTES.md" ]; then echo; cat "$repo/bench/NOTES.md"; fi
} > "$OUT"
log "wrote $OUT in $(($(date +%s) - bench_start)) s"
cat "$OUT"
