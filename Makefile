# recon — build, test, demo.
GO ?= go
BIN := bin/recon

.PHONY: build test demo fuzz clean deps

build:
	$(GO) build -o $(BIN) ./cmd/recon

# The whole test suite: vet, then every test with the race detector.
test: deps
	$(GO) vet ./...
	$(GO) test -race -timeout 15m ./...

# Build, start a server with fresh keys, reconstruct a BART phantom, and put
# the images in ./demo-output/.
demo: deps build
	scripts/demo.sh $(BIN)

# Run each fuzz target for a short while (FUZZTIME=30s by default).
FUZZTIME ?= 30s
fuzz:
	scripts/fuzz.sh $(FUZZTIME)

# Tools the tests and the demo need: BART, the reference reconstruction.
deps:
	@scripts/ensure-deps.sh

clean:
	rm -rf bin demo-output
