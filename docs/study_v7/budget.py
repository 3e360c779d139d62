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
from study_protocols import DEV2_DIR, tumor_dice  # noqa: E402

from kdseg.eval.paired import paired_difference  # noqa: E402

SEEDS = [1, 2, 3]
ALONE_STEPS = (4096, 2048, 2560, 8192)  # 8192: the addendum of 03:58 UTC
METHOD = "emkd_balanced_region"


def study_v7(argv: list[str]) -> ps.Study:
    """The v7 study of ``--dir``, with the study script's environment (one thread a run)."""
    os.environ.setdefault("WANDB_MODE", "disabled")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    return ps.Study(ps.parse_args(["--protocol", "v7", *argv]))


def train(study: ps.Study, alone_steps: tuple[int, ...], seeds: list[int], label: str) -> None:
    """ENet alone at each length and METHOD at 4,096 steps, for ``seeds`` (done runs kept)."""
    for steps in alone_steps:
        study.alone_sweep(steps, seeds)
    study.distilled_sweep(4096, seeds, label)


def rows(study: ps.Study, alone_steps: tuple[int, ...], seeds: list[int]) -> dict:
    """Run folder per seed of each row: ENet alone at each length and at 1,024 steps, METHOD
    at 1,024 (v5's runs) and at 4,096 steps."""
    short = study.method_runs([METHOD])
    out = {f"alone {n}": {s: study.alone_run(n, s) for s in seeds} for n in alone_steps}
    out["alone 1024"] = {s: short["alone"][s] for s in seeds}
    out[f"{METHOD} 1024"] = {s: short[METHOD][s] for s in seeds}
    out[f"{METHOD} 4096"] = {s: study.distilled_run(4096, s) for s in seeds}
    return out


def score(study: ps.Study, row_runs: dict, out_dir: str, split_file: Path, label: str) -> tuple:
    """Evaluate the teacher and every run on ``split_file``'s test cases into ``out_dir``;
    ``(teacher tumor Dice, {row: {seed: tumor Dice}})``."""
    runs = [study.teacher_run, *(r for row in row_runs.values() for r in row.values())]
    split = [f"data.split_file={split_file}", "split=test"]
    study.timed(label, len(runs), study.evaluate_each, runs, out_dir, *split)
    teacher = tumor_dice(study.teacher_run / out_dir)
    dice = {k: {s: tumor_dice(r / out_dir) for s, r in v.items()} for k, v in row_runs.items()}
    return teacher, dice


def compare(dice: dict, teacher: float, pairs: dict[str, tuple[str, str]]) -> dict:
    """Per comparison: the paired difference (mean, Student-t 95% interval), the teacher's gap
    over the second row and the share of it closed."""
    out = {}
    for name, (a, b) in pairs.items():
        diff = paired_difference(dice[a], dice[b])
        gap = teacher - sum(dice[b].values()) / len(dice[b])
        out[name] = {
            "paired": [diff.mean, diff.low, diff.high],
            "gap": gap,
            "gap_closed": diff.mean / gap if gap > 0 else None,
        }
    return out


PAIRS = {
    "equal compute: region 1024 - alone 2560": (f"{METHOD} 1024", "alone 2560"),
    "region 4096 - alone 4096": (f"{METHOD} 4096", "alone 4096"),
    "region 1024 - alone 1024": (f"{METHOD} 1024", "alone 1024"),
}


def main() -> None:
    study = study_v7(sys.argv[1:])
    train(study, ALONE_STEPS, SEEDS, "budget-distill")
    row_runs = rows(study, ALONE_STEPS, SEEDS)
    teacher, dice = score(study, row_runs, DEV2_DIR, study.dev2_split_file, "budget-eval")
    out = {"teacher": teacher, "dice": dice, "comparisons": compare(dice, teacher, PAIRS)}
    (study.dir / "budget_v7.json").write_text(json.dumps(out, indent=1) + "\n")
    print(f"teacher {teacher:.3f}")
    for k, v in dice.items():
        per_seed = ", ".join(f"{x:.3f}" for x in v.values())
        print(f"{k}: {sum(v.values()) / len(v):.3f} ({per_seed})")
    print(json.dumps(out["comparisons"], indent=1))


if __name__ == "__main__":
    main()
