"""The runs a report compares: run folders found, read and told apart by their configs.

A *run folder* is any folder with a ``summary.json`` and its config (``config.yaml``, or Hydra's
``.hydra/config.yaml``); a multirun sweep folder, or any folder above run folders, stands for
every run folder below it, and shell-style globs are expanded. What a run is comes from its
config alone: a ``teacher`` and a ``distill`` section make it a distilled student (``distill=none``
a student alone); a trained model is a teacher when a distilled run in the report learnt from
its checkpoint, else a student (alone) when a distilled run of the report has its network and
width, else its role in the paper (:data:`kdseg.models.cost.ROLES`; "model" for a network
the paper does not have).

Reading runs (files, configs, labels, parameter counts) is apart from
:mod:`kdseg.eval.report`, which groups the records into rows over seeds and renders the table.
"""

from __future__ import annotations

import csv
import functools
import glob
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

import kdseg.config  # noqa: F401  (resolvers used by .hydra/config.yaml)
from kdseg.data.tasks import organ_name
from kdseg.distill.mix import check_mix
from kdseg.errors import InputError, read_json
from kdseg.eval.metrics import HEADLINE_DICE
from kdseg.models import build_from_config
from kdseg.models.cost import ROLES, count_params


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
    # class -> case -> per-case Dice (None: the case's reference lacks the class), from
    # per_case.csv, for the headline Dice only (its per-run mean is the mean of these)
    per_case: dict[str, dict[str, float | None]] = field(default_factory=dict)
    teacher: str | None = None  # label of the teacher's network
    teacher_run: Path | None = None  # run folder of the teacher checkpoint
    teacher_ckpt: str | None = None
    teacher_predictions: str | None = None  # a stored-prediction teacher's folder
    protocol: str | None = None  # the evaluation's: full or paper (None: not evaluated)

    @property
    def key(self) -> tuple[str, str, str | None, str | None]:
        """The row this run belongs to: (role, model, teacher, method)."""
        return self.role, self.model, self.teacher, self.method


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


def default_metric(protocol: str) -> str:
    """The Dice a report reads from a ``protocol`` evaluation when none is named: the full
    protocol's headline per-case Dice, or the paper protocol's global ``dice``."""
    return HEADLINE_DICE if protocol == "full" else "dice"


def read_scores(
    run: Path, eval_dir: str, metric: str | None
) -> tuple[dict[str, float], str | None]:
    """Per-class Dice from ``<run>/<eval_dir>/summary.json`` and the evaluation's protocol
    (``full`` or ``paper``); empty and None when not evaluated.

    ``metric`` defaults to the headline Dice of the full protocol, or ``dice`` for the paper's.
    A score of ``null`` is undefined (no case holds the class: NaN here, left out of the cell);
    a ``NaN`` or ``Infinity`` (which Python's JSON reader takes, and kdseg-eval never writes)
    is refused, not passed off as undefined.
    """
    path = run / eval_dir / "summary.json"
    if not path.is_file():
        return {}, None
    data = read_json(path)
    summary = data.get("summary") if isinstance(data, dict) else None
    if not isinstance(summary, dict) or not all(isinstance(s, dict) for s in summary.values()):
        raise InputError(path, "not a kdseg-eval summary (no per-class 'summary' mapping)")
    protocol = str(data.get("protocol", "full"))
    key = metric or default_metric(protocol)
    scores = {}
    for name, stats in summary.items():
        if key not in stats:
            raise InputError(path, f"class {name!r} has no metric {key!r}")
        value = stats[key]  # null: undefined (no case holds the class), left out of the cell
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise InputError(path, f"class {name!r}: {key} is {value!r}, not a number")
        if value is not None and not math.isfinite(value):  # JSON's NaN / Infinity
            raise InputError(
                path,
                f"class {name!r}: {key} is {value}, not a finite number (kdseg-eval writes "
                "an undefined score as null): a damaged or hand-edited summary",
            )
        scores[name] = math.nan if value is None else float(value)
    return scores, protocol


def parse_per_case(path: Path) -> dict[str, dict[str, float | None]]:
    """Class -> case -> per-case Dice of a ``kdseg-eval`` ``per_case.csv`` (None where the
    case's reference lacks the class); anything else one :class:`InputError` naming it."""
    out: dict[str, dict[str, float | None]] = {}
    try:
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                empty = row["gt_empty"]
                if empty not in ("True", "False"):
                    raise InputError(path, f"gt_empty is {empty!r}, not True or False")
                value = None if empty == "True" else float(row["dice"])
                if value is not None and not math.isfinite(value):
                    raise InputError(path, f"case {row['case']}: dice is {value}")
                out.setdefault(row["class"], {})[row["case"]] = value
    except OSError as exc:
        raise InputError(path, f"cannot read ({exc.strerror or exc})") from None
    except (KeyError, ValueError, TypeError) as exc:
        raise InputError(path, f"not a kdseg-eval per_case.csv ({exc})") from None
    return out


def per_case_mean(scores: dict[str, float | None]) -> float:
    """The mean of the cases that hold the class (the headline per-case Dice); NaN if none."""
    values = [v for v in scores.values() if v is not None]
    return sum(values) / len(values) if values else math.nan


def read_per_case(
    run: Path,
    eval_dir: str,
    metric: str | None,
    scores: dict[str, float],
    protocol: str | None = "full",
) -> dict[str, dict[str, float | None]]:
    """Class -> case -> per-case Dice from ``<run>/<eval_dir>/per_case.csv`` (None where the
    case's reference lacks the class), for the paired bootstrap over cases; empty unless the
    evaluation's ``protocol`` (:func:`read_scores`) is the full one, the report's Dice is its
    headline one (``dice_per_case_nonempty``: the mean of these very values, checked against
    ``scores``) and the file is there. A paper-protocol evaluation's per_case.csv holds
    voxel counts, not per-case Dice: its runs are reported without the bootstrap column."""
    path = run / eval_dir / "per_case.csv"
    if protocol != "full" or (metric or HEADLINE_DICE) != HEADLINE_DICE:
        return {}
    if not scores or not path.is_file():
        return {}
    out = parse_per_case(path)
    for name, score in scores.items():  # the same numbers as summary.json, or no pairing
        mean = per_case_mean(out.get(name, {}))
        if math.isfinite(score) != math.isfinite(mean) or (
            math.isfinite(score) and abs(mean - score) > 1e-9
        ):
            raise InputError(
                path, f"class {name!r}: mean per-case Dice {mean} is not summary.json's {score}"
            )
    return out


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
    try:  # a model config no network builds (a name no longer registered): name the run
        params = model_params(model_cfg)
    except InputError as err:
        raise InputError(run, f"config: {err.message}") from None
    record = RunRecord(
        path=run,
        role="distilled" if distilled else ROLES.get(model_cfg["name"], "model").split()[0],
        model=model_label(model_cfg),
        method=method,
        seed=None if cfg.get("seed") is None else int(cfg["seed"]),
        dataset=str(data.get("name", "?")),
        organ=organ_name(data),
        params=params,
    )
    record.scores, record.protocol = read_scores(run, eval_dir, metric)
    record.per_case = read_per_case(run, eval_dir, metric, record.scores, record.protocol)
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


def read_runs(patterns: Iterable[str | Path], eval_dir: str, metric: str | None) -> list[RunRecord]:
    """Every run named by ``patterns`` (:func:`find_run_dirs`), read and classified, each
    distilled run's teacher named (see the module doc)."""
    records = [read_run(run, eval_dir, metric) for run in find_run_dirs(patterns)]
    _link_teachers(records)
    return records
