"""Segmentation metrics for both evaluation protocols (METHOD.md §3 and §4).

Pure functions over numpy label volumes; only numpy, scipy, torch and MONAI are imported so
that evaluation never pulls in the training stack.

Clinical protocol (:func:`case_metrics`, :func:`summarize`)
    Whole volumes, every slice. A *class* is a set of label values (``CLASSES_LITS``: the organ
    includes the tumor). Per case and class: Dice, HD95 and ASSD in millimetres (MONAI, with the
    voxel spacing passed at call time, so anisotropic voxels are measured correctly), VOE, signed
    RVD, and the raw counts ``pred_voxels``, ``gt_voxels``, ``intersection`` for the global Dice.

    Surfaces follow MONAI: the surface of a mask is the mask minus its 6-connected erosion.
    HD95 is MONAI's ``max(p95(d(pred -> gt)), p95(d(gt -> pred)))``; ASSD is the mean of both
    directed distance sets taken together. On a grid whose axes are not at right angles (a
    tilted gantry's sheared affine: ``axes``) the surface voxels are placed by the affine's
    3 x 3 part instead of the spacing, with the same surfaces, nearest-neighbour distances and
    percentile as MONAI's (which takes a spacing only); a right-angled grid goes to MONAI.

Empty-case rule (no metric is ever NaN or infinite, so no case silently drops out of a mean)
    =========================  ======  =====  ======================  =====================
    case                       Dice    VOE    RVD                     HD95 / ASSD
    =========================  ======  =====  ======================  =====================
    gt empty, pred empty       1       0      0                       0
    gt empty, pred non-empty   0       1      ``RVD_FALSE_POSITIVE``  image diagonal (mm)
    gt non-empty, pred empty   0       1      -1                      image diagonal (mm)
    =========================  ======  =====  ======================  =====================

    The image diagonal is the length of the field of view, ``sqrt(sum((shape * spacing)**2))``,
    an upper bound of any distance inside the image (the penalty several challenges use). RVD
    with an empty reference is a division by zero; it is recorded as ``RVD_FALSE_POSITIVE``
    (+1, the magnitude of the miss case's -1) and every row carries the flags ``gt_empty`` and
    ``pred_empty`` so a report can count or exclude those cases.

Which mean is the headline (``HEADLINE_DICE``)
    ``dice_per_case_nonempty``: the mean per-case Dice over the cases whose reference contains
    the class. It is the paper's convention and does not depend on how many tumor-free cases a
    split happens to hold; tumor-free cases show up in ``n_false_positive`` instead. ``summarize``
    also gives ``dice_mean`` (every case, empty-case rule applied, the LiTS "Dice per case") and
    ``dice_global`` (the LiTS "Dice global", pooled counts).

Paper protocol (:func:`paper_protocol_case`, :func:`paper_protocol_dice`)
    Binary task, foreground probability > 0.4, only the slices whose reference contains the
    target; counts summed per case, Dice ``(2I + 1) / (P + G + 1)``, mean over cases with a
    non-empty reference.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from monai.metrics import (
    compute_average_surface_distance,
    compute_dice,
    compute_hausdorff_distance,
)

CLASSES_LITS: dict[str, tuple[int, ...]] = {"organ": (1, 2), "tumor": (2,)}
"""LiTS labels (0 background, 1 liver, 2 tumor); KiTS uses the same layout."""

METRICS: tuple[str, ...] = ("dice", "hd95", "assd", "voe", "rvd")
"""The per-case metrics that :func:`summarize` averages."""

BOTH_EMPTY: dict[str, float] = {"dice": 1.0, "voe": 0.0, "rvd": 0.0, "hd95": 0.0, "assd": 0.0}
"""Metrics of a correct rejection (empty reference, empty prediction)."""

RVD_FALSE_POSITIVE: float = 1.0
"""RVD recorded when the reference is empty and the prediction is not (true value: +inf)."""
RVD_MISSED: float = -1.0
"""RVD when the reference is non-empty and the prediction is empty (the true value)."""

HEADLINE_DICE: str = "dice_per_case_nonempty"
"""The key of :func:`summarize`'s output that reports should lead with."""

PAPER_THRESHOLD: float = 0.4


def image_diagonal_mm(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """Length in mm of the field of view's diagonal: the distance penalty for empty cases."""
    return float(math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing, strict=True))))


def _as_batch(mask: np.ndarray) -> torch.Tensor:
    """A boolean mask as the (batch, channel, *spatial) tensor MONAI expects, without a copy."""
    return torch.from_numpy(np.ascontiguousarray(mask, dtype=bool))[None, None]


def _surface_distances(
    pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float], axes: np.ndarray | None = None
) -> tuple[float, float]:
    """HD95 and ASSD in mm between two non-empty masks, via MONAI; ``axes`` (a sheared grid's
    3 x 3 voxel-to-mm map): :func:`_sheared_surface_distances`."""
    if axes is not None:
        return _sheared_surface_distances(pred, gt, axes)
    p, g = _as_batch(pred), _as_batch(gt)
    spacing = [float(s) for s in spacing]
    with warnings.catch_warnings():
        # MONAI 1.6 calls its own deprecated get_mask_edges argument internally.
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*")
        hd95 = compute_hausdorff_distance(
            p, g, include_background=True, percentile=95, spacing=spacing
        )
        assd = compute_average_surface_distance(
            p, g, include_background=True, symmetric=True, spacing=spacing
        )
    return float(hd95.item()), float(assd.item())


def _sheared_surface_distances(
    pred: np.ndarray, gt: np.ndarray, axes: np.ndarray
) -> tuple[float, float]:
    """MONAI's HD95 and ASSD with each surface voxel at ``axes @ index`` mm: its surfaces
    (``get_mask_edges``), its k-d tree of nearest surface voxels and its percentile."""
    from monai.metrics.utils import get_mask_edges
    from scipy.spatial import KDTree

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*")
        edges = get_mask_edges(np.asarray(pred, bool), np.asarray(gt, bool), crop=False)
    points = [
        np.argwhere(np.asarray(e)).astype(np.float64) @ np.asarray(axes, float).T for e in edges
    ]
    p_to_g = KDTree(points[1], leafsize=32).query(points[0], k=1)[0]
    g_to_p = KDTree(points[0], leafsize=32).query(points[1], k=1)[0]
    directed = [torch.as_tensor(d, dtype=torch.float32) for d in (p_to_g, g_to_p)]
    hd95 = max(float(torch.quantile(d, 0.95)) for d in directed)
    return hd95, float(torch.cat(directed).mean())


def binary_metrics(
    pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float], axes: np.ndarray | None = None
) -> dict[str, float]:
    """Every metric of one binary mask pair, with the empty-case rule of the module docstring;
    ``axes``: a sheared grid's voxel-to-mm map for HD95 and ASSD (None: ``spacing``)."""
    pred = np.asarray(pred, dtype=bool)
    gt = np.asarray(gt, dtype=bool)
    n_pred, n_gt = int(pred.sum()), int(gt.sum())
    inter = int(np.logical_and(pred, gt).sum())
    row: dict[str, float] = {
        "pred_voxels": n_pred,
        "gt_voxels": n_gt,
        "intersection": inter,
        "gt_empty": n_gt == 0,
        "pred_empty": n_pred == 0,
    }
    if n_gt == 0 and n_pred == 0:
        row.update(BOTH_EMPTY)
        return row
    if n_gt == 0 or n_pred == 0:
        penalty = image_diagonal_mm(gt.shape, spacing)
        rvd = RVD_FALSE_POSITIVE if n_gt == 0 else RVD_MISSED
        row.update(dice=0.0, voe=1.0, rvd=rvd, hd95=penalty, assd=penalty)
        return row
    row["dice"] = float(compute_dice(_as_batch(pred), _as_batch(gt), include_background=True))
    row["voe"] = 1.0 - inter / (n_pred + n_gt - inter)
    row["rvd"] = (n_pred - n_gt) / n_gt
    row["hd95"], row["assd"] = _surface_distances(pred, gt, spacing, axes)
    return row


def case_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: Sequence[float],
    classes: Mapping[str, Sequence[int]] = CLASSES_LITS,
    axes: np.ndarray | None = None,
) -> dict[str, dict[str, float]]:
    """Per-class metrics of one case from predicted and reference label volumes.

    ``spacing`` is the voxel size in mm along each array axis; ``classes`` maps a class name to
    the label values it covers. Returns ``{class: {metric: value}}`` with the metrics, counts and
    ``gt_empty`` / ``pred_empty`` flags of :func:`binary_metrics`. ``axes``: the affine's
    3 x 3 part when its axes are not at right angles (``kdseg.eval.lesions.sheared_axes``).
    """
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {gt.shape}")
    if len(spacing) != gt.ndim:
        raise ValueError(
            f"spacing {tuple(spacing)} has {len(spacing)} values for a {gt.ndim}-D volume"
        )
    return {
        name: binary_metrics(np.isin(pred, labels), np.isin(gt, labels), spacing, axes)
        for name, labels in classes.items()
    }


def _mean_std(values: np.ndarray) -> tuple[float, float]:
    """Mean and population std (ddof=0) of a metric over cases."""
    return float(values.mean()), float(values.std())


def summarize(rows: Sequence[Mapping[str, Mapping[str, float]]]) -> dict[str, dict[str, float]]:
    """Aggregate :func:`case_metrics` rows over cases, per class.

    For every metric of ``METRICS``: ``<metric>_mean`` and ``<metric>_std`` (population std)
    over all cases with the empty-case rule applied. Also ``n_cases``, ``n_gt_empty``,
    ``n_false_positive`` (empty reference, non-empty prediction), ``n_missed`` (non-empty
    reference, empty prediction), ``dice_global`` = 2 sum(I) / (sum(P) + sum(G)) (1.0 when
    every case is empty on both sides) and ``dice_per_case_nonempty`` (mean and ``_std`` over
    cases with a non-empty reference), the headline. The headline is NaN, explicitly, when no
    case has a non-empty reference (``n_gt_empty == n_cases``): it is undefined there.

    Raises ``ValueError`` for no rows, rows with different classes, or a non-finite metric.
    """
    if not rows:
        raise ValueError("no cases to summarize")
    class_names = list(rows[0])
    for i, row in enumerate(rows):
        if list(row) != class_names:
            raise ValueError(f"case {i} has classes {list(row)}, case 0 {class_names}")
    out: dict[str, dict[str, float]] = {}
    for name in class_names:
        per_case = [row[name] for row in rows]
        summary: dict[str, float] = {"n_cases": len(per_case)}
        for metric in METRICS:
            values = np.array([r[metric] for r in per_case], dtype=float)
            if not np.isfinite(values).all():
                raise ValueError(f"class {name!r}: non-finite {metric} in a case")
            summary[f"{metric}_mean"], summary[f"{metric}_std"] = _mean_std(values)
        gt_empty = np.array([bool(r["gt_empty"]) for r in per_case])
        pred_empty = np.array([bool(r["pred_empty"]) for r in per_case])
        summary["n_gt_empty"] = int(gt_empty.sum())
        summary["n_false_positive"] = int((gt_empty & ~pred_empty).sum())
        summary["n_missed"] = int((~gt_empty & pred_empty).sum())
        pooled_i = sum(int(r["intersection"]) for r in per_case)
        pooled = sum(int(r["pred_voxels"]) + int(r["gt_voxels"]) for r in per_case)
        summary["dice_global"] = 2.0 * pooled_i / pooled if pooled else 1.0
        nonempty = np.array([r["dice"] for r in per_case], dtype=float)[~gt_empty]
        if nonempty.size:
            mean, std = _mean_std(nonempty)
        else:  # undefined, and said so: NaN here is explicit, not a case dropped from a mean
            mean, std = math.nan, math.nan
        summary["dice_per_case_nonempty"], summary["dice_per_case_nonempty_std"] = mean, std
        out[name] = summary
    return out


def paper_protocol_case(
    prob_fg: np.ndarray, gt_fg: np.ndarray, threshold: float = PAPER_THRESHOLD, axis: int = 0
) -> dict[str, int]:
    """Pixel counts of one case under the paper's protocol.

    ``prob_fg`` is the foreground probability, ``gt_fg`` the binary reference (non-zero is the
    target), both with the slices along ``axis``. Only the slices whose reference contains the
    target are kept; the prediction is ``prob_fg > threshold``. Returns the counts summed over
    those slices: ``pred`` (P), ``gt`` (G), ``intersection`` (I) and ``n_slices``.
    """
    prob_fg = np.asarray(prob_fg)
    gt_fg = np.asarray(gt_fg) != 0
    if prob_fg.shape != gt_fg.shape:
        raise ValueError(f"probability shape {prob_fg.shape} differs from reference {gt_fg.shape}")
    other_axes = tuple(a for a in range(gt_fg.ndim) if a != axis % gt_fg.ndim)
    keep = gt_fg.any(axis=other_axes)
    gt_kept = np.compress(keep, gt_fg, axis=axis)
    pred_kept = np.compress(keep, prob_fg, axis=axis) > threshold
    return {
        "pred": int(pred_kept.sum()),
        "gt": int(gt_kept.sum()),
        "intersection": int(np.logical_and(pred_kept, gt_kept).sum()),
        "n_slices": int(keep.sum()),
    }


def paper_protocol_dice(cases: Sequence[Mapping[str, int]]) -> float:
    """The paper's Dice: mean over cases with ``gt > 0`` of (2I + 1) / (P + G + 1).

    ``cases`` are :func:`paper_protocol_case` results. Raises ``ValueError`` when no case has a
    non-empty reference (the mean would be undefined).
    """
    scores = [(2 * c["intersection"] + 1) / (c["pred"] + c["gt"] + 1) for c in cases if c["gt"] > 0]
    if not scores:
        raise ValueError("no case with a non-empty reference: the paper's Dice is undefined")
    return float(np.mean(scores))


def aggregate_over_seeds(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample std (ddof=1; 0.0 for a single value) of one number over seeds."""
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        raise ValueError("no values to aggregate")
    std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    return float(arr.mean()), std


def format_mean_std(mean: float, std: float, digits: int = 3) -> str:
    """``"0.652 ± 0.012"``: the report's format for a mean over seeds."""
    return f"{mean:.{digits}f} ± {std:.{digits}f}"
