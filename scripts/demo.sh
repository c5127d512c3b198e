#!/usr/bin/env bash
# The end-to-end demo: a server with fresh keys in a temporary directory, an
# 8-coil 256x256 BART phantom submitted to it, the images back in
# ./demo-output/. Usage: [DEMO_OUTPUT=DIR] scripts/demo.sh [path/to/recon]
# DEMO_OUTPUT names another directory for the images; it must not exist or
# be empty (./demo-output/ is replaced on every run).
set -euo pipefail
umask 077
repo=$(cd "$(dirname "$0")/.." && pwd)
recon=$(cd "$repo" && realpath "${1:-bin/recon}")
out=${DEMO_OUTPUT:-$repo/demo-output}
if [ -n "${DEMO_OUTPUT:-}" ] && [ -e "$out" ] && [ -n "$(ls -A "$out")" ]; then
  echo "DEMO_OUTPUT=$out is not empty" >&2
  exit 1
fi
tmp=$(mktemp -d)
server_pid=
cleanup() {
  if [ -n "$server_pid" ]; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM # the server is stopped on these too

# A fresh config: new keys, free ports on loopback, data in the temp dir.
key=$("$recon" keygen)
cat > "$tmp/recon.opts" <<OPTS
SERVER_HOSTNAME = 127.0.0.1
SERVER_PORT = 0
SHARED_KEY = $key
SERVER_ADMIN_PORT = 0
SERVER_ADMIN_SHARED_KEY = $("$recon" keygen)
TRUSTED_IPS = 127.0.0.1,::1
RECON_SCRIPT_PATH = $repo/default_recon_script.sh
RECON_SERVER_BASE_PFILE_DIR = data/inputs
RECON_JOB_OUTPUT_BASE_DIR = data/outputs
RECON_SERVER_STATE_DIR = data/state
LOG_FILEPATH = recon.log
# No pause for CPU load: the demo's own BART run must not hold it up.
MAX_CPU_LOAD_PERCENT = 100
MIN_FREE_DISK_MB = 64
OPTS

"$recon" server --opts "$tmp/recon.opts" 2>"$tmp/server.err" &
server_pid=$!
addr=
for _ in $(seq 1 100); do
  addr=$(sed -n 's/.*clients on \([^,]*\),.*/\1/p' "$tmp/server.err")
  [ -n "$addr" ] && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$tmp/server.err" >&2; exit 1; }
  sleep 0.1
done
[ -n "$addr" ] || { echo "server did not start" >&2; cat "$tmp/server.err" >&2; exit 1; }
echo "server with fresh keys listening on $addr (config $tmp/recon.opts)"

# The client needs only three keys.
cat > "$tmp/client.opts" <<OPTS
SERVER_HOSTNAME = ${addr%:*}
SERVER_PORT = ${addr##*:}
SHARED_KEY = $key
OPTS

echo "generating an 8-coil 256x256 k-space phantom with BART"
bart phantom -k -s 8 -x 256 "$tmp/phantom" >/dev/null

if [ -z "${DEMO_OUTPUT:-}" ]; then rm -rf "$out"; fi
"$recon" submit --opts "$tmp/client.opts" --output "$out" \
  "$tmp/phantom.cfl" "$tmp/phantom.hdr"

echo
echo "images: $out/phantom.png and $out/phantom.dcm"
