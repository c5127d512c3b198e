#!/usr/bin/env bash
# Runs examples/example_usage.ipynb top to bottom with Debian's Jupyter
# (jupyter-nbconvert, python3-ipykernel), twice, as its two users would:
#
#   1. with no RECON_OPTS: the notebook starts a local server of its own and
#      must stop it again;
#   2. with RECON_OPTS naming the client config of a server this script
#      started, as for a site's running server.
#
# Each run fails if a cell failed or did not run, if no image was shown, or
# (when bart and pydicom are installed) if no DICOM header was shown.
# Usage: scripts/notebook.sh [path/to/recon]
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
recon=$(cd "$repo" && realpath "${1:-bin/recon}")
[ -x "$recon" ] || { echo "notebook: no recon binary at $recon (make build)" >&2; exit 1; }
command -v jupyter-nbconvert >/dev/null 2>&1 || {
  echo "notebook: jupyter-nbconvert is missing (scripts/ensure-deps.sh installs it)" >&2; exit 1; }
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

export RECON_BIN="$recon"
# The notebook imports the recon package (python/) with the kernel's Python.
export PYTHONPATH="$repo/python${PYTHONPATH:+:$PYTHONPATH}"
unset RECON_KEEP_FILES
# The notebook's work dir (server data, raw files, results) goes under $tmp,
# so nothing is left behind even when a cell fails.
export TMPDIR="$tmp"
# Quiet ipykernel's debugger warnings about frozen modules.
export PYDEVD_DISABLE_FILE_VALIDATION=1
want_dicom=0
if command -v bart >/dev/null && python3 -c 'import pydicom' 2>/dev/null; then want_dicom=1; fi

run() { # LABEL
  local label=$1 start=$SECONDS
  # The kernel "python3" is Debian's /usr/bin/python3 with ipykernel. Each
  # cell may run 2 minutes, the whole notebook 5.
  if ! timeout 300 jupyter-nbconvert --to notebook --execute \
      --ExecutePreprocessor.kernel_name=python3 --ExecutePreprocessor.timeout=120 \
      --output-dir "$tmp" --output "$label.ipynb" \
      "$repo/examples/example_usage.ipynb" 2>"$tmp/$label.log"; then
    cat "$tmp/$label.log" >&2
    echo "notebook ($label): FAILED (a cell raised, or the notebook timed out)" >&2
    exit 1
  fi
  python3 - "$tmp/$label.ipynb" "$label" "$((SECONDS - start))" "$want_dicom" <<'PY'
import json, sys
path, label, seconds, want_dicom = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
nb = json.load(open(path))
code = [c for c in nb["cells"] if c["cell_type"] == "code"]
outputs = [o for c in code for o in c.get("outputs", [])]
errors = [o for o in outputs if o.get("output_type") == "error"]
images = [o for o in outputs if "image/png" in o.get("data", {})]
unrun = [c for c in code if c.get("execution_count") is None]
def text(o):
    t = o.get("text") or o.get("data", {}).get("text/plain") or o.get("data", {}).get("text/html") or ""
    return "".join(t) if isinstance(t, list) else t
# pydicom names the image size element "Rows"; the header table shows it.
dicom = any("Rows" in text(o) and "0028" in text(o) for o in outputs)
problems = [f"cell error: {e.get('ename')}: {e.get('evalue')}" for e in errors]
if unrun:
    problems.append(f"{len(unrun)} code cell(s) did not run")
if not images:
    problems.append("no image/png output")
if want_dicom and not dicom:
    problems.append("no DICOM header shown (bart and pydicom are installed)")
if problems:
    print(f"notebook ({label}): FAILED\n  " + "\n  ".join(problems), file=sys.stderr)
    sys.exit(1)
print(f"notebook ({label}): {len(code)} code cells ran without error, {len(images)} image(s)"
      f"{', the DICOM header' if dicom else ''} shown, {seconds} s")
PY
}

# 1. The notebook's own server. Afterwards no server of its may be left.
unset RECON_OPTS
run own-server
if pgrep -f -- "--opts $tmp/recon-notebook-" >/dev/null; then
  echo "notebook (own-server): FAILED: the server the notebook started is still running" >&2
  pgrep -af -- "--opts $tmp/recon-notebook-" >&2
  exit 1
fi

# 2. A running server named by RECON_OPTS (a client config of three keys).
ext=$tmp/site
mkdir -p "$ext"
key=$("$recon" keygen)
cat > "$ext/recon.opts" <<EOF
SERVER_HOSTNAME = 127.0.0.1
SERVER_PORT = 0
SHARED_KEY = $key
SERVER_ADMIN_PORT = 0
SERVER_ADMIN_SHARED_KEY = $("$recon" keygen)
TRUSTED_IPS = 127.0.0.1
RECON_SCRIPT_PATH = $repo/default_recon_script.sh
RECON_SERVER_BASE_PFILE_DIR = data/inputs
RECON_JOB_OUTPUT_BASE_DIR = data/outputs
RECON_SERVER_STATE_DIR = data/state
LOG_FILEPATH = recon.log
MIN_FREE_DISK_MB = 64
MAX_CPU_LOAD_PERCENT = 100
MIN_AVAILABLE_MEMORY_MB = 0
EOF
"$recon" server --opts "$ext/recon.opts" </dev/null >/dev/null 2>"$ext/server.err" &
server_pid=$!
addr=
for _ in $(seq 1 300); do
  addr=$(sed -n 's/.*clients on \([^,]*\), admin on.*/\1/p' "$ext/server.err" | head -1)
  [ -n "$addr" ] && break
  kill -0 "$server_pid" 2>/dev/null || break
  sleep 0.1
done
[ -n "$addr" ] || { cat "$ext/server.err" >&2; echo "notebook: the site server did not start" >&2; exit 1; }
printf 'SERVER_HOSTNAME = %s\nSERVER_PORT = %s\nSHARED_KEY = %s\n' "${addr%:*}" "${addr##*:}" "$key" > "$ext/client.opts"
RECON_OPTS=$ext/client.opts run site-server
kill -0 "$server_pid" 2>/dev/null || { echo "notebook (site-server): FAILED: the site server is gone" >&2; exit 1; }
