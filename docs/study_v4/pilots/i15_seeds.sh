#!/bin/bash
# Issue 15, measured 2026-12-01 (written 22:31 UTC, after P13's seed-1 result): P13's stage 2
# (RA-UNet w0.5, organ ROI at 1.5 mm, 144 x 144, organ window [-100, 100], Adam 1e-3,
# 4,096 steps) on P13's phantoms (tumor_mm_range [15, 50], tumor_depth 1), seeds 2 and 3,
# to report three seeds (seed 1 is P13's T13). Scored as P13: kdseg-eval in the reference
# liver box on the 12 test cases. Usage: i15_seeds.sh <seed>
set -e
S=$1
B=/work/main/.venv/bin
export WANDB_MODE=disabled PYTHONPATH=/work/p13tree OMP_NUM_THREADS=1
cd /work/p13tree
D=/work/pilot13/data/lits R=/work/pilot13/runs
W="data.preprocess.window_level=organ data.preprocess.window=[-100,100]"
date
$B/kdseg-train experiment=phantom_study_v3 data.root=$D paths.runs_dir=$R seed=$S $W model=raunet model.width=0.5 optim.lr=1e-3 trainer.max_epochs=64 hydra.run.dir=$R/T13-raunet-w0.5-4096-s$S > /work/pilot13/T13-s$S.log 2>&1
$B/kdseg-eval experiment=phantom_study_v3 data.root=$D $W ckpt=$R/T13-raunet-w0.5-4096-s$S/checkpoints/best.ckpt split=test output_dir=$R/T13-raunet-w0.5-4096-s$S/eval-test threads=1 > /work/pilot13/eval-T13-s$S.log 2>&1
date
