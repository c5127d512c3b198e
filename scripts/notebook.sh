#!/usr/bin/env bash
# Runs examples/example_usage.ipynb top to bottom with Debian's Jupyter
# (jupyter-nbconvert, python3-ipykernel) against a local server the notebook
# starts itself, and fails if a cell failed or no image was shown.
# Usage: scripts/notebook.sh [path/to/recon]
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
recon=$(cd "$repo" && realpath "${1:-bin/recon}")
[ -x "$recon" ] || { echo "notebook: no recon binary at $recon (make build)" >&2; exit 1; }
command -v jupyter-nbconvert >/dev/null 2>&1 || {
  echo "notebook: jupyter-nbconvert is missing (scripts/ensure-deps.sh installs it)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# A server of its own, not the one a RECON_OPTS of this shell names.
unset RECON_OPTS RECON_KEEP_FILES
export RECON_BIN="$recon"
# The notebook's work dir (server data, raw files, results) goes under $tmp,
# so nothing is left behind even when a cell fails.
export TMPDIR="$tmp"
# Quiet ipykernel's debugger warnings about frozen modules.
export PYDEVD_DISABLE_FILE_VALIDATION=1

start=$(date +%s)
# The kernel "python3" is Debian's /usr/bin/python3 with ipykernel. Each cell
# may run 2 minutes, the whole notebook 5.
if ! timeout 300 jupyter-nbconvert --to notebook --execute \
    --ExecutePreprocessor.kernel_name=python3 --ExecutePreprocessor.timeout=120 \
    --output-dir "$tmp" --output executed.ipynb \
    "$repo/examples/example_usage.ipynb" 2>"$tmp/nbconvert.log"; then
  cat "$tmp/nbconvert.log" >&2
  echo "notebook: FAILED (a cell raised, or the notebook timed out)" >&2
  exit 1
fi

python3 - "$tmp/executed.ipynb" "$(($(date +%s) - start))" <<'PY'
import json, sys
nb = json.load(open(sys.argv[1]))
code = [c for c in nb["cells"] if c["cell_type"] == "code"]
outputs = [o for c in code for o in c.get("outputs", [])]
errors = [o for o in outputs if o.get("output_type") == "error"]
images = [o for o in outputs if "image/png" in o.get("data", {})]
unrun = [c for c in code if c.get("execution_count") is None]
problems = []
for e in errors:
    problems.append(f"cell error: {e.get('ename')}: {e.get('evalue')}")
if unrun:
    problems.append(f"{len(unrun)} code cell(s) did not run")
if not images:
    problems.append("no image/png output")
if problems:
    print("notebook: FAILED\n  " + "\n  ".join(problems), file=sys.stderr)
    sys.exit(1)
print(f"notebook: {len(code)} code cells ran without error, {len(images)} image(s) shown, {sys.argv[2]} s")
PY
