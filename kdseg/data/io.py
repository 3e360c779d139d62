"""Reading and writing CT volumes with geometry checks.

Every image that enters kdseg passes :func:`load_volume` (NIfTI file or DICOM series folder),
and every label pair passes :func:`check_pair`, so a corrupt, truncated, non-3D or mismatched
file is rejected with one clear line that names it (an :class:`~kdseg.errors.InputError`).
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterable
from pathlib import Path

import nibabel as nib
import numpy as np

from kdseg.data.niigz import load_nifti, save_nifti
from kdseg.errors import InputError, atomic_path

NIFTI_SUFFIXES = (".nii", ".nii.gz")
AFFINE_TOLERANCE = 1e-3


def is_nifti(path: str | Path) -> bool:
    """True when ``path`` names a NIfTI file by its extension."""
    return str(path).endswith(NIFTI_SUFFIXES)


def load_volume(path: str | Path) -> nib.Nifti1Image:
    """Load a 3D volume from a NIfTI file or a DICOM series folder, data read eagerly.

    Raises :class:`InputError` for a missing, unreadable, truncated or non-3D input.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found")
    if path.is_dir():
        from kdseg.data.dicom import load_dicom_series

        return load_dicom_series(path)
    if not is_nifti(path):
        raise InputError(path, "not a NIfTI file (.nii or .nii.gz) nor a DICOM series folder")
    try:
        img = load_nifti(path)
        data = np.asanyarray(img.dataobj)
    except (
        OSError,
        EOFError,
        ValueError,
        zlib.error,
        gzip.BadGzipFile,
        nib.filebasedimages.ImageFileError,
    ) as exc:
        raise InputError(
            path, f"cannot read NIfTI ({type(exc).__name__}: {exc}); corrupt or truncated?"
        ) from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputError(path, f"expected a 3D volume, got shape {tuple(data.shape)}")
    return nib.Nifti1Image(data, img.affine, img.header)


def check_pair(
    image: nib.Nifti1Image,
    label: nib.Nifti1Image,
    label_path: str | Path,
    allowed_labels: Iterable[int],
) -> np.ndarray:
    """Check that ``label`` fits ``image`` (shape, affine, label values); return the label array.

    Real datasets store labels as float or int; values must be whole numbers from
    ``allowed_labels``.
    """
    if label.shape != image.shape:
        raise InputError(
            label_path, f"label shape {label.shape} differs from image shape {image.shape}"
        )
    if not np.allclose(label.affine, image.affine, atol=AFFINE_TOLERANCE):
        raise InputError(
            label_path, "label affine differs from the image affine (not the same geometry)"
        )
    data = np.asanyarray(label.dataobj)
    values = np.unique(data)
    allowed = set(int(v) for v in allowed_labels)
    bad = [v for v in values.tolist() if v != int(v) or int(v) not in allowed]
    if bad:
        raise InputError(
            label_path, f"unknown label values {bad[:5]}; expected a subset of {sorted(allowed)}"
        )
    return data.astype(np.uint8)


def save_label(label: np.ndarray, reference: nib.Nifti1Image, path: str | Path) -> Path:
    """Write ``label`` as uint8 NIfTI with ``reference``'s affine and header, atomically."""
    if label.shape != reference.shape:
        raise ValueError(f"label shape {label.shape} does not match reference {reference.shape}")
    header = reference.header.copy()
    header.set_data_dtype(np.uint8)
    out = nib.Nifti1Image(label.astype(np.uint8, copy=False), reference.affine, header)
    out.set_qform(reference.affine, code=1)
    out.set_sform(reference.affine, code=1)
    path = Path(path)
    with atomic_path(path, suffix=".nii.gz" if str(path).endswith(".gz") else ".nii") as tmp:
        save_nifti(out, tmp)
    return path
