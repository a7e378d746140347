#!/usr/bin/env bash
# The commands behind reports/quick/* (preset `quick`, the project's 2-core CPU; no GPU was lent). Every
# cell resumes: rerunning computes only what is missing. Trainings are cached by config hash.
set -euo pipefail
export OTBENCH_RESULTS="${OTBENCH_RESULTS:-reports/results.sqlite}" OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
Q="--dataset mnist --preset quick --n 100 --quiet"
# OTAD Tables II and III: OTAD, the undefended network and every baseline of the MNIST tables
BASE=otad,standard,pgd-at,fgsm-at,median-filter,stl,ape-gan,linf-dist-net,soc-plus
otbench run --defense "$BASE" --attack bpda-pgd --eps 2,2.5,3 $Q
otbench run --defense "$BASE" --attack square --eps 2,3 $Q
# Table I (NGOpt: 850 defense calls per sample and sigma): n = 50; the slow forward passes of STL (200 FISTA
# iterations) and SOC+ run in chunks of 10 (the chunk size is part of a cell's identity: NGOpt's
# per-sample random streams are indexed within the chunk)
otbench run --defense standard,otad,pgd-at,fgsm-at,median-filter,ape-gan,linf-dist-net --attack ngopt-cw \
  --eps 0.1,0.15,0.2 --dataset mnist --preset quick --n 50 --quiet
otbench run --defense stl,soc-plus --attack ngopt-cw --eps 0.1,0.15,0.2 --dataset mnist --preset quick --n 50 \
  --chunk 10 --quiet
# The OT-Classifier: Table 1, Figures 2-6, Table 3 (l-inf PGD, 40 steps, on the paper's eps grid)
GRID=0,0.025,0.05,0.075,0.1,0.125,0.15,0.175,0.2,0.225,0.25,0.275,0.3,0.325,0.35,0.375,0.4
otbench run --defense cnn-pgd-at,ot-cla-adv,ot-cla,e-cla,cnn-standard --attack pgd --eps "$GRID" --dataset mnist \
  --preset quick --n 200 --set attack.steps=40 --no-checks --quiet
for s in train.adv_eps=0.25 train.adv_eps=0.35; do
  otbench run --defense cnn-pgd-at --set "$s" --attack pgd --eps "$GRID" --dataset mnist --preset quick --n 100 \
    --set attack.steps=40 --no-checks --quiet
done
for s in train.n_z=2 train.n_z=13; do
  otbench run --defense ot-cla --set "$s" --attack pgd --eps "$GRID" --dataset mnist --preset quick --n 100 \
    --set attack.steps=40 --no-checks --quiet
done
otbench report --fill --tables otc-figure-5,otc-table-3 --preset quick --n 500 --quiet --out reports/quick
# OT-Classifier Table 2 (C&W, RMS 0.005 and the mean-squared reading 0.0707) and RSE
CW="--set attack.steps=100 --set attack.binary_search_steps=6 --set attack.c=0.1 --set attack.lr=0.1"
otbench run --defense defense-gan --attack bpda-cw-l2 --eps 0.005,0.0707 $Q $CW
otbench run --defense ot-cla-adv --attack cw-l2 --eps 0.005,0.0707 $Q $CW
otbench run --defense rse --attack pgd --eps 0.1,0.2,0.3 $Q --set attack.steps=20 --set attack.eot_samples=5
# OTAD-T on Fashion-MNIST (Tables VI, VII, IX-XII)
for t in otad-t-table-12-fashion-mnist:500 otad-table-7-fashion-mnist:100 otad-table-9-fashion-mnist:100 \
         otad-table-6-fashion-mnist:100 otad-table-10-fashion-mnist:100 otad-table-11-fashion-mnist:100; do
  otbench report --fill --tables "${t%%:*}" --preset quick --n "${t##*:}" --quiet --out reports/quick
done
# Table IV's pipeline on the synthetic stand-in of MERFISH's shape
otbench report --fill --tables otad-table-4-synthetic --preset quick --n 500 --quiet --out reports/quick
otbench report --preset quick --out reports/quick
