#!/usr/bin/env bash
# Control: v4 students seed 1 at HEAD (resumable loader) and at 066ab6d (before), this machine.
set -euo pipefail
export OMP_NUM_THREADS=1 WANDB_MODE=disabled
PY=/work/main/.venv/bin/python
date -u +"start %T"
PYTHONPATH=/work/ctl_new $PY /work/ctl_new/scripts/phantom_study.py --protocol v4 --dir /work/ctl/new --stages data,students,eval --seeds 1 --jobs 2
date -u +"new %T"
PYTHONPATH=/work/ctl_old $PY /work/ctl_old/scripts/phantom_study.py --protocol v4 --dir /work/ctl/old --data-from /work/ctl/new/data/lits --stages data,students,eval --seeds 1 --jobs 2
date -u +"old %T"
