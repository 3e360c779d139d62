"""Study v7's follow-up (docs/study_v7/protocol.md, written 2026-12-05 03:44 UTC): the
training-budget curve of ENet alone and of emkd_balanced_region on dev 2, through the study
script's own sweeps (same commands as v7's stages) and evaluation.

    PYTHONPATH=. python docs/study_v7/budget.py --dir /work/study-v5 [--jobs 2]

Resumable: finished runs and evaluations are skipped. Writes ``<dir>/budget_v7.json``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import phantom_study as ps  # noqa: E402
from study_protocols import DEV2_DIR, STUDENT, STUDENT_WIDTH, TEACHER, tumor_dice  # noqa: E402

from kdseg.eval.paired import paired_difference  # noqa: E402

SEEDS = [1, 2, 3]
ALONE_STEPS = (4096, 2048, 2560, 8192)  # 8192: the addendum of 03:58 UTC
METHOD = "emkd_balanced_region"


def main() -> None:
    os.environ.setdefault("WANDB_MODE", "disabled")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    args = ps.parse_args(["--protocol", "v7", *sys.argv[1:]])
    study = ps.Study(args)
    for steps in ALONE_STEPS:
        stage = study.patient_stage(steps)
        study.train_sweep(stage, STUDENT, STUDENT_WIDTH, SEEDS, [study.epochs(steps)])
    study.sweep(
        "distill",
        study.patient_stage(4096),
        f"{study.protocol.experiment}_distill",
        {
            "teacher.name": [TEACHER],
            "student": [STUDENT],
            "student.width": [STUDENT_WIDTH],
            "distill": [METHOD],
            "seed": SEEDS,
            "study.teacher_width": [ps.TEACHER_WIDTH],
        },
        [study.distilled_run(4096, s).name for s in SEEDS],
        [*ps.teacher_seed_override(study.protocol.teacher_seed), study.epochs(4096)],
        label="budget-distill",
    )
    short = study.method_runs([METHOD])
    rows = {f"alone {n}": {s: study.alone_run(n, s) for s in SEEDS} for n in ALONE_STEPS}
    rows["alone 1024"] = {s: short["alone"][s] for s in SEEDS}
    rows[f"{METHOD} 1024"] = {s: short[METHOD][s] for s in SEEDS}
    rows[f"{METHOD} 4096"] = {s: study.distilled_run(4096, s) for s in SEEDS}
    runs = [study.teacher_run, *(r for row in rows.values() for r in row.values())]
    split = [f"data.split_file={study.dev2_split_file}", "split=test"]
    study.timed("budget-eval", len(runs), study.evaluate_each, runs, DEV2_DIR, *split)
    teacher = tumor_dice(study.teacher_run / DEV2_DIR)
    dice = {k: {s: tumor_dice(r / DEV2_DIR) for s, r in v.items()} for k, v in rows.items()}
    out: dict = {"teacher": teacher, "dice": dice, "comparisons": {}}
    for name, (a, b) in {
        "equal compute: region 1024 - alone 2560": (f"{METHOD} 1024", "alone 2560"),
        "region 4096 - alone 4096": (f"{METHOD} 4096", "alone 4096"),
        "region 1024 - alone 1024": (f"{METHOD} 1024", "alone 1024"),
    }.items():
        diff = paired_difference(dice[a], dice[b])
        gap = teacher - sum(dice[b].values()) / len(SEEDS)
        out["comparisons"][name] = {
            "paired": [diff.mean, diff.low, diff.high],
            "gap": gap,
            "gap_closed": diff.mean / gap if gap > 0 else None,
        }
    (study.dir / "budget_v7.json").write_text(json.dumps(out, indent=1) + "\n")
    print(f"teacher {teacher:.3f}")
    for k, v in dice.items():
        per_seed = ", ".join(f"{x:.3f}" for x in v.values())
        print(f"{k}: {sum(v.values()) / len(v):.3f} ({per_seed})")
    print(json.dumps(out["comparisons"], indent=1))


if __name__ == "__main__":
    main()
