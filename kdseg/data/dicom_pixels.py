"""Read the pixels of a validated DICOM series and convert them to Hounsfield units.

Split out of :mod:`kdseg.data.dicom` (the public entry): the pixel half of a read, once
:mod:`kdseg.data.dicom_geometry` has validated the headers and fixed the stacking order. Each
slice's slope and intercept are applied (refused unless finite numbers, a slope of 0 refused),
into one Fortran-ordered (columns, rows, slices) volume, float32, or int16 where that holds
every HU exactly (half the memory; a rescale it cannot hold is seen in the headers first).
Compressed pixel data no installed plugin decodes is refused saying what to install. pydicom
alone, no torch or MONAI (the ONNX deploy path reads a series through this).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import UID

from kdseg.data.dicom_files import _unreadable
from kdseg.errors import InputError

RESCALE_INTERCEPT = -1024.0
"""Intercept :func:`~kdseg.data.dicom_write.write_dicom_series` stores (stored value = HU +
1024, the CT convention)."""


def _whole_rescale(path: Path, ds: pydicom.Dataset) -> bool:
    """Whether a slice's header rescale keeps whole pixel values whole (slope 1, a whole
    intercept): what an int16 read needs, known before its pixels are read."""
    slope = _rescale(ds, path, "RescaleSlope", 1.0)
    return slope == 1 and _rescale(ds, path, "RescaleIntercept", 0.0).is_integer()


def _read_pixels(
    ordered: list[tuple[Path, pydicom.Dataset]], shape: tuple[int, int], int16: bool
) -> np.ndarray | None:
    """The series' HU as a (columns, rows, slices) volume in Fortran order, int16 or float32;
    None (the int16 volume freed) at the first slice whose HU int16 does not hold."""
    # Fortran order, as nibabel reads a NIfTI file: each slice one block, so the steps after
    # the read (the HU check, preprocessing slice by slice) run as fast as on a NIfTI input.
    # np.stack of the planes put the slice axis innermost, and held the volume twice.
    volume = np.empty((*shape, len(ordered)), np.int16 if int16 else np.float32, "F")
    for k, (path, _) in enumerate(ordered):
        if not _hounsfield(path, volume[:, :, k]):
            return None
    return volume


def _hounsfield(path: Path, out: np.ndarray) -> bool:
    """One slice's pixels in HU (slope and intercept applied) into ``out``, a (columns, rows)
    float32 or int16 array (array axis 0 runs along a row of the pixel matrix) of the series'
    matrix, which the pixel data must have. False, ``out`` left as it was, where ``out`` is
    int16 and does not hold these HU exactly (:func:`_whole_hounsfield`)."""
    try:
        ds = pydicom.dcmread(path, force=True)  # force: a slice without a preamble
    except OSError as exc:
        raise _unreadable(path, exc) from None
    except Exception as exc:  # noqa: BLE001  (a file cut short after its header was read)
        raise InputError(path, f"unreadable DICOM file ({exc})") from None
    _require_decoder(ds, path)
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # noqa: BLE001  (undecodable or truncated pixel data, ...)
        first = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise InputError(path, f"cannot read the DICOM pixel data ({first})") from None
    if pixels.ndim != 2:
        raise InputError(path, f"pixel data of shape {pixels.shape}, not one grey-level slice")
    if pixels.shape != out.shape[::-1]:  # the file changed since its header was read
        raise InputError(
            path,
            f"pixel data of {pixels.shape[0]} x {pixels.shape[1]}, not the series' "
            f"{out.shape[1]} x {out.shape[0]} (Rows x Columns); read the series again",
        )
    slope = _rescale(ds, path, "RescaleSlope", 1.0)
    intercept = _rescale(ds, path, "RescaleIntercept", 0.0)
    if slope == 0:  # every pixel would read as the intercept: no image left
        raise InputError(path, "RescaleSlope is 0; no HU can be read from these pixels")
    if out.dtype.kind == "i":
        return _whole_hounsfield(pixels, slope, intercept, out)
    if (
        slope == 1
        and pixels.dtype.kind in "biu"
        and pixels.dtype.itemsize <= 2
        and _exact_in_float32(intercept)
    ):
        # 16-bit integers plus a whole intercept: every sum is a whole number below 2**24,
        # exact in float32, so float32 gives the values the float64 sum rounds to (CT's usual
        # rescale, in two passes over the slice instead of five)
        out[...] = pixels.T
        if intercept:
            out += np.float32(intercept)
        return True
    out[...] = (pixels.astype(np.float64) * slope + intercept).T  # rounded to float32 here
    return True


def _whole_hounsfield(pixels: np.ndarray, slope: float, intercept: float, out: np.ndarray) -> bool:
    """``pixels * slope + intercept``, transposed, into integer ``out`` where these HU are
    whole numbers within its range (slope 1, a whole intercept, integer pixels); False,
    ``out`` untouched, otherwise."""
    if slope != 1 or pixels.dtype.kind not in "iu" or not float(intercept).is_integer():
        return False
    shift, limits = int(intercept), np.iinfo(out.dtype)
    if int(pixels.min()) + shift < limits.min or int(pixels.max()) + shift > limits.max:
        return False
    np.add(pixels.T, shift, out=out, dtype=np.int64, casting="unsafe")  # exact: in range
    return True


def _exact_in_float32(value: float) -> bool:
    """Whether ``value`` is a whole number that a 16-bit integer plus it stays below 2**24 in
    magnitude (every such sum is exact in float32)."""
    return float(value).is_integer() and abs(value) <= 2**24 - 2**16


def _require_decoder(ds: pydicom.Dataset, path: Path) -> None:
    """Refuse compressed pixel data that no installed plugin decodes, saying what to install
    (PACS exports are often JPEG Lossless, which pydicom alone does not read)."""
    from pydicom.pixels import get_decoder

    raw = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if raw is None or not str(raw).strip():  # empty: absent, as pydicom takes it
        return
    syntax = UID(str(raw).strip())
    try:
        compressed = syntax.is_compressed
    except ValueError:  # a private or unknown syntax: pydicom cannot tell how it is encoded
        raise InputError(
            path,
            f"transfer syntax '{syntax}' is not one kdseg can read (a private or unknown "
            "encoding); export the series as Explicit VR Little Endian",
        ) from None
    if not compressed:
        return
    try:
        available = get_decoder(syntax).is_available
    except NotImplementedError:  # a syntax pydicom has no decoder for at all
        available = False
    if not available:
        raise InputError(
            path,
            f"pixel data compressed as {syntax.name}, which no installed decoder reads; "
            "pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg, or decompress the "
            "series first (gdcmconv --raw, dcmdjpeg)",
        )


def _rescale(ds: pydicom.Dataset, path: Path, keyword: str, default: float) -> float:
    """A slice's rescale value (``default`` where it is absent or empty), refused unless it is
    one finite number."""
    value = getattr(ds, keyword, None)
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise InputError(path, f"{keyword} is {value!r}, not a finite number")
    return number
