#!/usr/bin/env bash
# make bench / make bench-quick: scripts/bench.sh quick|full
#
# Runs integration/bench's BenchmarkImages once: donodo push, the Python
# donodo's full pull (baseline), donodo pull and the lazy start through
# zenodo-snapshotter, against the Zenodo emulator shaped like Zenodo, on the
# python image (quick) or the python and scipy images (full). Prints a
# markdown table and writes bench/out/results.json, bench/out/results.md and
# bench/out/results-<commit>-<mode>-<time>.json (kept, for comparisons
# across commits).
#
# Needs root (containerd, runc, FUSE). Images are built with mmdebstrap
# (installed when missing) and cached under $CACHE/bench between runs.
#
# Environment (all optional): CACHE (default /var/cache/zenodo-snapshotter),
# GO, ZS_BENCH_CONTAINERD (1: Debian's 1.6, the default; 2: the 2.x of
# `make tools`), ZS_BENCH_LATENCY (100ms), ZS_BENCH_BANDWIDTH (25000000
# bytes/s), ZS_BENCH_RATE_LIMIT (60/min), ZS_BENCH_FILL_WAIT (5m),
# ZS_BENCH_OUT (bench/out), ZS_BENCH_STRICT (true: fail when a target is
# not met; by default the table only says so), BENCH_TIMEOUT (go test
# -timeout).
set -euo pipefail

mode=${1:-}
case "$mode" in
  quick) timeout_default=15m ;;
  full) timeout_default=90m ;;
  *) echo "usage: $0 quick|full" >&2; exit 2 ;;
esac

cd "$(dirname "$0")/.."
CACHE=${CACHE:-/var/cache/zenodo-snapshotter}
GO=${GO:-go}
export CACHE
export ZS_BENCH_MODE=$mode
export ZS_BENCH_CACHE=${ZS_BENCH_CACHE:-$CACHE/bench}
export ZS_BENCH_BIN=${ZS_BENCH_BIN:-$PWD/bin}
# Where containerdtest finds containerd 2.x (ZS_BENCH_CONTAINERD=2), as the
# Makefile sets it.
export ZS_CONTAINERD2_DIR=${ZS_CONTAINERD2_DIR:-$CACHE/containerd-${CONTAINERD2_VERSION:-v2.4.2}/bin}

if [ "$(id -u)" -ne 0 ]; then
  echo "bench.sh: needs root (containerd, runc and FUSE mounts)" >&2
  exit 1
fi

# mmdebstrap only matters when a root filesystem is not cached yet.
need_rootfs=false
images=python
[ "$mode" = full ] && images="python scipy"
for img in $images; do
  [ -f "$ZS_BENCH_CACHE/$img-rootfs.tar" ] || need_rootfs=true
done
if $need_rootfs && ! command -v mmdebstrap >/dev/null 2>&1; then
  echo "bench.sh: apt-get install mmdebstrap"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap >/dev/null
fi

echo "bench.sh: building donodo, zenodotest, zenodo-snapshotter into $ZS_BENCH_BIN"
mkdir -p "$ZS_BENCH_BIN"
"$GO" build -o "$ZS_BENCH_BIN/" ./cmd/...

echo "bench.sh: running the $mode benchmark (images: $images)"
exec "$GO" test -count=1 -run '^$' -bench '^BenchmarkImages$' -benchtime 1x \
  -timeout "${BENCH_TIMEOUT:-$timeout_default}" ./integration/bench
