#!/bin/bash
# Copy study v8's small records from its folder into docs/study_v8/ (checkpoints stay there):
# each emkd_balanced_region run's config, CSV log and summary; every evaluation on the 24
# endpoint cases (the teacher, ENet alone seeds 1-5, the distilled seeds 1-5); the endpoint
# table, the split file and the command log.
#   bash docs/study_v8/collect.sh [DIR]
set -eu
S=${1:-/work/v8few}
D=$(cd "$(dirname "$0")" && pwd)
for run in "$S"/runs/region-8192/s*/; do
  [ -f "$run/summary.json" ] || continue
  out=$D/runs/region-8192/$(basename "$run")
  mkdir -p "$out"
  cp "$run/config.yaml" "$run/summary.json" "$out/"
  cp "$run/csv/metrics.csv" "$out/metrics.csv"
done
for e in "$S"/eval/*/; do
  [ -f "$e/summary.json" ] || continue
  out=$D/eval/$(basename "$e")
  mkdir -p "$out"
  cp "$e/summary.json" "$e/per_case.csv" "$out/"
done
for f in endpoint.json endpoint.md fresh10_split.json commands.log; do
  if [ -f "$S/$f" ]; then cp "$S/$f" "$D/"; fi
done
