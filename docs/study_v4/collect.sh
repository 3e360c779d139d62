#!/bin/bash
# Copy study v4's small records (configs, CSV logs, summaries, evaluations, report) from the
# study folder into docs/study_v4/ (checkpoints stay there):  bash docs/study_v4/collect.sh [DIR]
set -eu
S=${1:-/work/study-v4}
D=$(cd "$(dirname "$0")" && pwd)
for run in "$S"/runs/*/*/; do
  [ -f "$run/summary.json" ] || continue
  out=$D/$(basename "$(dirname "$run")")/$(basename "$run")
  mkdir -p "$out"
  cp "$run/config.yaml" "$run/summary.json" "$out/"
  [ -f "$run/csv/metrics.csv" ] && cp "$run/csv/metrics.csv" "$out/metrics.csv"
  [ -f "$run/copied_from.txt" ] && cp "$run/copied_from.txt" "$out/"
  for split in val test; do
    e=$run/eval-$split-full
    [ -f "$e/summary.json" ] && cp "$e/summary.json" "$out/eval-$split-summary.json"
    [ -f "$e/per_case.csv" ] && cp "$e/per_case.csv" "$out/eval-$split-per_case.csv"
  done
done
for f in selection.json timings.json p14_verdict.txt; do [ -f "$S/$f" ] && cp "$S/$f" "$D/"; done
[ -d "$S/report" ] && mkdir -p "$D/report" && cp "$S"/report/report.* "$D/report/"
echo "records in $D"
