#!/usr/bin/env bash
# Builds the binaries the integration tests run that Debian does not ship, and
# caches them under $CACHE (default /var/cache/zenodo-snapshotter):
#
#   $CACHE/containerd-$CONTAINERD2_VERSION/bin/{containerd,ctr,containerd-shim-runc-v2}
#   $CACHE/nerdctl-$NERDCTL_VERSION/nerdctl
#
# Each is skipped when its stamp file records the same version and build flags,
# so a warm run costs nothing. Builds go to a temporary directory first and are
# renamed into place, so an interrupted build never leaves a half-written tool.
# The Makefile exports the resulting locations as ZS_CONTAINERD2_DIR and
# ZS_NERDCTL for the tests.
set -euo pipefail

CACHE=${CACHE:-/var/cache/zenodo-snapshotter}
GO=${GO:-go}
CONTAINERD2_VERSION=${CONTAINERD2_VERSION:-v2.4.2}
NERDCTL_VERSION=${NERDCTL_VERSION:-v1.7.7}

# The test daemons need neither CRI nor tracing, and the btrfs, devmapper and
# zfs snapshotters are useless here (btrfs also wants cgo headers Debian does
# not install by default). Leaving them out halves the build. Everything is
# built without cgo, as containerd's own static release builds are, so there
# are no host library dependencies.
CONTAINERD_TAGS="no_btrfs no_devmapper no_zfs no_cri no_tracing urfave_cli_no_docs"
SHIM_TAGS="urfave_cli_no_docs no_grpc"

mkdir -p "$CACHE"
# One build at a time, even when two `make test` runs share the cache.
exec 9>"$CACHE/.build-tools.lock"
flock 9

log() { echo "build-tools: $*" >&2; }

# Temporary build directories, removed however the script ends.
cleanup=()
trap 'rm -rf "${cleanup[@]}"' EXIT

# stamp_ok FILE WANT: the stamp exists and records exactly WANT.
stamp_ok() { [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]; }

build_containerd() {
	local dest="$CACHE/containerd-$CONTAINERD2_VERSION"
	local want="containerd $CONTAINERD2_VERSION tags=[$CONTAINERD_TAGS] shim-tags=[$SHIM_TAGS] cgo=0"
	if stamp_ok "$dest/.stamp" "$want" &&
		[ -x "$dest/bin/containerd" ] && [ -x "$dest/bin/ctr" ] && [ -x "$dest/bin/containerd-shim-runc-v2" ]; then
		return 0
	fi
	log "building containerd $CONTAINERD2_VERSION (containerd, ctr, containerd-shim-runc-v2) into $dest"
	local start=$SECONDS
	local tmp
	tmp=$(mktemp -d "$CACHE/.containerd-build.XXXXXX")
	cleanup+=("$tmp")
	chmod 755 "$tmp"
	local mod=github.com/containerd/containerd/v2
	local ldflags="-s -w -X $mod/version.Version=$CONTAINERD2_VERSION -X $mod/version.Package=$mod"
	# go install with @version ignores our own go.mod, so these are exactly
	# containerd's pinned dependencies.
	GOBIN="$tmp/bin" CGO_ENABLED=0 "$GO" install -trimpath -tags "$CONTAINERD_TAGS" -ldflags "$ldflags" \
		"$mod/cmd/containerd@$CONTAINERD2_VERSION" \
		"$mod/cmd/ctr@$CONTAINERD2_VERSION"
	GOBIN="$tmp/bin" CGO_ENABLED=0 "$GO" install -trimpath -tags "$SHIM_TAGS" -ldflags "$ldflags" \
		"$mod/cmd/containerd-shim-runc-v2@$CONTAINERD2_VERSION"
	echo "$want" >"$tmp/.stamp"
	rm -rf "$dest"
	mv "$tmp" "$dest"
	log "containerd $CONTAINERD2_VERSION built in $((SECONDS - start))s"
}

build_nerdctl() {
	local dest="$CACHE/nerdctl-$NERDCTL_VERSION"
	local want="nerdctl $NERDCTL_VERSION cgo=0"
	if stamp_ok "$dest/.stamp" "$want" && [ -x "$dest/nerdctl" ]; then
		return 0
	fi
	log "building nerdctl $NERDCTL_VERSION into $dest"
	local start=$SECONDS
	local tmp
	tmp=$(mktemp -d "$CACHE/.nerdctl-build.XXXXXX")
	cleanup+=("$tmp")
	chmod 755 "$tmp"
	# `go install nerdctl@version` is refused (nerdctl's go.mod has replace
	# directives), so build it from a throwaway module that requires it: the
	# requirements then resolve to nerdctl's own pins.
	mkdir "$tmp/src" "$tmp/out"
	(
		cd "$tmp/src"
		"$GO" mod init tools >/dev/null 2>&1
		if ! "$GO" get "github.com/containerd/nerdctl/cmd/nerdctl@$NERDCTL_VERSION" >"$tmp/get.log" 2>&1; then
			cat "$tmp/get.log" >&2
			exit 1
		fi
		CGO_ENABLED=0 "$GO" build -trimpath -ldflags "-s -w -X github.com/containerd/nerdctl/pkg/version.Version=$NERDCTL_VERSION" \
			-o "$tmp/out/nerdctl" github.com/containerd/nerdctl/cmd/nerdctl
	)
	echo "$want" >"$tmp/out/.stamp"
	rm -rf "$dest"
	mv "$tmp/out" "$dest"
	log "nerdctl $NERDCTL_VERSION built in $((SECONDS - start))s"
}

build_containerd
build_nerdctl
