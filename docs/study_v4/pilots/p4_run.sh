#!/bin/bash
# v4 pilot P4 (2026-12-01, 13:45 UTC): P3 (tumors 10-40 mm, teacher Adam 1e-3) with a
# 176 x 176 grid at 1.5 mm (264 mm: every liver box + margins of the split fits; v3's 216 mm
# cut test case volume-10, whose 6,149-voxel tumor both P3 models missed).
set -e
P=/work/pilot4
B=/work/main/.venv/bin
export WANDB_MODE=disabled
cd /work/main
G="data.preprocess.in_plane_size=[176,176]"
$B/kdseg-prepare experiment=phantom_study_v3 data.root=$P/data/lits paths.runs_dir=$P/runs workers=2 $G
C="experiment=phantom_study_v3 data.root=$P/data/lits paths.runs_dir=$P/runs seed=1 $G"
OMP_NUM_THREADS=1 $B/kdseg-train $C model=raunet model.width=0.5 optim.lr=1e-3 hydra.run.dir=$P/runs/T4-raunet-w0.5-lr1e-3-g176 > $P/T4.log 2>&1 &
OMP_NUM_THREADS=1 $B/kdseg-train $C model=enet model.width=0.25 hydra.run.dir=$P/runs/S4-enet-w0.25-g176 > $P/S4.log 2>&1 &
wait
for r in T4-raunet-w0.5-lr1e-3-g176 S4-enet-w0.25-g176; do
  for split in val test; do
    $B/kdseg-eval experiment=phantom_study_v3 data.root=$P/data/lits ckpt=$P/runs/$r/checkpoints/best.ckpt split=$split output_dir=$P/runs/$r/eval-$split threads=2 > $P/eval-$r-$split.log 2>&1
  done
done
date
