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

# go test's -timeout applies to each test binary.
TEST_TIMEOUT ?= 30m
TESTFLAGS ?=
# Statement coverage is reported for these packages, counting what any test
# (unit or integration) exercises in them.
COVERPKG ?= ./zenodo/...
COVERPROFILE ?= $(BIN)/cover.out
# Renders go test -json like plain go test, lists skipped tests, and fails
# when a package under ./integration skipped a test while CI=true (CI runs
# as root with FUSE, so every integration test must really run there).
GOTESTREPORT = $(GO) run ./integration/internal/gotestreport -strict-skips="$(CI)" \
	-strict-prefix=github.com/zenodo-snapshotter/zenodo-snapshotter/integration

.PHONY: all build deps tools vet staticcheck test cover integration

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/...

deps:
	CACHE=$(CACHE) scripts/install-deps.sh

tools:
	CACHE=$(CACHE) GO=$(GO) scripts/build-tools.sh

vet:
	$(GO) vet ./...

staticcheck: deps
	staticcheck ./...

# Everything, race detector on, with the statement coverage of $(COVERPKG).
test: deps tools build vet staticcheck
	$(GO) test -json -race -count=1 -timeout $(TEST_TIMEOUT) \
		-coverpkg=$(COVERPKG) -coverprofile=$(COVERPROFILE) $(TESTFLAGS) ./... \
		2>&1 | $(GOTESTREPORT)
	@echo "coverage of $(COVERPKG) (statements, all tests): $$($(GO) tool cover -func=$(COVERPROFILE) | tail -n1 | awk '{print $$NF}')"

# Per-function coverage of $(COVERPKG) and an HTML report in cover.html.
cover:
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) -coverpkg=$(COVERPKG) -coverprofile=$(COVERPROFILE) $(TESTFLAGS) ./...
	$(GO) tool cover -func=$(COVERPROFILE)
	$(GO) tool cover -html=$(COVERPROFILE) -o $(BIN)/cover.html
	@echo "HTML report: $(BIN)/cover.html"

# Only the tests against real containerd, runc and FUSE.
integration: deps tools build
	$(GO) test -json -race -count=1 -timeout $(TEST_TIMEOUT) $(TESTFLAGS) ./integration/... \
		2>&1 | $(GOTESTREPORT)
