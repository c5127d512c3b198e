#!/usr/bin/env bash
# Tests the Python client (python/, distribution recon-client) with Debian's
# /usr/bin/python3, python3-cryptography and python3-pytest
# (scripts/ensure-deps.sh installs them):
#
#   1. installs it offline, as a user would (pip install --no-build-isolation,
#      which builds with Debian's setuptools instead of downloading one),
#      into a temporary directory;
#   2. runs python/tests against that installed copy: the protocol's test
#      vectors, a hostile test server, and real `recon server`s of this tree
#      (the binary given, default bin/recon) on 127.0.0.1.
#
# Usage: scripts/python-test.sh [path/to/recon]
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
recon=$(cd "$repo" && realpath "${1:-bin/recon}")
[ -x "$recon" ] || { echo "python-test: no recon binary at $recon (make build)" >&2; exit 1; }
py=/usr/bin/python3
for m in cryptography pytest pip setuptools; do
  "$py" -c "import $m" 2>/dev/null || {
    echo "python-test: $py cannot import $m (scripts/ensure-deps.sh installs it)" >&2; exit 1; }
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Build from a copy, so that the build leaves nothing in the tree.
cp -r "$repo/python" "$tmp/src"
rm -rf "$tmp/src/build" "$tmp/src"/*.egg-info
PIP_DISABLE_PIP_VERSION_CHECK=1 "$py" -m pip install -q --no-build-isolation --no-deps --no-index \
  --target "$tmp/site" "$tmp/src" 2> >(grep -v "Running pip as the 'root' user" >&2)
# From the tests directory: python -m puts the working directory first on
# sys.path, which must not hold the source tree.
cd "$repo/python/tests"
RECON_BIN="$recon" RECON_TEST_INSTALLED="$tmp/site" PYTHONPATH="$tmp/site" \
  RECON_TEST_STRICT="${RECON_TEST_STRICT:-1}" PYTHONDONTWRITEBYTECODE=1 \
  timeout 900 "$py" -m pytest -q -p no:cacheprovider .
