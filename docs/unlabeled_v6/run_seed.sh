#!/bin/bash
# unlabeled study v6 (scripts/unlabeled_study.py docstring, written 22:55 UTC): one seed's rows
set -e
cd /work/ul6tree
export WANDB_MODE=disabled OMP_NUM_THREADS=1 PYTHONPATH=/work/ul6tree
date -u
/work/main/.venv/bin/python scripts/unlabeled_study.py --protocol v6 --dir /work/ul6 --seeds $1 --teacher-from /work/study-v4/runs/teachers/raunet-w0.5-s1
date -u
