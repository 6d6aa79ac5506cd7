# zenodo-snapshotter: build, test, demo, bench.
#
# Everything slow to build (containerd 2.x, nerdctl, staticcheck, benchmark
# images) is cached under $(CACHE), which survives between CI runs.
CACHE ?= /var/cache/zenodo-snapshotter
GO ?= go
BIN := $(CURDIR)/bin
export PATH := $(CACHE)/bin:$(PATH)

# Pipelines below must fail when go test fails, not only when the last command does.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -ec

# Tools the integration tests run that Debian does not ship (scripts/build-tools.sh).
CONTAINERD2_VERSION ?= v2.4.2
NERDCTL_VERSION ?= v1.7.7
export CONTAINERD2_VERSION NERDCTL_VERSION
# Where integration/containerdtest finds them.
export ZS_CONTAINERD2_DIR ?= $(CACHE)/containerd-$(CONTAINERD2_VERSION)/bin
export ZS_NERDCTL ?= $(CACHE)/nerdctl-$(NERDCTL_VERSION)/nerdctl

MODULE := github.com/zenodo-snapshotter/zenodo-snapshotter
# go test's -timeout applies to each test binary.
TEST_TIMEOUT ?= 30m
TESTFLAGS ?=
# `make test` reports the statement coverage of the packages under this
# directory, from their own tests.
COVERDIR ?= zenodo
COVERPROFILE ?= $(BIN)/cover.out
# Renders go test -json like plain go test, lists skipped tests, and fails
# when a package under ./integration skipped a test while CI=true (CI runs
# as root with FUSE, so every integration test must really run there).
GOTESTREPORT = $(BIN)/gotestreport -strict-skips="$(CI)" -strict-prefix=$(MODULE)/integration

.PHONY: all build deps tools vet staticcheck test cover integration demo bench bench-quick

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/... ./integration/cmd/mkimage

deps:
	CACHE=$(CACHE) scripts/install-deps.sh

tools:
	CACHE=$(CACHE) GO=$(GO) scripts/build-tools.sh

vet:
	$(GO) vet ./...

staticcheck: deps
	staticcheck ./...

# Everything, race detector on, then the statement coverage of ./$(COVERDIR)/...
test: deps tools build vet staticcheck
	$(GO) build -o $(BIN)/gotestreport ./integration/internal/gotestreport
	$(GO) test -json -race -count=1 -timeout $(TEST_TIMEOUT) -coverprofile=$(COVERPROFILE) $(TESTFLAGS) ./... \
		2>&1 | $(GOTESTREPORT)
	@grep -E '^mode:|^$(MODULE)/$(COVERDIR)/' $(COVERPROFILE) >$(BIN)/cover-$(COVERDIR).out
	@echo "coverage of ./$(COVERDIR)/... (statements): $$($(GO) tool cover -func=$(BIN)/cover-$(COVERDIR).out | tail -n1 | awk '{print $$NF}')"

# Per-function coverage of ./$(COVERDIR)/... and an HTML report, without -race.
cover:
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) -coverprofile=$(COVERPROFILE) $(TESTFLAGS) ./$(COVERDIR)/...
	$(GO) tool cover -func=$(COVERPROFILE)
	$(GO) tool cover -html=$(COVERPROFILE) -o $(BIN)/cover.html
	@echo "HTML report: $(BIN)/cover.html"

# Only the tests against real containerd, runc and FUSE.
integration: deps tools build
	$(GO) build -o $(BIN)/gotestreport ./integration/internal/gotestreport
	$(GO) test -json -race -count=1 -timeout $(TEST_TIMEOUT) $(TESTFLAGS) ./integration/... \
		2>&1 | $(GOTESTREPORT)

# The whole story on this machine, as root: a Zenodo emulator, a private
# containerd and zenodo-snapshotter; build an image, push it, run it lazily
# from its DOI. Cleans up everything it started, also when interrupted.
demo: deps tools build
	BIN=$(BIN) CACHE=$(CACHE) scripts/demo.sh

# Lazy vs full pulls of realistic images (mmdebstrap, cached under $(CACHE)/bench)
# from the emulator shaped like Zenodo; prints a table, writes bench/results.json.
bench: deps tools build
	BIN=$(BIN) CACHE=$(CACHE) scripts/bench.sh full

# The python image only (under 5 minutes).
bench-quick: deps tools build
	BIN=$(BIN) CACHE=$(CACHE) scripts/bench.sh quick
