#!/usr/bin/env bash
# Runs every Go fuzz target of the project (func FuzzXxx in a _test.go file)
# for a while each: scripts/fuzz.sh 10s (what CI does), scripts/fuzz.sh 10m
# (a long run; FUZZ_PARALLEL workers each, default 2). New crashers land in
# the package's testdata/fuzz/FuzzXxx/ (commit them: go test replays them as
# ordinary tests from then on). Exits non-zero on the first failing target.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${1:-10s}
only=${2:-}
# A hard limit per target: the fuzz time plus ten minutes for building the
# instrumented test binary (cmd/causalrm's takes minutes on two cores).
case $fuzztime in
*h) limit=$((${fuzztime%h} * 3600 + 600)) ;;
*m) limit=$((${fuzztime%m} * 60 + 600)) ;;
*s) limit=$((${fuzztime%s} + 600)) ;;
*) echo "fuzz.sh: fuzz time like 10s, 10m or 1h" >&2; exit 2 ;;
esac
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
		timeout -k 10 "$limit" go test -timeout 0 -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" -parallel "${FUZZ_PARALLEL:-2}" "$dir"
	done
done
