"""Lesion report of one label volume: organ volume, tumor burden and the individual lesions.

Only what the model predicts is measured (:func:`report_labels`): an organ-only model's report
has no tumor or lesion fields, a tumor-only model's no organ volume or burden.

Volumes are in mL (1 mL = 1000 mm^3) from the voxel spacing (from the affine's determinant
where the voxel axes are not at right angles, as in a NIfTI of a tilted gantry). Lesions are
the connected components of the tumor mask (26-connectivity in 3D by default), labelled with
``cc3d`` (connected-components-3d, the labeller of nnU-Net's ``acvl-utils``): it imports in
milliseconds, where ``scipy.ndimage`` costs about half a second of a fresh ``kdseg-predict``.
Components are numbered in C raster order, as ``scipy.ndimage.label`` numbers them.

A lesion's largest diameter is the largest distance in mm between the centres of two of its
voxels. Both ends of a farthest pair are vertices of the voxels' convex hull, and a hull vertex
is the first or last voxel of its line along every axis (any other voxel lies between two
voxels of that line). Those line ends (or, for lesions of at most ``SMALL_LESION_VOXELS``,
all voxels) are compared by brute force; only when more than
``BRUTE_FORCE_MAX_POINTS`` remain (lesions of about 60 mm and up) are they reduced to their
convex hull with qhull first. Centre-to-centre means a single voxel measures 0 mm and an
n-voxel-long line measures (n - 1) * spacing.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cc3d
import numpy as np

from kdseg.errors import write_text_atomic

BRUTE_FORCE_MAX_POINTS = 4096
"""Up to this many hull candidates the diameter is a plain all-pairs maximum."""

_PAIR_BLOCK = 1 << 21
"""Distances computed at once by the all-pairs maximum (8 MB of float32)."""


def connectivity_structure(ndim: int, connectivity: int) -> np.ndarray:
    """The structuring element (``scipy.ndimage.generate_binary_structure``) whose neighbour
    count is ``connectivity``: 3D: 6 (faces), 18 (faces and edges) or 26 (all); 2D: 4 or 8."""
    offsets = np.abs(np.indices((3,) * ndim) - 1).sum(axis=0)
    for rank in range(1, ndim + 1):
        structure = offsets <= rank
        if int(structure.sum()) - 1 == connectivity:
            return structure
    valid = [int((offsets <= r).sum()) - 1 for r in range(1, ndim + 1)]
    raise ValueError(f"connectivity {connectivity} is not one of {valid} for {ndim}-D volumes")


def hull_candidates(mask: np.ndarray) -> np.ndarray:
    """Indices ``(n, ndim)`` of the voxels of ``mask`` that end their line along every axis:
    a superset of the convex hull's vertices, in C order."""
    keep: np.ndarray | None = None
    for axis in range(mask.ndim):
        present = mask.any(axis=axis)
        lines = np.nonzero(present)
        ends = np.zeros_like(mask, dtype=bool)
        first = mask.argmax(axis=axis)[lines]
        last = mask.shape[axis] - 1 - np.flip(mask, axis=axis).argmax(axis=axis)[lines]
        for pos in (first, last):
            index = list(lines)
            index.insert(axis, pos)
            ends[tuple(index)] = True
        keep = ends if keep is None else keep & ends
    assert keep is not None
    return np.argwhere(keep)


def _all_pairs_max(points: np.ndarray) -> float:
    """Largest distance between two of ``points`` (n, d), blockwise in float64."""
    best = 0.0
    rows = max(_PAIR_BLOCK // max(len(points), 1), 1)
    for start in range(0, len(points), rows):
        block = points[start : start + rows]
        d2 = ((block[:, None, :] - points[None, :, :]) ** 2).sum(axis=-1)
        best = max(best, float(d2.max()))
    return math.sqrt(best)


def _max_pairwise_distance(points: np.ndarray) -> float:
    """Largest distance between two of ``points`` (n, d), via their convex hull when many."""
    if len(points) < 2:
        return 0.0
    if len(points) > BRUTE_FORCE_MAX_POINTS:
        from scipy.spatial import ConvexHull, QhullError  # lazy: rare, and slow to import

        centred = points - points.mean(axis=0)
        # Flat lesions (one slice, one row) have a degenerate hull: work in the subspace they
        # span; the projection onto an orthonormal basis keeps every distance.
        _, sing, vt = np.linalg.svd(centred, full_matrices=False)
        rank = int((sing > 1e-9 * max(sing[0], 1.0)).sum())
        projected = centred @ vt[:rank].T
        if rank == 1:
            return float(np.ptp(projected[:, 0]))
        try:
            points = points[ConvexHull(projected).vertices]
        except QhullError:  # still degenerate for qhull: fall through to all pairs
            pass
    return _all_pairs_max(points)


SMALL_LESION_VOXELS = 256
"""Up to this many voxels all of a lesion's voxels are compared (finding line ends costs more)."""


def lesion_diameter_mm(
    mask: np.ndarray, spacing: Sequence[float], axes: np.ndarray | None = None
) -> float:
    """Largest centre-to-centre distance in mm between two voxels of ``mask``.

    ``axes``: the affine's 3 x 3 part (columns: one voxel step along each array axis, in mm),
    for axes that are not at right angles (a tilted gantry's sheared grid); ``spacing`` alone
    otherwise. A linear map keeps the hull's corners, so the candidates stay the same."""
    mask = np.asarray(mask, dtype=bool)
    small = int(np.count_nonzero(mask)) <= SMALL_LESION_VOXELS
    points = np.argwhere(mask) if small else hull_candidates(mask)
    if axes is not None:
        return _max_pairwise_distance(points @ np.asarray(axes, dtype=float).T)
    return _max_pairwise_distance(points * np.asarray(spacing, dtype=float))


def sheared_axes(affine: np.ndarray) -> np.ndarray | None:
    """The 3 x 3 part of ``affine`` when its voxel axes are not at right angles (within 1e-6
    of the voxel sizes), else None: volumes and distances then need more than the spacing."""
    axes = np.asarray(affine, dtype=float)[:3, :3]
    gram = axes.T @ axes
    off = gram - np.diag(np.diag(gram))
    return axes if np.abs(off).max() > 1e-6 * np.diag(gram).max() else None


def nonzero_box(label: np.ndarray, value: int | None = None) -> tuple[slice, ...] | None:
    """The bounding box of the nonzero voxels of ``label`` (of ``label == value`` when given)
    as slices; None if there are none.

    The last axis is searched first: a NIfTI label is Fortran-ordered, so each of its slices
    along that axis is one contiguous block, and each later search scans only the slab found.
    """
    box: list[slice] = [slice(None)] * label.ndim
    for axis in reversed(range(label.ndim)):
        view = label[tuple(box)]
        other = tuple(a for a in range(label.ndim) if a != axis)
        hits = np.flatnonzero((view if value is None else view == value).any(axis=other))
        if hits.size == 0:
            return None
        start = box[axis].start or 0
        box[axis] = slice(start + int(hits[0]), start + int(hits[-1]) + 1)
    return tuple(box)


def tumor_box(label: np.ndarray, tumor_label: int) -> tuple[slice, ...]:
    """The bounding box of ``label == tumor_label`` (which must be non-empty) as slices.

    Labelling components only inside it gives the same components as labelling the whole
    volume (translation keeps their raster order), in a fraction of the time: a liver's lesions
    fill a few percent of a 512 x 512 x 200 scan.
    """
    box = nonzero_box(label, tumor_label)
    assert box is not None, "tumor_box needs a tumor voxel"
    return box


def _lesions(
    label: np.ndarray,
    tumor_label: int,
    spacing: tuple[float, ...],
    voxel_ml: float,
    connectivity: int,
    min_size_voxels: int,
    axes: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """One entry per tumor component, labelled inside the tumor's bounding box."""
    crop = tumor_box(label, tumor_label)
    start = np.array([s.start for s in crop])
    connectivity_structure(label.ndim, connectivity)  # refuses a connectivity cc3d lacks
    # C order, so that components are numbered like scipy.ndimage.label numbers them
    tumor = np.ascontiguousarray(label[crop] == tumor_label)
    components = cc3d.connected_components(tumor, connectivity=connectivity)
    stats = cc3d.statistics(components)
    lesions = []
    for index, (count, box, centroid) in enumerate(
        zip(
            stats["voxel_counts"][1:],
            stats["bounding_boxes"][1:],
            stats["centroids"][1:],
            strict=True,
        ),
        start=1,
    ):
        n_voxels = int(count)
        if n_voxels < min_size_voxels:
            continue
        one = components[box] == index
        diameter = lesion_diameter_mm(one, spacing, axes) if n_voxels > 1 else 0.0
        lesions.append(
            {
                "volume_ml": n_voxels * voxel_ml,
                "n_voxels": n_voxels,
                "centroid_voxel": [round(float(c), 2) for c in np.asarray(centroid) + start],
                "max_diameter_mm": diameter,
            }
        )
    return lesions


def report_labels(output_labels: Sequence[int]) -> tuple[tuple[int, ...] | None, int | None]:
    """``(organ_labels, tumor_label)`` of :func:`lesion_report` for a model whose labels are
    ``output_labels`` (:attr:`kdseg.data.tasks.Task.output_labels`): a multiclass model
    ``((1, 2), 2)``, an organ-only one ``((1,), None)``, a tumor-only one ``(None, 2)``. What
    a model does not predict is not measured: a tumor model's "organ" would be its tumor
    (a burden of 100 %), and an organ model's tumor 0 mL would read as checked."""
    labels = {int(v) for v in output_labels}
    organ = (1, 2) if labels >= {1, 2} else ((1,) if 1 in labels else None)
    return organ, (2 if 2 in labels else None)


def lesion_report(
    label: np.ndarray,
    spacing: Sequence[float],
    organ_labels: Sequence[int] | None = (1, 2),
    tumor_label: int | None = 2,
    connectivity: int = 26,
    min_size_voxels: int = 0,
    affine: np.ndarray | None = None,
) -> dict[str, Any]:
    """Organ volume, tumor burden and per-lesion measurements of one label volume.

    ``organ_labels`` are the labels that make up the organ (the tumor included); lesions are the
    ``connectivity``-connected components of ``label == tumor_label`` with at least
    ``min_size_voxels`` voxels (the totals count every tumor voxel). Lesions are listed largest
    first, each with ``volume_ml``, ``n_voxels``, ``centroid_voxel`` (array index) and
    ``max_diameter_mm``. The tumor burden is 0 when the organ is empty. With the label's
    ``affine``, a grid whose axes are not at right angles (a NIfTI of a tilted gantry) gets
    its true voxel volume (the determinant) and distances; ``spacing`` alone would count each
    voxel 1 / cos(tilt) too large. ``organ_labels=None`` (a tumor-only model) leaves the organ
    volume and the burden None, ``tumor_label=None`` (an organ-only model) the tumor volume,
    burden and lesion fields (:func:`report_labels`).
    """
    label = np.asarray(label)
    if len(spacing) != label.ndim:
        raise ValueError(
            f"spacing {tuple(spacing)} has {len(spacing)} values for a {label.ndim}-D volume"
        )
    spacing = tuple(float(s) for s in spacing)
    axes = None if affine is None or label.ndim != 3 else sheared_axes(affine)
    volume = math.prod(spacing) if axes is None else abs(float(np.linalg.det(axes)))
    voxel_ml = volume / 1000.0
    # one vectorised comparison per label value, inside the box of the nonzero voxels only
    # (a bincount of 52 M voxels converts them all to int64 first, and ravel() copies a
    # Fortran-ordered volume: seconds; three comparisons over the whole scan: 0.2 s)
    organ_set = None if organ_labels is None else {int(v) for v in organ_labels}
    values = {*(organ_set or ()), *(() if tumor_label is None else (int(tumor_label),))}
    block = label
    if 0 not in values:
        box = nonzero_box(label)
        block = label[box] if box is not None else label[:0]
    counts = {v: int(np.count_nonzero(block == v)) for v in values}
    organ_ml = None if organ_set is None else sum(counts[v] for v in organ_set) * voxel_ml
    tumor_ml = lesions = burden = None
    if tumor_label is not None:
        tumor_voxels = counts[int(tumor_label)]
        lesions = []
        if tumor_voxels:
            lesions = _lesions(
                label, tumor_label, spacing, voxel_ml, connectivity, min_size_voxels, axes
            )
        lesions.sort(key=lambda lesion: lesion["n_voxels"], reverse=True)
        for rank, lesion in enumerate(lesions, start=1):
            lesion["id"] = rank
        tumor_ml = tumor_voxels * voxel_ml
        if organ_ml is not None:
            burden = 100.0 * tumor_ml / organ_ml if organ_ml else 0.0
    return {
        "spacing_mm": list(spacing),
        "organ_labels": None if organ_labels is None else [int(v) for v in organ_labels],
        "tumor_label": None if tumor_label is None else int(tumor_label),
        "connectivity": connectivity,
        "min_size_voxels": min_size_voxels,
        "organ_volume_ml": organ_ml,
        "tumor_volume_ml": tumor_ml,
        "tumor_burden_percent": burden,
        "n_lesions": None if lesions is None else len(lesions),
        "lesions": lesions,
    }


def format_lesion_report(report: dict[str, Any], max_rows: int = 10) -> str:
    """One-screen text summary: volumes, burden, lesion count and the largest lesions; a
    field the model does not measure (None: :func:`lesion_report`) has no line."""
    lines = []
    if report.get("organ_volume_ml") is not None:
        lines.append(f"Organ volume:   {report['organ_volume_ml']:10.1f} mL")
    if report.get("tumor_volume_ml") is not None:
        lines.append(f"Tumor volume:   {report['tumor_volume_ml']:10.1f} mL")
    if report.get("tumor_burden_percent") is not None:
        lines.append(f"Tumor burden:   {report['tumor_burden_percent']:10.2f} % of the organ")
    if report.get("n_lesions") is not None:
        lines.append(
            f"Lesions:        {report['n_lesions']:10d}"
            f"  ({report['connectivity']}-connected, >= {report['min_size_voxels']} voxels)"
        )
    lines += [f"Note:           {note}" for note in report.get("notes", [])]
    lesions = (report.get("lesions") or [])[:max_rows]
    if lesions:
        lines += ["", f"{'#':>3}  {'volume mL':>10}  {'diameter mm':>11}  centroid (voxel)"]
        for lesion in lesions:
            centroid = ", ".join(f"{c:.0f}" for c in lesion["centroid_voxel"])
            lines.append(
                f"{lesion['id']:>3}  {lesion['volume_ml']:>10.2f}  "
                f"{lesion['max_diameter_mm']:>11.1f}  ({centroid})"
            )
        hidden = report["n_lesions"] - len(lesions)
        if hidden > 0:
            lines.append(f"... and {hidden} smaller lesion(s)")
    return "\n".join(lines) + "\n"


def write_lesion_report(
    report: dict[str, Any], json_path: str | os.PathLike, txt_path: str | os.PathLike
) -> tuple[Path, Path]:
    """Write the report as JSON and as the text summary, each atomically."""
    return (
        write_text_atomic(json_path, json.dumps(report, indent=2) + "\n"),
        write_text_atomic(txt_path, format_lesion_report(report)),
    )
