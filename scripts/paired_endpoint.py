"""Issue 11's endpoint for a study of paired seeds on one test folder (studies v8, v10, v11).

Each study names its rows (ENet alone first, then the distilled rows), the row its target is
scored on, the teacher's run and the endpoint cases, in an :class:`EndpointSpec`; this module
reads what ``kdseg-eval`` wrote for each (row, seed), checks that every evaluation scored the
expected run's ``best.ckpt`` on exactly the endpoint cases of the study's data folder with
finite scores, and computes per row:
per-seed Dice, the paired difference to ENet alone with a Student-t 95% interval (over the seeds,
on these fixed cases: ``scripts/paired_bootstrap.py`` adds the interval that resamples the cases
too, from the same ``per_case.csv`` files) and the share of
the alone -> teacher gap closed; then issue 11's precondition (teacher tumor >= 0.5, lead >= 0.15
over ENet alone, seeds 1-5) and target (target row >= 50% of the tumor gap, interval above zero,
paired starting weights). Optional contrasts (row minus row, paired) are information only,
unless a study scores a contrast instead of a target (v11: ``target=None``).

Every evaluation in a table must have scored the same reference voxels per case and class (the
``gt_voxels`` of ``per_case.csv``): rows scored on cases that were drawn again elsewhere are
refused unless the drawing reproduced them exactly. A row whose run folder is gone may read its
evaluations and run records from copies (``Row.eval_dir``, ``Row.records``).

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

from kdseg.errors import write_text_atomic
from kdseg.eval.paired import paired_difference

SEEDS = (1, 2, 3, 4, 5)
#: issue 11's "real gap" on the test cases: the precondition of scoring the target
TEACHER_MIN, GAP_MIN = 0.5, 0.15
CLASSES = ("organ", "tumor")


@dataclass(frozen=True)
class Row:
    """A table row: its evaluation folders are ``eval/<prefix>-s<seed>``, of ``runs/s<seed>``.

    ``eval_dir``: where those evaluation folders are, if not in the study's ``eval/`` (another
    study's committed records); ``records``: where copies of each run's ``s<seed>/summary.json``
    are, if ``runs`` (the path the evaluations name) no longer exists."""

    prefix: str
    runs: Path
    label: str
    eval_dir: Path | None = None
    records: Path | None = None

    def evaluation(self, study: Path, seed: int) -> Path:
        return (self.eval_dir or study / "eval") / f"{self.prefix}-s{seed}"

    def start(self, seed: int) -> str | None:
        """The seed's starting-weight checksum, from the run or its record copy."""
        return init_hash((self.records or self.runs) / f"s{seed}")


@dataclass(frozen=True)
class EndpointSpec:
    """What one study scores: ``rows["alone"]`` is the baseline, ``target`` the scored row
    (None: the study scores its ``contrasts`` and has no issue-11 target of its own)."""

    name: str
    first_case: int  # the endpoint cases are volume-<first_case> .. + n_cases - 1
    n_cases: int
    data_root: Path  # where they were drawn
    teacher_run: Path
    teacher_label: str
    rows: dict[str, Row]
    target: str | None
    contrasts: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    teacher_eval: Path | None = None  # the teacher's evaluation, if not <study>/eval/teacher-s1

    @property
    def last_row(self) -> str:
        """The row whose five scored seeds complete the study (the target, else the last)."""
        return self.target or list(self.rows)[-1]

    @property
    def cases(self) -> str:
        return f"{self.first_case}-{self.first_case + self.n_cases - 1}"

    @property
    def case_ids(self) -> set[str]:
        return {f"volume-{i}" for i in range(self.first_case, self.first_case + self.n_cases)}


def dice(spec: EndpointSpec, eval_dir: Path, run: Path) -> dict[str, float]:
    """Per-case organ and tumor Dice (tumor over the cases with tumor) of one evaluation,
    after checking that it scored ``run``'s best checkpoint on the spec's endpoint cases."""
    if not (eval_dir / "summary.json").is_file():
        raise SystemExit(f"{spec.name}: no evaluation in {eval_dir} (summary.json)")
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
    cases = {case for case, _ in reference_voxels(eval_dir)}
    if cases != spec.case_ids:
        raise SystemExit(f"{spec.name}: {eval_dir} scored other cases than {spec.cases}")
    summary = record["summary"]
    scores = {  # null (undefined) as NaN: refused just below like any non-finite value
        name: math.nan if (v := summary[name]["dice_per_case_nonempty"]) is None else float(v)
        for name in CLASSES
    }
    if not all(math.isfinite(v) for v in scores.values()):
        raise SystemExit(f"{spec.name}: {eval_dir} has a non-finite Dice: {scores}")
    return scores


def reference_voxels(eval_dir: Path) -> dict[tuple[str, str], int]:
    """``(case, class) -> gt_voxels`` of one evaluation's ``per_case.csv``."""
    with (eval_dir / "per_case.csv").open(newline="") as f:
        return {(r["case"], r["class"]): int(r["gt_voxels"]) for r in csv.DictReader(f)}


def same_references(spec: EndpointSpec, evaluations: list[Path]) -> None:
    """Refuse a table whose evaluations did not all score the same reference voxels."""
    first = reference_voxels(evaluations[0])
    for other in evaluations[1:]:
        if reference_voxels(other) != first:
            raise SystemExit(
                f"{spec.name}: {other} scored other reference voxels than {evaluations[0]} "
                "(its cases were drawn or preprocessed differently)"
            )


def table(spec: EndpointSpec, study: Path, seeds: tuple[int, ...]) -> dict:
    """Every row's per-seed Dice, the teacher's, the paired rows and the precondition (on the
    mean of ENet alone over seeds 1-5 whenever those are scored, as the protocols say)."""
    teacher_eval = spec.teacher_eval or study / "eval" / "teacher-s1"
    teacher = dice(spec, teacher_eval, spec.teacher_run)

    def scored(row: str, seed: int) -> dict[str, float]:
        r = spec.rows[row]
        return dice(spec, r.evaluation(study, seed), r.runs / f"s{seed}")

    scores = {row: {s: scored(row, s) for s in seeds} for row in spec.rows}
    same_references(
        spec, [teacher_eval, *(r.evaluation(study, s) for r in spec.rows.values() for s in seeds)]
    )
    distilled = [row for row in spec.rows if row != "alone"]
    alone_start = {s: spec.rows["alone"].start(s) for s in seeds}
    same_start = all(
        alone_start[s] is not None and alone_start[s] == spec.rows[row].start(s)
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
    alone_evals = [spec.rows["alone"].evaluation(study, s) for s in SEEDS]
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
    if spec.target is None:
        out["target_met"] = None
        return out
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
            f"{'Information only, ' if spec.target else 'Scored contrast, '}{key}, paired "
            "[95% t]: organ "
            f"{_interval(result['organ']['contrasts'][key])}, tumor "
            f"{_interval(result['tumor']['contrasts'][key])}."
        )
    lines += [
        f"Precondition (teacher tumor >= {TEACHER_MIN}, lead >= {GAP_MIN}): teacher "
        f"{pre['teacher_tumor']:.3f}, lead {pre['lead']:.3f}: "
        f"{'met' if pre['met'] else 'NOT met'}.",
    ]
    if spec.target is not None:
        lines.append(
            f"Target (>= 50% of the tumor gap, interval above zero): "
            f"{'met' if result['target_met'] else 'not met'}."
        )
    return "\n".join(lines) + "\n"


def main(
    spec_for: Callable[[Path], EndpointSpec],
    default_dir: Path,
    description: str,
    argv: list[str] | None = None,
    reading: Callable[[dict], str] | None = None,
) -> None:
    """The scoring command: ``--dir`` (the study folder) and ``--interim``. ``reading``: a
    line the study's protocol fixed for reading its result, added to the Markdown."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--dir", type=Path, default=default_dir)
    parser.add_argument("--interim", action="store_true", help="score the seeds scored so far")
    args = parser.parse_args(argv)
    spec = spec_for(args.dir)
    last = spec.rows[spec.last_row]
    done = tuple(s for s in SEEDS if (last.evaluation(args.dir, s) / "summary.json").exists())
    if done != SEEDS and not args.interim:
        raise SystemExit(f"{spec.name}: seeds {done} scored; the endpoint needs {SEEDS}")
    if not done:  # --interim with nothing to average: refused, not a ZeroDivisionError
        raise SystemExit(f"{spec.name}: no seed is scored yet in {args.dir}")
    result = table(spec, args.dir, done)
    interim = done != SEEDS
    result["interim"] = interim
    name = "interim" if interim else "endpoint"
    text = markdown(spec, result, interim)
    if reading is not None:
        text += reading(result) + "\n"
    write_text_atomic(args.dir / f"{name}.json", json.dumps(result, indent=1) + "\n")
    write_text_atomic(args.dir / f"{name}.md", text)
    print(text)
