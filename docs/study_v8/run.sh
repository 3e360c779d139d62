#!/bin/bash
# Study v8 (issue 11), the commands of docs/study_v8/protocol.md (written 08:42 UTC
# 2026-12-05, before any v8 run). Usage:
#   docs/study_v8/run.sh data            # the 24 endpoint phantoms + split file
#   docs/study_v8/run.sh train S         # emkd_balanced_region, seed S, 8,192 steps
#   docs/study_v8/run.sh eval            # every row and the teacher on the endpoint cases
set -e
B=${KDSEG_BIN:-/work/main/.venv/bin}
export WANDB_MODE=disabled OMP_NUM_THREADS=1
V=/work/v8few UL=/work/ul6 D=/work/v8few/data/fresh
W="data.preprocess.window_level=organ data.preprocess.window=[-100,100]"
TEACHER=$UL/runs/teacher/s1/checkpoints/best.ckpt
mkdir -p $V/runs
case "$1" in
data)
  [ -f $V/fresh10_split.json ] && exit 0
  mkdir -p $D
  cp $UL/data/fresh/*.nii.gz $UL/data/fresh/phantom_truth.json $D/
  $B/kdseg-phantom dataset=lits root=$D n_cases=228 seed=0 \
    'params={tumor_mm_range: [15, 50], tumor_depth: 1}' workers=1
  $B/python - $D $UL $V <<'PY'
import json, sys
d, ul, v = sys.argv[1:]
new = json.load(open(f"{d}/phantom_truth.json"))
old = json.load(open(f"{ul}/data/fresh/phantom_truth.json"))
assert len(new) == 228 and len(old) == 204
assert all(new[f"volume-{i}"] == old[f"volume-{i}"] for i in range(204)), "cases 0-203 differ"
split = json.load(open(f"{ul}/fresh9_split.json"))
split["test"] = [f"volume-{i}" for i in range(204, 228)]
json.dump(split, open(f"{v}/fresh10_split.json.tmp", "w"), indent=1)
PY
  mv $V/fresh10_split.json.tmp $V/fresh10_split.json
  ;;
train)
  S=$2 R=$V/runs/region-8192/s$2
  [ -f $R/summary.json ] && exit 0
  echo "$(date -u +%FT%T) train s$S" >> $V/commands.log
  $B/kdseg-distill experiment=phantom_study_v3_distill $W logger=csv data.root=$UL/data/few \
    teacher.ckpt=$TEACHER teacher.name=raunet student=enet student.width=0.25 \
    distill=emkd_balanced_region seed=$S trainer.max_epochs=128 hydra.run.dir=$R > $V/train-s$S.log 2>&1
  ;;
eval)
  for R in $UL/runs/teacher/s1 $UL/runs/alone-8192/s{1,2,3,4,5} $V/runs/region-8192/s{1,2,3,4,5}; do
    OUT=$V/eval/$(basename $(dirname $R))-$(basename $R)
    [ -f $OUT/summary.json ] && continue
    [ -f $R/summary.json ] || { echo "not trained yet: $R"; continue; }
    echo "$(date -u +%FT%T) eval $R" >> $V/commands.log
    $B/kdseg-eval experiment=phantom_study_v3 $W data.root=$D data.split_file=$V/fresh10_split.json \
      split=test ckpt=$R/checkpoints/best.ckpt output_dir=$OUT threads=1 > /dev/null
  done
  ;;
*) echo "usage: run.sh data | train S | eval" >&2; exit 2 ;;
esac
