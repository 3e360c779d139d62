#!/bin/bash
# Unlabeled study v9, seeds 4 and 5: INFORMATION ONLY (written 2026-12-05 07:26 UTC by date,
# after v9's endpoint result, 3 seeds, was read: pseudo_kd at 8,192 steps closed 87% of the
# organ gap and 86% of the tumor gap). v9 fixed seeds 1-3 at 8,192 steps for time; these two
# seeds, the same commands, show how much the 3-seed result depends on its seeds. They do not
# change v9's endpoint, which stays the 3-seed table.
#   bash docs/unlabeled_v9/extra_seeds.sh /work/ul6     (PYTHON=<a venv python> elsewhere)
set -eu
DIR=${1:-/work/ul6}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
PYTHONPATH=$ROOT OMP_NUM_THREADS=1 WANDB_MODE=disabled "${PYTHON:-$ROOT/.venv/bin/python}" - "$DIR" <<'PY'
import json
import sys

sys.path.insert(0, "scripts")
import unlabeled_study as u
from unlabeled_base import _dice

args = u.parse_args(["--protocol", "v9", "--dir", sys.argv[1], "--jobs", "2"])
study = u.PROTOCOLS["v9"](args)
length, seeds = 8192, [4, 5]
study.parallel(
    [lambda s=s: study.pseudo_kd_at(length, s) for s in seeds]
    + [lambda s=s: study.alone_at(length, s) for s in seeds]
)
out = {}
for row in ("alone", "pseudo_kd"):
    for s in seeds:
        run = study.runs / study.row_dir(row, length) / f"s{s}"
        summary = study.score(run, study.fresh_split, "eval-fresh9")
        out[f"{row} s{s}"] = [_dice(summary, c, study.METRIC) for c in ("organ", "tumor")]
(study.dir / "extra-seeds-v9.json").write_text(json.dumps(out, indent=1) + "\n")
print(json.dumps(out, indent=1))
PY
