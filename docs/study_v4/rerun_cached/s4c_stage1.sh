#!/bin/bash
# Fresh v4 study, stages 1: data, teacher beside students alone (code b74d7c9)
export WANDB_MODE=disabled PYTHONPATH=/work/s4tree OMP_NUM_THREADS=1
cd /work/s4tree
date -u
/work/main/.venv/bin/python scripts/phantom_study.py --protocol v4 --dir /work/s4c --jobs 2 --stages data,teachers,students
echo "rc=$?"
date -u
