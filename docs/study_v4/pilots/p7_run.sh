#!/bin/bash
# v4 pilot P7 (2026-12-01, 15:05 UTC): P3 (tumors 10-40 mm, the paper's window [-60, 140],
# 144 x 144 at 1.5 mm, teacher Adam 1e-3) with the teacher trained 4x longer: 4,096 steps
# (64 epochs of 64 steps). The student alone stays P3's ENet w0.25 at 1,024 steps (test tumor
# 0.172). P6 was stopped before it trained: P5's teacher, with the wide window, had validation
# tumor Dice 0.00 at every check up to step 767 (P4, same grid and learning rate with the
# narrow window: 0.35 at step 319). P5 differs from P4 in the window and in the phantoms
# (3-40 mm vs 10-40 mm tumors), but study v3's teachers learned tumors on P5's very phantoms
# with the narrow window by step 255: the wide window is the likely cause, and P6 (the wide
# window on P4's phantoms) was not worth 45 minutes of the two cores here.
# Decision rule (written before P7 ran): v4 = P3 with a 4,096-step teacher if P7's teacher has
# test tumor Dice (per case, non-empty) >= 0.5 and >= 0.15 above P3's ENet (0.172).
# Code: commit c2f06d4 (worktree /work/p5tree via PYTHONPATH).
set -e
B=/work/main/.venv/bin
export WANDB_MODE=disabled PYTHONPATH=/work/p5tree
cd /work/p5tree
D=/work/pilot4/data/lits R=/work/pilot7/runs
date
OMP_NUM_THREADS=1 $B/kdseg-train experiment=phantom_study_v3 data.root=$D paths.runs_dir=$R seed=1 \
  model=raunet model.width=0.5 optim.lr=1e-3 trainer.max_epochs=64 hydra.run.dir=$R/T7-raunet-w0.5-4096 > /work/pilot7/T7.log 2>&1
for split in val test; do
  $B/kdseg-eval experiment=phantom_study_v3 data.root=$D ckpt=$R/T7-raunet-w0.5-4096/checkpoints/best.ckpt split=$split output_dir=$R/T7-raunet-w0.5-4096/eval-$split threads=2 > /work/pilot7/eval-T7-$split.log 2>&1
done
date
