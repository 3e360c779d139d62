#!/bin/bash
# study v6 (issue 11): the stages after candidates2, once it has finished
while pgrep -f "stages candidates2" > /dev/null; do sleep 20; done
cd /work/s6tree
export PYTHONPATH=/work/s6tree
date -u
/work/main/.venv/bin/python scripts/phantom_study.py --protocol v6 --dir /work/study-v5 --jobs 2 --stages candidates2,dev2-select,confirm2,endpoint2
date -u
