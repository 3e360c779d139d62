"""Pilot P20 for issue 11 (written 2026-12-05 06:29 UTC by ``date``, before it ran): is there
a student whose capacity, not its schedule, leaves the teacher's 0.15 lead?

Study v7 (``docs/study_v7/protocol.md``) found that ENet w0.25 (25 thousand parameters) gets
within 0.037 of the RA-UNet w0.5 teacher on dev 2 when it trains as long as the teacher did
(8,192 steps), so the issue's 0.15 gap existed only at 1,024 steps. P20 trains the narrowest
ENet kdseg builds sensibly, w0.125 (7 thousand parameters), ALONE (no distillation run), seed
1, at 4,096 and 8,192 steps with v7's patient command, and scores it on dev 2 (42 cases, the
same cases and evaluation as v7's pilots; the teacher's 0.777 there is v7's number).

Rule, fixed now: ENet w0.125 qualifies as the student of a future study v8 if the teacher's
dev-2 tumor Dice minus ENet w0.125 alone at 8,192 steps (the teacher's own length) is at least
0.15. P20 trains no distilled student and fixes nothing else; a v8 would be written, with its
own endpoint cases (204 onward: 180-203 are the unlabeled study v9's), before any of its runs.

    PYTHONPATH=. python docs/study_v7/width_pilot.py --dir /work/study-v5

Resumable: finished runs and evaluations are skipped. Writes ``<dir>/width_pilot.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from budget import study_v7  # noqa: E402
from study_protocols import DEV2_DIR, tumor_dice  # noqa: E402

WIDTH = 0.125
LENGTHS = (4096, 8192)
GAP_RULE = 0.15


def main(argv: list[str]) -> dict:
    study = study_v7(argv)
    runs = {}
    for steps in LENGTHS:
        stage = study.patient_stage(steps)
        study.train_sweep(stage, "enet", WIDTH, [1], [study.epochs(steps)])
        runs[steps] = study.runs / stage / f"enet-w{WIDTH}-s1"
    split = [f"data.split_file={study.dev2_split_file}", "split=test"]
    study.evaluate_each([study.teacher_run, *runs.values()], DEV2_DIR, *split)
    teacher = tumor_dice(study.teacher_run / DEV2_DIR)
    alone = {steps: tumor_dice(run / DEV2_DIR) for steps, run in runs.items()}
    gap = teacher - alone[max(LENGTHS)]
    record = {
        "width": WIDTH,
        "teacher_dev2": teacher,
        "alone_dev2": alone,
        "gap_at_8192": gap,
        "qualifies": gap >= GAP_RULE,
    }
    (study.dir / "width_pilot.json").write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))
    return record


if __name__ == "__main__":
    main(sys.argv[1:])
