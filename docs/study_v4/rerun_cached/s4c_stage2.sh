#!/bin/bash
# Fresh v4 study, stage 2: every remaining stage of the README's v4 command, with the teacher
# cache (code 3ee4a53). Waits for stage 1 (data, teacher beside the students alone) to end.
export WANDB_MODE=disabled PYTHONPATH=/work/s4tree2 OMP_NUM_THREADS=1
until grep -q "^rc=" /work/s4c_stage1.log; do sleep 15; done
grep -q "^rc=0" /work/s4c_stage1.log || { echo "stage 1 failed"; exit 1; }
cd /work/s4tree2
date -u
/work/main/.venv/bin/python scripts/phantom_study.py --protocol v4 --dir /work/s4c --jobs 2 --teacher-cache /work/s4c/teacher-cache
echo "rc=$?"
date -u
du -sh /work/s4c/teacher-cache
