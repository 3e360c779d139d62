#!/bin/bash
# Issue 15 pilot P19 (2026-12-05, session 13; written 01:51 UTC by `date`, before it ran). P17's
# recipe (the generator's DEFAULT phantoms, 140 / 4 / 8 cases; organ-ROI stage 2 at 1.5 mm,
# 144 x 144, window [-100, 100] around the organ level; RA-UNet w0.5, Adam 1e-3, 8,192 steps,
# seed 1; data.context=2) with ONE lever changed: loss.blob_weight=0.5, the blob loss of Kofler
# et al. (IPMI 2023; kdseg/lit/blob_loss.py): a soft Dice per ground-truth lesion, averaged over
# lesions, so a 7-voxel tumor weighs in L_seg as much as a 7,000-voxel one (L_seg's batch Dice
# weighs it about 1/1000). Weight 0.5, the Dice term's, so L_seg's global part (focal 0.5 +
# Dice 0.5) to the blob part is 2 : 1, the ratio Kofler et al. used. Why: the matched-filter
# bound (scripts/tumor_detectability.py, docs/study.md) says volume-24's, -30's and -11's
# tumors are each the most tumor-like blob of their liver, yet no P17 seed finds them.
# P17 (seed 1): test tumor 0.276 per case (0.283 +- 0.006 over seeds 1-3), val 0.511.
# Rule (written before it ran): if P19's TEST per-case tumor Dice (reference box) is >= 0.6,
# seeds 2 and 3 follow in a later session and issue 15's target is scored on them; otherwise the
# default-phantom target stays unmet with this recipe. Reported whatever it is.
# Code: /work/main at the commit that adds this file (blob_weight unset leaves L_seg unchanged),
# via PYTHONPATH=/work/p19tree. Data: P17's folder and cache (/work/p17/data/lits), read only.
set -e
B=/work/main/.venv/bin
export WANDB_MODE=disabled PYTHONPATH=/work/p19tree OMP_NUM_THREADS=1
cd /work/p19tree
P=/work/p19 D=/work/p17/data/lits R=/work/p19/runs
mkdir -p $P
W="data.preprocess.window_level=organ data.preprocess.window=[-100,100]"
date -u
N=T19-raunet-w0.5-8192-default152-ctx2-blob
C="experiment=phantom_study_v3 data.root=$D paths.runs_dir=$R seed=1 $W data.context=2"
$B/kdseg-train $C model=raunet model.width=0.5 optim.lr=1e-3 trainer.max_epochs=128 loss.blob_weight=0.5 hydra.run.dir=$R/$N > $P/$N.log 2>&1
for split in val test; do
  $B/kdseg-eval experiment=phantom_study_v3 data.root=$D data.context=2 $W ckpt=$R/$N/checkpoints/best.ckpt split=$split output_dir=$R/$N/eval-$split threads=1 > $P/$N-eval-$split.log 2>&1
done
date -u
