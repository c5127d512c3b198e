#!/usr/bin/env bash
# Stops the Orthanc that scripts/orthanc-up.sh DIR started (SIGTERM, then
# SIGKILL after 20 s). Leaves DIR in place. Does nothing when none runs.
set -euo pipefail
dir=${1:?usage: orthanc-down.sh DIR}
[ -e "$dir/orthanc.pid" ] || exit 0
pid=$(cat "$dir/orthanc.pid")
# Only the Orthanc of this directory: its command line names the config.
if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$dir/orthanc.json"; then
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 200); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "orthanc-down: Orthanc $pid did not stop in 20 s; killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
fi
rm -f "$dir/orthanc.pid"
