#!/usr/bin/env bash
# Installs what the tests need when it is missing: Debian packages (as root)
# and Go tools under $CACHE/bin.
set -euo pipefail
CACHE=${CACHE:-/var/cache/zenodo-snapshotter}
mkdir -p "$CACHE/bin"

# Debian packages, by the command (or file) that shows each is present.
declare -A want=(
  [containerd]=containerd
  [runc]=runc
  [fusermount3]=fuse3
  [skopeo]=skopeo
  [/bin/busybox]=busybox-static
)
missing=()
for probe in "${!want[@]}"; do
  if [[ $probe == /* ]]; then [ -e "$probe" ] || missing+=("${want[$probe]}")
  else command -v "$probe" >/dev/null 2>&1 || missing+=("${want[$probe]}"); fi
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing Debian packages ${missing[*]} and not root: tests that need them will say so" >&2
  else
    echo "install-deps: apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

if ! command -v staticcheck >/dev/null 2>&1 && [ ! -x "$CACHE/bin/staticcheck" ]; then
  echo "install-deps: installing staticcheck into $CACHE/bin"
  GOBIN="$CACHE/bin" go install honnef.co/go/tools/cmd/staticcheck@latest
fi
