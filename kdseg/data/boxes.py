"""Organ boxes and organ levels on the canonical grid: find, grow and jitter a 3D box.

An organ ROI (``preprocess.roi: organ``) crops each volume to the organ's 3D bounding box plus
a margin, and an organ-relative window (``preprocess.window_level: organ``) centres the HU
window on the organ's median HU. These helpers compute both from a mask: :func:`organ_box`
and :func:`organ_level` read them (from the ground truth in ``prepare``, from a stage-1 mask
in a cascade, through :mod:`kdseg.data.roi`), :func:`expand_box` adds the margin the
:class:`~kdseg.data.preprocess.Preprocessor` crops to, and :func:`jitter_box` moves a training
box's faces so a stage-2 model learns boxes as imprecise as a stage-1 model's. They are plain
numpy on ``(X, Y, Z)`` arrays, kept apart from the preprocessing object so that evaluation,
scripts and the component search use them without it.
"""

from __future__ import annotations

import numpy as np

Box3D = tuple[int, int, int, int, int, int]
"""A canonical-grid box ``(x0, x1, y0, y1, z0, z1)``, half-open."""


def organ_box(mask: np.ndarray) -> Box3D | None:
    """Box ``(x0, x1, y0, y1, z0, z1)`` of the nonzero voxels of ``mask`` (None if none)."""
    lo_hi = []
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        hits = np.nonzero(np.asarray(mask).any(axis=others))[0]
        if hits.size == 0:
            return None
        lo_hi += [int(hits[0]), int(hits[-1]) + 1]
    return tuple(lo_hi)  # type: ignore[return-value]


def organ_level(hu: np.ndarray, mask: np.ndarray, box: Box3D | None = None) -> float | None:
    """The organ's level: median HU of ``hu`` where ``mask`` is true, rounded to a whole HU.

    ``box`` (canonical, half-open) restricts both arrays to it first, so a caller holding the
    organ's box pays for its voxels only, not the whole volume. None when the mask is empty.
    The level of a ``window_level: organ`` config
    (:meth:`~kdseg.data.preprocess.Preprocessor.hu_window`): from the ground truth in
    ``prepare``, from stage 1's organ in a cascade.
    """
    if box is not None:
        x0, x1, y0, y1, z0, z1 = box
        hu, mask = hu[x0:x1, y0:y1, z0:z1], mask[x0:x1, y0:y1, z0:z1]
    values = np.asarray(hu)[np.asarray(mask, dtype=bool)]
    if values.size == 0:
        return None
    return float(np.round(np.median(values)))


def _margin_voxels(margin_mm: float, spacing: float) -> int:
    """``margin_mm`` in whole voxels of size ``spacing``, rounded up."""
    return int(np.ceil(margin_mm / spacing - 1e-6))


def expand_box(
    box: Box3D,
    margin_mm: float,
    spacing: tuple[float, float, float],
    shape: tuple[int, int, int],
) -> Box3D:
    """``box`` grown by ``margin_mm`` on every side (rounded up to whole voxels), clipped to
    ``shape``; always at least one voxel wide."""
    out = []
    for axis in range(3):
        m = _margin_voxels(margin_mm, spacing[axis])
        lo = min(max(box[2 * axis] - m, 0), shape[axis] - 1)
        hi = max(min(box[2 * axis + 1] + m, shape[axis]), lo + 1)
        out += [lo, hi]
    return tuple(out)  # type: ignore[return-value]


def jitter_box(
    box: Box3D,
    jitter_mm: float,
    spacing: tuple[float, float, float],
    rng: np.random.Generator,
    margin_mm: float | None = None,
) -> Box3D:
    """Each face of ``box`` moved by a uniform draw in ``[-jitter_mm, jitter_mm]`` (whole
    voxels); a face never crosses its opposite one. Training boxes imitate stage-1 boxes.

    ``margin_mm``: the margin :func:`expand_box` adds afterwards; a face then moves inwards by
    at most that margin's voxels, so the grown box still holds all of ``box`` (a jitter above
    the margin cut the organ out of its own training crop). With ``jitter_mm <= margin_mm``
    the limit never binds: the same boxes as without it.
    """
    out = list(box)
    for axis in range(3):
        shift = np.round(rng.uniform(-jitter_mm, jitter_mm, size=2) / spacing[axis]).astype(int)
        if margin_mm is not None:
            m = _margin_voxels(margin_mm, spacing[axis])
            shift = [min(int(shift[0]), m), max(int(shift[1]), -m)]
        lo, hi = box[2 * axis] + int(shift[0]), box[2 * axis + 1] + int(shift[1])
        if hi <= lo:
            lo, hi = box[2 * axis], box[2 * axis + 1]
        out[2 * axis], out[2 * axis + 1] = lo, hi
    return tuple(out)  # type: ignore[return-value]
