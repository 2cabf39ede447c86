#!/usr/bin/env bash
# Regenerates gpu/kernels/kernels.ptx from gpu/kernels/kernels.cu. Uses nvcc
# when it is on the PATH (a CUDA toolkit), else clang's NVPTX back end
# (Debian: apt-get install clang), which needs no CUDA at all. Both are told
# not to contract multiply-adds into FMAs: the exact kernels must round each
# operation as the CPU does. The build itself never needs either: the PTX is
# committed and embedded, and the driver compiles it at load time.
set -euo pipefail
cd "$(dirname "$0")/.."
src=gpu/kernels/kernels.cu
out=${1:-gpu/kernels/kernels.ptx}
arch=${PTX_ARCH:-80}
if [[ ${PTX_COMPILER:-} != clang ]] && command -v nvcc >/dev/null; then
	nvcc --ptx -arch=compute_$arch -O3 -fmad=false -o "$out" "$src"
	echo "gen-ptx: $(nvcc --version | tail -1) -> $out"
elif command -v clang >/dev/null; then
	clang -x cuda --cuda-device-only -nocudainc -nocudalib --cuda-gpu-arch=sm_$arch \
		-O3 -ffp-contract=off -S -o "$out" "$src"
	echo "gen-ptx: $(clang --version | head -1) -> $out"
else
	echo "gen-ptx: needs nvcc (CUDA toolkit) or clang (apt-get install clang)" >&2
	exit 1
fi
