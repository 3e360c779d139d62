#!/bin/bash
# Copy the unlabeled study v9's small records from its folder into docs/unlabeled_v9/
# (checkpoints stay there): the length pilot's record, the results, the new split, v9's lines of
# the command log, the study log, and of every run v9 trained or scored its config, summary, CSV log and
# evaluations (per case and summary).
#   bash docs/unlabeled_v9/collect.sh [DIR]
set -eu
S=${1:-/work/ul6}
D=$(cd "$(dirname "$0")" && pwd)
for f in pilot-v9.json results-v9.md results-v9.json fresh9_split.json v9.log \
  extra-seeds-v9.json extra-seeds.log; do
  if [ -f "$S/$f" ]; then cp "$S/$f" "$D/"; fi
done
# v9's commands: everything logged from its first command (05:56 UTC) on
awk '$1 >= "2026-12-05T05:56"' "$S/commands.log" >"$D/commands.log"
for run in "$S"/runs/alone*/s*/ "$S"/runs/pseudo_kd*/s*/ "$S"/runs/teacher/s1/; do
  [ -f "$run/summary.json" ] || continue  # a run still training
  row=$(basename "$(dirname "$run")")
  out=$D/runs/$row/$(basename "$run")
  trained=false
  case $row in *-*) trained=true ;; esac
  if $trained; then
    mkdir -p "$out"
    cp "$run/config.yaml" "$run/summary.json" "$out/"
    [ -f "$run/csv/metrics.csv" ] && cp "$run/csv/metrics.csv" "$out/metrics.csv"
  fi
  for kind in fresh fresh8 fresh9; do
    e=$run/eval-$kind
    [ -f "$e/summary.json" ] || continue
    # v7's and v8's scores of their own runs are in docs/unlabeled_v7 and _v8
    if ! $trained && [ "$kind" != fresh9 ]; then
      [ "$row/$(basename "$run")" = alone/s1 ] || continue
    fi
    mkdir -p "$out"
    cp "$e/summary.json" "$out/eval-$kind-summary.json"
    cp "$e/per_case.csv" "$out/eval-$kind-per_case.csv"
  done
done
