#!/bin/bash
# Copy study v5's small records from the study folder into docs/study_v5/ (checkpoints stay
# there): each run's fresh-test and dev evaluations; the candidates' configs, CSV logs and
# summaries (every other run is a copy of a study v4 run, named in copied_from.txt; its config
# and log are in docs/study_v4/); the selection, the endpoint, the report and the splits.
#   bash docs/study_v5/collect.sh [DIR]
set -eu
S=${1:-/work/study-v5}
D=$(cd "$(dirname "$0")" && pwd)
for run in "$S"/runs/*/*/; do
  [ -f "$run/summary.json" ] || continue
  out=$D/runs/$(basename "$(dirname "$run")")/$(basename "$run")
  mkdir -p "$out"
  if [ -f "$run/copied_from.txt" ]; then
    cp "$run/copied_from.txt" "$out/"
  else
    cp "$run/config.yaml" "$run/summary.json" "$out/"
    [ -f "$run/csv/metrics.csv" ] && cp "$run/csv/metrics.csv" "$out/metrics.csv"
  fi
  for kind in test dev val; do
    e=$run/eval-$kind-full
    name=$kind; [ "$kind" = test ] && name=fresh-test
    [ -f "$e/summary.json" ] && cp "$e/summary.json" "$out/eval-$name-summary.json"
    [ -f "$e/per_case.csv" ] && cp "$e/per_case.csv" "$out/eval-$name-per_case.csv"
  done
done
for f in selection.json selection_v5.json endpoint.json timings.json dev_split.json \
  candidates.sh candidates.log rest.sh; do
  [ -f "$S/$f" ] && cp "$S/$f" "$D/"
done
cp "$S/data/lits/kdseg_split.json" "$D/split.json"
[ -d "$S/report" ] && mkdir -p "$D/report" && cp "$S"/report/report.* "$D/report/"
echo "records in $D"
