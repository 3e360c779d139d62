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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from kdseg.data.io import check_pair, load_volume, voxel_sizes
from kdseg.data.prepare import LABELS
from kdseg.data.preprocess import organ_box, organ_level
from kdseg.data.sources import Case
from kdseg.errors import InputError, write_text_atomic
from kdseg.eval.inference import CascadePredictor, Predictor
from kdseg.eval.metrics import case_metrics, paper_protocol_case, paper_protocol_dice, summarize

HEADLINE = ("dice", "dice_global", "hd95", "assd", "voe", "rvd")


def evaluate_cases(
    predictor: Predictor | CascadePredictor,
    cases: Sequence[Case],
    protocol: str = "full",
    progress: bool = True,
) -> list[dict[str, Any]]:
    """One row per case: ``{"case": id, <class>: {metric: value}}``."""
    if protocol not in ("full", "paper"):
        raise ValueError(f"unknown protocol {protocol!r}; use full or paper")
    classes = predictor.task.eval_classes
    if protocol == "paper" and predictor.task.name == "multiclass":
        raise InputError(None, "protocol=paper scores a binary model (data.task=organ or tumor)")
    rows = []
    with Progress(disable=not progress, transient=True) as bar:
        job = bar.add_task(f"evaluate {len(cases)} case(s)", total=len(cases))
        for case in cases:
            image = load_volume(case.image)
            truth = check_pair(image, load_volume(case.label, role="label"), case.label, LABELS)
            pred = _predict(predictor, image, truth)
            if protocol == "full":
                spacing = list(voxel_sizes(image))
                rows.append({"case": case.case_id, **case_metrics(pred, truth, spacing, classes)})
            else:
                rows.append(
                    {"case": case.case_id, **_paper_row(predictor, image, pred, truth, classes)}
                )
            bar.advance(job)
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
    """Per-class summary: the metrics module's summary, or the paper's mean Dice."""
    per_case = [{k: v for k, v in r.items() if k != "case"} for r in rows]
    if protocol == "full":
        return summarize(per_case)
    names = per_case[0].keys() if per_case else []
    return {
        n: {"dice": paper_protocol_dice([r[n] for r in per_case]), "n_cases": len(per_case)}
        for n in names
    }


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
    rows: list[dict[str, Any]], summary: dict[str, Any], out_dir: str | Path, info: dict[str, Any]
) -> Path:
    """``per_case.csv`` and ``summary.json`` in ``out_dir``, atomically."""
    out_dir = Path(out_dir)
    write_text_atomic(out_dir / "per_case.csv", rows_to_csv(rows))
    write_text_atomic(
        out_dir / "summary.json", json.dumps({**info, "summary": summary}, indent=1, default=float)
    )
    return out_dir


def print_summary(summary: dict[str, Any], title: str, console: Console | None = None) -> None:
    """A per-class table of the headline metrics (mean ± std where available)."""
    table = Table(title=title)
    table.add_column("class")
    columns = [m for m in HEADLINE if any(m in s or f"{m}_mean" in s for s in summary.values())]
    for m in columns:
        table.add_column(m, justify="right")
    for name, stats in summary.items():
        cells = []
        for m in columns:
            mean = stats.get(f"{m}_mean", stats.get(m))
            std = stats.get(f"{m}_std")
            cells.append(
                "-" if mean is None else f"{mean:.3f}" + ("" if std is None else f" ± {std:.3f}")
            )
        table.add_row(name, *cells)
    (console or Console(width=140)).print(table)
