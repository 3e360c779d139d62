"""Reading and writing CT volumes with geometry checks.

Every image that enters kdseg passes :func:`load_volume` (NIfTI file or DICOM series folder),
and every label pair passes :func:`check_pair`, so a corrupt, truncated, non-3D or mismatched
file is rejected with one clear line that names it (an :class:`~kdseg.errors.InputError`), and
so is garbage that would otherwise pass through silently: NaN / Inf voxels, a constant volume,
a header that promises more data than the file holds, RGB or complex voxels, a singular affine.
Numpy and nibabel only (no torch): the ONNX deploy path reads through this module.
"""

from __future__ import annotations

import gzip
import math
import zlib
from collections.abc import Iterable
from pathlib import Path

import nibabel as nib
import numpy as np

from kdseg.data.niigz import load_nifti, save_nifti
from kdseg.errors import InputError, atomic_path

NIFTI_SUFFIXES = (".nii", ".nii.gz")
AFFINE_TOLERANCE = 1e-3
NONFINITE = ("error", "min", "zero")
"""What ``nonfinite=`` may say about NaN / Inf voxels in an image."""
MAX_DEFLATE_RATIO = 1032


def is_nifti(path: str | Path) -> bool:
    """True when ``path`` names a NIfTI file by its extension."""
    return str(path).endswith(NIFTI_SUFFIXES)


def load_volume(path: str | Path, nonfinite: str = "error", role: str = "image") -> nib.Nifti1Image:
    """Load a 3D volume from a NIfTI file or a DICOM series folder, data read eagerly and checked.

    Raises :class:`InputError` for a missing, unreadable, truncated or non-3D input, a header
    that promises more data than the file holds (checked before anything is allocated), an
    RGB or complex data type, a singular affine, NaN / Inf voxels and, for ``role="image"``, a
    constant volume. ``nonfinite`` decides about NaN / Inf in an image: ``error`` (refuse, the
    default), ``min`` (replace by the volume's finite minimum, i.e. air in CT) or ``zero``. A
    label (``role="label"``) with NaN / Inf is always refused; a constant label is fine.
    """
    if nonfinite not in NONFINITE:
        raise InputError(None, f"nonfinite={nonfinite}: use one of {', '.join(NONFINITE)}")
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found")
    if path.is_dir():
        from kdseg.data.dicom import load_dicom_series

        return check_volume(load_dicom_series(path), path, nonfinite, role)
    if not is_nifti(path):
        raise InputError(path, "not a NIfTI file (.nii or .nii.gz) nor a DICOM series folder")
    try:
        img = load_nifti(path)
        _check_header(img, path)
        data = np.asanyarray(img.dataobj)
    except (
        OSError,
        EOFError,
        ValueError,
        zlib.error,
        gzip.BadGzipFile,
        nib.filebasedimages.ImageFileError,
        nib.spatialimages.HeaderDataError,
    ) as exc:
        raise InputError(
            path, f"cannot read NIfTI ({type(exc).__name__}: {exc}); corrupt or truncated?"
        ) from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputError(path, f"expected a 3D volume, got shape {tuple(data.shape)}")
    return check_volume(nib.Nifti1Image(data, img.affine, img.header), path, nonfinite, role)


def _check_header(img: nib.Nifti1Image, path: Path) -> None:
    """Refuse unsupported data types and headers that promise more bytes than the file holds."""
    dtype = np.dtype(img.get_data_dtype())
    if dtype.fields is not None or dtype.kind not in "biuf":
        kind = "RGB" if dtype.fields is not None else {"c": "complex"}.get(dtype.kind, "")
        raise InputError(
            path, f"unsupported data type {kind or dtype} ({dtype}); expected integer or float CT"
        )
    _check_affine(img.affine, path)
    offset = int(getattr(img.dataobj, "offset", 0))  # where nibabel starts reading voxels
    expected = offset + math.prod(img.shape) * dtype.itemsize
    available, exact = _data_bytes(path, expected)
    if available < expected:
        raise InputError(
            path,
            f"header promises {'x'.join(map(str, img.shape))} {dtype} voxels "
            f"({expected:,} bytes with the header) but the file "
            f"{'holds' if exact else 'can hold at most'} {available:,}; "
            "truncated, or wrong header dimensions",
        )


def _data_bytes(path: Path, expected: int) -> tuple[int, bool]:
    """Bytes the (uncompressed) file holds, or at least ``expected`` when it holds enough,
    and whether that count is exact (not an upper bound).

    For gzip the trailer's size field (modulo 4 GiB) answers without decompressing; only when it
    is short (or the volume is larger than 4 GiB) is the stream counted, in chunks, up to
    ``expected``. Deflate cannot compress more than 1032:1, which bounds hopeless headers fast.
    """
    size = path.stat().st_size
    if not str(path).endswith(".gz"):
        return size, True
    if expected > size * MAX_DEFLATE_RATIO:
        return size * MAX_DEFLATE_RATIO, False
    with open(path, "rb") as f:
        f.seek(max(size - 4, 0))
        trailer = int.from_bytes(f.read(4), "little")
    if expected < 2**32 and trailer >= expected:
        return trailer, True
    total = 0
    with gzip.open(path, "rb") as stream:
        while total < expected:
            chunk = stream.read(1 << 24)
            if not chunk:
                break
            total += len(chunk)
    return total, True


def _check_affine(affine: np.ndarray | None, path: str | Path) -> None:
    """Refuse an affine that maps the voxel grid onto less than a volume (or onto NaN)."""
    affine = np.asarray(affine, dtype=float)
    if not np.isfinite(affine).all() or np.linalg.matrix_rank(affine[:3, :3]) < 3:
        raise InputError(
            path, "singular affine (voxel axes of zero or non-finite size); broken header"
        )


def check_volume(
    img: nib.Nifti1Image, path: str | Path, nonfinite: str = "error", role: str = "image"
) -> nib.Nifti1Image:
    """The sanity checks of :func:`load_volume` on a loaded image (NIfTI or DICOM)."""
    _check_affine(img.affine, path)
    data = np.asanyarray(img.dataobj)
    if np.issubdtype(data.dtype, np.floating):
        bad = ~np.isfinite(data)
        n_bad = int(bad.sum())
        if n_bad == data.size:
            raise InputError(path, "every voxel is NaN or Inf; no image data")
        if n_bad and (role != "image" or nonfinite == "error"):
            hint = "" if role != "image" else " (nonfinite=min or nonfinite=zero replaces them)"
            raise InputError(path, f"{n_bad} of {data.size} voxels are NaN or Inf; refused{hint}")
        if n_bad:
            fill = float(data[~bad].min()) if nonfinite == "min" else 0.0
            fixed = np.where(bad, data.dtype.type(fill), data)
            img = nib.Nifti1Image(fixed, img.affine, img.header)
            data = np.asanyarray(img.dataobj)
    if role == "image" and data.size and data.min() == data.max():
        raise InputError(path, f"constant volume (every voxel is {data.flat[0]}); not an image")
    return img


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
    if np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).all():
        n_bad = int((~np.isfinite(data)).sum())
        raise InputError(label_path, f"{n_bad} NaN or Inf values in a label volume")
    values = np.unique(data)
    allowed = set(int(v) for v in allowed_labels)
    bad = [v for v in values.tolist() if v != int(v) or int(v) not in allowed]
    if bad:
        raise InputError(
            label_path, f"unknown label values {bad[:5]}; expected a subset of {sorted(allowed)}"
        )
    return data.astype(np.uint8)


def label_image(label: np.ndarray, reference: nib.Nifti1Image) -> nib.Nifti1Image:
    """``label`` as a uint8 NIfTI image with ``reference``'s affine and header."""
    if label.shape != reference.shape:
        raise ValueError(f"label shape {label.shape} does not match reference {reference.shape}")
    header = reference.header.copy()
    header.set_data_dtype(np.uint8)
    out = nib.Nifti1Image(label.astype(np.uint8, copy=False), reference.affine, header)
    out.set_qform(reference.affine, code=1)
    out.set_sform(reference.affine, code=1)
    return out


def nifti_suffix(path: str | Path) -> str:
    """``.nii.gz`` or ``.nii``: the extension a temporary for ``path`` must keep for nibabel."""
    return ".nii.gz" if str(path).endswith(".gz") else ".nii"


def save_label(label: np.ndarray, reference: nib.Nifti1Image, path: str | Path) -> Path:
    """Write ``label`` as uint8 NIfTI with ``reference``'s affine and header, atomically."""
    out = label_image(label, reference)
    path = Path(path)
    with atomic_path(path, suffix=nifti_suffix(path)) as tmp:
        save_nifti(out, tmp)
    return path
