#!/usr/bin/env bash
# Installs what the tests need when it is missing: Debian packages (as root)
# and Go tools under $CACHE/bin.
set -euo pipefail
CACHE=${CACHE:-/var/cache/zenodo-snapshotter}
mkdir -p "$CACHE/bin"

if ! command -v staticcheck >/dev/null 2>&1 && [ ! -x "$CACHE/bin/staticcheck" ]; then
  echo "installing staticcheck into $CACHE/bin"
  GOBIN="$CACHE/bin" go install honnef.co/go/tools/cmd/staticcheck@latest
fi
