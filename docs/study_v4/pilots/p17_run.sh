#!/bin/bash
# Issue 15 pilot P17 (2026-12-04, written 21:34 UTC, before it ran). P16's selected setting
# (the generator's DEFAULT phantoms; organ-ROI stage 2 at 1.5 mm, 144 x 144, window [-100, 100]
# around the organ level; RA-UNet w0.5, Adam 1e-3, 8,192 steps, seed 1; data.context=2) with ONE
# lever changed: 5 times the training cases. kdseg-phantom n_cases=152 seed=0 draws the same 40
# cases as study v3's n_cases=40 (checked below: their phantom_truth.json entries are equal) and
# 112 more; the split keeps P16's 28 training, 4 validation and 8 test cases and adds the 112 new
# cases (volume-40 ... volume-151) to training. Why: the four test cases that every model missed
# hold only 7-31-voxel tumors, and 28 training cases hold few tumors that small.
# P16 (context 2, 28 training cases): test tumor 0.219 per case, val 0.232.
# Rule (written before it ran): if P17's TEST per-case tumor Dice (reference box) is >= 0.6,
# seeds 2 and 3 follow in a later session and issue 15's target is scored on them; otherwise the
# default-phantom target stays unmet with this recipe. Reported whatever it is.
# Code: /work/main at this commit (kdseg numerics unchanged for this path since
# P16's 0c3a7bd: tests/test_pipeline.py and the unlabeled study v5's alone runs reproduce
# earlier best scores exactly), via PYTHONPATH=/work/p17tree.
set -e
B=/work/main/.venv/bin
export WANDB_MODE=disabled PYTHONPATH=/work/p17tree OMP_NUM_THREADS=1
cd /work/p17tree
P=/work/p17 D=/work/p17/data/lits R=/work/p17/runs
mkdir -p $P
W="data.preprocess.window_level=organ data.preprocess.window=[-100,100]"
date -u
[ -f $D/phantom_truth.json ] || $B/kdseg-phantom dataset=lits root=$D n_cases=152 seed=0 workers=2
$B/python - $D <<'PY'
import json, sys
root = sys.argv[1]
new = json.load(open(f"{root}/phantom_truth.json"))
old = json.load(open("/work/p15/data/lits/phantom_truth.json"))
assert all(new[f"volume-{i}"] == old[f"volume-{i}"] for i in range(40)), "first 40 cases differ"
split = json.load(open("/work/p15/data/lits/kdseg_split.json"))
out = {k: split[k] for k in ("train", "val", "test")}
out["train"] = out["train"] + [f"volume-{i}" for i in range(40, 152)]
json.dump(out, open(f"{root}/kdseg_split.json", "w"), indent=1)
print({k: len(v) for k, v in out.items()})
PY
$B/kdseg-prepare experiment=phantom_study_v3 data.root=$D paths.runs_dir=$R $W workers=1
N=T17-raunet-w0.5-8192-default152-ctx2
C="experiment=phantom_study_v3 data.root=$D paths.runs_dir=$R seed=1 $W data.context=2"
$B/kdseg-train $C model=raunet model.width=0.5 optim.lr=1e-3 trainer.max_epochs=128 hydra.run.dir=$R/$N > $P/$N.log 2>&1
for split in val test; do
  $B/kdseg-eval experiment=phantom_study_v3 data.root=$D data.context=2 $W ckpt=$R/$N/checkpoints/best.ckpt split=$split output_dir=$R/$N/eval-$split threads=1 > $P/$N-eval-$split.log 2>&1
done
date -u
