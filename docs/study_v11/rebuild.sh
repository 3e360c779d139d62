#!/bin/bash
# Rebuild the data folders that study v11 reads, after they were lost between sessions 17 and 18
# (2026-12-05: /work/ul6, /work/v10 and /work/v11 were gone; checkpoints with them). Same code,
# same generator calls as when they were first made; a case's seed depends on its index only.
#   docs/study_v11/rebuild.sh          # /work/ul6/data/{labeled,few}, /work/v10/data/fresh + split
# Checks: the rebuilt 42/6 train/val split equals v10's committed fresh11_split.json; after the
# eval, score.py checks every case's reference voxel counts against v10's committed per_case.csv.
set -e
B=${KDSEG_BIN:-/work/main/.venv/bin}
R=$(cd "$(dirname "$0")/../.." && pwd)
export WANDB_MODE=disabled OMP_NUM_THREADS=1
# study v6's data stage (the 60 labeled phantoms, 48 scans, data/few), its own code
(cd "$R/scripts" && $B/python - <<'PY'
import argparse
from unlabeled_protocols import StudyV6
args = argparse.Namespace(dir="/work/ul6", seeds=[1], steps=None, protocol="v6",
                          teacher_from=None, v4_runs=None, jobs=1, pilot=False)
StudyV6(args).data()
PY
)
# v10's endpoint folder: cases 0-59 are the labeled ones (the same call), 60-251 drawn here
D=/work/v10/data/fresh
mkdir -p $D
cp -n /work/ul6/data/labeled/*.nii.gz /work/ul6/data/labeled/phantom_truth.json $D/
$B/kdseg-phantom dataset=lits root=$D n_cases=252 seed=0 \
  'params={tumor_mm_range: [15, 50], tumor_depth: 1}' workers=2
cp "$R/docs/study_v10/fresh11_split.json" /work/v10/fresh11_split.json
$B/python - <<'PY'
import json
few = json.load(open("/work/ul6/data/labeled/kdseg_split.json"))
v10 = json.load(open("/work/v10/fresh11_split.json"))
assert few["train"] == v10["train"] and few["val"] == v10["val"], "train/val differ from v10's"
print("rebuilt split: train/val equal v10's committed fresh11_split.json")
PY
