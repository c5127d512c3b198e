#!/usr/bin/env bash
# CI fuzzing: runs every fuzz target of the module for a bounded number of
# executions each (FUZZ_EXECS, 50000 by default), after `make test` has run
# their seed corpora. A crasher fails the run; go test writes it under the
# package's testdata/fuzz/<Target>/, where it is committed as a regression
# case once the bug is fixed.
#
# The budget is a count, not a duration: with a duration, Go 1.26's fuzz
# coordinator can report a bare "context deadline exceeded" failure when the
# time runs out while a worker is mid-execution (golang/go#75804, fixed in
# Go 1.27). A count has no deadline to race; a loaded machine only makes the
# run slower. At this machine's rates (2,500-25,000 execs/s per target) the
# ten targets take about a minute.
set -euo pipefail
n_execs=${FUZZ_EXECS:-50000}
cd "$(dirname "$0")/.."
start=$SECONDS
n=0
for pkg in $(go list ./...); do
  for f in $(go test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true); do
    echo "== $pkg $f (${n_execs} execs)"
    go test -run '^$' -fuzz "^$f\$" -fuzztime "${n_execs}x" -timeout 5m "$pkg"
    n=$((n + 1))
  done
done
echo "fuzz-ci: $n targets, $n_execs execs each, in $((SECONDS - start)) s"
