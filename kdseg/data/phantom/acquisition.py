"""Acquisition and storage: the scanner's blur and noise, the stored orientation, NIfTI.

What turns the ideal HU volume into a file like a real one: correlated noise of a set
standard deviation and a Gaussian point-spread function (:func:`_acquire`), the reconstruction
circle, rounding and clipping to int16, then a drawn storage orientation (flipped and
permuted axes, :func:`_stored_axcodes`) and a NIfTI image whose affine matches it
(:func:`_nifti`).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, ornt_transform
from scipy import ndimage

from kdseg.data.phantom.config import BLUR_TRUNCATE, HU_MAX, HU_MIN, PhantomConfig
from kdseg.data.phantom.geometry import Grid


def _blur_sigmas(cfg: PhantomConfig, grid: Grid) -> list[float]:
    """Blur sigma per RAS axis in voxels; 0 where the truncated kernel would be one tap wide
    (thick slices), so that axis costs no filter pass."""
    sigmas = [cfg.blur_sigma_mm / s for s in grid.spacing]
    return [s if int(BLUR_TRUNCATE * s + 0.5) > 0 else 0.0 for s in sigmas]


def _kernel_gain(sigmas: Sequence[float]) -> float:
    """L2 norm of the discrete Gaussian kernel ``scipy.ndimage.gaussian_filter`` applies: the
    factor by which it shrinks the standard deviation of white noise."""
    gain = 1.0
    for sigma in sigmas:
        if sigma > 0:
            radius = int(BLUR_TRUNCATE * sigma + 0.5)
            w = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
            w /= w.sum()
            gain *= float(np.sqrt((w * w).sum()))
    return gain


def _acquire(
    hu: np.ndarray, grid: Grid, cfg: PhantomConfig, rng: np.random.Generator
) -> np.ndarray:
    """Simulate reconstruction: white noise plus the ideal image, blurred by one Gaussian PSF,
    so the noise gets CT's correlated texture and a standard deviation of ``noise_hu``; then
    -1024 outside the reconstruction circle, rounding and clipping to int16 [-1024, 3071].
    ``hu`` (the ideal image, float32) is used as the work buffer and overwritten."""
    sigmas = _blur_sigmas(cfg, grid)
    if cfg.noise_hu > 0:
        noise = rng.standard_normal(hu.shape, dtype=np.float32)
        noise *= np.float32(cfg.noise_hu / _kernel_gain(sigmas))
        hu += noise
        del noise
    if any(sigmas):
        ndimage.gaussian_filter(hu, sigmas, output=hu, mode="nearest", truncate=BLUR_TRUNCATE)
    if grid.recon_radius is not None:
        cx, cy = (grid.x[0] + grid.x[-1]) / 2, (grid.y[0] + grid.y[-1]) / 2
        outside = np.hypot(grid.x[:, None] - cx, grid.y[None, :] - cy) > grid.recon_radius
        hu[outside] = HU_MIN
    np.rint(hu, out=hu)
    np.clip(hu, HU_MIN, HU_MAX, out=hu)
    return hu.astype(np.int16)


def _stored_axcodes(cfg: PhantomConfig, rng: np.random.Generator) -> str:
    """Draw the stored orientation: each axis flipped with ``flip_prob``, and with
    ``permute_prob`` one of the five non-(x, y, z) axis orders."""
    letters = [pair[int(rng.random() < cfg.flip_prob)] for pair in ("RL", "AP", "SI")]
    orders = [p for p in itertools.permutations(range(3)) if p != (0, 1, 2)]
    permute, which = rng.random() < cfg.permute_prob, int(rng.integers(len(orders)))
    order = orders[which] if permute else (0, 1, 2)
    return "".join(letters[i] for i in order)


def _nifti(data: np.ndarray, grid: Grid, axcodes: str) -> nib.Nifti1Image:
    """A NIfTI image of the RAS array ``data`` stored in orientation ``axcodes``, with a
    matching affine (qform and sform, scanner coordinates, mm)."""
    transform = ornt_transform(axcodes2ornt("RAS"), axcodes2ornt(tuple(axcodes)))
    stored = np.ascontiguousarray(apply_orientation(data, transform))
    affine = grid.affine @ inv_ornt_aff(transform, data.shape)
    image = nib.Nifti1Image(stored, affine)
    image.header.set_xyzt_units("mm", "sec")
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    return image
