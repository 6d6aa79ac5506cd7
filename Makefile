# zenodo-snapshotter: build, test, demo, bench.
#
# Everything slow to build (containerd 2.x, nerdctl, staticcheck, benchmark
# images) is cached under $(CACHE), which survives between CI runs.
CACHE ?= /var/cache/zenodo-snapshotter
GO ?= go
BIN := $(CURDIR)/bin
export PATH := $(CACHE)/bin:$(PATH)

.PHONY: all build deps vet staticcheck test cover

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/...

deps:
	CACHE=$(CACHE) scripts/install-deps.sh

vet:
	$(GO) vet ./...

staticcheck: deps
	staticcheck ./...

test: deps build vet staticcheck
	$(GO) test -race -count=1 -timeout 60m ./...
