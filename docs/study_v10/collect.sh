#!/bin/bash
# Copy study v10's small records from its folder into docs/study_v10/ (checkpoints stay there):
# each emkd_balanced_region_cutmix run's config, CSV log and summary; every evaluation on the
# 24 endpoint cases 228-251 (the teacher and all three rows, seeds 1-5); the endpoint table,
# the split file and the command log.
#   bash docs/study_v10/collect.sh [DIR]
set -eu
D=$(cd "$(dirname "$0")" && pwd)
bash "$D/../../scripts/collect_study.sh" "${1:-/work/v10}" "$D" cutmix-8192 \
  endpoint.json endpoint.md fresh11_split.json commands.log
