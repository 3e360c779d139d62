"""The label of an image/label pair, checked against its image before anything uses it.

:func:`check_pair` refuses, in one line naming the label file, what would train or score on
the wrong voxels without a word: another shape or geometry (saying how it differs: no
orientation, flipped axes, other voxel sizes, a shifted origin), values that are not the
task's labels (a CT given as the label is named as a swapped pair), NaN / Inf, a label with no
background. Numpy and nibabel only, as :mod:`kdseg.data.io`, whose volumes it checks.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import nibabel as nib
import numpy as np

from kdseg.data.io import AFFINE_TOLERANCE, voxel_sizes
from kdseg.errors import InputError


def check_pair(
    image: nib.Nifti1Image,
    label: nib.Nifti1Image,
    label_path: str | Path,
    allowed_labels: Iterable[int],
) -> np.ndarray:
    """Check that ``label`` fits ``image`` (shape, affine, label values); return the label array.

    Real datasets store labels as float or int; values must be whole numbers from
    ``allowed_labels``, and some voxel must be background (0): a label of nothing but organ
    is no segmentation of a CT. A volume of many values is named as an image (the pair
    swapped), a geometry that differs says how (:func:`_geometry_difference`).
    """
    if label.shape != image.shape:
        raise InputError(
            label_path, f"label shape {label.shape} differs from image shape {image.shape}"
        )
    if not np.allclose(label.affine, image.affine, atol=AFFINE_TOLERANCE):
        raise InputError(
            label_path,
            "label affine differs from the image affine, so the label is not on the image's "
            f"voxels: {_geometry_difference(label, image)}",
        )
    data = np.asanyarray(label.dataobj)
    if np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).all():
        n_bad = int((~np.isfinite(data)).sum())
        raise InputError(label_path, f"{n_bad} NaN or Inf values in a label volume")
    values = np.unique(data)
    allowed = set(int(v) for v in allowed_labels)
    bad = [v for v in values.tolist() if v != int(v) or int(v) not in allowed]
    # a CT's HU (air negative), not lesions numbered 1 to 40 (named as unknown values below)
    if len(bad) > LABEL_MAX_UNKNOWN and values[0] < 0:
        raise InputError(
            label_path,
            f"{values.size:,} distinct values from {values[0]:.4g} to {values[-1]:.4g}: an "
            "image, not a label map (image and label swapped?)",
        )
    if bad:
        raise InputError(
            label_path, f"unknown label values {bad[:5]}; expected a subset of {sorted(allowed)}"
        )
    if values.size and values[0] != 0:  # background is 0 in every mapping
        raise InputError(
            label_path,
            "no background voxel (every voxel is label "
            f"{' or '.join(str(int(v)) for v in values)}): not a segmentation of a CT",
        )
    # uint8 unless a layout stores larger values (an nnU-Net label 300), which its mapping
    # turns into kdseg's 0/1/2 afterwards: a cast first would wrap 300 to 44
    return data.astype(np.uint8 if max(allowed, default=0) <= 255 else np.int64)


LABEL_MAX_UNKNOWN = 16
"""More unknown values than this, negative ones among them, make a label volume an image
(a CT given as the label)."""


def _geometry_difference(label: nib.Nifti1Image, image: nib.Nifti1Image) -> str:
    """How ``label``'s voxel grid differs from ``image``'s, in a few words: no orientation in
    its header, another orientation (an axis flipped or swapped), other voxel sizes, or a shift
    of its origin (in mm and in the image's voxels)."""
    header = label.header
    if int(header["qform_code"]) == 0 and int(header["sform_code"]) == 0:
        return "its header gives no orientation (qform_code and sform_code are 0)"
    mine, theirs = nib.aff2axcodes(label.affine), nib.aff2axcodes(image.affine)
    if mine != theirs:
        return f"its axes point {''.join(mine)}, the image's {''.join(theirs)}"
    sizes, expected = np.asarray(voxel_sizes(label)), np.asarray(voxel_sizes(image))
    if not np.allclose(sizes, expected, atol=AFFINE_TOLERANCE):
        shown = " x ".join(f"{s:.4g}" for s in sizes), " x ".join(f"{s:.4g}" for s in expected)
        return f"its voxels are {shown[0]} mm, the image's {shown[1]} mm"
    shift = np.asarray(label.affine, float)[:3, 3] - np.asarray(image.affine, float)[:3, 3]
    if np.abs(shift).max() > AFFINE_TOLERANCE:
        voxels = np.linalg.solve(np.asarray(image.affine, float)[:3, :3], shift)

        def shown(vector: np.ndarray) -> str:
            return ", ".join(f"{v:.3g}" for v in np.round(vector, 4) + 0.0)  # no -0

        return f"its origin is shifted by ({shown(shift)}) mm, ({shown(voxels)}) voxels"
    worst = float(np.abs(np.asarray(label.affine) - np.asarray(image.affine)).max())
    return f"its axes are turned (affine entries differ by up to {worst:.3g})"
