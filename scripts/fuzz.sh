#!/usr/bin/env bash
# Runs every Go fuzz target of the project (func FuzzXxx in a _test.go file)
# for a while each: scripts/fuzz.sh 2000x (what CI does: 2,000 executions
# each), scripts/fuzz.sh 10m (a long run; FUZZ_PARALLEL workers each,
# default 2). New crashers land in
# the package's testdata/fuzz/FuzzXxx/ (commit them: go test replays them as
# ordinary tests from then on). Exits non-zero on the first failing target.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${1:-2000x}
only=${2:-}
# A hard limit per target: the fuzz time plus ten minutes for building the
# instrumented test binary (cmd/causalrm's takes minutes on two cores).
# A count (2000x) has no wall-clock deadline in Go's fuzz coordinator, so
# it cannot hit the coordinator's race at a duration's end (go.dev/issue/
# 75804, "context deadline exceeded" with no failing input; fixed in Go
# 1.27, not in 1.26): CI fuzzes by count, long runs by duration.
case $fuzztime in
*h) limit=$((${fuzztime%h} * 3600 + 600)) ;;
*m) limit=$((${fuzztime%m} * 60 + 600)) ;;
*s) limit=$((${fuzztime%s} + 600)) ;;
*x) limit=1200 ;;
*) echo "fuzz.sh: fuzz time like 2000x, 10s, 10m or 1h" >&2; exit 2 ;;
esac
# Go's fuzzer minimizes every new interesting input for up to a minute, and
# when the fuzz time ends during such a minimization it fails the target with
# "context deadline exceeded" although nothing failed (seen in CI: FuzzParquet
# at 10 s). So no run minimizes (one call) unless FUZZ_MINIMIZE says how
# long (e.g. FUZZ_MINIMIZE=60s to shrink a new crasher before reading it).
minimize=${FUZZ_MINIMIZE:-1x}
# run_target fuzzes one target. When Go's harness fails it with "context
# deadline exceeded" and no failing input (the coordinator's race above,
# not our code), the target runs once more; a second such failure, or any
# real one, fails.
run_target() {
	local log rc
	log=$(mktemp)
	for try in 1 2; do
		rc=0
		timeout -k 10 "$limit" go test -timeout 0 -run '^$' -fuzz "^${1}\$" -fuzztime "$fuzztime" -fuzzminimizetime "$minimize" -parallel "${FUZZ_PARALLEL:-2}" "$2" 2>&1 | tee "$log" || rc=$?
		if ((rc == 0)) || ((try == 2)) || ! grep -q 'context deadline exceeded' "$log" || grep -q 'Failing input written' "$log"; then
			break
		fi
		echo "fuzz.sh: $1 failed on the harness's own deadline with no failing input; running it once more"
	done
	rm -f "$log"
	return "$rc"
}

mapfile -t files < <(grep -l --include='*_test.go' -r '^func Fuzz' . | sort)
declare -A seen
for f in "${files[@]}"; do
	dir=$(dirname "$f")
	for target in $(grep -o '^func Fuzz[A-Za-z0-9_]*' "$f" | cut -d' ' -f2); do
		[[ -n $only && $target != "$only" ]] && continue
		key="$dir/$target"
		[[ -n ${seen[$key]:-} ]] && continue
		seen[$key]=1
		echo "== $target ($dir) for $fuzztime"
		run_target "$target" "$dir"
	done
done
