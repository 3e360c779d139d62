"""One case end to end: :func:`generate_case` and the painter sequence of :func:`_draw`.

The only module that knows every painter: it fixes the order in which they draw (later ones
cover earlier ones, or respect them through their ``where`` tissues) and the order of their
draws on the anatomy stream, then reads the label off the tissue map, acquires the image and
stores both in the drawn orientation.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np

from kdseg.data.phantom.acquisition import _acquire, _nifti, _stored_axcodes
from kdseg.data.phantom.config import TARGET_TISSUE, PhantomConfig, Tissue
from kdseg.data.phantom.geometry import Grid, Volume
from kdseg.data.phantom.musculoskeletal import _paint_muscles, _paint_ribs, _paint_spine
from kdseg.data.phantom.organs import (
    _kidney_tube,
    _paint_gallbladder,
    _paint_kidney,
    _paint_liver,
    _paint_liver_vessels,
    _paint_spleen,
)
from kdseg.data.phantom.sampling import (
    Intensities,
    _sample_body,
    _sample_grid,
    _sample_intensities,
    _sample_layout,
    _sample_spine,
    _streams,
)
from kdseg.data.phantom.trunk import (
    _paint_body,
    _paint_bowel,
    _paint_lungs,
    _paint_table,
    _paint_vessels,
)
from kdseg.data.phantom.tumors import _paint_tumors


def _draw(
    cfg: PhantomConfig, grid: Grid, anatomy: np.random.Generator, tumor_rng: np.random.Generator
) -> tuple[Volume, Intensities, list[dict]]:
    """Draw the noiseless phantom on ``grid``: the volume, its tissue HU and the tumor truth.

    Painters run from background to foreground; each later one covers (or, through its
    ``where`` tissues, respects) the earlier ones, so the tissue map stays consistent.
    """
    body = _sample_body(grid, anatomy)
    hu = _sample_intensities(cfg.dataset, anatomy)
    layout = _sample_layout(cfg.dataset, grid, anatomy)
    spine = _sample_spine(body, anatomy)
    vol = Volume(np.empty(grid.shape, np.float32), np.empty(grid.shape, np.uint8))
    _paint_body(vol, grid, body, hu)
    _paint_table(vol, grid, body, hu, anatomy)
    _paint_bowel(vol, grid, body, layout, hu, anatomy)
    _paint_spleen(vol, grid, body, layout, hu, anatomy)
    boxes = {"liver": _paint_liver(vol, grid, body, layout, hu, anatomy)}
    _paint_gallbladder(vol, grid, body, layout, hu, anatomy)
    for name, z_range, side in (
        ("right_kidney", layout.kidney_right, 1),
        ("left_kidney", layout.kidney_left, -1),
    ):
        tube = _kidney_tube(body, z_range, side, anatomy)
        boxes[name] = _paint_kidney(vol, grid, tube, hu, anatomy)
    _paint_muscles(vol, grid, body, spine, hu, anatomy)
    _paint_lungs(vol, grid, body, layout, spine, hu, anatomy)
    _paint_vessels(vol, grid, spine, hu, anatomy)
    _paint_spine(vol, grid, body, spine, hu)
    _paint_ribs(vol, grid, body, layout, hu, anatomy)
    _paint_liver_vessels(vol, grid, body, layout, boxes["liver"], hu, anatomy)
    tumors = _paint_tumors(vol, grid, cfg, hu, boxes, tumor_rng)
    return vol, hu, tumors


def generate_case(cfg: PhantomConfig, seed: int) -> tuple[nib.Nifti1Image, nib.Nifti1Image, dict]:
    """Draw one phantom case: (image, label, truth), deterministic per ``(cfg, seed)``.

    The image is int16 HU and the label uint8 (0 background, 1 organ: liver for ``lits``,
    kidneys for ``kits``, 2 tumor); both share one affine. The truth dict holds ``tumors``
    (``organ``, ``center_mm`` in world RAS mm, ``diameter_mm``, ``contrast_hu`` against the
    organ, ``voxels`` with label 2), ``organ_voxels`` (label 1), ``orientation`` (axis codes of
    the stored array), ``spacing`` (voxel size per stored axis), ``shape``, ``seed``,
    ``enhancement`` (contrast phase, 0 unenhanced .. 1 peak) and ``organ_hu``.
    """
    rngs = _streams(seed)
    grid = _sample_grid(cfg, rngs["geometry"])
    vol, hu, tumors = _draw(cfg, grid, rngs["anatomy"], rngs["tumors"])
    label = np.zeros(grid.shape, np.uint8)
    label[vol.tissue == TARGET_TISSUE[cfg.dataset]] = 1
    label[vol.tissue == Tissue.TUMOR] = 2
    image = _acquire(vol.hu, grid, cfg, rngs["noise"])
    axcodes = _stored_axcodes(cfg, rngs["orientation"])
    image_nii, label_nii = _nifti(image, grid, axcodes), _nifti(label, grid, axcodes)
    truth = {
        "seed": int(seed),
        "tumors": tumors,
        "organ_voxels": int(np.count_nonzero(label == 1)),
        "orientation": "".join(nib.aff2axcodes(image_nii.affine)),
        "spacing": [round(float(s), 4) for s in image_nii.header.get_zooms()],
        "shape": list(image_nii.shape),
        "enhancement": round(hu.enhancement, 3),
        "organ_hu": round(hu.liver if cfg.dataset == "lits" else hu.cortex, 1),
    }
    return image_nii, label_nii, truth
