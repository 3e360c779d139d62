#!/bin/bash
# study v5, stage candidates (docs/study_v5/protocol.md): the sweep scripts/phantom_study.py's
# distill_sweep issues, started by hand at 22:5x UTC while the script's v5 stages are written.
set -e
cd /work/v5tree
export WANDB_MODE=disabled OMP_NUM_THREADS=1 PYTHONPATH=/work/v5tree
date -u
/work/main/.venv/bin/kdseg-distill -m experiment=phantom_study_v3_distill data.root=/work/study-v5/data/lits paths.runs_dir=/work/study-v5/runs data.preprocess.window_level=organ 'data.preprocess.window=[-100,100]' teacher.name=raunet student=enet student.width=0.25 distill=emkd_balanced_pmd1,emkd_balanced_t1,emkd_balanced_region seed=1,2,3 study.teacher_width=0.5 study.teacher_seed=1 hydra.sweep.dir=/work/study-v5/runs/candidates hydra/launcher=joblib hydra.launcher.n_jobs=2
date -u
