#!/usr/bin/env bash
# Installs everything causalrm needs on a fresh Debian machine and builds
# bin/causalrm. Usage: scripts/setup.sh [--bench]   (--bench adds PyTorch)
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
# chromium: the status page's browser test (TestStatusPageInBrowser)
pkgs="build-essential pkg-config libopenblas-dev chromium"
if [ "${1:-}" = "--bench" ]; then
  pkgs="$pkgs python3 python3-numpy python3-torch libopenblas0"
fi
missing=""
for p in $pkgs; do
  dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "installing:$missing"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi

if ! command -v go >/dev/null 2>&1; then
  if [ -x /usr/local/go/bin/go ]; then
    export PATH=/usr/local/go/bin:$PATH
  else
    echo "setup: Go 1.26 or newer is required (https://go.dev/dl); not found on PATH" >&2
    exit 1
  fi
fi
go mod download
make build
bin/causalrm version
