#!/bin/bash
# Issue 15, analysis P26 (2026-12-06, session 23; written 06:27:45-06:27:58 UTC, committed in
# 6182c0d before it ran at 06:27:58 by its own `date`; the header first said "06:28", a guess;
# no training): does P23's network find the small tumors of the cases it TRAINED on?
# P23 (P17's recipe + loss.mix=cutmix; the best per-case test score so far, 0.299) finds no
# tumor under 32 voxels in any test or fresh case. Two readings predict different things here:
#  - it cannot represent tumors that small at this grid and output stride (1.5 mm, decoder at
#    stride 2): then its training cases' small tumors score about 0 as well, and the next lever
#    is representational (a finer grid, a full-resolution output), not more data or
#    regularisation;
#  - it fits them but does not generalise: then its training cases' small tumors score well
#    above the test cases' 0, and the next lever is data / augmentation.
# What runs: P23's best checkpoint (unchanged), kdseg-eval on its 140 TRAINING cases (P17's
# split), reference box, full protocol, as P23's own evaluations (`p23_p24_run.sh eval`), two
# threads. Scored by p26_score.py: per-case tumor Dice of the training cases with fewer than 32
# reference tumor voxels and of those with at least 32, against the same groups on P21's 48
# fresh cases (P23's committed evaluation). Information only: no rule about issue 15's target
# depends on it, and no choice of a later pilot is fixed by it in advance beyond the reading above.
#   docs/study_v4/pilots/p26_train_fit.sh      # from /work/main, P23's folders as p23_p24_run.sh left them
set -e
B=/work/main/.venv/bin
T=/work/p23tree
export WANDB_MODE=disabled PYTHONPATH=$T
cd $T
W="data.preprocess.window_level=organ data.preprocess.window=[-100,100]"
R=/work/p23/runs/T23-raunet-w0.5-8192-default152-ctx2-cutmix
date -u
$B/kdseg-eval experiment=phantom_study_v3 data.root=/work/p23/data/lits data.context=2 $W \
  ckpt=$R/checkpoints/best.ckpt split=train output_dir=$R/eval-train threads=2 > /work/p23/eval-train.log 2>&1
date -u
