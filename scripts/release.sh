#!/usr/bin/env bash
# Builds the recon binary for every platform it ships for, into a build
# directory (default build/release; not committed), with a SHA-256
# checksum file:
#
#   recon-VERSION-linux-amd64, -linux-arm64        client, server, relay, admin
#   recon-VERSION-windows-amd64.exe                client commands (server and
#   recon-VERSION-darwin-arm64, -darwin-amd64       relay: Linux and Unix)
#   SHA256SUMS                                      `sha256sum -c SHA256SUMS`
#
# Static binaries (CGO_ENABLED=0: the SQLite driver is pure Go), built with
# -trimpath and the version `recon version` prints.
# Usage: scripts/release.sh VERSION [OUTDIR]
# (RELEASE_TARGETS="windows/amd64 ..." builds only those.)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
version=${1:?usage: scripts/release.sh VERSION [OUTDIR]}
out=${2:-$repo/build/release}
GO=${GO:-go}
read -r -a targets <<< "${RELEASE_TARGETS:-linux/amd64 linux/arm64 windows/amd64 darwin/arm64 darwin/amd64}"
mkdir -p "$out"
out=$(cd "$out" && pwd)
rm -f "$out"/recon-* "$out/SHA256SUMS"
cd "$repo"
names=()
for t in "${targets[@]}"; do
  os=${t%/*} arch=${t#*/}
  name=recon-$version-$os-$arch
  [ "$os" = windows ] && name=$name.exe
  GOOS=$os GOARCH=$arch CGO_ENABLED=0 "$GO" build -trimpath \
    -ldflags "-s -w -X main.version=$version" -o "$out/$name" ./cmd/recon
  names+=("$name")
  echo "release: $name" >&2
done
(cd "$out" && sha256sum -- "${names[@]}" > SHA256SUMS)
echo "release: $out/SHA256SUMS" >&2
