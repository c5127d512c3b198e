#!/usr/bin/env bash
# CI fuzzing: runs every fuzz target of the module for a bounded time each
# (FUZZTIME, 10s by default), after `make test` has run their seed corpora.
# A crasher fails the run; go test writes it under the package's
# testdata/fuzz/<Target>/, where it is committed as a regression case once
# the bug is fixed.
set -euo pipefail
t=${FUZZTIME:-10s}
cd "$(dirname "$0")/.."
start=$SECONDS
n=0
for pkg in $(go list ./...); do
  for f in $(go test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true); do
    echo "== $pkg $f ($t)"
    go test -run '^$' -fuzz "^$f\$" -fuzztime "$t" "$pkg"
    n=$((n + 1))
  done
done
echo "fuzz-ci: $n targets, $t each, in $((SECONDS - start)) s"
