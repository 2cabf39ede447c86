#!/usr/bin/env bash
# Loads 5000 random byte mutants of a real safetensors, Parquet and JSONL
# file from the generator (shard.TestMutants) and fails on any panic, hang
# or allocation out of proportion to the input. The seed is the first
# argument (default 1); a failure names the mutant, to be replayed alone with
# CAUSALRM_MUTANT_SEED=<seed> CAUSALRM_MUTANT_ONLY=<format>:<index>.
set -euo pipefail
cd "$(dirname "$0")/.."
CAUSALRM_MUTANTS=5000 CAUSALRM_MUTANT_SEED=${1:-1} go test -run TestMutants -count=1 -timeout 3600s -v ./shard
