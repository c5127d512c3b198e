#!/usr/bin/env bash
# Builds recon for the platforms of the scanner-side and scientists'
# computers, and checks the client-side packages there: for each target,
# `go build ./cmd/recon`, then `go vet` and `go test -c` of the packages a
# client uses. Nothing here can run those binaries (Debian's Wine cannot
# start Go >= 1.24 programs): it proves that they build, with their tests.
#
# The server-side packages (internal/server, runner, reap, jobs' tests,
# servertest) and the test files that start real servers are Unix only
# (build tags); `recon server` says so on Windows.
#
# Usage: scripts/cross.sh [GOOS/GOARCH ...]   (default: the three below)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
GO=${GO:-go}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(windows/amd64 darwin/arm64 darwin/amd64)
# The packages of the client side: the client API and what it stands on,
# the watch daemon, the config files and keys. Keep in step with
# docs/ARCHITECTURE.md when a client-side package is added.
pkgs=(./client ./internal/secure ./internal/protocol ./internal/xfer ./internal/keys ./internal/config
  ./internal/rpc ./internal/watch ./internal/statelock ./internal/allowlist ./internal/options
  ./internal/listen ./internal/daemon ./internal/dicom)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for t in "${targets[@]}"; do
  export GOOS=${t%/*} GOARCH=${t#*/} CGO_ENABLED=0
  start=$SECONDS
  "$GO" build -o "$tmp/recon-$GOOS-$GOARCH" ./cmd/recon
  "$GO" vet "${pkgs[@]}"
  mkdir -p "$tmp/$GOOS-$GOARCH"
  "$GO" test -c -o "$tmp/$GOOS-$GOARCH/" "${pkgs[@]}" | { grep -v 'no test files' || true; }
  echo "cross: $t: recon built, ${#pkgs[@]} client-side packages vetted and their tests compiled ($((SECONDS - start)) s)"
done
