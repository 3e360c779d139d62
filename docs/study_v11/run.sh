#!/bin/bash
# Study v11 (issue 11, v10's control), the commands of docs/study_v11/protocol.md (written
# 13:13 UTC 2026-12-05, before any v11 run). Usage (PYTHONPATH names the code under test):
#   docs/study_v11/run.sh train S   # ENet w0.25 alone + loss.mix=cutmix, seed S, 8,192 steps
#   docs/study_v11/run.sh eval      # the control's seeds on v10's 24 endpoint cases
set -e
B=${KDSEG_BIN:-/work/main/.venv/bin}
export WANDB_MODE=disabled OMP_NUM_THREADS=1
V=${V11_DIR:-/work/v11} V10=/work/v10 UL=/work/ul6
W="data.preprocess.window_level=organ data.preprocess.window=[-100,100]"
mkdir -p $V/runs
case "$1" in
train)
  R=$V/runs/labelmix-8192/s$2
  [ -f $R/summary.json ] && exit 0
  echo "$(date -u +%FT%T) train s$2" >> $V/commands.log
  $B/kdseg-train experiment=phantom_study_v3 $W logger=csv data.root=$UL/data/few model=enet \
    model.width=0.25 loss.mix=cutmix seed=$2 trainer.max_epochs=128 hydra.run.dir=$R \
    > $V/train-s$2.log 2>&1
  ;;
eval)
  for R in $V/runs/labelmix-8192/s{1,2,3,4,5}; do
    OUT=$V/eval/labelmix-8192-$(basename $R)
    [ -f $OUT/summary.json ] && continue
    [ -f $R/summary.json ] || { echo "not trained yet: $R"; continue; }
    echo "$(date -u +%FT%T) eval $R" >> $V/commands.log
    $B/kdseg-eval experiment=phantom_study_v3 $W data.root=$V10/data/fresh \
      data.split_file=$V10/fresh11_split.json split=test ckpt=$R/checkpoints/best.ckpt \
      output_dir=$OUT threads=1 > /dev/null
  done
  ;;
*) echo "usage: run.sh train S | eval" >&2; exit 2 ;;
esac
