#!/bin/bash
# P13's student alone (ENet w0.25, v3 recipe, 1,024 steps) on seeds 2 and 3 (2026-12-01, written
# 23:18 UTC). For information only: P13's rule was decided on seed 1 and stays failed; no rule
# depends on these runs. Usage: s13_seeds.sh <seed>
set -e
S=$1
B=/work/main/.venv/bin
export WANDB_MODE=disabled PYTHONPATH=/work/p13tree OMP_NUM_THREADS=1
cd /work/p13tree
D=/work/pilot13/data/lits R=/work/pilot13/runs
W="data.preprocess.window_level=organ data.preprocess.window=[-100,100]"
$B/kdseg-train experiment=phantom_study_v3 data.root=$D paths.runs_dir=$R seed=$S $W model=enet model.width=0.25 hydra.run.dir=$R/S13-enet-w0.25-s$S > /work/pilot13/S13-s$S.log 2>&1
$B/kdseg-eval experiment=phantom_study_v3 data.root=$D $W ckpt=$R/S13-enet-w0.25-s$S/checkpoints/best.ckpt split=test output_dir=$R/S13-enet-w0.25-s$S/eval-test threads=1 > /work/pilot13/eval-S13-s$S.log 2>&1
