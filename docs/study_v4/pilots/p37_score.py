"""P37's reading (docs/study.md, "P37"): each run's test-split Dice against v4's committed
record of the same network and seed, and the control's agreement with those records.

    python docs/study_v4/pilots/p37_score.py /work/p37 /work/p37c
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from scipy import stats

RECORDS = Path(__file__).resolve().parents[1] / "students"
CLASSES = ("organ", "tumor")
HEADLINE = "dice_per_case_nonempty"


def scores(path: Path) -> dict[str, float]:
    summary = json.loads(path.read_text())["summary"]
    return {c: summary[c][HEADLINE] for c in CLASSES}


def paired(diffs: list[float]) -> str:
    n = len(diffs)
    mean = sum(diffs) / n
    if n < 2:
        return f"{mean:+.3f}"
    sd = (sum((d - mean) ** 2 for d in diffs) / (n - 1)) ** 0.5
    half = stats.t.ppf(0.975, n - 1) * sd / n**0.5
    return f"{mean:+.3f} [{mean - half:+.3f}, {mean + half:+.3f}]"


def main(lever: Path, control: Path) -> None:
    lines = ["| run | record liver / tumor | nearest-exact liver / tumor |", "|---|---|---|"]
    diffs: dict[str, dict[str, list[float]]] = {}
    for run in sorted((lever / "runs" / "students").iterdir()):
        mine, record = run / "eval-test-full" / "summary.json", RECORDS / run.name
        if not mine.exists():
            continue
        new, old = scores(mine), scores(record / "eval-test-summary.json")
        net = run.name.split("-")[0]
        for c in CLASSES:
            diffs.setdefault(net, {}).setdefault(c, []).append(new[c] - old[c])
        lines.append(
            f"| {run.name} | {old['organ']:.3f} / {old['tumor']:.3f} "
            f"| {new['organ']:.3f} / {new['tumor']:.3f} |"
        )
    lines += ["", "| network | seeds | Δ liver [95% t] | Δ tumor [95% t] |", "|---|---|---|---|"]
    for net, by_class in diffs.items():
        n = len(by_class["tumor"])
        lines.append(f"| {net} | {n} | {paired(by_class['organ'])} | {paired(by_class['tumor'])} |")
    lines += ["", "Control (default label_resize, this machine) against the records:"]
    for run in sorted((control / "runs" / "students").iterdir()):
        mine = run / "eval-test-full" / "summary.json"
        if mine.exists():
            same = scores(mine) == scores(RECORDS / run.name / "eval-test-summary.json")
            lines.append(f"- {run.name}: {'identical' if same else 'DIFFERENT'} test Dice")
    print("\n".join(lines))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
