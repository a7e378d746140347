#!/usr/bin/env bash
# The commands behind reports/paper/*: run on the 2-core CPU machine of this project (no GPU lent).
# Every cell is resumable: rerunning this script computes only what is missing, and a larger --n
# extends the cells (the test subset of n samples is a prefix of the one of a larger n).
set -euo pipefail
export OTBENCH_RESULTS="${OTBENCH_RESULTS:-reports/results.sqlite}"
N_OTAD="${N_OTAD:-100}"
otbench report --fill --tables otad-table-12 --preset paper --n 1000 --quiet --out reports/paper
otbench run --defense standard --attack square --dataset mnist --eps 2,3 --n 500 --preset paper --quiet
otbench run --defense otad --attack square --dataset mnist --eps 2,3 --n "$N_OTAD" --chunk 50 --preset paper --quiet
# Ablations recorded in the store (not part of a paper table): the CIP options on clean accuracy, and
# Square's initial square size (torchattacks' default p_init 0.8 vs the Square paper's 0.1 for L2).
for setting in defense.potentials=least defense.potentials=lp defense.formulation=reference-code; do
  otbench run --defense otad --attack none --n 1000 --preset paper --set "$setting" --quiet
done
otbench run --defense otad --attack square --dataset mnist --eps 2 --n 50 --chunk 50 --preset paper \
  --set attack.p_init=0.1 --quiet
# Table I: the adaptive CW objective solved by NGOpt (nevergrad's Python overhead, ~1 ms per sample and
# step, makes this CPU-bound wherever it runs; 100 samples per sigma)
otbench run --defense standard,otad --attack ngopt-cw --eps 0.1,0.15,0.2 --n 100 --chunk 50 --preset paper --quiet
# OTAD's analyses (issue 7): Table V on z-scored wine, Tables XIII, XIV and Figure 2 (each trains its networks)
for wine in winequality-red-z winequality-red; do  # Table V (z-scores) and its min-max variant
  otbench run --dataset "$wine" --preset paper --defense regressor --attack regression-l2,gaussian-noise \
    --eps 0.1,0.2,0.5 --n 320 --quiet
  otbench run --dataset "$wine" --preset paper --defense regressor-at,otad-regression --attack regression-l2 \
    --eps 0.1,0.2,0.5 --n 320 --quiet
done
otbench report --fill --tables otad-table-13 --preset paper --n 200 --quiet --out reports/paper
otbench report --fill --tables otad-table-14 --preset paper --n 500 --quiet --out reports/paper
otbench report --fill --tables otad-figure-2 --preset paper --n 500 --quiet --out reports/paper
# Table IV's pipeline on the synthetic stand-in of MERFISH's shape (reduced scale: preset quick)
otbench report --fill --tables otad-table-4-synthetic --preset quick --n 500 --quiet --out reports/quick
# The baselines that train on a CPU at the paper's settings: the median filter (nothing to train) and APE-GAN
# (the generator's 2 epochs on 60,000 FGSM examples, ~30 min), both in front of the paper-preset network.
# The other baselines' paper presets (hundreds of epochs, PGD inside training) need a GPU.
for attack in "bpda-pgd --eps 2,2.5,3" "square --eps 2,3" "ngopt-cw --eps 0.1,0.15,0.2"; do
  otbench run --defense median-filter,ape-gan --attack $attack --dataset mnist --n 100 --preset paper --quiet
done
# Tables II, III at n = 1000 and the exact-gradient attack: reports/reproduce-gpu.sh (H100), merged with
# `otbench merge`. Rows with no paper-preset result are taken from reports/reproduce-quick.sh's, marked.
otbench report --preset paper --fallback paper-v1,quick --out reports/paper
