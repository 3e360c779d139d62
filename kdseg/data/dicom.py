"""Read a CT DICOM series into a NIfTI image (:mod:`kdseg.data.dicom_write` writes one).

Reading is pydicom's alone (slope/intercept applied, so values are HU; RAS affine), so the ONNX
deploy path reads a series without torch or MONAI. A validation first turns the usual ways a
series folder is wrong into one :class:`~kdseg.errors.InputError` line: no DICOM files, several
series in one folder, slices that are not CT or lie in different frames of reference, a rescale
to HU given on some slices only, an InstanceNumber that is no integer, a position or orientation
that is not finite numbers (or not two perpendicular unit vectors), missing slices (slice
positions along the slice normal more than ``GAP_TOLERANCE`` times the median spacing apart; a
gap in InstanceNumber alone is no missing slice: PACS renumber, and leave out localizers),
slices whose InstanceNumber order is not their spatial order (slices are stacked by
InstanceNumber), slices of different pixel sizes, and slices off the even, untilted grid a
NIfTI affine can describe (uneven spacing, gantry tilt: ``GRID_TOLERANCE``, at least
``GRID_FLOOR_MM``), which would otherwise be read with every slice misplaced. Files may come
in any order and with any names, with or without the 128-byte preamble; hidden files and
non-DICOM files are ignored (one named ``.dcm``, ``.dicom`` or ``.ima`` is refused: an empty or
cut copy of a slice), and so are DICOM files without an image position (a DICOMDIR, a report,
with or without the preamble; a CT image of the series without one is refused): exactly the
validated slices are read.

Array convention of both directions: a (X, Y, Z) volume, array axis 0 runs along the DICOM rows
(the column index of the pixel matrix), axis 1 along the columns and axis 2 across slices, which
is how MONAI's ``PydicomReader`` lays a series out (kdseg read series through it until
2026-12-06; the arrays and affines are equal).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from pydicom.misc import is_dicom
from pydicom.multival import MultiValue
from pydicom.uid import CTImageStorage

from kdseg.errors import InputError

GAP_TOLERANCE = 1.5
"""A step between neighbouring slices above this multiple of the median step is a missing slice."""

GRID_TOLERANCE = 0.05
"""How far (a share of the mean slice step, or of the pixel size in-plane) a slice may lie from
the evenly spaced, untilted grid a NIfTI affine describes before the series is refused: uneven
slice spacing and gantry tilt would otherwise be read with every slice silently misplaced."""

GRID_FLOOR_MM = 0.2
"""Offsets up to this many mm always pass: positions stored with one decimal are up to 0.1 mm
off an exact grid, which misplaces nothing."""

ORIENTATION_TOLERANCE = 1e-2
"""How far the direction cosines of ``ImageOrientationPatient`` may be from unit length and
from perpendicular (they are stored with a few decimals) before the slice is refused."""

RESCALE_INTERCEPT = -1024.0
"""Intercept :func:`~kdseg.data.dicom_write.write_dicom_series` stores (stored value = HU +
1024, the CT convention)."""

RAS_LPS = np.diag([-1.0, -1.0, 1.0])  # RAS <-> LPS (its own inverse)
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
"""File names a series folder holds only DICOM files under (any case)."""

_BARE_PROBES = 3
"""Files :func:`is_dicom_folder` tries to read as DICOM without the preamble when none has one."""

SERIES_HEADERS = "kdseg_series_headers"
"""Key in the ``extra`` of an image :func:`load_dicom_series` read: its slices' headers (pixel
data not read) in stacking order, for the DICOM SEG written for it (which so reads none)."""

_REQUIRED_TAGS = ("SeriesInstanceUID", "ImageOrientationPatient", "InstanceNumber", "Rows")
_MAX_LISTED = 5


def _series_files(folder: Path) -> list[tuple[Path, pydicom.Dataset | None]]:
    """The files of a series folder to read: those with a DICOM preamble (header None: not
    read yet), and those without one that pydicom still reads as a DICOM object (older exports;
    with the header their probe parsed). :func:`_read_headers` tells the image slices apart. A
    file named like DICOM that is neither (an empty or cut copy) is refused; others ignored."""
    files: list[tuple[Path, pydicom.Dataset | None]] = []
    for path in _visible_files(folder):
        if is_dicom(path):
            files.append((path, None))
        elif (bare := _bare_dataset(path)) is not None:
            files.append((path, bare))
        elif path.suffix.lower() in DICOM_SUFFIXES:
            size = path.stat().st_size
            raise InputError(
                path,
                f"named like a DICOM file but not one ({size:,} bytes; an empty or cut copy?); "
                "copy the series again",
            )
    return files


def _visible_files(folder: Path) -> list[Path]:
    """The files in ``folder`` by name, hidden ones (``.DS_Store``, ``._`` forks) left out."""
    return [p for p in sorted(folder.iterdir()) if not p.name.startswith(".") and p.is_file()]


#: the first two bytes of a DICOM object without the preamble: group 0x0002 or 0x0008,
#: little- or big-endian
_BARE_GROUPS = (b"\x02\x00", b"\x08\x00", b"\x00\x02", b"\x00\x08")


def _bare_dataset(path: Path) -> pydicom.Dataset | None:
    """The header (pixel data not read) of ``path`` if it is a DICOM object written without
    the preamble and ``DICM``: pydicom parses it and it has a SOPClassUID or SOPInstanceUID
    (an image slice, or a report, a localizer, ... that the header rules skip or refuse as
    they do with a preamble); else None. Such a file starts with a tag of group 0x0002 (file
    meta) or 0x0008 (identification), either byte order: anything else is not parsed at all
    (pydicom's ``force=True`` walks a file of zeros as empty elements, 13 s for 50 MB)."""
    try:
        with open(path, "rb") as f:
            head = f.read(2)
        if head not in _BARE_GROUPS:
            return None
        ds = pydicom.dcmread(path, force=True, stop_before_pixels=True, defer_size=4096)
        return ds if "SOPClassUID" in ds or "SOPInstanceUID" in ds else None
    except Exception:  # noqa: BLE001  (anything pydicom cannot parse is not DICOM)
        return None


def is_dicom_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder that holds at least one DICOM file: one with the preamble,
    else one of the first :data:`_BARE_PROBES` files (those named ``.dcm``, ``.dicom`` or
    ``.ima`` first) that pydicom reads without it (a series exported without preambles loads,
    so it is a series folder too). Cheap: it runs on every folder of a folder of inputs."""
    path = Path(path)
    if not path.is_dir():
        return False
    files = _visible_files(path)
    if any(is_dicom(p) for p in files):
        return True
    files.sort(key=lambda p: p.suffix.lower() not in DICOM_SUFFIXES)  # stable: names within
    return any(_bare_dataset(p) is not None for p in files[:_BARE_PROBES])


def _listed(items: list, limit: int = _MAX_LISTED) -> str:
    """``a, b, c`` with at most ``limit`` items shown."""
    shown = ", ".join(str(i) for i in items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def _read_headers(folder: Path) -> list[tuple[Path, pydicom.Dataset]]:
    """Headers of the image slices in ``folder`` (pixel data not read)."""
    files = _series_files(folder)
    if not files:
        raise InputError(folder, "no DICOM files")
    slices, unplaced, frames = [], [], []
    for path, ds in files:  # a file without the preamble comes parsed by its probe
        try:
            if ds is None:
                ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        except Exception as exc:  # a truncated or corrupt file
            raise InputError(path, f"unreadable DICOM file ({exc})") from exc
        if "ImagePositionPatient" not in ds:
            if ds.get("SOPClassUID") == CTImageStorage:  # a CT image must have one (Type 1)
                unplaced.append((path, ds.get("SeriesInstanceUID")))
            if (count := _frame_count(ds)) > 1:
                frames.append((path, count))
            continue  # not an image slice (DICOMDIR, structured report, ...)
        missing = [tag for tag in _REQUIRED_TAGS if tag not in ds]
        if missing:
            raise InputError(path, f"DICOM slice lacks {', '.join(missing)}")
        _check_slice_geometry(path, ds)
        slices.append((path, ds))
    if not slices and frames:  # an enhanced CT keeps its positions per frame
        path, count = frames[0]
        raise InputError(
            path,
            f"a multi-frame (enhanced) image of {count} frames; only single-frame slices are "
            "read: convert it first (e.g. dcm2niix to NIfTI)",
        )
    if not slices:
        raise InputError(folder, "no DICOM image slices (no file has an ImagePositionPatient)")
    series = {ds.get("SeriesInstanceUID") for _, ds in slices}
    for path, uid in unplaced:  # a slice of the series, not a report: it would be left out
        if uid in series:
            raise InputError(path, "CT slice without ImagePositionPatient; cannot place it")
    return slices


def _frame_count(ds: pydicom.Dataset) -> int:
    """``NumberOfFrames`` (1 where absent or unreadable)."""
    try:
        return int(ds.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):
        return 1


def _numbers(path: Path, ds: pydicom.Dataset, keyword: str, count: int) -> np.ndarray:
    """``count`` finite numbers from a multi-valued tag, else :class:`InputError` naming it."""
    raw = getattr(ds, keyword, None)
    values = list(raw) if isinstance(raw, (list, tuple, MultiValue)) else [raw]
    try:
        numbers = np.array([float(v) for v in values], dtype=float)
    except (TypeError, ValueError):
        numbers = np.array([math.nan])
    if numbers.size != count or not np.isfinite(numbers).all():
        shown = "empty" if raw in (None, "") else repr(raw if isinstance(raw, str) else values)
        raise InputError(path, f"{keyword} is {shown}, not {count} finite numbers")
    return numbers


def _check_slice_geometry(path: Path, ds: pydicom.Dataset) -> None:
    """Refuse a slice whose InstanceNumber is not an integer, or whose position and orientation
    are not three and six finite numbers with two perpendicular unit direction cosines: the
    slice could be neither stacked nor placed."""
    try:
        int(ds.InstanceNumber)
    except (TypeError, ValueError):
        shown = "empty" if ds.InstanceNumber in (None, "") else repr(ds.InstanceNumber)
        raise InputError(path, f"InstanceNumber is {shown}; cannot order the slices") from None
    _numbers(path, ds, "ImagePositionPatient", 3)
    cosines = _numbers(path, ds, "ImageOrientationPatient", 6)
    row, column = cosines[:3], cosines[3:]
    lengths = (float(np.linalg.norm(row)), float(np.linalg.norm(column)))
    if max(abs(n - 1) for n in lengths) > ORIENTATION_TOLERANCE:
        raise InputError(
            path,
            f"ImageOrientationPatient {_listed(list(cosines), 6)}: its direction cosines have "
            f"lengths {lengths[0]:.3g} and {lengths[1]:.3g}, not 1",
        )
    if abs(float(row @ column)) > ORIENTATION_TOLERANCE:
        raise InputError(
            path,
            f"ImageOrientationPatient {_listed(list(cosines), 6)}: rows and columns are not "
            "perpendicular",
        )


def _check_same(folder: Path, slices: list[tuple[Path, pydicom.Dataset]]) -> None:
    """Refuse a series whose slices are not all CT in one frame of reference, or in which
    the rescale to HU is given on some slices only (the others would be read as raw stored
    values: off by the intercept, 1,024 HU on most scanners)."""
    modalities = sorted({str(ds.Modality) for _, ds in slices if ds.get("Modality")})
    if modalities and modalities != ["CT"]:
        raise InputError(
            folder,
            f"Modality {_listed(modalities)}, not CT; the models read CT in Hounsfield units",
        )
    frames = sorted(
        {str(ds.FrameOfReferenceUID) for _, ds in slices if "FrameOfReferenceUID" in ds}
    )
    if len(frames) > 1:
        raise InputError(
            folder,
            f"slices lie in {len(frames)} frames of reference (FrameOfReferenceUID "
            f"{_listed(frames)}); their positions cannot be compared",
        )
    for keyword in ("RescaleSlope", "RescaleIntercept"):
        given = [ds.get(keyword) not in (None, "") for _, ds in slices]
        if any(given) and not all(given):
            lacking = [path.name for (path, _), has in zip(slices, given, strict=True) if not has]
            raise InputError(
                folder,
                f"{keyword} is missing in {_listed(lacking)} but given in the other slices; "
                "their HU cannot be known",
            )


def _validate_series(folder: Path, slices: list[tuple[Path, pydicom.Dataset]]) -> None:
    """Raise :class:`InputError` unless ``slices`` are one complete, consistently ordered series."""
    uids = sorted({str(ds.SeriesInstanceUID) for _, ds in slices})
    if len(uids) > 1:
        raise InputError(
            folder, f"contains {len(uids)} series (UIDs {_listed(uids)}); pass one series folder"
        )
    if len(slices) < 2:
        raise InputError(folder, "only one DICOM slice; a 3-D series needs at least two")
    _check_same(folder, slices)
    orientations = np.array([[float(v) for v in ds.ImageOrientationPatient] for _, ds in slices])
    if not np.allclose(orientations, orientations[0], atol=1e-4):
        raise InputError(folder, "slices have different ImageOrientationPatient")
    if len({(int(ds.Rows), int(ds.Columns)) for _, ds in slices}) > 1:
        raise InputError(folder, "slices have different Rows x Columns")
    first: list[float] | None = None  # the pixel size every slice must share
    for path, ds in slices:
        raw = list(getattr(ds, "PixelSpacing", None) or [])
        try:
            spacing = [float(v) for v in raw]
        except (TypeError, ValueError):
            spacing = []
        if len(spacing) != 2 or not np.isfinite(spacing).all() or min(spacing) <= 0:
            raise InputError(path, f"PixelSpacing {raw or 'missing'}: not two positive sizes")
        if first is None:
            first = spacing
        elif not np.allclose(spacing, first, rtol=1e-4, atol=1e-6):
            raise InputError(
                path,
                f"PixelSpacing {_mm(spacing)} differs from {slices[0][0].name}'s "
                f"{_mm(first)}; one series has one pixel size",
            )

    numbers = [int(ds.InstanceNumber) for _, ds in slices]
    if len(set(numbers)) < len(numbers):
        dups = sorted({n for n in numbers if numbers.count(n) > 1})
        raise InputError(folder, f"duplicate InstanceNumber {_listed(dups)}")
    # InstanceNumber orders the slices, nothing more: a series numbered 1, 3, 5, ... (renumbered
    # by a PACS, or the localizers left out) is complete when its positions are evenly spaced
    order = np.argsort(numbers)
    numbers_sorted = np.asarray(numbers)[order]

    normal = np.cross(orientations[0, :3], orientations[0, 3:])
    origins = np.array([[float(v) for v in ds.ImagePositionPatient] for _, ds in slices])[order]
    positions = origins @ normal  # along the slice normal, in InstanceNumber order
    steps = np.diff(positions)
    if not (np.all(steps > 0) or np.all(steps < 0)):
        raise InputError(
            folder,
            "InstanceNumber order does not follow the slice positions (or two slices "
            "share a position); cannot stack the series",
        )
    median = float(np.median(np.abs(steps)))
    gaps = np.flatnonzero(np.abs(steps) > GAP_TOLERANCE * median)
    if gaps.size:
        i = int(gaps[0])
        named = {p for p, _ in slices}
        strays = [p.name for p in _visible_files(folder) if p not in named and not is_dicom(p)]
        extra = f"; not DICOM here: {_listed(strays)}" if strays else ""
        raise InputError(
            folder,
            f"missing slice: {abs(steps[i]):.2f} mm between InstanceNumber "
            f"{numbers_sorted[i]} (position {positions[i]:.2f}) and {numbers_sorted[i + 1]} "
            f"(position {positions[i + 1]:.2f}), median spacing {median:.2f} mm{extra}",
        )
    _check_grid(folder, positions, origins, normal, numbers_sorted, min(first))


def _mm(values: list[float]) -> str:
    return " x ".join(f"{v:g}" for v in values) + " mm"


def _check_grid(
    folder: Path,
    positions: np.ndarray,
    origins: np.ndarray,
    normal: np.ndarray,
    numbers: np.ndarray,
    pixel: float,
) -> None:
    """Refuse slices off the evenly spaced grid along the slice normal that the reader's affine
    assumes (first and last slice, equal steps, no in-plane shift): uneven spacing, gantry tilt."""
    n = len(positions)
    step = (positions[-1] - positions[0]) / (n - 1)
    off = positions - (positions[0] + step * np.arange(n))
    i = int(np.argmax(np.abs(off)))
    if abs(off[i]) > max(GRID_TOLERANCE * abs(step), GRID_FLOOR_MM):
        steps = np.abs(np.diff(positions))
        raise InputError(
            folder,
            f"uneven slice spacing ({steps.min():.2f} to {steps.max():.2f} mm; InstanceNumber "
            f"{numbers[i]} lies {abs(off[i]):.2f} mm off an even grid); resample the series to "
            "even spacing first",
        )
    shift = origins - origins[0]
    in_plane = shift - np.outer(shift @ normal, normal)  # what moves within the slice plane
    drift = float(np.linalg.norm(in_plane, axis=1).max())
    if drift > max(GRID_TOLERANCE * pixel, GRID_FLOOR_MM):
        raise InputError(
            folder,
            f"slices are not stacked along their normal: the image origin moves {drift:.2f} mm "
            "within the slice plane over the series (gantry tilt or a sheared series); resample "
            "it to an untilted grid first (e.g. dcm2niix corrects gantry tilt)",
        )


def read_series_headers(folder: str | os.PathLike) -> list[tuple[Path, pydicom.Dataset]]:
    """The validated headers (pixel data not read) of one series folder's image slices."""
    folder = Path(folder)
    slices = _read_headers(folder)
    _validate_series(folder, slices)
    return slices


def load_dicom_series(folder: str | os.PathLike, int16: bool = False) -> nib.Nifti1Image:
    """Load one CT series folder as a float32 HU volume with its RAS affine.

    ``int16``: an int16 volume instead where every slice's HU are whole numbers it holds
    (slope 1, a whole intercept, integer pixels: CT's usual rescale), the same values in half
    the memory, as a NIfTI CT is stored; a series whose HU it does not hold is read as
    float32. Prediction asks for it (:meth:`~kdseg.data.preprocess.Preprocessor.scale` gives
    the same floats from either). A rescale int16 cannot hold is seen in the headers, before
    any pixel is read; pixels beyond int16's range only in the pixels, and the slices up to
    that one are then read again into a float32 volume (their headers not): converting the
    int16 slices instead would hold both volumes at once, 6 bytes a voxel where this peaks at 4.

    Raises :class:`InputError` (one line naming the folder or file) for the problems listed in
    the module docstring.
    """
    if not Path(folder).is_dir():
        raise InputError(folder, "not a folder (expected a DICOM series folder)")
    ordered = sorted(read_series_headers(folder), key=lambda item: int(item[1].InstanceNumber))
    rows, columns = int(ordered[0][1].Rows), int(ordered[0][1].Columns)
    int16 = int16 and all(_whole_rescale(path, ds) for path, ds in ordered)
    volume = _read_pixels(ordered, (columns, rows), int16)
    if volume is None:  # HU beyond int16's range: the pixels again, as float32
        volume = _read_pixels(ordered, (columns, rows), False)
    assert volume is not None  # a float32 read never gives up
    headers = [ds for _, ds in ordered]
    affine = _series_affine(headers)
    image = nib.Nifti1Image(volume, affine, extra={SERIES_HEADERS: headers})
    image.set_qform(affine, code=1)  # scanner coordinates, both forms (as dcm2niix writes)
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm")
    return image


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

    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is None or not syntax.is_compressed:
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


def _series_affine(ordered: list[pydicom.Dataset]) -> np.ndarray:
    """The RAS affine of a validated series in stacking order: array axis 0 along the rows'
    direction (``ImageOrientationPatient[:3]``, one column spacing per step), axis 1 along the
    columns' direction (one row spacing per step), axis 2 from the first slice's position to
    the last's in equal steps (:func:`_check_grid` has checked they are even). Rounded to
    float32, which is what a NIfTI header stores."""
    first, last = ordered[0], ordered[-1]
    cosines = np.array([float(v) for v in first.ImageOrientationPatient])
    row_spacing, column_spacing = (float(v) for v in first.PixelSpacing)
    start = np.array([float(v) for v in first.ImagePositionPatient])
    end = np.array([float(v) for v in last.ImagePositionPatient])
    lps = np.eye(4)
    lps[:3, 0] = cosines[:3] * column_spacing
    lps[:3, 1] = cosines[3:] * row_spacing
    lps[:3, 2] = (end - start) / (len(ordered) - 1)
    lps[:3, 3] = start
    lps[:3] = RAS_LPS @ lps[:3]
    return lps.astype(np.float32).astype(np.float64)
