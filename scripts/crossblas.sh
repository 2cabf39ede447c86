#!/usr/bin/env bash
# Exact mode's claim across builds: the OpenBLAS build with the SIMD kernels
# (GOEXPERIMENT=simd) and the pure-Go build without them train bit-identical
# models (every sum is an exact integer; the vector kernels do the scalar
# ones' operations). Trains a small job with each and compares the sha256 of
# every model file.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
GOEXPERIMENT=simd go build -tags openblas -o "$tmp/causalrm-openblas" ./cmd/causalrm
GOEXPERIMENT= go build -o "$tmp/causalrm-purego" ./cmd/causalrm
"$tmp/causalrm-openblas" simulate --rows 3000 --test-rows 500 --dim 64 --out "$tmp/data.safetensors" >/dev/null
for b in openblas purego; do
  "$tmp/causalrm-$b" train --data "$tmp/data.safetensors" --out "$tmp/run-$b" --quiet \
    --method causalrm-dr --max-epochs 6 --batch 256 >/dev/null
  (cd "$tmp/run-$b" && sha256sum ./*.safetensors) > "$tmp/sums-$b"
done
if diff "$tmp/sums-openblas" "$tmp/sums-purego"; then
  echo "crossblas: openblas+simd and pure-Go builds trained identical models:"
  cat "$tmp/sums-openblas"
else
  echo "crossblas: the two BLAS backends trained different models" >&2
  exit 1
fi
