#!/bin/bash
# Issue 15, P21 (2026-12-05, session 16; written at 08:37 UTC by `date`, before it ran).
# No training. P17's recipe (RA-UNet w0.5 stage 2, 1.5 mm, 144 x 144, context 2, 140 training
# cases, 8,192 steps), its three finished seeds, scored on 48 default phantoms that no model or
# choice has seen: cases 152-199 of the same generator call (kdseg-phantom dataset=lits seed=0,
# every parameter default, n_cases=200; cases 0-151 are P17's and are checked equal below).
# Why: the fixed 8-case test split holds 4 cases whose only tumors have under 32 voxels (half
# the split, against 18% of the generator's cases with tumor), so the split's per-case mean
# (0.283 +/- 0.006 over seeds 1-3) may say more about those 8 cases than about the recipe.
# Evaluation: exactly P17's command (reference box, full protocol), split=test of a split file
# whose test part is volume-152 ... volume-199; per-case tumor Dice over the cases with tumor
# (`dice_per_case_nonempty`), global tumor Dice, liver Dice; per seed and mean +/- sd.
# Descriptive, fixed now: the same per-case mean over the cases with >= 32 and < 32 tumor
# voxels (counted from phantom_truth.json / the labels).
# How it will be read (fixed now): the issue's target stays scored on the fixed 8-case split
# (0.283), which this does not replace. If every seed reaches 0.6 per case here, the note will
# say that the recipe meets 0.6 on fresh default phantoms and that the 8-case split is what
# fails it, and leave the judgement to the issue's owner; if not, the target is unmet on both.
# Code: /work/main at the commit that adds this file, via PYTHONPATH=/work/p21tree.
set -e
B=/work/main/.venv/bin
export WANDB_MODE=disabled PYTHONPATH=/work/p21tree OMP_NUM_THREADS=1
cd /work/p21tree
P=/work/p21 D=/work/p21/data/lits
W="data.preprocess.window_level=organ data.preprocess.window=[-100,100]"
date -u
mkdir -p $D
if [ ! -f $D/done_data ]; then
  # the 152 drawn cases are copied (NIfTI and truth only) so that only 152-199 are drawn
  cp /work/p17/data/lits/volume-*.nii.gz /work/p17/data/lits/segmentation-*.nii.gz $D/
  cp /work/p17/data/lits/phantom_truth.json $D/
  nice -n 19 $B/kdseg-phantom dataset=lits root=$D n_cases=200 seed=0 workers=1
  $B/python - $D <<'PY'
import json, sys
root = sys.argv[1]
new = json.load(open(f"{root}/phantom_truth.json"))
old = json.load(open("/work/p17/data/lits/phantom_truth.json"))
assert len(new) == 200, len(new)
assert all(new[f"volume-{i}"] == old[f"volume-{i}"] for i in range(152)), "cases 0-151 differ"
split = json.load(open("/work/p17/data/lits/kdseg_split.json"))
out = {"train": split["train"], "val": split["val"], "test": [f"volume-{i}" for i in range(152, 200)]}
json.dump(out, open(f"{root}/kdseg_split.json", "w"), indent=1)
print({k: len(v) for k, v in out.items()})
PY
  touch $D/done_data
fi
for S in 1 2 3; do
  if [ $S = 1 ]; then RUN=/work/p17/runs/T17-raunet-w0.5-8192-default152-ctx2
  else RUN=/work/p18/runs/T17-raunet-w0.5-8192-default152-ctx2-s$S; fi
  OUT=$P/eval-fresh48-s$S
  [ -f $OUT/summary.json ] && continue
  nice -n 19 $B/kdseg-eval experiment=phantom_study_v3 data.root=$D data.context=2 $W ckpt=$RUN/checkpoints/best.ckpt split=test output_dir=$OUT threads=1 > $P/eval-fresh48-s$S.log 2>&1
done
date -u
