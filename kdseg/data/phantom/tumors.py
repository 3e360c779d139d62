"""Tumors: perturbed ellipsoids seeded on voxels of the target organ, and their truth.

Drawn last, from their own random stream (so ``tumor_contrast`` and the tumor count never
change the anatomy of a seed). :func:`_paint_tumors` returns the truth records of
:func:`kdseg.data.phantom.generate_case`: organ, centre, diameter, contrast and voxel count.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from kdseg.data.phantom.config import TARGET_TISSUE, PhantomConfig, Tissue
from kdseg.data.phantom.geometry import Box, Grid, Volume, _blob
from kdseg.data.phantom.sampling import Intensities, _bumps, _log_uniform, _rotation


def _organ_voxels(
    vol: Volume,
    box: Box,
    tissue: Tissue,
    side: int = 0,
    depth_mm: float = 0.0,
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
) -> np.ndarray:
    """Flat indices (into ``box``) of the voxels of ``tissue``; ``side`` +1 / -1 keeps only the
    patient's right (x > 0) / left half. ``depth_mm`` > 0 keeps the voxels at least that far
    from anything that is neither ``tissue`` nor tumor (or, where none is, the deepest ones)."""
    here = vol.tissue[box.index]
    mask = here == tissue
    if side:
        mask &= (box.x * side) > 0
    if depth_mm > 0 and mask.any():
        inside = np.pad(mask | (here == Tissue.TUMOR), 1)  # the box's faces count as outside
        depth = ndimage.distance_transform_edt(inside, sampling=spacing)[1:-1, 1:-1, 1:-1]
        depth = np.where(mask, depth, 0.0)
        mask &= depth >= min(depth_mm, float(depth.max()))
    return np.flatnonzero(mask)


def _paint_tumors(
    vol: Volume,
    grid: Grid,
    cfg: PhantomConfig,
    hu: Intensities,
    organ_boxes: dict[str, Box | None],
    rng: np.random.Generator,
) -> list[dict]:
    """Draw 0..max_tumors perturbed ellipsoids centred on organ voxels; return their truth.

    LiTS tumors are clipped to the liver; KiTS tumors may bulge out of the kidney into the
    surrounding fat (exophytic), as renal tumors do. A voxel belongs to the first tumor that
    claims it, so the listed voxel counts add up to the label-2 total exactly. Tumors left
    without a voxel are not listed.
    """
    none = rng.random() < cfg.p_no_tumor
    count = 0 if none or cfg.max_tumors == 0 else int(rng.integers(1, cfg.max_tumors + 1))
    organ = TARGET_TISSUE[cfg.dataset]
    reference = hu.liver if cfg.dataset == "lits" else hu.cortex
    allowed = (Tissue.LIVER,) if cfg.dataset == "lits" else (Tissue.KIDNEY, Tissue.VISCERAL_FAT)
    tumors = []
    for _ in range(count):
        diameter = _log_uniform(rng, *cfg.tumor_mm_range)
        radii = diameter / 2 * np.concatenate([[1.0], rng.uniform(0.7, 1.0, size=2)])
        rotation, bumps = _rotation(rng), _bumps(rng, 3, 0.35)
        magnitude = rng.uniform(10, 20) if rng.random() < 0.25 else rng.uniform(20, 80)
        sign = -1.0 if rng.random() < 0.75 else 1.0
        contrast = sign * magnitude * cfg.tumor_contrast
        side = (1 if rng.random() < 0.5 else -1) if cfg.dataset == "kits" else 0
        pick = rng.random()
        name = "liver" if side == 0 else ("right_kidney" if side > 0 else "left_kidney")
        box = organ_boxes.get(name)
        depth_mm = cfg.tumor_depth * diameter / 2
        candidates = (
            _organ_voxels(vol, box, organ, side, depth_mm, grid.spacing)
            if box is not None
            else np.empty(0, int)
        )
        if len(candidates) == 0:
            continue
        i, j, k = np.unravel_index(candidates[int(pick * len(candidates))], box.shape)
        centre = (float(box.x[i, 0, 0]), float(box.y[0, j, 0]), float(box.z[0, 0, k]))
        found = _blob(grid, centre, radii, rotation, bumps)
        if found is None:
            continue
        blob_box, rho = found
        painted = vol.paint(blob_box, rho < 1, reference + contrast, Tissue.TUMOR, where=allowed)
        voxels = int(painted.sum())
        if voxels:
            tumors.append(
                {
                    "organ": name,
                    "center_mm": [round(c, 2) for c in centre],
                    "diameter_mm": round(diameter, 2),
                    "contrast_hu": round(contrast, 2),
                    "voxels": voxels,
                }
            )
    return tumors
