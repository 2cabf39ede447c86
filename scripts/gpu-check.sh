#!/usr/bin/env bash
# The GPU check: run from the repository root on a machine with a CUDA GPU,
# with the binaries that scripts/gpu-build.sh put in .gpu/ (a static build:
# the GPU machine needs no Go and no CUDA toolkit, only the driver and
# cuBLAS). Writes its logs to $OUT (default .gpu/out) and prints a summary.
#   1. the GPU unit tests (each kernel against its host twin, bit for bit;
#      the engine and a whole training against the CPU engine);
#   2. causalrm train, exact mode, on the GPU and on the CPU: the model
#      files must be byte-identical; the same with --workers 2, one GPU
#      worker and one CPU worker;
#   3. causalrm bench train --device cuda: Go on the GPU against PyTorch on
#      the same GPU, the paper's model at batch 512 and 8192.
# Exits non-zero when a test fails or the hashes differ.
set -uo pipefail
cd "$(dirname "$0")/.."
B=.gpu
OUT=${OUT:-.gpu/out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
fail=0
step() { echo; echo "== $* ($(date +%T))"; }
T() { timeout -k 5 "$@"; }

step "machine"
for f in causalrm gpu.test cuda.test; do
	[[ -x $B/$f ]] || { echo "gpu-check: $B/$f missing: run scripts/gpu-build.sh first (and carry .gpu)"; exit 2; }
done
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv,noheader 2>&1
lscpu | grep -E '^Model name|^CPU\(s\)' | tr -s ' '
"$B/causalrm" version | tee "$OUT/version.txt"
if ! grep -q '^gpu: cuda' "$OUT/version.txt"; then
	echo "gpu-check: FAIL: no CUDA GPU found (see the gpu: line); nothing else to check"
	exit 2
fi

step "PTX from nvcc (scripts/gen-ptx.sh builds; the committed PTX is clang's)"
if command -v nvcc >/dev/null; then
	scripts/gen-ptx.sh "$OUT/kernels.nvcc.ptx" && echo "nvcc PTX: $(grep -c '^.visible .entry' "$OUT/kernels.nvcc.ptx") kernels, $(grep -c 'fma\.' "$OUT/kernels.nvcc.ptx") fma"
fi

step "unit tests: cuda, gpu"
T 120 "$B/cuda.test" -test.count=1 -test.v >"$OUT/cuda-test.log" 2>&1 || fail=1
grep -E '^(--- |ok|FAIL|PASS)' "$OUT/cuda-test.log" | grep -v '^    ' | head -30
( cd gpu && T 240 "../$B/gpu.test" -test.count=1 -test.v ) >"$OUT/gpu-test.log" 2>&1 || fail=1
grep -E '^(--- |ok|FAIL|PASS)|no CUDA' "$OUT/gpu-test.log" | head -60
T 60 "$B/cuda.test" -test.run '^$' -test.bench Launch -test.benchtime 5000x 2>&1 | grep -E 'Benchmark'
( cd gpu && T 120 "../$B/gpu.test" -test.run '^$' -test.bench 'Resident|GEMM' -test.benchtime 200x 2>&1 ) | grep -E 'Benchmark' | tee "$OUT/step-bench.txt"

step "train: GPU, CPU and a mixed ring give the same bytes"
D=$(mktemp -d)
T 120 "$B/causalrm" simulate --rows 12000 --dim 256 --alpha 0.5 --rho01 0.1 --rho10 0.2 --out "$D/data.safetensors" >/dev/null 2>&1 || fail=1
args=(--data "$D/data.safetensors" --max-epochs 6 --patience 3 --seed 2)
for dev in cuda cpu; do
	t0=$SECONDS
	T 300 "$B/causalrm" train "${args[@]}" --device $dev --out "$D/$dev" >"$OUT/train-$dev.log" 2>&1 || { fail=1; tail -5 "$OUT/train-$dev.log"; }
	echo "$dev: $((SECONDS - t0)) s"
done
t0=$SECONDS
T 300 "$B/causalrm" train "${args[@]}" --workers 2 --device cuda,cpu --out "$D/mixed" >"$OUT/train-mixed.log" 2>&1 || { fail=1; tail -5 "$OUT/train-mixed.log"; }
echo "mixed (cuda,cpu): $((SECONDS - t0)) s"
( cd "$D" && sha256sum cuda/reward.safetensors cpu/reward.safetensors mixed/reward.safetensors ) | tee "$OUT/hashes.txt"
if [[ $(wc -l <"$OUT/hashes.txt") != 3 || $(awk '{print $1}' "$OUT/hashes.txt" | sort -u | wc -l) != 1 ]]; then
	echo "HASHES DIFFER"; fail=1
else
	echo "same model bytes on the GPU, the CPU and the mixed ring"
fi

step "bench train --device cuda (Go on the GPU against PyTorch on the GPU)"
for batch in 512 8192 512 8192; do
	T 200 "$B/causalrm" bench train --device cuda --python "$PY" --script bench/torch_reward.py \
		--rows 16384 --batch $batch --steps 200 --threads "$(nproc)" 2>>"$OUT/bench-$batch.err" | tee -a "$OUT/bench-$batch.txt" || { fail=1; tail -5 "$OUT/bench-$batch.err"; }
done
echo
echo "gpu-check: $([[ $fail == 0 ]] && echo PASS || echo FAIL)"
exit $fail
