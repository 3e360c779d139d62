#!/bin/bash
# Copy study v8's small records from its folder into docs/study_v8/ (checkpoints stay there):
# each emkd_balanced_region run's config, CSV log and summary; every evaluation on the 24
# endpoint cases (the teacher, ENet alone seeds 1-5, the distilled seeds 1-5); the endpoint
# table, the split file and the command log.
#   bash docs/study_v8/collect.sh [DIR]
set -eu
D=$(cd "$(dirname "$0")" && pwd)
bash "$D/../../scripts/collect_study.sh" "${1:-/work/v8few}" "$D" region-8192 \
  endpoint.json endpoint.md fresh10_split.json commands.log
