#!/bin/bash
# Issue 15, P22's second part (2026-12-05, written at 17:49 UTC by `date`, while P22 trained and
# before any P22 score existed). Information only, no rule: the same two evaluations (no
# mirroring, tta=flip) of P22's retrained P17 seed 1 on P21's 48 fresh default phantoms (cases
# 152-199 of the default call n_cases=200 seed=0; cases 0-151 copied from P22's folder, and
# checked equal to P22's). The issue's target stays scored on the fixed split (p22_run.sh).
# Run after `p22_run.sh train`; P21's split: train / val as P17's, test = volume-152 ... 199.
set -e
B=/work/main/.venv/bin
export WANDB_MODE=disabled OMP_NUM_THREADS=1
P=/work/p22 D=/work/p22/fresh/lits R=/work/p22/runs
N=T17-raunet-w0.5-8192-default152-ctx2
W="data.preprocess.window_level=organ data.preprocess.window=[-100,100]"
date -u
mkdir -p $D
if [ ! -f $D/done_data ]; then
  cp /work/p22/data/lits/volume-*.nii.gz /work/p22/data/lits/segmentation-*.nii.gz /work/p22/data/lits/phantom_truth.json $D/
  $B/kdseg-phantom dataset=lits root=$D n_cases=200 seed=0 workers=1
  $B/python - $D <<'PY'
import json, sys
root = sys.argv[1]
new = json.load(open(f"{root}/phantom_truth.json"))
old = json.load(open("/work/p22/data/lits/phantom_truth.json"))
assert len(new) == 200 and all(new[f"volume-{i}"] == old[f"volume-{i}"] for i in range(152))
split = json.load(open("/work/p22/data/lits/kdseg_split.json"))
out = {"train": split["train"], "val": split["val"], "test": [f"volume-{i}" for i in range(152, 200)]}
json.dump(out, open(f"{root}/kdseg_split.json", "w"), indent=1)
print({k: len(v) for k, v in out.items()})
PY
  touch $D/done_data
fi
[ "${1:-}" = data ] && exit 0
for tta in none flip; do
  $B/kdseg-eval experiment=phantom_study_v3 data.root=$D data.context=2 $W ckpt=$R/$N/checkpoints/best.ckpt split=test tta=$tta output_dir=$R/$N/eval-fresh48-tta-$tta threads=1 > $P/$N-eval-fresh48-$tta.log 2>&1
done
date -u
