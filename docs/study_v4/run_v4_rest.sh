#!/bin/bash
# Study v4, the rest after main seeds 1-3 (2026-12-04 15:45 UTC; replaces run_v4.sh's last two
# lines, which it killed between stages: only the order changes, no run or setting). Main for
# seeds 4-5 with evaluation and report; then the ablations and MobileNetV2 stages for seed 1
# first (so that each has a complete first seed before the session ends), then seeds 2-3.
set -u
B=/work/main/.venv/bin
export WANDB_MODE=disabled PYTHONPATH=/work/v4tree OMP_NUM_THREADS=1
cd /work/v4tree
S=/work/study-v4 T=/work/pilot13/runs/T14-raunet-w0.5-8192
while pgrep -f "scripts/phantom_study.py --protocol v4" > /dev/null; do sleep 20; done
st() { $B/python scripts/phantom_study.py --protocol v4 --dir $S --teacher-from $T --jobs 2 "$@"; }
st --stages main,eval,report
st --stages ablations,mobilenet,eval,report --seeds 1
st --stages ablations,mobilenet,eval,report
date -u
