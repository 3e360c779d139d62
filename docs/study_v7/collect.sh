#!/bin/bash
# Copy study v7's small records from the study folder into docs/study_v7/ (checkpoints stay
# there): every v7 run's config, CSV log and summary (runs/patient<steps>/), the dev-2 and
# fresh-3 evaluations of those runs, of v5's 1,024-step ENet alone and emkd_balanced_region
# runs and of the teacher; the length rule, the follow-up and the confirmation results, the
# fresh-3 split, the stage logs and pilot P20 (width_pilot.py).
#   bash docs/study_v7/collect.sh [DIR]
set -eu
S=${1:-/work/study-v5}
D=$(cd "$(dirname "$0")" && pwd)
copy_evals() {  # run folder, record folder
  for kind in dev2 fresh3; do
    e=$1/eval-$kind-full
    [ -f "$e/summary.json" ] || continue
    mkdir -p "$2"
    cp "$e/summary.json" "$2/eval-$kind-summary.json"
    cp "$e/per_case.csv" "$2/eval-$kind-per_case.csv"
  done
}
for run in "$S"/runs/patient*/*/; do
  [ -f "$run/summary.json" ] || continue
  out=$D/runs/$(basename "$(dirname "$run")")/$(basename "$run")
  mkdir -p "$out"
  cp "$run/config.yaml" "$run/summary.json" "$out/"
  [ -f "$run/csv/metrics.csv" ] && cp "$run/csv/metrics.csv" "$out/metrics.csv"
  copy_evals "$run" "$out"
done
for run in "$S"/runs/teachers/*/ "$S"/runs/students/enet-*/ \
  "$S"/runs/candidates/*-emkd_balanced_region-s*/; do
  copy_evals "$run" "$D/runs/$(basename "$(dirname "$run")")/$(basename "$run")"
done
for f in patient_gate.json budget_v7.json compute_v7.json compute_v7.md fresh3_split.json \
  timings.json v7.log v7-pilot2048.log budget.log budget2.log confirm.log \
  width_pilot.json width_pilot.log; do
  if [ -f "$S/$f" ]; then cp "$S/$f" "$D/"; fi
done
