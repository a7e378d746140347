#!/usr/bin/env bash
# otad-strongest recomputed whole on one network (issue 22): the stored cells of reports/results.sqlite used the
# `paper` FC ResNet trained on the AMD EPYC machine of earlier sessions, which is in no cache any more, and otbench
# refuses to extend a cell or take a worst case across networks. This runs reproduce-strongest.sh's attacks at
# n = 500 (and Table III's OTAD Square at n = 1000) on the network this machine trains, into a results file of
# its own ($OTBENCH_RESULTS, default reports/strongest-xeon.sqlite: the 2-core Intel Xeon, one thread), and renders
# nothing: when every cell is complete, its cells replace the EPYC ones (archived first) and the tables are
# regenerated. Resumable: rerunning computes only missing chunks. Undefended rows first, then KNN, OTAD, and the
# slow label-only cells last.
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export OTBENCH_RESULTS="${OTBENCH_RESULTS:-$HERE/strongest-xeon.sqlite}" OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
R() { echo "== $(date -u +%FT%TZ) $*"; otbench run --dataset mnist --preset paper --eps 2,2.5,3 --quiet "$@"; }
LABEL_ONLY=(--set attack.hopskipjump.max_queries=2000 --set attack.geoda.max_queries=2000)
R --n 500 --defense standard \
  --attack bpda-pgd,otad-exact-grad,transfer-pgd,neighbour-shift,neighbour-shift-labels,square,hopskipjump,geoda \
  "${LABEL_ONLY[@]}"
R --n 500 --defense standard --attack square --set attack.schedule=fixed
R --n 500 --defense standard --attack square --set attack.init=neighbour
R --n 500 --defense knn --attack bpda-pgd,transfer-pgd,neighbour-shift,neighbour-shift-labels
R --n 500 --defense otad --attack bpda-pgd,otad-exact-grad,transfer-pgd,neighbour-shift,neighbour-shift-labels
R --n 500 --defense otad --attack square,hopskipjump,geoda "${LABEL_ONLY[@]}"
R --n 500 --defense otad --attack square --set attack.schedule=fixed
R --n 500 --defense otad --attack square --set attack.init=neighbour
echo "== $(date -u +%FT%TZ) Table III's OTAD row at n = 1000"
otbench run --dataset mnist --preset paper --eps 2,3 --quiet --n 1000 --defense otad --attack square
R --n 500 --defense knn --attack square
R --n 500 --defense knn --attack hopskipjump,geoda "${LABEL_ONLY[@]}"
echo "== $(date -u +%FT%TZ) done"
