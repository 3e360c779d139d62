#!/bin/bash
# Study v4, the rest (2026-12-04 17:35 UTC, session 10): ablations and RA-UNet -> MobileNetV2
# for seeds 2-3, then evaluation and the final report. The same runs and settings as
# run_v4_rest.sh's last line, which the end of session 9 killed after seed 1. Code: 9a72fe0
# (kdseg numerics identical to ec347f9: later commits change logging, throughput bookkeeping
# and the report stage's folder list only), so the finished seed-1 runs are not retrained.
set -u
B=/work/main/.venv/bin
export WANDB_MODE=disabled PYTHONPATH=/work/v4tree2 OMP_NUM_THREADS=1
cd /work/v4tree2
S=/work/study-v4 T=/work/pilot13/runs/T14-raunet-w0.5-8192
st() { $B/python scripts/phantom_study.py --protocol v4 --dir $S --teacher-from $T --jobs 2 "$@"; }
st --stages ablations,mobilenet --seeds 2,3
st --stages eval,report
date -u
