"""Pilots P23 (``loss.mix=cutmix``) and P24 (3x the training cases) against P17, one lever each
(docs/study.md, P23 and P24; ``p23_p24_run.sh``).

    python docs/study_v4/pilots/p23_p24_score.py [--runs23 /work/p23/runs] [--runs24 /work/p24/runs]
    python docs/study_v4/pilots/p23_p24_score.py --pilot "P23 cutmix=/work/p23/runs" \
        --pilot "P29 1.0 mm=/work/p29/runs"     # any pilots of P17's split (P29: p29_run.sh)

Reads each pilot's ``eval-val``, ``eval-test`` and ``eval-fresh48`` (written by
``p23_p24_run.sh eval``) and P17's committed evaluations (seed 1; fresh cases: P21's seed-1
evaluation); checks that every case's reference voxel counts equal P17's (the same cases); prints
Markdown. A pilot not yet evaluated is left out.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
P17 = HERE / "T17-raunet-w0.5-8192-default152-ctx2"
P17_FILES = {
    "val": (P17 / "eval-val-per_case.csv", P17 / "eval-val-summary.json"),
    "test": (P17 / "eval-test-per_case.csv", P17 / "eval-test-summary.json"),
    "fresh48": (
        HERE / "P21-fresh48" / "eval-s1-per_case.csv",
        HERE / "P21-fresh48" / "eval-s1-summary.json",
    ),
}
MEASURES = (
    ("tumor Dice per case (cases with tumor)", "tumor", "dice_per_case_nonempty"),
    ("tumor Dice global", "tumor", "dice_global"),
    ("liver Dice per case", "organ", "dice_mean"),
)


def rows(path: Path) -> dict[tuple[str, str], dict[str, str]]:
    with path.open() as f:
        return {(r["case"], r["class"]): r for r in csv.DictReader(f)}


def summary(path: Path) -> dict:
    return json.loads(path.read_text())["summary"]


def pilot_parts(run: Path) -> dict[str, tuple[Path, Path]]:
    """``{part: (per_case.csv, summary.json)}`` of the parts ``run`` has evaluated."""
    out = {}
    for part in ("val", "test", "fresh48"):
        d = run / f"eval-{part}"
        if (d / "summary.json").exists():
            out[part] = (d / "per_case.csv", d / "summary.json")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs23", type=Path, default=Path("/work/p23/runs"))
    parser.add_argument("--runs24", type=Path, default=Path("/work/p24/runs"))
    parser.add_argument(
        "--pilot",
        action="append",
        default=[],
        metavar="NAME=RUNS",
        help="a pilot's column name and runs folder (repeatable; replaces --runs23/--runs24)",
    )
    args = parser.parse_args(argv)
    if any("=" not in p for p in args.pilot):
        parser.error("--pilot takes NAME=RUNS, e.g. --pilot 'P29 1.0 mm=/work/p29/runs'")
    named = [tuple(p.split("=", 1)) for p in args.pilot] or [
        ("P23 cutmix", args.runs23),
        ("P24 3x cases", args.runs24),
    ]
    pilots = {}
    for name, runs in named:
        runs = Path(runs)
        found = sorted(runs.glob("T*")) if runs.is_dir() else []
        if found and pilot_parts(found[0]):
            pilots[name] = pilot_parts(found[0])
    for part, (p17_cases, p17_summary) in P17_FILES.items():
        have = {n: parts[part] for n, parts in pilots.items() if part in parts}
        if not have:
            continue
        ref = rows(p17_cases)
        cases = {n: rows(files[0]) for n, files in have.items()}
        for n, got in cases.items():
            same = got.keys() == ref.keys() and all(
                got[k]["gt_voxels"] == ref[k]["gt_voxels"] for k in ref
            )
            print(f"\n{part}, {n}: every case's reference voxels equal P17's: {same}")
        names = list(have)
        print(f"\n| **{part}** | P17 seed 1 | " + " | ".join(names) + " |")
        print("|---|---|" + "---|" * len(names))
        sums = {n: summary(files[1]) for n, files in have.items()}
        p17 = summary(p17_summary)
        for label, cls, key in MEASURES:
            vals = " | ".join(f"{sums[n][cls][key]:.3f}" for n in names)
            print(f"| {label} | {p17[cls][key]:.3f} | {vals} |")
        if part == "fresh48":
            tumor = [k for k, r in ref.items() if k[1] == "tumor" and r["gt_empty"] == "False"]
            for label, keep in (("< 32", lambda v: v < 32), (">= 32", lambda v: v >= 32)):
                sub = [k for k in tumor if keep(int(ref[k]["gt_voxels"]))]
                vals = [sum(float(cases[n][k]["dice"]) for k in sub) / len(sub) for n in names]
                base = sum(float(ref[k]["dice"]) for k in sub) / len(sub)
                shown = " | ".join(f"{v:.3f}" for v in vals)
                what = f"tumor per case, {len(sub)} cases with {label} voxels"
                print(f"| {what} | {base:.3f} | {shown} |")
            continue
        print(f"\n| {part} case | tumor voxels | P17 | " + " | ".join(names) + " |")
        print("|---|---|---|" + "---|" * len(names))
        for (case, cls), r in sorted(ref.items()):
            if cls == "tumor" and r["gt_empty"] == "False":
                vals = " | ".join(f"{float(cases[n][case, cls]['dice']):.3f}" for n in names)
                print(f"| {case} | {r['gt_voxels']} | {float(r['dice']):.3f} | {vals} |")


if __name__ == "__main__":
    main()
