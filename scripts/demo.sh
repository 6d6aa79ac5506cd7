#!/usr/bin/env bash
# make demo: the whole story on one machine, as root.
#
# A local Zenodo emulator, a private containerd and zenodo-snapshotter are
# started; a small image is built, pushed to the emulator with donodo, and run
# again from its DOI: lazily (only the bytes the container reads are fetched),
# with stock ctr through the registry endpoint, and fully with donodo pull.
# Everything started here is stopped and removed on exit, also on Ctrl-C.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$top/bin}
CACHE=${CACHE:-/var/cache/zenodo-snapshotter}
CONTAINERD2_DIR=${ZS_CONTAINERD2_DIR:-$CACHE/containerd-${CONTAINERD2_VERSION:-v2.4.2}/bin}
NERDCTL=${ZS_NERDCTL:-$CACHE/nerdctl-${NERDCTL_VERSION:-v1.7.7}/nerdctl}

bold=$(tput bold 2>/dev/null || true)
dim=$(tput dim 2>/dev/null || true)
reset=$(tput sgr0 2>/dev/null || true)
step() { printf '\n%s== %s%s\n' "$bold" "$*" "$reset"; }
say() { printf '%s%s%s\n' "$dim" "$*" "$reset"; }
# run shows a command, then runs it with its output indented.
run() {
  printf '%s$ %s%s\n' "$bold" "$*" "$reset"
  # ctr 2.x warns about cgroup v1 on every call: not this demo's business.
  "$@" 2>&1 | grep -v 'msg="DEPRECATION: The support for cgroup v1' | sed 's/^/    /'
  return "${PIPESTATUS[0]}"
}
die() { echo "demo: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (containerd, runc and FUSE need it)"
[ -e /dev/fuse ] || die "/dev/fuse is missing: the lazy layers are FUSE filesystems"
for b in donodo zenodo-snapshotter zenodotest mkimage; do
  [ -x "$BIN/$b" ] || die "$BIN/$b is missing: run 'make demo', which builds it"
done

work=$(mktemp -d /tmp/zdemo.XXXXXX)
pids=()
cleanup() {
  set +e
  trap - EXIT INT TERM
  step "Cleaning up"
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null
  done
  # Anything still mounted under the work dir (containers, lazy layers).
  grep -o " $work[^ ]*" /proc/self/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
  rm -rf "$work"
  say "stopped the emulator, containerd and zenodo-snapshotter; removed $work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_for polls until a command succeeds, at most $1 seconds.
wait_for() {
  local secs=$1; shift
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.1
  done
}

step "1. A local Zenodo emulator (zenodo/zenodotest), standing in for zenodo.org"
token=demo-token-$RANDOM$RANDOM
printf '%s' "$token" >"$work/token"
chmod 600 "$work/token"
"$BIN/zenodotest" --listen 127.0.0.1:0 --dir "$work/zenodo" --token "$token" \
  --request-log "$work/requests.jsonl" >"$work/zenodotest.out" 2>"$work/zenodotest.log" &
pids+=($!)
wait_for 20 test -s "$work/zenodotest.out" || die "the emulator did not start: $(cat "$work/zenodotest.log")"
ZURL=$(head -n1 "$work/zenodotest.out")
say "emulator at $ZURL (records, deposits, HTTP ranges and rate-limit headers as Zenodo's)"

step "2. zenodo-snapshotter: the lazy snapshotter and the registry endpoint for zenodo.org/..."
port=$((20000 + RANDOM % 20000))
"$BIN/zenodo-snapshotter" serve --config /dev/null --root "$work/zs" --socket "$work/zs.sock" \
  --zenodo-url "$ZURL" --sandbox-url "" --registry-listen "127.0.0.1:$port" \
  --background-fill=false --log-level warn >"$work/zs.log" 2>&1 &
pids+=($!)
wait_for 30 test -S "$work/zs.sock" || die "zenodo-snapshotter did not start: $(cat "$work/zs.log")"
say "snapshotter socket $work/zs.sock, registry endpoint http://127.0.0.1:$port"
say "(background fill is off in this demo, so the numbers below show only what the container read)"
run "$BIN/zenodo-snapshotter" hosts --endpoint "http://127.0.0.1:$port" --certs-dir "$work/certs.d" --install

step "3. A private containerd, with zenodo-snapshotter as its proxy snapshotter"
if [ -x "$CONTAINERD2_DIR/containerd" ]; then
  CTRD=$CONTAINERD2_DIR/containerd CTR=$CONTAINERD2_DIR/ctr cfgver=3
  export PATH="$CONTAINERD2_DIR:$PATH"
else
  CTRD=$(command -v containerd) CTR=$(command -v ctr) cfgver=2
fi
{
  echo "version = $cfgver"
  echo "root = \"$work/containerd/root\""
  echo "state = \"$work/containerd/state\""
  echo "[grpc]"
  echo "  address = \"$work/containerd.sock\""
  "$BIN/zenodo-snapshotter" config --socket "$work/zs.sock" --containerd-config-version "$cfgver" --certs-dir "$work/certs.d" |
    sed -n '/^\[proxy_plugins\]/,/^$/p'
} >"$work/containerd.toml"
run cat "$work/containerd.toml"
"$CTRD" --config "$work/containerd.toml" >"$work/containerd.log" 2>&1 &
pids+=($!)
ctr() { "$CTR" --address "$work/containerd.sock" --namespace demo "$@"; }
wait_for 30 ctr version || die "containerd did not start: $(tail -20 "$work/containerd.log")"
run ctr version
run ctr plugins ls type==io.containerd.snapshotter.v1

step "4. Build a small image (busybox, a 64 MiB data layer its command never reads) and load it"
"$BIN/mkimage" -o "$work/hello.oci.tar" -name demo/hello:1.0 -random-mib 64 \
  /bin/sh -c 'echo "Hello from an image archived on Zenodo, running lazily!"; busybox | head -n1'
run ctr images import --base-name demo/hello "$work/hello.oci.tar"
run ctr images ls -q

step "5. donodo push: archive the image as a citable Zenodo record"
donodo() { "$BIN/donodo" --address "$work/containerd.sock" --namespace demo --zenodo-url "$ZURL" --token-file "$work/token" "$@"; }
run donodo push --auto-publish demo/hello:1.0 | tee "$work/push.out"
doi=$(grep -oE '10\.[0-9]+/zenodo\.[0-9]+' "$work/push.out" | head -n1)
[ -n "$doi" ] || die "no DOI in donodo push's output"
ref="zenodo.org/$doi:1.0"
say "the image is now $ref"
run donodo inspect "$ref"

archive_size=$(grep -oE 'image.tar: uploaded \([0-9]+' "$work/push.out" | grep -oE '[0-9]+$' || echo '?')

# zenodo_traffic prints the requests and bytes the emulator served since the
# last call (from its request log), against the archive's size.
zenodo_traffic() {
  local n b
  read -r n b < <(awk -F'"bytes":' '{n++; split($2,a,/[,}]/); b+=a[1]} END {print n+0, b+0}' "$work/requests.jsonl")
  say "Zenodo served $n requests, $b bytes, for this step (the image's archive is $archive_size bytes)"
  : >"$work/requests.jsonl"
}

step "6. Run it lazily from its DOI"
: >"$work/requests.jsonl"
if [ -x "$NERDCTL" ]; then
  run "$NERDCTL" --address "$work/containerd.sock" --namespace demo --hosts-dir "$work/certs.d" \
    --snapshotter zenodo run --rm --net none "$ref"
else
  run donodo pull --snapshotter zenodo "$ref"
  run ctr run --rm --snapshotter zenodo "$ref" hello-lazy
fi
zenodo_traffic
say "the layers are FUSE mounts reading from Zenodo on demand:"
run ctr snapshots --snapshotter zenodo ls
run sh -c "grep ' fuse.zenodo ' /proc/self/mounts | cut -d' ' -f1-3"

step "7. Stock ctr pulls the same DOI through the registry endpoint (hosts.toml), in another namespace"
say "(a plain ctr pull fetches every layer, as it does from any registry)"
ctr2() { "$CTR" --address "$work/containerd.sock" --namespace demo-ctr "$@"; }
run sh -c "\"\$0\" --address '$work/containerd.sock' --namespace demo-ctr images pull --hosts-dir '$work/certs.d' '$ref' | tail -n 1" "$CTR"
run ctr2 run --rm "$ref" hello-ctr
zenodo_traffic

step "8. donodo pull: a full import, as the Python donodo did, plus checksums"
say "(containerd shares blobs across namespaces: the layers step 7 fetched are not downloaded again)"
run "$BIN/donodo" --address "$work/containerd.sock" --namespace demo-full --zenodo-url "$ZURL" pull "zenodo.org/$doi"
run "$CTR" --address "$work/containerd.sock" --namespace demo-full run --rm "$ref" hello-full
zenodo_traffic

step "Done"
say "pushed demo/hello:1.0 to a Zenodo record ($doi), then ran it from the DOI lazily, with stock ctr, and after a full pull."
