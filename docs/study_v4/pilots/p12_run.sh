#!/bin/bash
# v4 pilot P12 (2026-12-01, written 21:31 UTC, after P11's results and before P12 ran; no
# distillation run has ever been scored on a test split). P11 (same data, same preprocessing)
# measured on the 12 test cases: ENet w0.25 alone 0.284 tumor Dice per case; RA-UNet w0.5
# 0.366 at 2,048 steps, 0.399 at 4,096 steps (gap 0.08 / 0.115; teacher below 0.5): the
# teacher's length gives +0.03 per doubling. P12 tries the teacher's capacity instead:
# P11's setting exactly (data /work/pilot11, tumors 15-50 mm, organ window [-100, 100],
# 144 x 144 at 1.5 mm), teacher RA-UNet at FULL width (1.0, the paper's), Adam 1e-3, 2,048
# steps; the student is P11's S11 (same data, code and recipe: not retrained).
# Decision rule (written before P12 ran): v4 = P12's setting if T12's TEST split shows teacher
# tumor Dice (per case, non-empty) >= 0.5 and >= 0.15 above S11 (0.284); otherwise no v4 is
# fixed. Code: commit ebc0ef1 (worktree /work/p11tree via PYTHONPATH).
set -e
B=/work/main/.venv/bin
export WANDB_MODE=disabled PYTHONPATH=/work/p11tree OMP_NUM_THREADS=1
cd /work/p11tree
P=/work/pilot11 D=/work/pilot11/data/lits R=/work/pilot11/runs
W="data.preprocess.window_level=organ data.preprocess.window=[-100,100]"
C="experiment=phantom_study_v3 data.root=$D paths.runs_dir=$R seed=1 $W"
date
$B/kdseg-train $C model=raunet model.width=1.0 optim.lr=1e-3 trainer.max_epochs=32 hydra.run.dir=$R/T12-raunet-w1.0-2048 > $P/T12.log 2>&1
date
for split in val test; do
  $B/kdseg-eval experiment=phantom_study_v3 data.root=$D $W ckpt=$R/T12-raunet-w1.0-2048/checkpoints/best.ckpt split=$split output_dir=$R/T12-raunet-w1.0-2048/eval-$split threads=1 > $P/eval-T12-$split.log 2>&1
done
date
