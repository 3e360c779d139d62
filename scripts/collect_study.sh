#!/bin/bash
# Copy a paired study's small records from its raw folder into the repository (checkpoints
# stay there): each trained run's config, CSV log and summary; every evaluation's summary and
# per-case table; and the named top-level files (endpoint table, split file, command log).
#   bash scripts/collect_study.sh SRC DEST RUN_GROUP [FILE ...]
# e.g. bash scripts/collect_study.sh /work/v10 docs/study_v10 cutmix-8192 endpoint.json
set -eu
S=$1 D=$2 G=$3
shift 3
for run in "$S"/runs/"$G"/s*/; do
  [ -f "$run/summary.json" ] || continue
  out=$D/runs/$G/$(basename "$run")
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
for f in "$@"; do
  if [ -f "$S/$f" ]; then cp "$S/$f" "$D/"; fi
done
