#!/usr/bin/env bash
# Builds what scripts/gpu-check.sh runs into .gpu/: a static causalrm
# (pure Go, no cgo: the CUDA libraries are loaded at run time) and the
# test binaries of the cuda and gpu packages. Carry .gpu to the GPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .gpu
export CGO_ENABLED=0 GOEXPERIMENT=${GOEXPERIMENT-simd}
flags=(-trimpath -ldflags "-s -w -X main.version=$(git describe --always --dirty 2>/dev/null || echo dev)")
go build "${flags[@]}" -o .gpu/causalrm ./cmd/causalrm
go test -c -trimpath -ldflags "-s -w" -o .gpu/gpu.test ./gpu
go test -c -trimpath -ldflags "-s -w" -o .gpu/cuda.test ./cuda
ls -la .gpu
