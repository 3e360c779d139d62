#!/bin/bash
# Issue 15, diagnostic P28 (2026-12-06, session 23; written from 06:46:55 UTC by `date`, and
# committed before it runs): P27 with ONE lever changed, the stage-2 grid: 1.0 mm per pixel
# (data.preprocess.spacing_mm=[1.0,1.0], in_plane_size=[216,216]: the same 216 mm field of
# view) instead of 1.5 mm. Why: P27 (1.5 mm) learned 7 of the 20 small training tumors
# (per-case Dice 0.192), between its two readings; a finer grid makes each small tumor 2.25x as
# many pixels, and this asks whether that helps the network learn them at equal steps.
# Everything else as P27: the same 20 training cases (its split file), P17's recipe, seed 1,
# 2,048 steps, two threads, last checkpoint scored on the same 20 cases by p26_score.py.
# Reading, fixed now: at least 11 found (P27 + 4) with per-case tumor Dice at least 0.3: the
# finer grid helps the network learn small tumors, and a 1.0 mm run of P17's scale is the next
# pilot worth its cost (about 2.8 h on one thread here); at most 7 found: the grid is not what
# keeps them from being learned; in between: no reading. Information only: no rule about issue
# 15's target depends on it.
#   docs/study_v4/pilots/p28_fit_small_1mm.sh   # after p27_fit_small.sh (its data folder)
set -e
B=/work/main/.venv/bin
T=/work/main
export WANDB_MODE=disabled PYTHONPATH=$T OMP_NUM_THREADS=2
cd $T
S=$T/docs/study_v4/pilots
D=/work/p27/data/lits R=/work/p28/runs N=T28-raunet-w0.5-2048-small20-ctx2-1mm
W="data.preprocess.window_level=organ data.preprocess.window=[-100,100] data.preprocess.spacing_mm=[1.0,1.0] data.preprocess.in_plane_size=[216,216]"
date -u
mkdir -p $R
C="experiment=phantom_study_v3 data.root=$D paths.runs_dir=$R seed=1 $W data.context=2"
$B/kdseg-prepare experiment=phantom_study_v3 data.root=$D paths.runs_dir=$R $W workers=2
$B/kdseg-train $C model=raunet model.width=0.5 optim.lr=1e-3 trainer.max_epochs=32 hydra.run.dir=$R/$N > /work/p28/$N.log 2>&1
date -u
$B/kdseg-eval experiment=phantom_study_v3 data.root=$D data.context=2 $W ckpt=$R/$N/checkpoints/last.ckpt split=train output_dir=$R/$N/eval-train threads=2 > /work/p28/$N-eval-train.log 2>&1
date -u
