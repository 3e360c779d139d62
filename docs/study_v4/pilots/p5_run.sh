#!/bin/bash
# v4 pilots P5 and P6 (2026-12-01, session 6), fixed before they ran: the HU window.
# The liver of the LiTS-like phantoms spans 50-180 HU (17 of P3's 40 livers are above 140 HU),
# and the paper's window [-60, 140] (conf/data/lits.yaml) saturates them: 42% of P3's tumor
# voxels keep less than half of their contrast after the window (volume-10: liver 178 HU,
# tumors -20 / -12 HU, both clipped to 140). P5 / P6 widen the window to [-100, 300] (W400 L100),
# with the P4 grid (176 x 176 at 1.5 mm) and P3's teacher learning rate (Adam 1e-3):
#   P5: the generator's default phantoms (study v3's data: tumors 3-40 mm);
#   P6: P3's phantoms (tumors 10-40 mm).
# Code: commit c2f06d4 (worktree /work/p5tree via PYTHONPATH).
set -e
B=/work/main/.venv/bin
export WANDB_MODE=disabled PYTHONPATH=/work/p5tree
cd /work/p5tree
W="data.preprocess.window=[-100,300] data.preprocess.in_plane_size=[176,176]"
pilot() {  # name data_root
  local n=$1 D=$2 R=/work/pilot5/runs
  $B/kdseg-prepare experiment=phantom_study_v3 data.root=$D workers=2 $W
  local C="experiment=phantom_study_v3 data.root=$D paths.runs_dir=$R seed=1 $W"
  OMP_NUM_THREADS=1 $B/kdseg-train $C model=raunet model.width=0.5 optim.lr=1e-3 hydra.run.dir=$R/T$n-raunet-w0.5 > /work/pilot5/T$n.log 2>&1 &
  OMP_NUM_THREADS=1 $B/kdseg-train $C model=enet model.width=0.25 hydra.run.dir=$R/S$n-enet-w0.25 > /work/pilot5/S$n.log 2>&1 &
  wait
  for r in T$n-raunet-w0.5 S$n-enet-w0.25; do
    for split in val test; do
      $B/kdseg-eval experiment=phantom_study_v3 data.root=$D ckpt=$R/$r/checkpoints/best.ckpt split=$split output_dir=$R/$r/eval-$split threads=2 $W > /work/pilot5/eval-$r-$split.log 2>&1
    done
  done
  date
}
date
pilot 5 /work/study-v3/data/lits
pilot 6 /work/pilot4/data/lits
