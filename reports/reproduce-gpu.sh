#!/usr/bin/env bash
# The GPU half of the reproduction (one H100, a 15-minute lease): paper preset, MNIST, the model trained by
# reproduce-cpu.sh carried in the cache. Every cell is time-boxed; a killed cell keeps its finished chunks
# and the next pass (or a rerun of this script) resumes it. Results go to $OTBENCH_RESULTS, merged
# afterwards with `otbench merge`.
#   OTBENCH_DATA=... OTBENCH_CACHE=... OTBENCH_RESULTS=... bash reports/reproduce-gpu.sh
set -u
PY=${PY:-python3}
run() {  # run SECONDS ARGS...: one time-boxed `otbench run`, preset paper, on the GPU
  local limit=$1; shift
  echo "== $(date +%T) [$limit s] otbench run $*"
  timeout -s TERM "$limit" "$PY" -m otbench run --dataset mnist --preset paper --device cuda --quiet --chunk 500 "$@" \
    2>&1 | grep -v "^\s*$"
}
# pass 1: n = 500 (one chunk per cell), cheapest and most important first
run 60 --defense standard --attack bpda-pgd,otad-exact-grad --eps 2,2.5,3 --n 500
run 90 --defense otad --attack bpda-pgd --eps 2,2.5,3 --n 500
run 90 --defense otad --attack otad-exact-grad --eps 2,2.5,3 --n 500
run 80 --defense otad --attack square --eps 2,3 --n 500
run 60 --defense standard,otad --attack ngopt-cw --eps 0.1,0.15,0.2 --n 100
# pass 2: extend to the paper's 1000 samples where time allows (the first 500 come from pass 1)
run 60 --defense otad --attack bpda-pgd --eps 2,2.5,3 --n 1000
run 60 --defense otad --attack square --eps 2,3 --n 1000
echo "== $(date +%T) done"
