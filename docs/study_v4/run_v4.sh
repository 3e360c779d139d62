#!/bin/bash
# Study v4's execution (2026-12-04, written at 15:00 UTC while P14's teacher was training, before
# its evaluation). It applies P14's rule exactly as p14_run.sh wrote it (22:44 UTC, 2026-12-01)
# and, only if the rule passes, runs v4 as designed there (scripts/phantom_study.py --protocol v4):
#   rule: T14's TEST per-case tumor Dice (non-empty) >= 0.5 and >= S13's + 0.15.
# Order (no protocol change, only the order in which finished runs come in, so that a session
# that ends mid-study leaves complete paired seeds): the shared teacher is P14's T14, copied in
# after the config check (--teacher-from); options + select (seed 1, validation split); main for
# seeds 1-3; test evaluation and an interim report; then main for seeds 4-5, evaluation, report;
# then the ablations and MobileNetV2 stages (3 seeds), evaluation, report, step cost.
# Code: /work/v4tree (commit ec347f9), via PYTHONPATH, for every student and distillation run.
set -u
B=/work/main/.venv/bin
export WANDB_MODE=disabled PYTHONPATH=/work/v4tree OMP_NUM_THREADS=1
cd /work/v4tree
S=/work/study-v4 T=/work/pilot13/runs/T14-raunet-w0.5-8192 A=/work/pilot13/runs/S13-enet-w0.25
while [ ! -f $T/eval-test/summary.json ]; do sleep 30; done
while pgrep -f "phantom_study.py --protocol v4 --dir $S --stages data,students" > /dev/null; do sleep 30; done
date -u
verdict=$($B/python - $T $A <<'PY'
import json, sys
t, s = (json.load(open(f"{d}/eval-test/summary.json"))["summary"]["tumor"]["dice_per_case_nonempty"] for d in sys.argv[1:3])
ok = t >= 0.5 and t >= s + 0.15
print(f"{'PASS' if ok else 'FAIL'} teacher {t:.4f} student-alone {s:.4f} gap {t - s:.4f}")
PY
)
echo "P14 rule: $verdict" | tee $S/p14_verdict.txt
case $verdict in PASS*) ;; *) exit 0 ;; esac
st() { $B/python scripts/phantom_study.py --protocol v4 --dir $S --teacher-from $T --jobs 2 "$@"; }
st --stages teachers,students,options,select
st --stages main,eval,report --seeds 1,2,3
st --stages main,eval,report
st --stages ablations,mobilenet,eval,report,step-cost
date -u
