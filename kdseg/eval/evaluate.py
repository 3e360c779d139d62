"""``kdseg-eval``: score a checkpoint (or an exported artefact) on a split, per case and overall.

Two protocols. ``full`` (default, clinical): every slice of every volume, argmax, per-case 3D
metrics in millimetres on the input grid, global Dice. ``paper`` (METHOD.md §3, for setting
numbers beside the paper's): a binary model, foreground probability > 0.4, only the slices
that contain the target, (2I + 1) / (P + G + 1) per case.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from kdseg.data.boxes import organ_box, organ_level
from kdseg.data.io import load_volume, voxel_sizes
from kdseg.data.prepare import case_label
from kdseg.data.sources import Case
from kdseg.errors import ConfigError, InputError, atomic_group, progress_steps
from kdseg.eval.inference import CascadePredictor, Predictor
from kdseg.eval.lesions import sheared_axes
from kdseg.eval.metrics import (
    HEADLINE_DICE,
    case_metrics,
    paper_protocol_case,
    paper_protocol_dice,
    summarize,
)
from kdseg.eval.postprocess import (
    check_for_protocol,
    check_postprocess,
    plan,
    postprocess_labels,
)

PROTOCOLS = ("full", "paper")


def check_protocol(protocol: str) -> None:
    """Refuse an unknown ``protocol=`` (one line, exit 2) before any model loads."""
    if protocol not in PROTOCOLS:
        raise ConfigError(f"protocol={protocol}: use {' or '.join(PROTOCOLS)}")


def evaluate_cases(
    predictor: Predictor | CascadePredictor,
    cases: Sequence[Case],
    protocol: str = "full",
    progress: bool = True,
) -> list[dict[str, Any]]:
    """One row per case: ``{"case": id, <class>: {metric: value}}``, scored on the network's
    labels as they are (:func:`evaluate_modes` scores postprocessed ones too)."""
    return evaluate_modes(predictor, cases, protocol, progress)["none"]


def evaluate_modes(
    predictor: Predictor | CascadePredictor,
    cases: Sequence[Case],
    protocol: str = "full",
    progress: bool = True,
    modes: Sequence[str | None] = ("none",),
    organ: str | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """:func:`evaluate_cases` for each postprocessing of ``modes``, from one prediction of
    each case: ``{mode: rows}``. ``largest`` keeps
    :func:`~kdseg.eval.postprocess.plan`'s components (the predictor's
    ``roi_components``, else by ``organ``, the model's ``data.organ``)."""
    check_protocol(protocol)
    modes = [check_postprocess(mode) for mode in modes]
    check_for_protocol(protocol, modes)  # the message kdseg-eval gives
    roi_components = predictor.pre.config.roi_components
    keep = max(plan(mode, predictor.task, roi_components, organ)[1] for mode in modes)
    classes = predictor.task.eval_classes
    if protocol == "paper" and predictor.task.name == "multiclass":
        raise InputError(
            None, "protocol=paper scores a binary model (one trained with data.task=organ or tumor)"
        )
    rows: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
    description = f"evaluate {len(cases)} case(s)"
    with progress_steps(description, len(cases), enabled=progress, transient=True) as bar:
        for case in cases:
            image = load_volume(case.image)
            truth = case_label(case, image)  # a layout's own label values mapped to 0/1/2
            raw = _predict(predictor, image, truth)
            spacing = list(voxel_sizes(image))
            axes = sheared_axes(image.affine)  # a tilted gantry: distances by the affine
            for mode in modes:
                pred = postprocess_labels(raw, mode, keep)[0]
                if protocol == "full":
                    scores = case_metrics(pred, truth, spacing, classes, axes)
                else:
                    scores = _paper_row(predictor, image, pred, truth, classes)
                rows[mode].append({"case": case.case_id, **scores})
            bar.advance()
    return rows


def _predict(predictor: Predictor | CascadePredictor, image: Any, truth: np.ndarray) -> np.ndarray:
    """The prediction to score. A stage-2 model alone (``preprocess.roi=organ``, no stage 1)
    is run in the reference organ's box, as in training without the jitter: an oracle stage 1,
    so that stage-2 models compare on their own merit; a ``window_level: organ`` model gets
    the reference organ's level too. A case without organ gets an empty prediction. A cascade
    finds the box (and the level) itself."""
    if isinstance(predictor, CascadePredictor) or predictor.pre.config.roi != "organ":
        return predictor.predict(image)
    organ = predictor.pre.reorient(image, truth) > 0
    box = organ_box(organ)
    if box is None:
        return np.zeros(image.shape[:3], dtype=np.uint8, order="F")
    level = None
    if predictor.pre.config.window_level == "organ":
        level = organ_level(predictor.pre.reorient(image), organ, box)
    return predictor.predict(image, roi=box, level=level)


def _paper_row(
    predictor: Predictor | CascadePredictor,
    image: Any,
    pred: np.ndarray,
    truth: np.ndarray,
    classes: dict[str, tuple[int, ...]],
) -> dict[str, dict[str, float]]:
    out = {}
    for name, labels in classes.items():
        fg_pred = predictor.pre.reorient(image, np.isin(pred, labels).astype(np.float32))
        fg_true = predictor.pre.reorient(image, np.isin(truth, labels))
        out[name] = paper_protocol_case(fg_pred, fg_true, threshold=0.5, axis=2)
    return out


def summarize_rows(rows: list[dict[str, Any]], protocol: str) -> dict[str, Any]:
    """Per-class summary: the metrics module's summary, or the paper's mean Dice.

    A class no reference holds (a tumor split of tumor-free cases) has an undefined headline:
    NaN here, ``null`` in ``summary.json``, with ``n_gt_empty`` saying why, in both protocols.
    """
    per_case = [{k: v for k, v in r.items() if k != "case"} for r in rows]
    if protocol == "full":
        return summarize(per_case)
    names = per_case[0].keys() if per_case else []
    out = {}
    for n in names:
        cases = [r[n] for r in per_case]
        empty = sum(1 for c in cases if c["gt"] == 0)
        dice = paper_protocol_dice(cases) if empty < len(cases) else math.nan
        out[n] = {"dice": dice, "n_cases": len(cases), "n_gt_empty": empty}
    return out


def rows_to_csv(rows: list[dict[str, Any]]) -> str:
    """Flatten per-case rows to CSV text: one line per case and class."""
    buffer = io.StringIO()
    writer = None
    for row in rows:
        for name, metrics in row.items():
            if name == "case":
                continue
            flat = {"case": row["case"], "class": name, **metrics}
            if writer is None:
                writer = csv.DictWriter(buffer, fieldnames=list(flat))
                writer.writeheader()
            writer.writerow(flat)
    return buffer.getvalue()


def write_results(
    rows: list[dict[str, Any]],
    summary: dict[str, Any],
    out_dir: str | Path,
    info: dict[str, Any],
    extra: dict[str, str] | None = None,
) -> Path:
    """``per_case.csv`` and ``summary.json`` in ``out_dir``, with ``extra`` (file name: text)
    before them, as one group (:func:`~kdseg.errors.atomic_group`, ``summary.json`` last): a
    failure leaves the earlier results as they were. An undefined value (NaN) is written as
    ``null``: standard JSON, which every reader parses."""
    out_dir = Path(out_dir)
    document = _json_safe({**info, "summary": summary})
    texts = {
        **(extra or {}),
        "per_case.csv": rows_to_csv(rows),
        "summary.json": json.dumps(document, indent=1, allow_nan=False),
    }
    with atomic_group([out_dir / name for name in texts]) as temps:
        for tmp, text in zip(temps, texts.values(), strict=True):
            tmp.write_text(text)
    return out_dir


def _json_safe(value: Any) -> Any:
    """``value`` with numpy scalars as Python numbers and non-finite floats as ``None``."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


#: The console table's columns: (summary key, header). ``dice`` is the headline
#: (``HEADLINE_DICE``: cases whose reference holds the class); ``dice (all)`` applies the
#: empty-case rule to every case; the paper protocol's summary has ``dice`` alone.
#: the console table's rows: (summary key, label, cell format); JSON and CSV keep every digit
COLUMNS = (
    (HEADLINE_DICE, "dice (cases with class)", "dice"),
    ("dice", "dice (all cases)", "dice"),
    ("dice_global", "dice (global)", "dice"),
    ("hd95", "hd95 (mm)", "mm"),
    ("assd", "assd (mm)", "mm"),
    ("voe", "voe (%)", "percent"),
    ("rvd", "rvd (%)", "signed_percent"),
)


def print_summary(summary: dict[str, Any], title: str, console: Console | None = None) -> None:
    """The headline metrics, a row each and a column per class (mean ± std where available),
    and the count of cases without the class in their reference (with how many of them got a
    false positive). Digits as the metrics deserve: Dice to 0.001, distances to 0.1 mm, VOE
    and RVD in percent (RVD beyond ±1000% to 2 significant digits, ``+1.7e6``): in a
    100-column terminal, the table fits."""
    import shutil

    table = Table(title=title)
    table.add_column("")
    for name in summary:
        table.add_column(name, justify="right")
    paper = all(set(s) <= {"dice", "n_cases", "n_gt_empty"} for s in summary.values())
    rows = [("dice", "dice", "dice")] if paper else COLUMNS
    stats = list(summary.values())
    for key, label, kind in rows:
        table.add_row(
            label,
            *(_cell(s.get(f"{key}_mean", s.get(key)), s.get(f"{key}_std"), kind) for s in stats),
        )
    table.add_row("cases", *(str(s.get("n_cases", "")) for s in stats))
    table.add_row(
        "cases without class" + ("" if paper else " (FP)"),
        *(
            f"{s.get('n_gt_empty', 0)}" + ("" if paper else f" ({s.get('n_false_positive', 0)})")
            for s in stats
        ),
    )
    width = shutil.get_terminal_size((100, 24)).columns  # not a terminal: 100
    (console or Console(width=width)).print(table)


def _cell(mean: float | None, std: float | None, kind: str = "dice") -> str:
    if mean is None or not math.isfinite(mean):
        return "n/a"
    text = _number(mean, kind)
    if std is None or not math.isfinite(std):
        return text
    return f"{text} ± {_number(std, kind.removeprefix('signed_'))}"


def _number(value: float, kind: str) -> str:
    """``value`` to the digits its metric deserves (see :func:`print_summary`)."""
    if kind == "dice":
        return f"{value:.3f}"
    if kind == "mm":
        return f"{value:.1f}"
    percent = 100 * value
    sign = "+" if kind == "signed_percent" else ""
    if abs(percent) < 100:
        return f"{percent:{sign}.1f}"
    if abs(percent) < 1000:
        return f"{percent:{sign}.0f}"
    mantissa, exponent = f"{percent:{sign}.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"
