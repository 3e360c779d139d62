#!/usr/bin/env bash
# P37 (2026-12-07, session 32): v4's students alone with labels resized on pixel centres.
# One lever against v4's committed student runs (docs/study_v4/students/):
#   data.preprocess.label_resize=nearest-exact (default null: torch's nearest, which puts a
#   shrunk label about half a model pixel off the image; v4 shrinks ~0.8 mm to 1.5 mm).
# Everything else is v4's: phantoms, split, ENet w0.25 seeds 1-5 and MobileNetV2 w0.25 seeds
# 1-3, 1,024 steps, test-split evaluation. A control (/work/p37c) retrains ENet and
# MobileNetV2 seed 1 with the default, to show this machine reproduces v4's records.
# Resumable: rerun to continue. Usage: bash p37_label_resize.sh <repo worktree>
set -euo pipefail
TREE=${1:?worktree}
export OMP_NUM_THREADS=1 WANDB_MODE=disabled PYTHONPATH=$TREE
PY=/work/main/.venv/bin/python
BIN=/work/main/.venv/bin
STUDY="$PY $TREE/scripts/phantom_study.py --protocol v4"
LEVER=data.preprocess.label_resize=nearest-exact
date -u +"start %F %T"
$STUDY --dir /work/p37 --stages data
# the lever's slice cache, made once before the runs that read it (two runs side by side
# would otherwise both fill it)
$BIN/kdseg-prepare experiment=phantom_study_v3 data.root=/work/p37/data/lits \
  paths.runs_dir=/work/p37/runs data.preprocess.window_level=organ \
  'data.preprocess.window=[-100,100]' $LEVER
date -u +"data %F %T"
$STUDY --dir /work/p37 --stages students,eval --seeds 1,2,3,4,5 --jobs 2 --hydra $LEVER
date -u +"lever runs %F %T"
$STUDY --dir /work/p37c --data-from /work/p37/data/lits --stages data,students,eval --seeds 1 --jobs 2
date -u +"control %F %T"
$PY $TREE/docs/study_v4/pilots/p37_score.py /work/p37 /work/p37c | tee /work/p37/score.md
date -u +"end %F %T"
