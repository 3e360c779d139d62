"""Reading and writing CT volumes with geometry checks.

Every image that enters kdseg passes :func:`load_volume` (NIfTI file or DICOM series folder),
and every label pair :func:`kdseg.data.pairs.check_pair`, so a corrupt, truncated, non-3D or
mismatched file is rejected with one clear line that names it (an
:class:`~kdseg.errors.InputError`), and so is garbage that would otherwise pass through
silently: NaN / Inf voxels, a constant volume, a header that promises more data than the file
holds, RGB or complex voxels, a singular affine, a voxel scaling that is not a number or
that nibabel would drop, a voxel size of zero or one no CT has, values
that cannot be Hounsfield units (:mod:`kdseg.data.hounsfield`: beyond any CT scale, mostly
above dense bone, none negative, or in tenths of HU).
Numpy and nibabel only (no torch): the ONNX deploy path reads through this module.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import io
import logging
import math
import os
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from kdseg.data.hounsfield import HU_CHECK, check_hounsfield
from kdseg.data.niigz import (
    SLACK_BYTES,
    StoredSizes,
    is_gzip_name,
    is_nifti2,
    load_nifti,
    save_nifti,
    stored_sizes,
    stream_end_problem,
)
from kdseg.data.preprocess_config import SPACING_MM  # voxel sizes a CT can have
from kdseg.errors import InputError, atomic_path

NIFTI_SUFFIXES = (".nii", ".nii.gz")
AFFINE_TOLERANCE = 1e-3
NONFINITE = ("error", "min", "zero")
"""What ``nonfinite=`` may say about NaN / Inf voxels in an image."""
MAX_DEFLATE_RATIO = 1032
SOURCE_HEADER = "kdseg_source_header"
"""Key in a loaded image's ``extra`` for the stored header when it differs in shape (a
singleton fourth axis dropped on reading); :func:`label_image` writes labels with it."""
LABEL_DESCRIP = b"kdseg label"
"""The NIfTI ``descrip`` of every label kdseg writes: how a later run knows the file is its own
and may be replaced (see :func:`written_by_kdseg`)."""


def is_nifti(path: str | Path) -> bool:
    """True when ``path`` names a NIfTI file by its extension, in small letters or in capitals
    (``B.NII.GZ``, as some scanners export; nibabel reads both, and a gzip is told by
    :func:`~kdseg.data.niigz.is_gzip_name` in any case). Not a suffix of mixed case
    (:func:`mixed_case_nifti`)."""
    name = str(path)
    return name.endswith(NIFTI_SUFFIXES) or name.endswith(_NIFTI_CAPITALS)


_NIFTI_CAPITALS = tuple(suffix.upper() for suffix in NIFTI_SUFFIXES)


def mixed_case_nifti(path: str | Path) -> InputError | None:
    """The refusal of a NIfTI suffix of mixed case (``c.Nii``, ``c.nii.GZ``), else None:
    nibabel looks for its file under another name (``c.nii``) and fails, so it is renamed."""
    if is_nifti(path) or not is_nifti(Path(path).name.lower()):
        return None
    return InputError(
        path, "a NIfTI suffix of mixed case, which nibabel cannot read; name it .nii.gz or .nii"
    )


def broken_link(path: str | Path) -> str | None:
    """What is wrong with ``path`` when it is a symbolic link that leads to no file: a link to
    nothing, or a symlink loop (a link that leads back to itself, which would otherwise read
    as a file not found); None when it is no link or leads to a file or folder."""
    path = Path(path)
    if not path.is_symlink():
        return None
    try:
        path.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"a symlink loop ({os.readlink(path)} leads back to it); point it at the scan"
        return f"a link to nothing ({os.readlink(path)} is missing)"
    return None


def nifti_stem(path: str | Path) -> str:
    """The file name of ``path`` without its NIfTI suffix (``B.NII.GZ`` -> ``B``)."""
    name = Path(path).name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


UNORIENTED = ("error", "analyze")
"""What ``unoriented=`` may say about a NIfTI whose header gives no orientation."""


def check_choice(key: str, value: Any, choices: tuple[str, ...]) -> None:
    """Refuse an option ``key=value`` that is not one of ``choices``, naming them."""
    if value not in choices:
        raise InputError(None, f"{key}={value}: use one of {', '.join(choices)}")


def check_unoriented(unoriented: str) -> None:
    """Refuse an ``unoriented=`` value that is not one of :data:`UNORIENTED`."""
    check_choice("unoriented", unoriented, UNORIENTED)


def require_orientation(image: nib.Nifti1Image, source: Path, unoriented: str = "error") -> None:
    """Refuse a NIfTI whose header places no voxel in the patient (qform and sform codes 0):
    nibabel then guesses the old ANALYZE layout, left and right included, and a model trained
    on oriented scans sees the patient mirrored whenever the guess is wrong. The label would
    sit on the input's voxels, wrong without a word. ``unoriented=analyze`` takes the guess,
    for a model trained on files written the same way (``kdseg-prepare`` reads them so).
    For the commands that label scans with a model: kdseg-predict and kdseg-pseudolabel."""
    check_unoriented(unoriented)
    header = image.header
    if (
        unoriented == "error"
        and Path(source).is_file()
        and int(header["qform_code"]) == 0
        and int(header["sform_code"]) == 0
    ):
        raise InputError(
            source,
            "the header gives no orientation (qform_code and sform_code are 0), so left and "
            "right are unknown; give it the scan's qform or sform first, or pass "
            "unoriented=analyze if the model was trained on files written the same way",
        )


def load_volume(
    path: str | Path,
    nonfinite: str | None = None,
    role: str = "image",
    dicom_int16: bool = False,
    hu_check: str | None = None,
) -> nib.Nifti1Image:
    """Load a 3D volume from a NIfTI file or a DICOM series folder, data read eagerly and checked.

    Raises :class:`InputError` for a missing, unreadable, truncated or non-3D input, a header
    that promises more data than the file holds (checked before anything is allocated), an
    RGB or complex data type, a singular affine, NaN / Inf voxels and, for ``role="image"``, a
    constant volume, a voxel size no CT has and values that cannot be Hounsfield units.
    ``nonfinite`` decides about NaN / Inf in an image: ``None`` (refuse, the default), ``error``
    (refuse, and the message offers the other two: for commands with a ``nonfinite=`` option),
    ``min`` (replace by the volume's finite minimum, i.e. air in CT) or ``zero``. A label
    (``role="label"``) with NaN / Inf is always refused; a constant label is fine.
    ``dicom_int16``: a DICOM series comes as int16 where that holds its HU exactly, float32
    otherwise (:func:`~kdseg.data.dicom.load_dicom_series`).
    ``hu_check``: an image that looks like a CT in tenths of HU (air near -10000) is refused
    (``None``; ``error`` for commands with a ``hu_check=`` option, whose message offers the
    other) or let through with a Python warning (``warn``).
    """
    if nonfinite is not None:
        check_choice("nonfinite", nonfinite, NONFINITE)
    if hu_check is not None:
        check_choice("hu_check", hu_check, HU_CHECK)
    path = Path(path)
    if not path.exists():
        raise InputError(path, broken_link(path) or "file not found")
    if path.is_dir():
        from kdseg.data.dicom import load_dicom_series

        series = load_dicom_series(path, int16=dicom_int16)
        return check_volume(series, path, nonfinite, role, hu_check)
    if not is_nifti(path):
        if (refusal := mixed_case_nifti(path)) is not None:
            raise refusal
        if _is_dicom_file(path):
            raise InputError(path, f"one DICOM slice; pass its series folder: input={path.parent}")
        raise InputError(path, "not a NIfTI file (.nii or .nii.gz) nor a DICOM series folder")
    if not is_gzip_name(path) and path.is_file():
        with open(path, "rb") as f:
            if f.read(2) == b"\x1f\x8b":
                raise InputError(path, "gzip-compressed data named .nii; name it .nii.gz")
    try:
        _check_raw_header(path)
        sizes = stored_sizes(path) if is_gzip_name(path) else None  # read once, passed on
        if sizes is not None and sizes.excess > SLACK_BYTES:
            _refuse_padded_gzip(path, sizes)
        with _quiet_nibabel(), warnings.catch_warnings():  # its header fixes; one line only
            warnings.simplefilter("ignore")
            img = load_nifti(path, sizes=sizes)
        _check_header(img, path, None if sizes is None else sizes.isize)
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
    extra = {}
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
        extra[SOURCE_HEADER] = img.header  # a label written for it gets its 4-D shape back
    if data.ndim != 3 or 0 in data.shape:
        raise InputError(path, f"expected a 3D volume, got shape {tuple(img.shape)}")
    volume = type(img)(data, img.affine, img.header, extra=extra)  # NIfTI-1 or -2 as stored
    return check_volume(volume, path, nonfinite, role, hu_check)


def _is_dicom_file(path: Path) -> bool:
    """Whether ``path`` is a file with a DICOM preamble (``DICM`` at byte 128) or suffix."""
    from kdseg.data.dicom_files import DICOM_SUFFIXES  # pydicom: only for a refusal's wording

    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    with contextlib.suppress(OSError), open(path, "rb") as f:
        return f.read(132)[128:] == b"DICM"
    return False


def _refuse_padded_gzip(path: Path, sizes: StoredSizes) -> None:
    """Refuse a ``.nii.gz`` whose gzip trailer says its stream holds ``sizes.excess`` bytes
    beyond the header's image. A file cut short has no trailer (its last four bytes are
    compressed data), so the stream is first decompressed, counted and dropped, up to the
    image plus :data:`SLACK_BYTES` (never the claimed excess): a cut file is named as
    truncated, and a whole stream followed by NUL bytes (which shift the four bytes read as
    its trailer; gzip readers skip them) is let through to be read."""
    problem = stream_end_problem(path, limit=sizes.expected + SLACK_BYTES + 1)
    if problem == "whole":  # the trailer read was not the stream's (NUL bytes after it)
        return
    if problem == "truncated":
        raise InputError(
            path, "gzip stream ends before its end marker; truncated file (copy it again)"
        )
    if problem is not None:
        raise InputError(path, f"gzip stream is {problem}; damaged file")
    raise InputError(
        path,
        f"decompresses to {sizes.excess:,} bytes more than its header's image; "
        "refused before reading it all (padded or damaged file)",
    )


@contextlib.contextmanager
def _quiet_nibabel() -> Iterator[None]:
    """Silence every message of nibabel's logger while inside: its header fixes (level 30-35)
    and its header-check problems (level 40-45, a bad magic string, an unknown data type),
    which reach stderr through its own handler and the root logger (a command's console
    handler would print each as one more error line before the one that names the file).
    The refusal that follows says what is wrong; nibabel's own suppressor only removes its
    handlers. The level is restored on leaving."""
    logger = nib.imageglobals.logger
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(level)


def _check_raw_header(path: Path) -> None:
    """Refuse, from the header as stored and before nibabel reads it, a voxel size (``pixdim``)
    that is zero or not finite on a spatial axis, which nibabel quietly makes 1 mm (a negative
    one is taken as its absolute value, as nibabel does), and a scaling nibabel would drop
    or fail on (:func:`_check_scaling`)."""
    opener = gzip.open if is_gzip_name(path) else open
    with opener(path, "rb") as f:
        head = f.read(540)
    klass = nib.Nifti2Header if is_nifti2(head) else nib.Nifti1Header
    if len(head) < klass.sizeof_hdr:
        return  # too short for a header: nibabel's own error names it
    with warnings.catch_warnings():  # garbage after the header (not a NIfTI): read below
        warnings.simplefilter("ignore")
        header = klass.from_fileobj(io.BytesIO(head), check=False)
    ndim = min(max(int(header["dim"][0]), 1), 3)
    zooms = np.asarray(header["pixdim"][1 : 1 + ndim], dtype=float)
    bad = (zooms == 0) | ~np.isfinite(zooms)
    if bad.any():
        axis = int(np.flatnonzero(bad)[0])
        raise InputError(
            path,
            f"voxel size (pixdim) is {zooms[axis]:g} on axis {axis}: "
            "the header does not say how large a voxel is; broken header",
        )
    _check_scaling(header, path)


def _check_scaling(header: nib.Nifti1Header, path: Path) -> None:
    """Refuse a voxel scaling (``scl_slope``, ``scl_inter``) that is garbage or that nibabel
    would drop without a word. A slope of 0 or NaN means "no scaling" (NaN and NaN is what
    nibabel itself writes for an unscaled image, 0 and 0 what older writers do), and is
    accepted with an intercept of 0 or NaN. Refused: an infinite slope or intercept (nibabel
    drops the scaling, the intercept included: the wrong HU), an unset slope beside an
    intercept that is a number other than 0 (dropped the same way), and a NaN intercept
    beside a slope that scales (nibabel's own error names no field)."""
    slope, inter = float(header["scl_slope"]), float(header["scl_inter"])
    scales = math.isfinite(slope) and slope != 0
    field, value = None, 0.0
    if math.isinf(slope):
        field, value = "scl_slope", slope
    elif math.isinf(inter) or (scales and math.isnan(inter)):
        field, value = "scl_inter", inter
    elif not scales and math.isfinite(inter) and inter != 0:
        raise InputError(
            path,
            f"scl_slope is {slope:g} (no scaling) beside scl_inter {inter:g}, which would be "
            "dropped: the voxels would not be the scan's values; broken header",
        )
    if field is not None:
        raise InputError(
            path, f"{field} is {value:g}: the voxel scaling is not a finite number; broken header"
        )


def _check_header(img: nib.Nifti1Image, path: Path, isize: int | None = None) -> None:
    """Refuse unsupported data types, dimensions that are not positive and headers that
    promise more bytes than the file holds (``isize``: a ``.nii.gz``'s trailer size where
    already read, :func:`_data_bytes`)."""
    if any(n < 1 for n in img.shape):  # a negative one: nibabel's memory map fails obscurely
        raise InputError(
            path, f"header dimensions {tuple(img.shape)} are not all positive; broken header"
        )
    dtype = np.dtype(img.get_data_dtype())
    if dtype.fields is not None or dtype.kind not in "biuf":
        kind = "RGB" if dtype.fields is not None else {"c": "complex"}.get(dtype.kind, "")
        raise InputError(
            path, f"unsupported data type {kind or dtype} ({dtype}); expected integer or float CT"
        )
    _check_affine(img.affine, path)
    offset = int(getattr(img.dataobj, "offset", 0))  # where nibabel starts reading voxels
    expected = offset + math.prod(img.shape) * dtype.itemsize
    available, exact = _data_bytes(path, expected, isize)
    if available < expected:
        raise InputError(
            path,
            f"header promises {'x'.join(map(str, img.shape))} {dtype} voxels "
            f"({expected:,} bytes with the header) but the file "
            f"{'holds' if exact else 'can hold at most'} {available:,}; "
            "truncated, or wrong header dimensions",
        )


def _data_bytes(path: Path, expected: int, isize: int | None = None) -> tuple[int, bool]:
    """Bytes the (uncompressed) file holds, or at least ``expected`` when it holds enough,
    and whether that count is exact (not an upper bound).

    For gzip the trailer's size field (modulo 4 GiB; ``isize`` where the caller read it, else
    read here) answers without decompressing; only when it is short (or the volume is larger
    than 4 GiB) is the stream counted, in chunks, up to ``expected``. Deflate cannot compress
    more than 1032:1, which bounds hopeless headers fast.
    """
    size = path.stat().st_size
    if not is_gzip_name(path):
        return size, True
    if expected > size * MAX_DEFLATE_RATIO:
        return size * MAX_DEFLATE_RATIO, False
    trailer = isize
    if trailer is None:
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
    img: nib.Nifti1Image,
    path: str | Path,
    nonfinite: str | None = None,
    role: str = "image",
    hu_check: str | None = None,
) -> nib.Nifti1Image:
    """The sanity checks of :func:`load_volume` on a loaded image (NIfTI or DICOM)."""
    _check_affine(img.affine, path)
    _check_spacing(img.affine, path)
    data = np.asanyarray(img.dataobj)
    floating = np.issubdtype(data.dtype, np.floating)
    low = high = None
    if data.size and (floating or role == "image"):
        low, high = data.min(), data.max()
    # NaN propagates through min and max, and an Inf is one of them: finite extremes mean
    # finite voxels, and the count of NaN / Inf (a pass and a mask of the volume's size,
    # 0.06 s at 512 x 512 x 150) runs only when they are not
    if floating and not (low is not None and np.isfinite(low) and np.isfinite(high)):
        bad = ~np.isfinite(data)
        n_bad = int(bad.sum())
        if n_bad == data.size:
            raise InputError(path, "every voxel is NaN or Inf; no image data")
        if n_bad and (role != "image" or nonfinite in (None, "error")):
            # the hint only where the command has the option (it passes nonfinite="error")
            offer = role == "image" and nonfinite == "error"
            hint = " (nonfinite=min or nonfinite=zero replaces them)" if offer else ""
            raise InputError(path, f"{n_bad} of {data.size} voxels are NaN or Inf; refused{hint}")
        if n_bad:
            fill = float(data[~bad].min()) if nonfinite == "min" else 0.0
            fixed = np.where(bad, data.dtype.type(fill), data)
            img = type(img)(fixed, img.affine, img.header, extra=img.extra)
            data = np.asanyarray(img.dataobj)
            low, high = data.min(), data.max()
    if role == "image":
        _check_in_plane(img, path)
    if role == "image" and data.size:
        if low == high:
            raise InputError(path, f"constant volume (every voxel is {data.flat[0]}); not an image")
        check_hounsfield(data, float(low), float(high), path, hu_check)
    return img


def _check_in_plane(img: nib.Nifti1Image, path: str | Path) -> None:
    """Refuse an image less than 2 voxels wide along a left-right or front-back axis (one row
    of a scan, not a slice of one); a single axial slice is fine."""
    codes = nib.aff2axcodes(img.affine)
    for axis, code in enumerate(codes):
        if code not in ("S", "I") and img.shape[axis] < 2:
            raise InputError(
                path,
                f"the image is {img.shape[axis]} voxel wide along {code} (shape "
                f"{tuple(img.shape)}): not a CT slice",
            )


def voxel_sizes(img: nib.Nifti1Image) -> tuple[float, float, float]:
    """Voxel size in mm along the image's first three array axes, from the affine that places
    the voxels (sform or qform), not the header's ``pixdim``, which a writer may leave at 1 mm
    beside a valid sform."""
    sizes = np.linalg.norm(np.asarray(img.affine, dtype=float)[:3, :3], axis=0)
    return tuple(float(s) for s in sizes)  # type: ignore[return-value]


def _check_spacing(affine: np.ndarray, path: str | Path) -> None:
    """Refuse voxel sizes no CT has (:data:`SPACING_MM`): a header in the wrong unit or scale."""
    sizes = np.linalg.norm(np.asarray(affine, dtype=float)[:3, :3], axis=0)
    low, high = SPACING_MM
    if (sizes < low).any() or (sizes > high).any():
        shown = " x ".join(f"{s:.3g}" for s in sizes)
        raise InputError(
            path,
            f"voxel size {shown} mm is outside {low:g}-{high:g} mm; "
            "the header's unit or scale is wrong",
        )


def _source_header(image: nib.Nifti1Image) -> nib.Nifti1Header | None:
    """The header ``image``'s file stored when reading changed its shape (see SOURCE_HEADER)."""
    return image.extra.get(SOURCE_HEADER) if isinstance(image.extra, dict) else None


def _as_stored(
    data: np.ndarray, image: nib.Nifti1Image, header: nib.Nifti1Header
) -> nib.Nifti1Image:
    """``data`` (``image``'s shape) in the stored shape with ``header``'s qform and sform as
    they are, in ``image``'s NIfTI version."""
    source = _source_header(image)
    if source is not None:
        data = data.reshape(source.get_data_shape())
    klass = type(image) if isinstance(image, nib.Nifti1Image) else nib.Nifti1Image
    return klass(data, header.get_best_affine(), header)


def stored_image(image: nib.Nifti1Image) -> nib.Nifti1Image:
    """``image`` as its file stored it: a singleton fourth axis dropped on reading is back."""
    source = _source_header(image)
    if source is None:
        return image
    return _as_stored(np.asanyarray(image.dataobj), image, source.copy())


def geometry_only(image: nib.Nifti1Image) -> nib.Nifti1Image:
    """``image`` without its voxels: the same class, shape, affine, header and ``extra``, on a
    read-only array of zeros that takes no memory (one element, broadcast).

    What writing a label and a report needs of the input (:func:`label_image`, the DICOM SEG
    writer, :func:`voxel_sizes`), so that the input's voxels can be freed first.
    """
    zeros = np.broadcast_to(np.zeros((), dtype=image.get_data_dtype()), image.shape)
    return type(image)(zeros, image.affine, image.header, extra=image.extra)


def label_image(label: np.ndarray, reference: nib.Nifti1Image) -> nib.Nifti1Image:
    """``label`` as a uint8 NIfTI image with ``reference``'s geometry, exactly as stored.

    The header is the input's: its qform and sform with their codes, its voxel sizes, its
    NIfTI version and (for an input stored with a singleton fourth axis) its 4-D shape, so a
    viewer places the label wherever it places the image. Only an image built in memory whose
    header does not give its affine gets that affine written (both forms, code 1). The CT's
    display range (``cal_min`` / ``cal_max``) is cleared and the intent set to a label map.
    """
    if label.shape != reference.shape:
        raise ValueError(f"label shape {label.shape} does not match reference {reference.shape}")
    source = _source_header(reference)
    header = (reference.header if source is None else source).copy()
    header.set_data_dtype(np.uint8)
    out = _as_stored(label.astype(np.uint8, copy=False), reference, header)
    if not np.allclose(out.affine, reference.affine, atol=1e-6):
        out = type(out)(np.asanyarray(out.dataobj), reference.affine, header)
        out.set_qform(reference.affine, code=1)
        out.set_sform(reference.affine, code=1)
    out.header["descrip"] = LABEL_DESCRIP
    out.header["cal_min"] = out.header["cal_max"] = 0  # the CT's display window: unset
    out.header.set_intent("label")  # NIFTI_INTENT_LABEL: viewers show classes, not a ramp
    return out


def written_by_kdseg(path: str | Path) -> bool:
    """True when ``path`` is a label kdseg wrote: a NIfTI whose ``descrip`` is
    :data:`LABEL_DESCRIP`, or a DICOM SEG whose manufacturer is kdseg. Anything else,
    unreadable files included, is somebody's data (False)."""
    path = Path(path)
    try:
        if is_nifti(path):
            with _quiet_nibabel():
                header = nib.load(str(path)).header
            return bytes(header["descrip"]).rstrip(b"\0") == LABEL_DESCRIP
        if path.suffix.lower() == ".dcm":
            import pydicom

            ds = pydicom.dcmread(path, stop_before_pixels=True)
            return str(getattr(ds, "Manufacturer", "")) == "kdseg"
    except Exception:  # noqa: BLE001 - a file that cannot be read is not ours
        return False
    return False


def nifti_suffix(path: str | Path) -> str:
    """``.nii.gz`` or ``.nii``: the extension a temporary for ``path`` must keep for nibabel."""
    return ".nii.gz" if is_gzip_name(path) else ".nii"


def save_label(label: np.ndarray, reference: nib.Nifti1Image, path: str | Path) -> Path:
    """Write ``label`` as uint8 NIfTI with ``reference``'s affine and header, atomically."""
    out = label_image(label, reference)
    path = Path(path)
    with atomic_path(path, suffix=nifti_suffix(path)) as tmp:
        save_nifti(out, tmp)
    return path
