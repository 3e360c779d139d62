#!/bin/bash
# Issue 15 pilot P29 (2026-12-06, session 24; written from 07:58 UTC by `date`: 07:58:05, and
# committed before it runs). P17's recipe (the generator's DEFAULT phantoms, cases 0-151 with
# P17's split: 140 training, 4 validation, 8 test; organ-ROI stage 2, HU window [-100, 100]
# around the organ level; RA-UNet w0.5, Adam 1e-3, 8,192 steps, seed 1, data.context=2) with
# ONE lever changed: the stage-2 grid at 1.0 mm per pixel (data.preprocess.spacing_mm=[1.0,1.0],
# in_plane_size=[216,216]: the same 216 mm field of view as 1.5 mm x 144) instead of 1.5 mm.
# Why: P26 showed P23 does not learn the small tumors even on its own training cases; P27/P28
# (trained on only those 20 cases) found 7 of 20 at 1.5 mm and 9 of 20 at 1.0 mm (per case
# 0.192 -> 0.348). This is the lever those diagnostics left untried at full scale.
# Unlike P17 (one thread), it runs on two threads (OMP_NUM_THREADS=2), with nothing else
# training beside it, so that it can end inside the session: a pilot, not a bit-exact record.
# Rule (the same as P17-P24's, written before it runs): if P29's TEST per-case tumor Dice on
# P17's fixed 8-case split (reference box, best checkpoint) reaches 0.6, seeds 2 and 3 follow
# in a later session and issue 15's target is scored on them; otherwise the default-phantom
# target stays unmet with this lever. Reported whatever it is, against P17 (test per case 0.276,
# global 0.683) and P23 (0.299), with global tumor Dice, liver Dice, validation, and (for
# information) per-case tumor Dice on P21's 48 fresh cases (152-199) by P21's evaluation.
# A run cut off by a session's end resumes from its last epoch when `train` is run again.
# Code: a worktree of the commit that adds this file, PYTHONPATH=/work/p29tree.
#   docs/study_v4/pilots/p29_run.sh data    # hard links of P23's phantoms, the 1.0 mm cache
#   docs/study_v4/pilots/p29_run.sh train   # in the background
#   docs/study_v4/pilots/p29_run.sh eval    # val, test, fresh48
set -e
B=/work/main/.venv/bin
T=/work/p29tree
export WANDB_MODE=disabled PYTHONPATH=$T OMP_NUM_THREADS=2
cd $T
S=$T/docs/study_v4/pilots
G=/work/p2x/gen            # the generator's output, cases 0-479 (p23_p24_run.sh data)
D=/work/p29/data/lits R=/work/p29/runs N=T29-raunet-w0.5-8192-default152-ctx2-1mm
W="data.preprocess.window_level=organ data.preprocess.window=[-100,100] data.preprocess.spacing_mm=[1.0,1.0] data.preprocess.in_plane_size=[216,216]"
date -u
case "$1" in
data)
  mkdir -p $D
  for i in $(seq 0 151); do ln -f $G/volume-$i.nii.gz $G/segmentation-$i.nii.gz $D/; done
  cp $G/phantom_truth.json $D/
  cp $S/p17_split.json $D/kdseg_split.json
  $B/kdseg-prepare experiment=phantom_study_v3 data.root=$D paths.runs_dir=$R $W workers=2
  ;;
train)
  C="experiment=phantom_study_v3 data.root=$D paths.runs_dir=$R seed=1 $W data.context=2"
  C="$C model=raunet model.width=0.5 optim.lr=1e-3 trainer.max_epochs=128"
  $B/kdseg-train $C hydra.run.dir=$R/$N >> /work/p29/$N.log 2>&1
  ;;
eval)
  for split in val test; do
    $B/kdseg-eval experiment=phantom_study_v3 data.root=$D data.context=2 $W ckpt=$R/$N/checkpoints/best.ckpt split=$split output_dir=$R/$N/eval-$split threads=2 > /work/p29/$N-eval-$split.log 2>&1
  done
  $B/kdseg-eval experiment=phantom_study_v3 data.root=/work/p2x/fresh/lits data.context=2 $W ckpt=$R/$N/checkpoints/best.ckpt split=test output_dir=$R/$N/eval-fresh48 threads=2 > /work/p29/$N-eval-fresh48.log 2>&1
  ;;
esac
date -u
