"""P26's score (docs/study_v4/pilots/p26_train_fit.sh): P23's per-case tumor Dice on its
training cases and on P21's 48 fresh cases, split at 32 reference tumor voxels.

    python docs/study_v4/pilots/p26_score.py <run folder> \
        > docs/study_v4/pilots/P26-trainfit/score.md
"""

from __future__ import annotations

import csv
import statistics
import sys
from pathlib import Path

SMALL = 32


def groups(per_case: Path) -> dict[str, list[float]]:
    """Tumor Dice of each case with tumor, by its reference tumor voxels (< 32 or not)."""
    out: dict[str, list[float]] = {"small": [], "large": []}
    with open(per_case) as f:
        for row in csv.DictReader(f):
            if row["class"] != "tumor" or int(row["gt_voxels"]) == 0:
                continue
            out["small" if int(row["gt_voxels"]) < SMALL else "large"].append(float(row["dice"]))
    return out


def main() -> None:
    run = Path(sys.argv[1])
    print(
        f"| {run.name}, reference box | cases < 32 tumor voxels | per-case tumor Dice "
        "| cases >= 32 | per-case tumor Dice | found (Dice > 0) < 32 / >= 32 |"
    )
    print("|---|---|---|---|---|---|")
    for name, folder in (
        ("its training cases", "eval-train"),
        ("48 fresh cases", "eval-fresh48"),
        ("test (8)", "eval-test"),
    ):
        if not (run / folder / "per_case.csv").is_file():  # P27: its training cases only
            continue
        g = groups(run / folder / "per_case.csv")
        mean = {k: statistics.fmean(v) if v else float("nan") for k, v in g.items()}
        found = {k: sum(d > 0 for d in v) for k, v in g.items()}
        print(
            f"| {name} | {len(g['small'])} | {mean['small']:.3f} | {len(g['large'])} | "
            f"{mean['large']:.3f} | {found['small']} / {found['large']} |"
        )


if __name__ == "__main__":
    main()
