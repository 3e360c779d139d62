"""Pilot P22's table (docs/study.md, P22): P17 seed 1 retrained, scored without and with
test-time mirroring, and the check that the retrained model is P17's.

    python docs/study_v4/pilots/p22_score.py [--runs /work/p22/runs]

Reads ``<run>/eval-<split>-tta-<mode>/`` (written by ``p22_run.sh eval``) and P17's committed
evaluations beside this file; prints Markdown. Equal per-case voxel counts without mirroring
mean the retrained network predicts exactly what P17's did.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUN = "T17-raunet-w0.5-8192-default152-ctx2"
COUNTS = ("pred_voxels", "gt_voxels", "intersection")


def rows(path: Path) -> dict[tuple[str, str], dict[str, str]]:
    with path.open() as f:
        return {(r["case"], r["class"]): r for r in csv.DictReader(f)}


def summary_table(run: Path, part: str) -> None:
    """The per-case and global tumor Dice and the liver Dice of ``part``, both settings."""
    sums = {
        mode: json.loads((run / f"eval-{part}-tta-{mode}" / "summary.json").read_text())
        for mode in ("none", "flip")
    }
    assert sums["flip"]["tta"] == "flip" and sums["none"]["tta"] == "none"
    print("\n| measure | no mirroring | tta=flip |")
    print("|---|---|---|")
    for name, cls, key in (
        ("tumor Dice per case (cases with tumor)", "tumor", "dice_per_case_nonempty"),
        ("tumor Dice global", "tumor", "dice_global"),
        ("liver Dice per case", "organ", "dice_mean"),
    ):
        a, b = (sums[m]["summary"][cls][key] for m in ("none", "flip"))
        print(f"| {name} | {a:.3f} | {b:.3f} |")


def fresh48(run: Path) -> None:
    """Part 2 (p22_fresh48.sh, information only): P21's 48 fresh cases, both settings."""
    plain = rows(run / "eval-fresh48-tta-none" / "per_case.csv")
    flip = rows(run / "eval-fresh48-tta-flip" / "per_case.csv")
    p21 = rows(HERE / "P21-fresh48" / "eval-s1-per_case.csv")
    same = plain.keys() == p21.keys() and all(plain[k][c] == p21[k][c] for k in p21 for c in COUNTS)
    print(f"\nfresh48: the plain evaluation equals P21's committed seed-1 one: {same}")
    tumor = [k for k, r in plain.items() if k[1] == "tumor" and r["gt_empty"] == "False"]
    changes = [float(flip[k]["dice"]) - float(plain[k]["dice"]) for k in tumor]
    up, down = sum(c > 0.001 for c in changes), sum(c < -0.001 for c in changes)
    print(f"{len(tumor)} cases with tumor: tta=flip raised {up}, lowered {down}, "
          f"largest changes {min(changes):+.3f} / {max(changes):+.3f}")  # fmt: skip
    for name, subset in (
        ("cases with >= 32 tumor voxels", [k for k in tumor if int(plain[k]["gt_voxels"]) >= 32]),
        ("cases with < 32 tumor voxels", [k for k in tumor if int(plain[k]["gt_voxels"]) < 32]),
    ):
        a = sum(float(plain[k]["dice"]) for k in subset) / len(subset)
        b = sum(float(flip[k]["dice"]) for k in subset) / len(subset)
        print(f"tumor Dice per case, {name} ({len(subset)}): {a:.3f} -> {b:.3f}")
    summary_table(run, "fresh48")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=Path("/work/p22/runs"))
    args = parser.parse_args(argv)
    run = args.runs / RUN
    for split in ("val", "test"):
        plain = rows(run / f"eval-{split}-tta-none" / "per_case.csv")
        flip = rows(run / f"eval-{split}-tta-flip" / "per_case.csv")
        p17 = rows(HERE / RUN / f"eval-{split}-per_case.csv")
        same = plain.keys() == p17.keys() and all(
            plain[k][c] == p17[k][c] for k in p17 for c in COUNTS
        )
        print(f"\n{split}: retrained model's plain evaluation equals P17's committed one: {same}")
        print("\n| case | tumor voxels | tumor Dice, no mirroring | with tta=flip | change |")
        print("|---|---|---|---|---|")
        for (case, cls), r in sorted(plain.items()):
            if cls == "tumor" and r["gt_empty"] == "False":
                a, b = float(r["dice"]), float(flip[case, cls]["dice"])
                print(f"| {case} | {r['gt_voxels']} | {a:.3f} | {b:.3f} | {b - a:+.3f} |")
        summary_table(run, split)
    if (run / "eval-fresh48-tta-flip" / "summary.json").exists():
        fresh48(run)


if __name__ == "__main__":
    main()
