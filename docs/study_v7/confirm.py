"""Study v7's confirmation on fresh test 3 (docs/study_v7/protocol.md, written 2026-12-05
04:30 UTC): at equal CPU time, does ``emkd_balanced_region`` (1,024 distillation steps) beat
ENet alone trained 2,560 steps? Seeds 1-5, paired; the 24 cases 156-179.

    PYTHONPATH=. python docs/study_v7/confirm.py --dir /work/study-v5 [--jobs 2]

Resumable. Writes ``<dir>/compute_v7.json`` and ``<dir>/compute_v7.md``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from budget import PAIRS, compare, rows, score, study_v7, train  # noqa: E402
from study_protocols import FRESH3_DIR  # noqa: E402
from study_v5 import organ_dice  # noqa: E402

SEEDS = [1, 2, 3, 4, 5]
ALONE_STEPS = (2560, 4096)


def main() -> None:
    study = study_v7(sys.argv[1:])
    train(study, ALONE_STEPS, SEEDS, "confirm-distill")
    row_runs = rows(study, ALONE_STEPS, SEEDS)
    teacher, dice = score(study, row_runs, FRESH3_DIR, study.fresh3_split_file, "confirm-eval")
    comparisons = compare(dice, teacher, PAIRS)
    primary = comparisons["equal compute: region 1024 - alone 2560"]
    liver = {k: organ_dice(list(v.values()), FRESH3_DIR) for k, v in row_runs.items()}
    n_cases = len(json.loads(study.fresh3_split_file.read_text())["test"])
    out = {
        "n_cases": n_cases,
        "teacher": teacher,
        "teacher_liver": organ_dice([study.teacher_run], FRESH3_DIR),
        "dice": dice,
        "liver": liver,
        "comparisons": comparisons,
        "primary_holds": primary["paired"][1] > 0,
    }
    (study.dir / "compute_v7.json").write_text(json.dumps(out, indent=1) + "\n")
    lines = [
        f"Fresh test 3 ({n_cases} cases, 156-179), per-case tumor Dice over cases with tumor, "
        f"seeds {', '.join(map(str, SEEDS))}.",
        "",
        "| row | tumor Dice | liver Dice | tumor Dice per seed |",
        "|---|---|---|---|",
        f"| teacher | {teacher:.3f} | {out['teacher_liver']:.3f} | |",
    ]
    for name, values in dice.items():
        per_seed = ", ".join(f"{x:.3f}" for x in values.values())
        mean = sum(values.values()) / len(values)
        lines.append(f"| {name} | {mean:.3f} | {liver[name]:.3f} | {per_seed} |")
    lines += ["", "| comparison (paired by seed) | difference [95% t] | gap | gap closed |"]
    lines.append("|---|---|---|---|")
    for name, c in comparisons.items():
        d, low, high = c["paired"]
        share = "-" if c["gap_closed"] is None else f"{c['gap_closed']:.0%}"
        lines.append(f"| {name} | {d:+.3f} [{low:+.3f}, {high:+.3f}] | {c['gap']:.3f} | {share} |")
    holds = out["primary_holds"]
    lines += ["", f"Primary endpoint (equal compute, interval above zero) holds: {holds}"]
    (study.dir / "compute_v7.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
