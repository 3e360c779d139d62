"""Comparison tables over many runs: teachers, students alone and distilled students, over seeds.

The table has the shape of the EMKD paper's headline table (METHOD.md §1): one row per model
(a teacher, a student alone, or a student distilled from a teacher with a method), one column
per dataset and class (tumor Dice, organ Dice), the parameter count, and the share of the
teacher-student gap that distillation closes on the tumor,
``(distilled - student) / (teacher - student)``. Every cell is the mean ± sample std over the
runs (seeds) of that row, from each run's evaluation summary (``kdseg-eval``).

A *run folder* is any folder with a ``summary.json`` and its config (``config.yaml``, or Hydra's
``.hydra/config.yaml``); a multirun sweep folder, or any folder above run folders, stands for
every run folder below it, and shell-style globs are expanded. What a run is comes from its
config alone: a ``teacher`` and a ``distill`` section make it a distilled student (``distill=none``
a student alone); a trained model is a teacher when a distilled run in the report learnt from
its checkpoint, else a student (alone) when a distilled run of the report has its network and
width, else its role in the paper (:data:`kdseg.models.cost.ROLES`; "model" for a network
the paper does not have). Binary-task runs
(the paper trains organ and tumor separately) merge into one row: each cell takes the runs that
report its class.
"""

from __future__ import annotations

import csv
import functools
import glob
import io
import json
import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

import kdseg.config  # noqa: F401  (resolvers used by .hydra/config.yaml)
from kdseg.distill.mix import check_mix
from kdseg.errors import InputError, read_json, warning_line, write_text_atomic
from kdseg.eval.metrics import HEADLINE_DICE, aggregate_over_seeds, format_mean_std
from kdseg.eval.paired import PairedDifference, paired_difference
from kdseg.models import build_from_config
from kdseg.models.cost import ROLES, count_params

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
class RunRecord:
    """What the report needs from one run folder."""

    path: Path
    role: str  # teacher | student | distilled | model
    model: str  # label of the trained network, e.g. "enet (w 0.25)"
    method: str | None  # distillation method name; None for plain training
    seed: int | None
    dataset: str
    organ: str
    params: int
    scores: dict[str, float] = field(default_factory=dict)  # class -> Dice
    teacher: str | None = None  # label of the teacher's network
    teacher_run: Path | None = None  # run folder of the teacher checkpoint
    teacher_ckpt: str | None = None
    teacher_predictions: str | None = None  # a stored-prediction teacher's folder

    @property
    def key(self) -> tuple[str, str, str | None, str | None]:
        """The row this run belongs to: (role, model, teacher, method)."""
        return self.role, self.model, self.teacher, self.method


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

    @property
    def label(self) -> str:
        if self.role == "distilled":
            return f"{self.model} + {self.teacher} ({self.method})"
        return self.model

    @property
    def seeds(self) -> list[int]:
        return sorted({r.seed for r in self.runs if r.seed is not None})


# -- finding and reading runs ------------------------------------------------------------------
def is_run_dir(path: Path) -> bool:
    """A run folder holds ``summary.json`` and a config (``config.yaml`` or ``.hydra/``)."""
    return (path / "summary.json").is_file() and (
        (path / "config.yaml").is_file() or (path / ".hydra" / "config.yaml").is_file()
    )


def find_run_dirs(patterns: Iterable[str | Path]) -> list[Path]:
    """Run folders named by ``patterns``: run folders, folders above them, or globs of either.

    Raises :class:`InputError` for a pattern that matches nothing and when no run is found.
    """
    found: dict[Path, None] = {}
    for pattern in patterns:
        matches = sorted(glob.glob(str(pattern), recursive=True))
        if not matches:
            raise InputError(pattern, "matches no file or folder")
        for match in map(Path, matches):
            if is_run_dir(match):
                found[match.resolve()] = None
            elif match.is_dir():
                for summary in sorted(match.rglob("summary.json")):
                    if is_run_dir(summary.parent):
                        found[summary.parent.resolve()] = None
    if not found:
        raise InputError(
            ", ".join(map(str, patterns)), "no run folder (summary.json + config) found"
        )
    return list(found)


def read_run_config(run: Path) -> dict[str, Any]:
    """The run's resolved config: ``config.yaml`` (stored resolved), else ``.hydra/``'s."""
    path = run / "config.yaml"
    if not path.is_file():
        path = run / ".hydra" / "config.yaml"
    try:
        cfg = OmegaConf.load(path)
    except Exception as exc:  # noqa: BLE001 - any parse error is the user's file
        raise InputError(path, f"unreadable config ({str(exc).splitlines()[0]})") from None
    try:
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except Exception:  # noqa: BLE001 - an interpolation this process cannot resolve
        return OmegaConf.to_container(cfg, resolve=False)  # type: ignore[return-value]


#: speed options that change a run's bits (not its model): runs with one are a row of their own
SPEED_OPTIONS = {"channels_last": "channels-last", "compile": "compiled"}


def _speed(cfg: dict[str, Any]) -> list[str]:
    return [text for key, text in SPEED_OPTIONS.items() if cfg.get(key) is True]


def model_label(model_cfg: dict[str, Any]) -> str:
    """``"enet (w 0.25)"``: network name and width multiplier, and the speed options it trained
    with (``"enet (w 0.25, compiled)"``): such runs are not bit-identical to default ones, so
    they are not pooled with them as seeds of one row."""
    extra = "".join(f", {text}" for text in _speed(model_cfg))
    return f"{model_cfg['name']} (w {float(model_cfg.get('width', 1.0)):g}{extra})"


@functools.lru_cache(maxsize=64)
def _params_of(model_json: str) -> int:
    with torch.device("meta"):  # no weights allocated: counting only
        model = build_from_config(json.loads(model_json), encoder_weights=False)
    return count_params(model)


def model_params(model_cfg: dict[str, Any]) -> int:
    """Parameter count of the network a model config describes (built on the meta device)."""
    return _params_of(json.dumps(model_cfg, sort_keys=True))


def read_scores(run: Path, eval_dir: str, metric: str | None) -> dict[str, float]:
    """Per-class Dice from ``<run>/<eval_dir>/summary.json``; empty when not evaluated.

    ``metric`` defaults to the headline Dice of the full protocol, or ``dice`` for the paper's.
    """
    path = run / eval_dir / "summary.json"
    if not path.is_file():
        return {}
    data = read_json(path)
    summary = data.get("summary") if isinstance(data, dict) else None
    if not isinstance(summary, dict) or not all(isinstance(s, dict) for s in summary.values()):
        raise InputError(path, "not a kdseg-eval summary (no per-class 'summary' mapping)")
    key = metric or (HEADLINE_DICE if data.get("protocol", "full") == "full" else "dice")
    scores = {}
    for name, stats in summary.items():
        if key not in stats:
            raise InputError(path, f"class {name!r} has no metric {key!r}")
        value = stats[key]  # null: undefined (no case holds the class), left out of the cell
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise InputError(path, f"class {name!r}: {key} is {value!r}, not a number")
        scores[name] = math.nan if value is None else float(value)
    return scores


def method_label(distill: dict[str, Any], teacher: dict[str, Any] | None = None) -> str:
    """The distillation method's name, with the mix when one is set on a preset without it in
    its name (``distill=kd +distill.mix=cutmix`` is not plain ``kd``), and a live teacher's
    speed options (``"emkd, teacher compiled"``); ``teacher.cache`` is bit-exact and not
    named."""
    name, mix = str(distill.get("name", "?")), check_mix(distill.get("mix"))
    label = f"{name}+{mix}" if mix and mix not in name else name
    return "".join([label, *(f", teacher {text}" for text in _speed(teacher or {}))])


def read_run(run: Path, eval_dir: str, metric: str | None) -> RunRecord:
    """Classify one run folder and read its scores and parameter count."""
    cfg = read_run_config(run)
    data = cfg.get("data", {})
    distilled = "teacher" in cfg and "distill" in cfg
    model_cfg = cfg["student"] if distilled else cfg.get("model")
    if not isinstance(model_cfg, dict) or "name" not in model_cfg:
        raise InputError(run, "config has no model (or student) section")
    method = method_label(cfg["distill"] or {}, cfg["teacher"]) if distilled else None
    record = RunRecord(
        path=run,
        role="distilled" if distilled else ROLES.get(model_cfg["name"], "model").split()[0],
        model=model_label(model_cfg),
        method=method,
        seed=None if cfg.get("seed") is None else int(cfg["seed"]),
        dataset=str(data.get("name", "?")),
        organ=str(data.get("organ", "organ")),
        params=model_params(model_cfg),
        scores=read_scores(run, eval_dir, metric),
    )
    if distilled:
        ckpt, predictions = cfg["teacher"].get("ckpt"), cfg["teacher"].get("predictions")
        if ckpt or not predictions:
            record.teacher_ckpt = str(ckpt)
            record.teacher_run = Path(record.teacher_ckpt).resolve().parent.parent
        else:  # teacher.predictions: a folder of saved outputs, no run of its own
            record.teacher_predictions = str(predictions)
        record.teacher = cfg["teacher"].get("name")  # refined in _link_teachers
        if method == "none":  # trained by kdseg-distill without any distillation term
            record.role, record.method, record.teacher = "student", None, None
    return record


def _teacher_label_from_ckpt(ckpt: str | None) -> str | None:
    if not ckpt or not Path(ckpt).is_file():
        return None
    from kdseg.eval.checkpoint import read_checkpoint

    return model_label(read_checkpoint(ckpt)["hyper_parameters"]["model"])


def predictions_label(folder: str) -> str:
    """The label of a teacher given as stored predictions (``teacher.predictions``): the
    folder's name, after ``nnunet:`` where it holds nnU-Net's output (``plans.json``, or
    ``--save_probabilities``' ``.npz`` with its ``.pkl``), else after ``predictions:``
    (label or probability NIfTIs, ``.npy``; a folder no longer there). The name comes from the
    run's saved config, so runs taught by one folder share a row however the report runs."""
    path = Path(folder)
    name = path.name or path.resolve().name or str(path)
    nnunet = False
    try:
        if path.is_dir():
            nnunet = (path / "plans.json").is_file() or (
                next(path.glob("*.npz"), None) is not None
                and next(path.glob("*.pkl"), None) is not None
            )
    except OSError:  # an unreadable folder: named by its path alone
        pass
    return f"{'nnunet' if nnunet else 'predictions'}:{name}"


def _link_teachers(records: list[RunRecord]) -> None:
    """Name each distilled run's teacher; mark runs whose checkpoint taught as teachers, and
    the other runs of a network that is distilled in the report as its students alone."""
    by_path = {r.path: r for r in records}
    students = {r.model for r in records if r.role == "distilled"}
    for record in records:  # roles by use first, the paper's table (ROLES) only otherwise
        if record.role != "distilled" and record.model in students:
            record.role = "student"
    for record in records:
        if record.role != "distilled":
            continue
        if record.teacher_predictions is not None:
            record.teacher = predictions_label(record.teacher_predictions)
            continue
        teacher = by_path.get(record.teacher_run) if record.teacher_run else None
        if teacher is not None:
            teacher.role = "teacher"
            record.teacher = teacher.model
        else:
            record.teacher = _teacher_label_from_ckpt(record.teacher_ckpt) or record.teacher or "?"


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
        seeds = {r.seed for r in row.runs}
        teacher, student = (
            _cells(_on_seeds(references.get(("teacher", row.teacher), []), seeds)),
            _cells(_on_seeds(references.get(("student", row.model), []), seeds)),
        )
        for dataset, name in row.cells:
            if name == GAP_CLASS:
                row.gap[dataset] = gap_closed(
                    row.cells[dataset, name],
                    teacher.get((dataset, name)),
                    student.get((dataset, name)),
                    direction,
                )
    return sorted(rows, key=_sort_key)


def _on_seeds(runs: Sequence[RunRecord], seeds: set[int | None]) -> list[RunRecord]:
    """A reference row's runs of ``seeds`` (the distilled row's), or all of them when it has
    none of those: a 3-seed row's gap is measured against the student alone of its 3 seeds,
    not of 5, while one shared teacher (seed 1) serves every student seed."""
    return [r for r in runs if r.seed in seeds] or list(runs)


def _by_seed(runs: Sequence[RunRecord], dataset: str, name: str) -> dict[int, float]:
    """Seed -> score of one (dataset, class) cell, for pairing runs by seed."""
    return {
        r.seed: r.scores[name]
        for r in runs
        if r.seed is not None and r.dataset == dataset and name in r.scores
    }


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
            seeds = ",".join(map(str, row.seeds)) or str(len(row.runs))
            lines.append(
                "| "
                + " | ".join([row.label, row.role, seeds, *cells, f"{row.params / 1e6:.3f}", *gaps])
                + " |"
            )
        lines += [
            "",
            f"Dice: `{self.metric}` from each run's `{self.eval_dir}/summary.json`; mean ± "
            "sample std over the seeds listed (one run: its value). Gap closed = (distilled - "
            "student alone) / (teacher - student alone) on the mean tumor Dice over the row's "
            "seeds (a reference row's own seeds when it shares none); n/a when the teacher is "
            "not better or a reference row is missing. Paired Δ = mean over seeds of "
            "(distilled - student alone) of the same seed (same initial weights), with a "
            "Student-t 95% interval; n/a without a student-alone run of a common seed. "
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
                            f"{prefix}_low": diff.low,
                            f"{prefix}_high": diff.high,
                            f"{prefix}_n": diff.n,
                        }
                    )
            writer.writerow(line)
        return buffer.getvalue()


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


def build_report(
    patterns: Iterable[str | Path],
    eval_dir: str = "eval-test-full",
    metric: str | None = None,
    digits: int = 3,
) -> Report:
    """Find, read, classify and group every run named by ``patterns`` (see the module doc)."""
    records = [read_run(run, eval_dir, metric) for run in find_run_dirs(patterns)]
    _link_teachers(records)
    columns, headers = _columns(records)
    return Report(
        rows=group_runs(records, metric_direction(metric or HEADLINE_DICE)),
        columns=columns,
        headers=headers,
        eval_dir=eval_dir,
        metric=metric or HEADLINE_DICE,
        digits=digits,
        missing_eval=[r.path for r in records if not r.scores],
    )


def write_report(report: Report, out_dir: str | Path, title: str | None = None) -> dict[str, Path]:
    """``report.md`` and ``report.csv`` in ``out_dir``, each written atomically."""
    out_dir = Path(out_dir)
    paths = {"markdown": out_dir / "report.md", "csv": out_dir / "report.csv"}
    write_text_atomic(paths["markdown"], report.markdown(title))
    write_text_atomic(paths["csv"], report.csv_text())
    if report.missing_eval:
        print(
            warning_line(f"{len(report.missing_eval)} run(s) without {report.eval_dir}"),
            file=sys.stderr,
        )
    return paths
