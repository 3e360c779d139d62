#!/bin/bash
# study v5 after the candidates stage: dev-select, confirm, the fresh-test evaluation, the report
set -e
cd /work/v5btree
export WANDB_MODE=disabled OMP_NUM_THREADS=1 PYTHONPATH=/work/v5btree
date -u
/work/main/.venv/bin/python scripts/phantom_study.py --protocol v5 --dir /work/study-v5 --stages candidates,dev-select,confirm,eval,report
date -u
