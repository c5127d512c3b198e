# recon — build, test, demo.
GO ?= go
BIN := bin/recon

.PHONY: build test demo fuzz clean deps notebook bench

build:
	$(GO) build -o $(BIN) ./cmd/recon

# The whole test suite: vet, every test with the race detector, the example
# notebook, then every fuzz target for a bounded number of executions.
test: deps build
	$(GO) vet ./...
	$(GO) test -race -timeout 15m ./...
	scripts/notebook.sh $(BIN)
	scripts/fuzz-ci.sh

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
# 127.0.0.1): transfers, memory, small jobs, relay, restart. Writes
# docs/PERFORMANCE.md; about 8 minutes. Not part of `make test`. Settings:
# RUNS, BENCH_DIR, DISK_DIR, SIZE_MIB, BIG_MIB, QUEUED (see bench/run.sh).
bench: build
	bench/run.sh

# Tools the tests need: BART, the reference reconstruction, and Debian's
# Jupyter for the example notebook.
deps:
	@scripts/ensure-deps.sh all

clean:
	rm -rf bin demo-output
