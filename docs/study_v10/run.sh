#!/bin/bash
# Study v10 (issue 11), the commands of docs/study_v10/protocol.md (written 11:24 UTC
# 2026-12-05, before any v10 run). Usage (PYTHONPATH names the code under test):
#   docs/study_v10/run.sh data            # the 24 endpoint phantoms (228-251) + split file
#   docs/study_v10/run.sh train S         # emkd_balanced_region_cutmix, seed S, 8,192 steps
#   docs/study_v10/run.sh eval            # every row and the teacher on the endpoint cases
set -e
B=${KDSEG_BIN:-/work/main/.venv/bin}
export WANDB_MODE=disabled OMP_NUM_THREADS=1
V=${V10_DIR:-/work/v10} UL=/work/ul6 V8=/work/v8few D=${V10_DIR:-/work/v10}/data/fresh
W="data.preprocess.window_level=organ data.preprocess.window=[-100,100]"
TEACHER=$UL/runs/teacher/s1/checkpoints/best.ckpt
mkdir -p $V/runs
case "$1" in
data)
  [ -f $V/fresh11_split.json ] && exit 0
  mkdir -p $D
  cp $V8/data/fresh/*.nii.gz $V8/data/fresh/phantom_truth.json $D/
  $B/kdseg-phantom dataset=lits root=$D n_cases=252 seed=0 \
    'params={tumor_mm_range: [15, 50], tumor_depth: 1}' workers=1
  $B/python - $D $V8 $V <<'PY'
import json, sys
d, v8, v = sys.argv[1:]
new = json.load(open(f"{d}/phantom_truth.json"))
old = json.load(open(f"{v8}/data/fresh/phantom_truth.json"))
assert len(new) == 252 and len(old) == 228
assert all(new[f"volume-{i}"] == old[f"volume-{i}"] for i in range(228)), "cases 0-227 differ"
split = json.load(open(f"{v8}/fresh10_split.json"))
split["test"] = [f"volume-{i}" for i in range(228, 252)]
json.dump(split, open(f"{v}/fresh11_split.json.tmp", "w"), indent=1)
PY
  mv $V/fresh11_split.json.tmp $V/fresh11_split.json
  ;;
train)
  S=$2 R=$V/runs/cutmix-8192/s$2
  [ -f $R/summary.json ] && exit 0
  echo "$(date -u +%FT%T) train s$S" >> $V/commands.log
  $B/kdseg-distill experiment=phantom_study_v3_distill $W logger=csv data.root=$UL/data/few \
    teacher.ckpt=$TEACHER teacher.name=raunet student=enet student.width=0.25 \
    distill=emkd_balanced_region_cutmix seed=$S trainer.max_epochs=128 hydra.run.dir=$R \
    > $V/train-s$S.log 2>&1
  ;;
eval)
  for R in $UL/runs/teacher/s1 $UL/runs/alone-8192/s{1,2,3,4,5} $V8/runs/region-8192/s{1,2,3,4,5} \
      $V/runs/cutmix-8192/s{1,2,3,4,5}; do
    OUT=$V/eval/$(basename $(dirname $R))-$(basename $R)
    [ -f $OUT/summary.json ] && continue
    [ -f $R/summary.json ] || { echo "not trained yet: $R"; continue; }
    echo "$(date -u +%FT%T) eval $R" >> $V/commands.log
    $B/kdseg-eval experiment=phantom_study_v3 $W data.root=$D data.split_file=$V/fresh11_split.json \
      split=test ckpt=$R/checkpoints/best.ckpt output_dir=$OUT threads=1 > /dev/null
  done
  ;;
*) echo "usage: run.sh data | train S | eval" >&2; exit 2 ;;
esac
