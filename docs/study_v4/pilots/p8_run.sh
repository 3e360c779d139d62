#!/bin/bash
# v4 pilot P8 (2026-12-01, 16:09 UTC): the first lever, the paper's binary tumor task
# with target slices (METHOD.md section 3), inside P3's setting (phantoms with tumors 10-40 mm,
# window [-60, 140], organ ROI at 1.5 mm, 144 x 144; teacher RA-UNet w0.5 at Adam 1e-3, ENet
# w0.25 with the v3 recipe; seed 1, 1,024 steps): data.task=tumor, training and validation on
# slices that hold tumor only (data.sampling=target, data.val_sampling=target), scored with
# kdseg-eval protocol=paper (target slices, foreground probability > 0.4, per-case Dice over a
# case's evaluated slices, mean over non-empty cases) in the reference organ box.
# Runs on the core P7 leaves free: teacher, then student, one thread each.
# Decision rule (written before P8 ran): v4 takes the first of P7, P8 whose teacher has test
# tumor Dice >= 0.5 and >= 0.15 above ENet alone under its own protocol (P7 first: it keeps
# the clinical full-volume protocol).
# Code: commit c2f06d4 (worktree /work/p5tree via PYTHONPATH).
set -e
B=/work/main/.venv/bin
export WANDB_MODE=disabled PYTHONPATH=/work/p5tree OMP_NUM_THREADS=1
cd /work/p5tree
D=/work/pilot4/data/lits R=/work/pilot8/runs
T="data.task=tumor data.sampling=target data.val_sampling=target"
C="experiment=phantom_study_v3 data.root=$D paths.runs_dir=$R seed=1 $T"
date
$B/kdseg-train $C model=raunet model.width=0.5 optim.lr=1e-3 hydra.run.dir=$R/T8-raunet-w0.5-tumor > /work/pilot8/T8.log 2>&1
date
$B/kdseg-train $C model=enet model.width=0.25 hydra.run.dir=$R/S8-enet-w0.25-tumor > /work/pilot8/S8.log 2>&1
date
for r in T8-raunet-w0.5-tumor S8-enet-w0.25-tumor; do
  for split in val test; do
    $B/kdseg-eval experiment=phantom_study_v3 data.root=$D $T ckpt=$R/$r/checkpoints/best.ckpt split=$split protocol=paper output_dir=$R/$r/eval-$split-paper threads=1 > /work/pilot8/eval-$r-$split.log 2>&1
  done
done
date
