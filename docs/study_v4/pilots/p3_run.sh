#!/bin/bash
# v4 pilot P3 (2026-12-01): default phantoms but tumors 10-40 mm; v3 preprocessing;
# teacher RA-UNet w0.5 with Adam 1e-3 (v3: 1e-2); student ENet w0.25 with the v3 recipe.
set -e
P=/work/pilot4
B=/work/main/.venv/bin
export WANDB_MODE=disabled
cd /work/main
date
$B/kdseg-phantom dataset=lits root=$P/data/lits n_cases=40 seed=0 workers=2 'params={tumor_mm_range: [10, 40]}'
$B/kdseg-prepare experiment=phantom_study_v3 data.root=$P/data/lits paths.runs_dir=$P/runs workers=2
date
C="experiment=phantom_study_v3 data.root=$P/data/lits paths.runs_dir=$P/runs seed=1"
OMP_NUM_THREADS=1 $B/kdseg-train $C model=raunet model.width=0.5 optim.lr=1e-3 hydra.run.dir=$P/runs/T3-raunet-w0.5-lr1e-3 > $P/T3.log 2>&1 &
OMP_NUM_THREADS=1 $B/kdseg-train $C model=enet model.width=0.25 hydra.run.dir=$P/runs/S3-enet-w0.25 > $P/S3.log 2>&1 &
wait
date
for r in T3-raunet-w0.5-lr1e-3 S3-enet-w0.25; do
  for split in val test; do
    $B/kdseg-eval experiment=phantom_study_v3 data.root=$P/data/lits ckpt=$P/runs/$r/checkpoints/best.ckpt split=$split output_dir=$P/runs/$r/eval-$split threads=2 > $P/eval-$r-$split.log 2>&1
  done
done
date
