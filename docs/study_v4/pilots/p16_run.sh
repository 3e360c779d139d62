#!/bin/bash
# Issue 15 pilot P16 (2026-12-04, written 20:08 UTC, before it ran). T15's setting (the
# generator's DEFAULT phantoms, study v3's 40 cases: kdseg-phantom dataset=lits n_cases=40
# seed=0; organ-ROI stage 2 at 1.5 mm, 144 x 144, window [-100, 100] around the organ level,
# RA-UNet w0.5, Adam 1e-3, 8,192 steps, seed 1) with ONE lever changed: 2.5D context, the
# neighbouring slices fed as channels (data.context=1 -> 3 slices, data.context=2 -> 5 slices).
# Why this lever: T15 found none of the four test cases' 7-31-voxel tumors (4-7 mm); a small
# tumor is a compact 3D blob, and the slices above and below are what tells it from noise.
# T15 (context 0): test tumor 0.173 per case, val best 0.268.
# Rule (written before either ran):
#   1. The two runs go side by side, one core each. The one with the higher VALIDATION best
#      tumor Dice (eval-val, per case) is selected; ties go to context 1 (cheaper).
#   2. If the selected run's TEST per-case tumor Dice (reference box) is >= 0.6, seeds 2 and 3
#      of it follow (this session if time allows), and issue 15's RA-UNet target is scored on
#      seeds 1-3. Otherwise the target stays unmet with this recipe.
#   3. Both runs' val and test numbers are reported whatever they are.
# Code: /work/main at commit 0c3a7bd, via PYTHONPATH=/work/p16tree (a worktree at that commit).
set -e
B=/work/main/.venv/bin
export WANDB_MODE=disabled PYTHONPATH=/work/p16tree OMP_NUM_THREADS=1
cd /work/p16tree
P=/work/p16 D=/work/p15/data/lits R=/work/p16/runs
mkdir -p $P
W="data.preprocess.window_level=organ data.preprocess.window=[-100,100]"
date -u
$B/kdseg-prepare experiment=phantom_study_v3 data.root=$D paths.runs_dir=$R $W workers=1
C="experiment=phantom_study_v3 data.root=$D paths.runs_dir=$R seed=1 $W"
one() {  # context
  local N=T16-raunet-w0.5-8192-default-ctx$1
  $B/kdseg-train $C data.context=$1 model=raunet model.width=0.5 optim.lr=1e-3 trainer.max_epochs=128 hydra.run.dir=$R/$N > $P/$N.log 2>&1
  for split in val test; do
    $B/kdseg-eval experiment=phantom_study_v3 data.root=$D data.context=$1 $W ckpt=$R/$N/checkpoints/best.ckpt split=$split output_dir=$R/$N/eval-$split threads=1 > $P/$N-eval-$split.log 2>&1
  done
  date -u
}
one 1 &
p1=$!
one 2 &
p2=$!
wait $p1 $p2
date -u
