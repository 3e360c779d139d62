#!/bin/bash
# Copy study v11's small records from its folder into docs/study_v11/ (checkpoints stay there):
# each finished control run's config, CSV log and summary; its evaluations on v10's 24 cases
# once scored; the command log and the scored comparisons (endpoint.json, endpoint.md).
#   bash docs/study_v11/collect.sh [DIR]
set -eu
D=$(cd "$(dirname "$0")" && pwd)
bash "$D/../../scripts/collect_study.sh" "${1:-/work/v11}" "$D" labelmix-8192 commands.log endpoint.json endpoint.md
