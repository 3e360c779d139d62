#!/bin/bash
# P5's evaluations (the pilot script was stopped before P6; see p7_run.sh)
while kill -0 23611 2>/dev/null; do sleep 10; done
B=/work/main/.venv/bin
export WANDB_MODE=disabled PYTHONPATH=/work/p5tree
cd /work/p5tree
D=/work/study-v3/data/lits R=/work/pilot5/runs
W="data.preprocess.window=[-100,300] data.preprocess.in_plane_size=[176,176]"
for r in T5-raunet-w0.5 S5-enet-w0.25; do
  for split in val test; do
    $B/kdseg-eval experiment=phantom_study_v3 data.root=$D ckpt=$R/$r/checkpoints/best.ckpt split=$split output_dir=$R/$r/eval-$split threads=1 $W > /work/pilot5/eval-$r-$split.log 2>&1
  done
done
date
