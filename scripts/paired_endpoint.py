"""Issue 11's endpoint for a study of paired seeds on one test folder (studies v8 and v10).

Each study names its rows (ENet alone first, then the distilled rows), the row its target is
scored on, the teacher's run and the endpoint cases, in an :class:`EndpointSpec`; this module
reads what ``kdseg-eval`` wrote for each (row, seed), checks that every evaluation scored the
expected run's ``best.ckpt`` on exactly the endpoint cases of the study's data folder with
finite scores, and computes per row:
per-seed Dice, the paired difference to ENet alone with a Student-t 95% interval and the share of
the alone -> teacher gap closed; then issue 11's precondition (teacher tumor >= 0.5, lead >= 0.15
over ENet alone, seeds 1-5) and target (target row >= 50% of the tumor gap, interval above zero,
paired starting weights). Optional contrasts (row minus row, paired) are information only.

The endpoint is refused before all five seeds are scored, unless ``--interim`` (which labels
it). ``endpoint.json`` / ``endpoint.md`` (or ``interim.*``) are written into the study folder.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from study_v5 import endpoint_row
from unlabeled_base import init_hash

from kdseg.eval.paired import paired_difference

SEEDS = (1, 2, 3, 4, 5)
#: issue 11's "real gap" on the test cases: the precondition of scoring the target
TEACHER_MIN, GAP_MIN = 0.5, 0.15
CLASSES = ("organ", "tumor")


@dataclass(frozen=True)
class Row:
    """A table row: its evaluation folders are ``eval/<prefix>-s<seed>``, of ``runs/s<seed>``."""

    prefix: str
    runs: Path
    label: str


@dataclass(frozen=True)
class EndpointSpec:
    """What one study scores: ``rows["alone"]`` is the baseline, ``target`` the scored row."""

    name: str
    first_case: int  # the endpoint cases are volume-<first_case> .. + n_cases - 1
    n_cases: int
    data_root: Path  # where they were drawn
    teacher_run: Path
    teacher_label: str
    rows: dict[str, Row]
    target: str
    contrasts: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    @property
    def cases(self) -> str:
        return f"{self.first_case}-{self.first_case + self.n_cases - 1}"

    @property
    def case_ids(self) -> set[str]:
        return {f"volume-{i}" for i in range(self.first_case, self.first_case + self.n_cases)}


def dice(spec: EndpointSpec, eval_dir: Path, run: Path) -> dict[str, float]:
    """Per-case organ and tumor Dice (tumor over the cases with tumor) of one evaluation,
    after checking that it scored ``run``'s best checkpoint on the spec's endpoint cases."""
    record = json.loads((eval_dir / "summary.json").read_text())
    checkpoint = Path(record["checkpoint"]).resolve()
    if checkpoint != (run / "checkpoints" / "best.ckpt").resolve():
        raise SystemExit(f"{spec.name}: {eval_dir} scored {checkpoint}, not {run}'s best.ckpt")
    if record["split"] != "test" or record["n_cases"] != spec.n_cases:
        raise SystemExit(
            f"{spec.name}: {eval_dir} scored {record['n_cases']} {record['split']} cases"
        )
    if Path(record["data_root"]).resolve() != spec.data_root.resolve():
        raise SystemExit(
            f"{spec.name}: {eval_dir} scored {record['data_root']}, not {spec.data_root}"
        )
    with (eval_dir / "per_case.csv").open(newline="") as f:
        cases = {row["case"] for row in csv.DictReader(f)}
    if cases != spec.case_ids:
        raise SystemExit(f"{spec.name}: {eval_dir} scored other cases than {spec.cases}")
    summary = record["summary"]
    scores = {name: float(summary[name]["dice_per_case_nonempty"]) for name in CLASSES}
    if not all(math.isfinite(v) for v in scores.values()):
        raise SystemExit(f"{spec.name}: {eval_dir} has a non-finite Dice: {scores}")
    return scores


def table(spec: EndpointSpec, study: Path, seeds: tuple[int, ...]) -> dict:
    """Every row's per-seed Dice, the teacher's, the paired rows and the precondition (on the
    mean of ENet alone over seeds 1-5 whenever those are scored, as the protocols say)."""
    teacher = dice(spec, study / "eval" / "teacher-s1", spec.teacher_run)

    def scored(row: str, seed: int) -> dict[str, float]:
        r = spec.rows[row]
        return dice(spec, study / "eval" / f"{r.prefix}-s{seed}", r.runs / f"s{seed}")

    scores = {row: {s: scored(row, s) for s in seeds} for row in spec.rows}
    distilled = [row for row in spec.rows if row != "alone"]
    alone_start = {s: init_hash(spec.rows["alone"].runs / f"s{s}") for s in seeds}
    same_start = all(
        alone_start[s] is not None and alone_start[s] == init_hash(spec.rows[row].runs / f"s{s}")
        for s in seeds
        for row in distilled
    )
    out: dict = {"seeds": list(seeds), "teacher": teacher, "same_start": same_start}
    for name in CLASSES:
        per_seed = {row: {s: scores[row][s][name] for s in seeds} for row in spec.rows}
        alone = per_seed["alone"]
        out[name] = {"alone": {"per_seed": alone, "mean": sum(alone.values()) / len(alone)}}
        for row in distilled:
            out[name][row] = endpoint_row(per_seed[row], alone, teacher[name])
        if spec.contrasts:
            out[name]["contrasts"] = {
                f"{a} - {b}": list(_diff(per_seed[a], per_seed[b])) for a, b in spec.contrasts
            }
    alone_evals = [study / "eval" / f"{spec.rows['alone'].prefix}-s{s}" for s in SEEDS]
    if all((p / "summary.json").exists() for p in alone_evals):
        alone_mean = sum(scored("alone", s)["tumor"] for s in SEEDS) / len(SEEDS)
    else:
        alone_mean = out["tumor"]["alone"]["mean"]
    lead = teacher["tumor"] - alone_mean
    out["precondition"] = {
        "teacher_tumor": teacher["tumor"],
        "lead": lead,
        "met": teacher["tumor"] >= TEACHER_MIN and lead >= GAP_MIN,
    }
    row = out["tumor"][spec.target]
    out["target_met"] = bool(
        out["precondition"]["met"]
        and same_start
        and row["gap_closed"] >= 0.5
        and row["paired"][1] > 0
    )
    return out


def _diff(a: dict[int, float], b: dict[int, float]) -> tuple[float, float, float]:
    d = paired_difference(a, b)
    return d.mean, d.low, d.high


def _interval(values: list[float]) -> str:
    d, low, high = values
    return f"{d:+.3f} [{low:+.3f}, {high:+.3f}]"


def markdown(spec: EndpointSpec, result: dict, interim: bool) -> str:
    """The endpoint table in Markdown."""
    head = "INTERIM (not all five seeds): " if interim else ""
    seeds = ", ".join(str(s) for s in result["seeds"])
    lines = [
        f"{head}{spec.name}, {spec.n_cases} new cases ({spec.cases}), seeds {seeds}, per-case "
        "Dice, reference box",
        "",
        "| row | organ Dice | tumor Dice | organ: paired diff [95% t] | tumor: paired diff "
        "[95% t] | organ gap closed | tumor gap closed |",
        "|---|---|---|---|---|---|---|",
        f"| {spec.teacher_label} | {result['teacher']['organ']:.3f} | "
        f"{result['teacher']['tumor']:.3f} | | | | |",
        f"| {spec.rows['alone'].label} | {result['organ']['alone']['mean']:.3f} | "
        f"{result['tumor']['alone']['mean']:.3f} | | | | |",
    ]
    for name, row in spec.rows.items():
        if name == "alone":
            continue
        organ, tumor = result["organ"][name], result["tumor"][name]
        lines.append(
            f"| {row.label} | {organ['mean']:.3f} | {tumor['mean']:.3f} | "
            f"{_interval(organ['paired'])} | {_interval(tumor['paired'])} | "
            f"{organ['gap_closed']:.0%} | {tumor['gap_closed']:.0%} |"
        )
    pre = result["precondition"]
    lines += [
        "",
        "Per seed (organ / tumor): "
        + "; ".join(
            f"{row} "
            + ", ".join(
                f"{result['organ'][row]['per_seed'][s]:.3f}/{result['tumor'][row]['per_seed'][s]:.3f}"
                for s in result["seeds"]
            )
            for row in spec.rows
        ),
        f"Same starting weights within each seed: {result['same_start']}.",
    ]
    for a, b in spec.contrasts:
        key = f"{a} - {b}"
        lines.append(
            f"Information only, {key}, paired [95% t]: organ "
            f"{_interval(result['organ']['contrasts'][key])}, tumor "
            f"{_interval(result['tumor']['contrasts'][key])}."
        )
    lines += [
        f"Precondition (teacher tumor >= {TEACHER_MIN}, lead >= {GAP_MIN}): teacher "
        f"{pre['teacher_tumor']:.3f}, lead {pre['lead']:.3f}: "
        f"{'met' if pre['met'] else 'NOT met'}.",
        f"Target (>= 50% of the tumor gap, interval above zero): "
        f"{'met' if result['target_met'] else 'not met'}.",
    ]
    return "\n".join(lines) + "\n"


def main(
    spec_for: Callable[[Path], EndpointSpec],
    default_dir: Path,
    description: str,
    argv: list[str] | None = None,
) -> None:
    """The scoring command: ``--dir`` (the study folder) and ``--interim``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--dir", type=Path, default=default_dir)
    parser.add_argument("--interim", action="store_true", help="score the seeds scored so far")
    args = parser.parse_args(argv)
    spec = spec_for(args.dir)
    prefix = spec.rows[spec.target].prefix
    done = tuple(
        s for s in SEEDS if (args.dir / "eval" / f"{prefix}-s{s}" / "summary.json").exists()
    )
    if done != SEEDS and not args.interim:
        raise SystemExit(f"{spec.name}: seeds {done} scored; the endpoint needs {SEEDS}")
    result = table(spec, args.dir, done)
    interim = done != SEEDS
    result["interim"] = interim
    name = "interim" if interim else "endpoint"
    (args.dir / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.dir / f"{name}.md").write_text(markdown(spec, result, interim))
    print(markdown(spec, result, interim))
