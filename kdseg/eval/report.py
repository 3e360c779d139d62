"""Comparison tables over many runs: teachers, students alone and distilled students, over seeds.

The table has the shape of the EMKD paper's headline table (METHOD.md §1): one row per model
(a teacher, a student alone, or a student distilled from a teacher with a method), one column
per dataset and class (tumor Dice, organ Dice), the parameter count, and the share of the
teacher-student gap that distillation closes on the tumor,
``(distilled - student) / (teacher - student)``. Every cell is the mean ± sample std over the
runs (seeds) of that row, from each run's evaluation summary (``kdseg-eval``).

Which runs there are, and what each is (teacher, student alone, distilled student), is read
by :mod:`kdseg.eval.runs`; this module groups them into rows and renders the table. Binary-task
runs (the paper trains organ and tumor separately) merge into one row: each cell takes the runs
that report its class.
"""

from __future__ import annotations

import csv
import io
import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdseg.errors import InputError, atomic_group, removing_new_folders, warning_line
from kdseg.eval.metrics import HEADLINE_DICE, aggregate_over_seeds, format_mean_std
from kdseg.eval.paired import (
    BOOTSTRAP_RESAMPLES,
    BootstrapInterval,
    PairedDifference,
    paired_bootstrap,
    paired_difference,
)
from kdseg.eval.runs import RunRecord, default_metric, read_runs

ROLE_ORDER = ("teacher", "model", "student", "distilled")
CLASS_ORDER = ("tumor", "organ")
GAP_CLASS = "tumor"


def metric_direction(metric: str) -> int:
    """+1 where a larger ``metric`` is better (the Dices), -1 where a smaller one is (the
    distances ``hd95``/``assd``, ``voe``), 0 where neither is (``rvd``, signed): the sign the
    gap closed needs, and 0 leaves it undefined."""
    name = metric.removesuffix("_mean").removesuffix("_std")
    if name.startswith(("hd95", "assd", "voe")):
        return -1
    return 0 if name.startswith("rvd") else 1


@dataclass
class Cell:
    """Mean ± sample std of one metric over the runs of a row."""

    mean: float
    std: float
    n: int

    def text(self, digits: int) -> str:
        """``mean ± std``; a single run has no spread to show, so its value alone."""
        if self.n == 1:
            return f"{self.mean:.{digits}f}"
        return format_mean_std(self.mean, self.std, digits)


@dataclass
class Row:
    """One line of the table: a group of runs differing only by seed."""

    role: str
    model: str
    teacher: str | None
    method: str | None
    runs: list[RunRecord]
    cells: dict[tuple[str, str], Cell]  # (dataset, class) -> Cell
    params: int
    gap: dict[str, float | None] = field(default_factory=dict)  # dataset -> gap closed on tumor
    # (dataset, class) -> distilled minus student alone, paired by seed (distilled rows only)
    paired: dict[tuple[str, str], PairedDifference | None] = field(default_factory=dict)
    # the same difference with a two-level bootstrap over seeds and test cases (None: n/a)
    bootstrap: dict[tuple[str, str], BootstrapInterval | None] = field(default_factory=dict)

    @property
    def label(self) -> str:
        if self.role == "distilled":
            return f"{self.model} + {self.teacher} ({self.method})"
        return self.model

    @property
    def seeds(self) -> list[int]:
        return sorted({r.seed for r in self.runs if r.seed is not None})


# -- grouping ----------------------------------------------------------------------------------
def _cells(runs: Sequence[RunRecord]) -> dict[tuple[str, str], Cell]:
    values: dict[tuple[str, str], list[float]] = {}
    for run in runs:
        for name, value in run.scores.items():
            if math.isfinite(value):
                values.setdefault((run.dataset, name), []).append(value)
    return {key: Cell(*aggregate_over_seeds(v), len(v)) for key, v in values.items()}


def _sort_key(row: Row) -> tuple:
    method_rank = (0 if row.method == "emkd" else 1, row.method or "")
    if row.role == "teacher":
        return (0, row.model, "", method_rank)
    return (1, row.model, ROLE_ORDER.index(row.role), row.teacher or "", method_rank)


def group_runs(records: Sequence[RunRecord], direction: int = 1) -> list[Row]:
    """Rows over seeds, ordered like the paper: teachers, then each student and its variants.
    ``direction``: :func:`metric_direction` of the scores, for the gap closed."""
    groups: dict[tuple, list[RunRecord]] = {}
    for record in records:
        groups.setdefault(record.key, []).append(record)
    for runs in groups.values():  # a row's std is over seeds and its Δ pairs by seed
        seen: dict[tuple[str, int], Path] = {}
        for run in runs:  # (a run without evaluation reaches no cell: listed, not counted)
            if run.seed is None or not run.scores:
                continue
            if (run.dataset, run.seed) in seen:
                raise InputError(
                    run.path,
                    f"has seed {run.seed}, as {seen[run.dataset, run.seed]} of the same row "
                    "(model, teacher, method and dataset): name one of the two runs",
                )
            seen[run.dataset, run.seed] = run.path
    rows = [
        Row(role, model, teacher, method, runs, _cells(runs), runs[0].params)
        for (role, model, teacher, method), runs in groups.items()
    ]
    references = {(r.role, r.model): r.runs for r in rows if r.role in ("teacher", "student")}
    alone = {r.model: r.runs for r in rows if r.role == "student"}
    for row in rows:
        if row.role != "distilled":
            continue
        for key in row.cells:
            row.paired[key] = paired_difference(
                _by_seed(row.runs, *key), _by_seed(alone.get(row.model, []), *key)
            )
            row.bootstrap[key] = _bootstrap(
                row.paired[key], row.runs, alone.get(row.model, []), *key
            )
        # the gap on the seeds where the row and its student alone both have a score, the
        # seeds Δ pairs (its own seeds when there are none): a distilled mean over seeds
        # the reference lacks, or did not score, is no comparison
        seeds = {r.seed for r in row.runs}
        for dataset, name in row.cells:
            if name != GAP_CLASS:
                continue
            key = (dataset, name)
            paired = row.paired[key]
            shared = set(paired.seeds) if paired is not None else set()
            cell = _cells(_on_seeds(row.runs, shared)).get(key)
            teacher = _cells(
                _teachers(references.get(("teacher", row.teacher), []), row, shared or seeds)
            ).get(key)
            student = _cells(_on_seeds(alone.get(row.model, []), shared)).get(key)
            row.gap[dataset] = (
                None if cell is None else gap_closed(cell, teacher, student, direction)
            )
    return sorted(rows, key=_sort_key)


def _teachers(teachers: Sequence[RunRecord], row: Row, seeds: set[int | None]) -> list[RunRecord]:
    """The teacher runs a distilled row's gap is measured against: those whose checkpoints
    taught the row's runs of ``seeds``, where the report holds them (one seed-1 teacher for
    every student seed, or one teacher per seed); otherwise the teacher network's runs of
    those seeds (:func:`_on_seeds`). A teacher run of the network that taught none of them
    (another seed's, read with the same ``runs=``) is not the row's teacher."""
    taught = {r.teacher_run for r in _on_seeds(row.runs, seeds) if r.teacher_run is not None}
    return [t for t in teachers if t.path in taught] or _on_seeds(teachers, seeds)


def _on_seeds(runs: Sequence[RunRecord], seeds: set[int | None]) -> list[RunRecord]:
    """A row's runs of ``seeds`` (those a distilled row shares with its student alone), or
    all of them when it has none of those: a 3-seed row's gap is measured against the student
    alone of its 3 seeds, not of 5, while one shared teacher (seed 1) serves every student
    seed."""
    return [r for r in runs if r.seed in seeds] or list(runs)


def _by_seed(
    runs: Sequence[RunRecord], dataset: str, name: str, field: str = "scores"
) -> dict[int, Any]:
    """Seed -> one (dataset, class) cell of each run's ``field``: its score (``scores``), or
    case -> per-case Dice (``per_case``, where per_case.csv was read), for pairing by seed."""
    return {
        r.seed: getattr(r, field)[name]
        for r in runs
        if r.seed is not None and r.dataset == dataset and name in getattr(r, field)
    }


def _bootstrap(
    paired: PairedDifference | None,
    treated: Sequence[RunRecord],
    control: Sequence[RunRecord],
    dataset: str,
    name: str,
) -> BootstrapInterval | None:
    """The seeds x cases bootstrap of ``paired``'s very seeds, so that its mean is ``paired``'s;
    None (n/a) where a seed's runs have no per-case scores or the runs scored other cases."""
    if paired is None:
        return None
    a, b = (
        _by_seed(treated, dataset, name, "per_case"),
        _by_seed(control, dataset, name, "per_case"),
    )
    if not all(s in a and s in b for s in paired.seeds):
        return None
    try:
        return paired_bootstrap({s: a[s] for s in paired.seeds}, {s: b[s] for s in paired.seeds})
    except ValueError:  # not the same cases in every run: no pairing by case
        return None


def gap_closed(
    distilled: Cell, teacher: Cell | None, student: Cell | None, direction: int = 1
) -> float | None:
    """``(distilled - student) / (teacher - student)`` on means; None when undefined.

    Undefined without both references, or when the teacher is not better than the student
    (the ratio would change sign or blow up, and "gap" means nothing there). ``direction``
    says which way is better (:func:`metric_direction`; 0: neither, so no gap).
    """
    if teacher is None or student is None or (teacher.mean - student.mean) * direction <= 0:
        return None
    return (distilled.mean - student.mean) / (teacher.mean - student.mean)


# -- the report --------------------------------------------------------------------------------
@dataclass
class Report:
    """The grouped rows plus how they were made, renderable as Markdown and CSV."""

    rows: list[Row]
    columns: list[tuple[str, str]]  # (dataset, class) in table order
    headers: dict[tuple[str, str], str]
    eval_dir: str
    metric: str
    digits: int = 3
    missing_eval: list[Path] = field(default_factory=list)

    def markdown(self, title: str | None = None) -> str:
        gap_sets = [d for d, c in self.columns if c == GAP_CLASS]
        head = [
            "Model",
            "Role",
            "Seeds",
            *(self.headers[c] for c in self.columns),
            "#Params (M)",
            *(f"Gap closed ({self.headers[d, GAP_CLASS]})" for d in gap_sets),
            *(f"Paired Δ {self.headers[d, GAP_CLASS]} [95% CI]" for d in gap_sets),
            *(f"Δ {self.headers[d, GAP_CLASS]}, seeds × cases [95% bootstrap]" for d in gap_sets),
        ]
        lines = [
            f"## {title or 'Teachers, students alone and distilled students'}",
            "",
            "| " + " | ".join(head) + " |",
            "|" + "---|" * 3 + "---:|" * (len(head) - 3),
        ]
        for row in self.rows:
            cells = [_cell_text(row, c, self.digits) for c in self.columns]
            gaps = [_percent(row.gap.get(d)) if row.role == "distilled" else "" for d in gap_sets]
            gaps += [_paired_text(row, (d, GAP_CLASS), self.digits) for d in gap_sets]
            gaps += [_bootstrap_text(row, (d, GAP_CLASS), self.digits) for d in gap_sets]
            seeds = _seeds_text(row)
            lines.append(
                "| "
                + " | ".join([row.label, row.role, seeds, *cells, f"{row.params / 1e6:.3f}", *gaps])
                + " |"
            )
        lines += [
            "",
            f"Dice: `{self.metric}` from each run's `{self.eval_dir}/summary.json`; mean ± "
            "sample std over the seeds listed (one run: its value). Gap closed = (distilled - "
            "student alone) / (teacher - student alone) on the mean tumor Dice over the seeds "
            "where the row and the student alone both have a value, those of Paired Δ (each "
            "row's own seeds where there are none); n/a when the teacher is "
            "not better or a reference row is missing. Paired Δ = mean over seeds of "
            "(distilled - student alone) of the same seed (same initial weights), with a "
            "Student-t 95% interval; n/a without a student-alone run of a common seed. "
            "The t interval is over seeds on these test cases only: it says nothing of other "
            "cases. The bootstrap interval also resamples the cases: a two-level paired "
            "bootstrap (the seeds, then the test cases, each with replacement; the difference "
            "paired by seed and case; "
            f"{BOOTSTRAP_RESAMPLES:,} resamples, fixed generator seed), percentile 95% interval "
            "around the same Δ; n/a without each run's per-case scores (`per_case.csv`, headline "
            "Dice of the full protocol only) or when the runs did not score the same cases. "
            "(n=k): only k of the row's runs have a value (an undefined Dice: no test case "
            "holds the class) or, in the paired column, a student-alone run of the same seed.",
        ]
        if self.missing_eval:
            lines += [
                "",
                f"Runs without `{self.eval_dir}` (left out of the Dice cells): "
                + ", ".join(str(p) for p in self.missing_eval),
            ]
        return "\n".join(lines) + "\n"

    def csv_text(self) -> str:
        buffer = io.StringIO()
        fields = ["label", "role", "model", "teacher", "method", "n_runs", "seeds", "params"]
        for dataset, name in self.columns:
            fields += [f"{dataset}_{name}_{s}" for s in ("mean", "std", "n")]
        fields += [f"{d}_gap_closed" for d, c in self.columns if c == GAP_CLASS]
        for dataset, name in self.columns:
            fields += [f"{dataset}_{name}_paired_{s}" for s in ("mean", "low", "high", "n")]
            fields += [f"{dataset}_{name}_paired_boot_{s}" for s in ("low", "high")]
        writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            line: dict[str, Any] = {
                "label": row.label,
                "role": row.role,
                "model": row.model,
                "teacher": row.teacher or "",
                "method": row.method or "",
                "n_runs": len(row.runs),
                "seeds": " ".join(map(str, row.seeds)),
                "params": row.params,
            }
            for dataset, name in self.columns:
                cell = row.cells.get((dataset, name))
                if cell:
                    line.update(
                        {
                            f"{dataset}_{name}_mean": cell.mean,
                            f"{dataset}_{name}_std": cell.std,
                            f"{dataset}_{name}_n": cell.n,
                        }
                    )
            for dataset, gap in row.gap.items():
                line[f"{dataset}_gap_closed"] = "" if gap is None else gap
            for (dataset, name), diff in row.paired.items():
                if diff is not None:
                    prefix = f"{dataset}_{name}_paired"
                    line.update(
                        {
                            f"{prefix}_mean": diff.mean,
                            # undefined (one pair): empty, as a missing cell, never "nan"
                            f"{prefix}_low": diff.low if math.isfinite(diff.low) else "",
                            f"{prefix}_high": diff.high if math.isfinite(diff.high) else "",
                            f"{prefix}_n": diff.n,
                        }
                    )
            for (dataset, name), boot in row.bootstrap.items():
                if boot is not None:
                    prefix = f"{dataset}_{name}_paired_boot"
                    line.update({f"{prefix}_low": boot.low, f"{prefix}_high": boot.high})
            writer.writerow(line)
        return buffer.getvalue()


def _seeds_text(row: Row) -> str:
    """The Seeds column: the seeds of the row's evaluated runs, over which its cells are
    means, and after them those of runs without an evaluation (listed under the table, in no
    cell): ``1,2 (123: no evaluation)``. A row whose runs record no seed: its run count."""
    if not row.seeds:
        return str(len(row.runs))
    scored = sorted({r.seed for r in row.runs if r.scores and r.seed is not None})
    unscored = [s for s in row.seeds if s not in scored]
    missing = f"({','.join(map(str, unscored))}: no evaluation)" if unscored else ""
    return " ".join(filter(None, [",".join(map(str, scored)), missing]))


def _cell_text(row: Row, column: tuple[str, str], digits: int) -> str:
    """A row's cell, with ``(n=k)`` when fewer runs than the row's have a value in it."""
    cell = row.cells.get(column)
    if cell is None:
        return "n/a"
    return cell.text(digits) + (f" (n={cell.n})" if cell.n < _scored(row, column) else "")


def _scored(row: Row, column: tuple[str, str]) -> int:
    """The row's runs of the column's dataset with an evaluation (those without one are listed
    under the table)."""
    return sum(1 for r in row.runs if r.scores and r.dataset == column[0])


def _paired_text(row: Row, column: tuple[str, str], digits: int) -> str:
    """The paired difference ``+0.081 [+0.032, +0.130]``, with ``(n=k)`` as a Dice cell has
    it: when fewer than the row's runs are in it (a seed without a student-alone run, or
    an undefined Dice)."""
    diff: PairedDifference | None = row.paired.get(column)
    if diff is None:
        return "n/a"
    return diff.text(digits, show_n=diff.n < _scored(row, column))


def _bootstrap_text(row: Row, column: tuple[str, str], digits: int) -> str:
    """The seeds x cases bootstrap interval ``[-0.006, +0.126]``, or n/a."""
    boot: BootstrapInterval | None = row.bootstrap.get(column)
    return "n/a" if boot is None else boot.text(digits)


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.0f}%"


def _columns(
    records: Sequence[RunRecord],
) -> tuple[list[tuple[str, str]], dict[tuple[str, str], str]]:
    organs = {r.dataset: r.organ for r in records}
    present = {(r.dataset, c) for r in records for c in r.scores}
    classes = [c for c in CLASS_ORDER if any(k[1] == c for k in present)]
    classes += sorted({c for _, c in present} - set(classes))
    columns = [
        (d, c)
        for d in dict.fromkeys(r.dataset for r in records)
        for c in classes
        if (d, c) in present
    ]
    shared = {o for o in organs.values() if list(organs.values()).count(o) > 1}
    headers = {}
    for dataset, name in columns:
        organ = organs[dataset].capitalize()
        text = {"tumor": f"{organ} tumor", "organ": organ}.get(name, f"{organ} {name}")
        headers[dataset, name] = f"{text} ({dataset})" if organs[dataset] in shared else text
    return columns, headers


def _default_metric(records: Sequence[RunRecord]) -> str:
    """The metric the runs' evaluations were read by when none was named: the headline Dice
    of the full protocol, ``dice`` of the paper's (both where the runs mix them)."""
    protocols = sorted({r.protocol for r in records if r.protocol is not None}) or ["full"]
    return " / ".join(default_metric(p) for p in protocols)


def build_report(
    patterns: Iterable[str | Path],
    eval_dir: str = "eval-test-full",
    metric: str | None = None,
    digits: int = 3,
) -> Report:
    """Find, read, classify and group every run named by ``patterns`` (see the module doc)."""
    records = read_runs(patterns, eval_dir, metric)
    columns, headers = _columns(records)
    return Report(
        rows=group_runs(records, metric_direction(metric or HEADLINE_DICE)),
        columns=columns,
        headers=headers,
        eval_dir=eval_dir,
        metric=metric or _default_metric(records),
        digits=digits,
        missing_eval=[r.path for r in records if not r.scores],
    )


def write_report(report: Report, out_dir: str | Path, title: str | None = None) -> dict[str, Path]:
    """``report.md`` and ``report.csv`` in ``out_dir``, written as one group
    (:func:`~kdseg.errors.atomic_group`): a failure while writing either leaves neither new
    file (an earlier pair as it was, and no folder this call created), never a new table
    beside an older or missing CSV of other runs."""
    out_dir = Path(out_dir)
    paths = {"markdown": out_dir / "report.md", "csv": out_dir / "report.csv"}
    texts = [report.markdown(title), report.csv_text()]
    with removing_new_folders([out_dir]), atomic_group(list(paths.values())) as temps:
        for tmp, text in zip(temps, texts, strict=True):
            tmp.write_text(text)
    if report.missing_eval:
        print(
            warning_line(f"{len(report.missing_eval)} run(s) without {report.eval_dir}"),
            file=sys.stderr,
        )
    return paths
