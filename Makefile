# recon — build, test, demo.
GO ?= go
BIN := bin/recon

.PHONY: build test demo fuzz clean deps notebook bench cross release python-test test-slurm-slow bench-slurm

# The version `recon version` prints: git describe of the checkout (a tag,
# or the commit, with -dirty for uncommitted changes). Outside a git
# checkout it is empty and recon falls back to the module's build info.
VERSION ?= $(shell git describe --always --dirty 2>/dev/null)

# A static binary (CGO_ENABLED=0; the SQLite driver is pure Go), as
# scripts/release.sh builds it: it maps no libc, so every recon process
# starts sooner and holds 1.5 MiB less.
build:
	CGO_ENABLED=0 $(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/recon

# The whole test suite: vet, every test with the race detector (with a
# single-node Slurm cluster from scripts/slurm-up.sh for the Slurm executor's
# tests, and a private Orthanc on 127.0.0.1 from scripts/orthanc-up.sh for the
# PACS delivery tests, both stopped after them whatever they do), the Python
# client's tests (against bin/recon), the binary and the client-side packages
# with their tests built for Windows and macOS, the example notebook, the demo
# (into a temporary directory: it must leave a non-empty DICOM and PNG), then
# every fuzz target for a bounded number of executions.
test: deps build
	$(GO) vet ./...
	pacs=$$(mktemp -d) && slurm= && \
	  trap 'test -z "$$slurm" || scripts/slurm-down.sh "$$slurm"; scripts/orthanc-down.sh "$$pacs"; rm -rf "$$pacs"' EXIT && \
	  slurm=$$(scripts/slurm-up.sh) && \
	  scripts/orthanc-up.sh "$$pacs" && . "$$pacs/env" && \
	  RECON_TEST_SLURM="$$slurm" RECON_TEST_STRICT=1 $(GO) test -race -timeout 15m ./...
	RECON_TEST_STRICT=1 scripts/python-test.sh $(BIN)
	scripts/cross.sh
	scripts/notebook.sh $(BIN)
	out=$$(mktemp -d) && trap 'rm -rf "$$out"' EXIT && \
	  DEMO_OUTPUT="$$out/demo" scripts/demo.sh $(BIN) && \
	  test -s "$$out/demo/phantom.dcm" && test -s "$$out/demo/phantom.png" && \
	  echo "demo: phantom.dcm and phantom.png written"
	scripts/fuzz-ci.sh

# The Python client's tests alone (python/tests, Debian's python3 and pytest).
python-test: build
	RECON_TEST_STRICT=1 scripts/python-test.sh $(BIN)

# Build ./cmd/recon for windows/amd64, darwin/arm64 and darwin/amd64, and vet
# and compile the tests of the client-side packages there.
cross:
	scripts/cross.sh

# Binaries for Linux (amd64, arm64), Windows (amd64) and macOS (arm64, amd64)
# with a SHA256SUMS file, into $(RELEASE_DIR) (not committed).
RELEASE_DIR ?= build/release
release:
	scripts/release.sh $(or $(VERSION),dev) $(RELEASE_DIR)

# Run examples/example_usage.ipynb with Debian's Jupyter against a local server
# it starts; fails if a cell fails or no image is shown.
notebook: deps build
	scripts/notebook.sh $(BIN)

# Build, start a server with fresh keys, reconstruct a BART phantom, and put
# the images in ./demo-output/.
demo: build
	@scripts/ensure-deps.sh demo
	scripts/demo.sh $(BIN)

# Run each fuzz target for a short while (FUZZTIME=30s by default).
FUZZTIME ?= 30s
fuzz:
	scripts/fuzz.sh $(FUZZTIME)

# Whole-system benchmark side by side with OpenSSH (a private sshd on
# 127.0.0.1): transfers (one core per end first, then shared cores),
# memory, small jobs, relay, restart. Writes
# docs/PERFORMANCE.md; about 10 minutes. Not part of `make test`. Settings:
# RUNS, BENCH_DIR, DISK_DIR, SIZE_MIB, BIG_MIB, QUEUED (see bench/run.sh).
bench: build
	bench/run.sh

# The slow Slurm tests (a job at Slurm's own time limit, about 2 minutes)
# and the benchmark of what recon adds to a Slurm job (50 jobs), each on a
# cluster of its own. Not part of `make test`.
test-slurm-slow bench-slurm: build
	slurm=$$(scripts/slurm-up.sh) && trap 'scripts/slurm-down.sh "$$slurm"' EXIT && \
	  RECON_TEST_SLURM="$$slurm" RECON_TEST_STRICT=1 RECON_SLURM_$(if $(filter bench-slurm,$@),BENCH,SLOW)=1 \
	  $(GO) test -count=1 -timeout 20m -v -run '$(if $(filter bench-slurm,$@),TestSlurmBench,TestSlurmSlow)' ./cmd/recon

# Tools the tests need: BART, the reference reconstruction, and Debian's
# Jupyter for the example notebook.
deps:
	@scripts/ensure-deps.sh all

clean:
	rm -rf bin build demo-output
