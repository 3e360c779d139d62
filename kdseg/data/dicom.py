"""Read a CT DICOM series into a NIfTI image (:mod:`kdseg.data.dicom_write` writes one).

Reading is pydicom's alone (slope/intercept applied, so values are HU; RAS affine), so the ONNX
deploy path reads a series without torch or MONAI. A validation first turns the usual ways a
series folder is wrong into one :class:`~kdseg.errors.InputError` line: no DICOM files, several
series in one folder, slices that are not CT or lie in different frames of reference, a rescale
to HU given on some slices only, a matrix size (Rows, Columns) that is no positive integer, a
position or orientation that is not finite numbers (or not two perpendicular unit vectors),
two slices at one position, missing slices (slice positions along the slice normal more than
``GAP_TOLERANCE`` times the median spacing apart), slices of different pixel sizes, and slices
off the even, untilted grid a NIfTI affine can describe (uneven spacing, gantry tilt:
``GRID_TOLERANCE``, at least ``GRID_FLOOR_MM``), which would otherwise be read with every slice
misplaced. Slices are stacked by their position along the slice normal, as the DICOM standard
places them, not by InstanceNumber (Type 2: anonymisers blank it, some exports number every
slice 1, PACS renumber); InstanceNumber only picks the stacking direction (the one it counts
up in, where every slice has a distinct one) and names slices in messages. Files may come in
any order and with any names, with or without the 128-byte preamble; hidden files and non-DICOM
files are ignored (one named ``.dcm``, ``.dicom`` or ``.ima`` is refused: an empty or cut copy
of a slice, and so is a file that cannot be opened), and so are DICOM files without an image
position (a DICOMDIR, a report, with or without the preamble; a CT image of the series without
one is refused): exactly the validated slices are read. A folder holding only a DICOMDIR (the
root of a CD export) is refused as the index it is, naming the series folders under it.

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
from pydicom.uid import UID, CTImageStorage

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

_REQUIRED_TAGS = ("SeriesInstanceUID", "ImageOrientationPatient", "Rows", "Columns")
_MAX_LISTED = 5

DICOMDIR_CLASS = "1.2.840.10008.1.3.10"
"""Media Storage Directory Storage: the SOP class of a DICOMDIR, a CD's index of its series."""

#: SOP classes (and class prefixes) of DICOM objects that are never an image slice: a DICOMDIR,
#: structured reports and key object selections, presentation states, encapsulated documents
_NON_IMAGE_CLASSES = (
    DICOMDIR_CLASS,
    "1.2.840.10008.5.1.4.1.1.88.",
    "1.2.840.10008.5.1.4.1.1.11.",
    "1.2.840.10008.5.1.4.1.1.104.",
)

DUPLICATE_POSITION_MM = 0.01
"""Two slices whose positions along the slice normal are closer than this are one position:
the series cannot be stacked (a slice copied twice, or two series in one folder)."""


def _unreadable(path: Path, exc: OSError) -> InputError:
    """A file that cannot be opened or read (no permission, an I/O error): said as a read,
    not left to the command's catch-all, which takes an OSError with a file name for a write."""
    return InputError(path, f"cannot read it ({exc.strerror or exc})")


def _sop_class(path: Path, ds: pydicom.Dataset | None = None) -> str:
    """The SOP class of a DICOM file, from its file meta (``ds``'s, or read from ``path``:
    the meta alone, a few hundred bytes) else its SOPClassUID; "" where neither says."""
    try:
        meta = ds.get("file_meta") if ds is not None else None
        if meta is None and ds is None:
            meta = pydicom.filereader.read_file_meta_info(path)
        uid = (meta or {}).get("MediaStorageSOPClassUID") or (ds or {}).get("SOPClassUID")
    except OSError as exc:
        raise _unreadable(path, exc) from None
    except Exception:  # noqa: BLE001  (a damaged file meta: its slice read says more)
        return ""
    return str(uid or "")


def _non_image(path: Path, ds: pydicom.Dataset | None = None) -> bool:
    """Whether a DICOM file is an object of a class that is never an image slice
    (:data:`_NON_IMAGE_CLASSES`)."""
    uid = _sop_class(path, ds)
    return any(uid == c or (c.endswith(".") and uid.startswith(c)) for c in _NON_IMAGE_CLASSES)


def dicomdir_index(folder: str | os.PathLike) -> Path | None:
    """The DICOMDIR in ``folder`` (a file named so, or one of that SOP class), or None."""
    for path in _visible_files(Path(folder)):
        if path.name.upper() == "DICOMDIR" or (
            _is_dicom(path) and _sop_class(path) == DICOMDIR_CLASS
        ):
            return path
    return None


def dicomdir_refusal(folder: str | os.PathLike) -> InputError:
    """The one line for a folder that holds a DICOMDIR and no series (a CD's root), with the
    first series folder under it where one is found among the first few folders."""
    folder = Path(folder)
    under = ""
    for k, (root, dirs, _) in enumerate(os.walk(folder)):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if k > 0 and is_dicom_folder(root):
            under = f" (e.g. {Path(root).relative_to(folder).as_posix()})"
            break
        if k >= _WALKED:
            break
    return InputError(folder, f"a DICOMDIR index; pass the series folder under it{under}")


_WALKED = 50
"""Folders :func:`dicomdir_refusal` looks through for a series to name."""


def _is_dicom(path: Path) -> bool:
    """pydicom's preamble check, with a file that cannot be read refused as such."""
    try:
        return is_dicom(path)
    except OSError as exc:
        raise _unreadable(path, exc) from None


def _series_files(folder: Path) -> list[tuple[Path, pydicom.Dataset | None]]:
    """The files of a series folder to read: those with a DICOM preamble (header None: not
    read yet), and those without one that pydicom still reads as a DICOM object (older exports;
    with the header their probe parsed). :func:`_read_headers` tells the image slices apart. A
    file named like DICOM that is neither (an empty or cut copy) is refused, as is a link to
    nothing or a symlink loop (a slice lost without a word: an end slice leaves no gap to find);
    others ignored."""
    from kdseg.data.io import broken_link

    files: list[tuple[Path, pydicom.Dataset | None]] = []
    for path in sorted(folder.iterdir()):
        if not path.name.startswith(".") and (problem := broken_link(path)) is not None:
            raise InputError(path, problem)
    for path in _visible_files(folder):
        if _is_dicom(path):
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
    except OSError as exc:
        raise _unreadable(path, exc) from None
    try:
        if head not in _BARE_GROUPS:
            return None
        ds = pydicom.dcmread(path, force=True, stop_before_pixels=True, defer_size=4096)
        return ds if "SOPClassUID" in ds or "SOPInstanceUID" in ds else None
    except Exception:  # noqa: BLE001  (anything pydicom cannot parse is not DICOM)
        return None


def is_dicom_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder that holds at least one DICOM file that may be an image
    slice: one with the preamble, else one of the first :data:`_BARE_PROBES` files (those named
    ``.dcm``, ``.dicom`` or ``.ima`` first) that pydicom reads without it (a series exported
    without preambles loads, so it is a series folder too). A DICOMDIR, a report or another
    object that is never an image (:data:`_NON_IMAGE_CLASSES`, told by the file meta alone)
    does not make a folder a series: a CD's root holds a DICOMDIR beside its series folders.
    Cheap: it runs on every folder of a folder of inputs (a series' first file decides)."""
    path = Path(path)
    if not path.is_dir():
        return False
    files = _visible_files(path)
    if any(_is_dicom(p) and not _non_image(p) for p in files):
        return True
    files.sort(key=lambda p: p.suffix.lower() not in DICOM_SUFFIXES)  # stable: names within
    bare = (_bare_dataset(p) for p in files[:_BARE_PROBES])
    return any(ds is not None and not _non_image(Path(), ds) for ds in bare)


def _listed(items: list, limit: int = _MAX_LISTED) -> str:
    """``a, b, c`` with at most ``limit`` items shown."""
    shown = ", ".join(str(i) for i in items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def _read_headers(folder: Path) -> list[tuple[Path, pydicom.Dataset]]:
    """Headers of the image slices in ``folder`` (pixel data not read)."""
    files = _series_files(folder)
    if not files:
        raise InputError(folder, "no DICOM files")
    slices, unplaced, frames, files_read = [], [], [], []
    for path, ds in files:  # a file without the preamble comes parsed by its probe
        try:
            if ds is None:
                ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        except OSError as exc:
            raise _unreadable(path, exc) from None
        except Exception as exc:  # a truncated or corrupt file
            raise InputError(path, f"unreadable DICOM file ({exc})") from exc
        files_read.append((path, ds))
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
        if any(_sop_class(path, ds) == DICOMDIR_CLASS for path, ds in files_read):
            raise dicomdir_refusal(folder)
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


def _instance_number(ds: pydicom.Dataset) -> int | None:
    """A slice's InstanceNumber, None where it is absent, empty or no integer (Type 2)."""
    try:
        return int(ds.get("InstanceNumber"))
    except (TypeError, ValueError):
        return None


def _check_slice_geometry(path: Path, ds: pydicom.Dataset) -> None:
    """Refuse a slice whose Rows and Columns are not positive integers, or whose position and
    orientation are not three and six finite numbers with two perpendicular unit direction
    cosines: the slice could be neither read nor placed."""
    for keyword in ("Rows", "Columns"):
        value = ds.get(keyword)
        try:
            size = int(value)
        except (TypeError, ValueError):
            size = 0
        if size <= 0:
            shown = "empty" if value in (None, "") else repr(value)
            raise InputError(path, f"{keyword} is {shown}, not a positive integer")
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


ORIENTATION_MATCH = 1e-4
"""How far a slice's direction cosines may differ from the first slice's (rounding noise)."""


def _series_list(slices: list[tuple[Path, pydicom.Dataset]]) -> str:
    """Each series of a folder as one of its files, its slice count and its description."""
    by_uid: dict[str, list[tuple[Path, pydicom.Dataset]]] = {}
    for path, ds in slices:
        by_uid.setdefault(str(ds.SeriesInstanceUID), []).append((path, ds))
    shown = []
    for members in by_uid.values():
        path, ds = members[0]
        description = " ".join(str(ds.get("SeriesDescription") or "").split())[:30]
        named = f" '{description}'" if description else ""
        shown.append(f"{path.name}: {len(members)} slice{'s' * (len(members) > 1)}{named}")
    return _listed(shown, 3)


def _validate_series(
    folder: Path, slices: list[tuple[Path, pydicom.Dataset]]
) -> list[tuple[Path, pydicom.Dataset]]:
    """``slices`` in stacking order (:func:`_stacking_order`); :class:`InputError` unless they
    are one complete series on one even grid."""
    uids = {str(ds.SeriesInstanceUID) for _, ds in slices}
    if len(uids) > 1:
        raise InputError(
            folder, f"contains {len(uids)} series ({_series_list(slices)}); pass one series folder"
        )
    if len(slices) < 2:
        raise InputError(folder, "only one DICOM slice; a 3-D series needs at least two")
    _check_same(folder, slices)
    orientations = np.array([[float(v) for v in ds.ImageOrientationPatient] for _, ds in slices])
    # the orientation most slices share (to 3 decimals; + 0.0 makes -0 0) is the series': a
    # localizer is named, even as the first file
    rounded = np.round(orientations, 3) + 0.0
    _, first_of, counts = np.unique(rounded, axis=0, return_index=True, return_counts=True)
    shared = int(first_of[np.argmax(counts)])
    for (path, _), cosines in zip(slices, orientations, strict=True):
        if not np.allclose(cosines, orientations[shared], rtol=0, atol=ORIENTATION_MATCH):
            raise InputError(
                path,
                f"ImageOrientationPatient {_listed(list(cosines), 6)} differs from "
                f"{slices[shared][0].name}'s {_listed(list(orientations[shared]), 6)} (a "
                "localizer or another series in this folder?); one series has one orientation",
            )
    first_size = (int(slices[0][1].Rows), int(slices[0][1].Columns))
    for path, ds in slices:
        if (size := (int(ds.Rows), int(ds.Columns))) != first_size:
            raise InputError(
                path,
                f"{size[0]} x {size[1]} pixels (Rows x Columns), not {slices[0][0].name}'s "
                f"{first_size[0]} x {first_size[1]}; one series has one matrix size",
            )
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

    normal = np.cross(orientations[shared, :3], orientations[shared, 3:])
    order = _stacking_order(slices, normal)
    ordered = [slices[i] for i in order]
    labels = _slice_labels(ordered)
    origins = np.array([[float(v) for v in ds.ImagePositionPatient] for _, ds in ordered])
    positions = origins @ normal  # along the slice normal, in stacking order
    steps = np.diff(positions)
    if (same := np.flatnonzero(np.abs(steps) < DUPLICATE_POSITION_MM)).size:
        i = int(same[0])
        raise InputError(
            folder,
            f"{ordered[i][0].name} and {ordered[i + 1][0].name} lie at one position "
            f"({positions[i]:.2f} mm along the slice normal); cannot stack the series "
            "(a slice copied twice, or two series in one folder?)",
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
            f"missing slice: {abs(steps[i]):.2f} mm between {labels[i]} "
            f"(position {positions[i]:.2f}) and {labels[i + 1]} "
            f"(position {positions[i + 1]:.2f}), median spacing {median:.2f} mm{extra}",
        )
    _check_grid(folder, positions, origins, normal, labels, min(first))
    return ordered


def _stacking_order(slices: list[tuple[Path, pydicom.Dataset]], normal: np.ndarray) -> list[int]:
    """Indices of ``slices`` by position along the slice normal (the DICOM standard's order;
    InstanceNumber, Type 2, may be empty, one number for all, or not in spatial order), turned
    round where InstanceNumber counts down along the normal (every slice numbered, each
    differently): a well-numbered series stacks as its numbering runs. Ties (refused by the
    caller) keep InstanceNumber, then name, order."""
    positions = [
        float(np.array([float(v) for v in ds.ImagePositionPatient]) @ normal) for _, ds in slices
    ]
    numbers = [_instance_number(ds) for _, ds in slices]
    order = sorted(
        range(len(slices)),
        key=lambda i: (positions[i], numbers[i] if numbers[i] is not None else 0, i),
    )
    known = [n for n in numbers if n is not None]
    if len(known) == len(slices) and len(set(known)) == len(known):
        if numbers[order[0]] > numbers[order[-1]]:  # type: ignore[operator]
            order.reverse()
    return order


def _slice_labels(ordered: list[tuple[Path, pydicom.Dataset]]) -> list[str]:
    """How messages name each slice: ``InstanceNumber n`` where every slice has a distinct
    one, else its file name."""
    numbers = [_instance_number(ds) for _, ds in ordered]
    if None not in numbers and len(set(numbers)) == len(numbers):
        return [f"InstanceNumber {n}" for n in numbers]
    return [path.name for path, _ in ordered]


def _mm(values: list[float]) -> str:
    return " x ".join(f"{v:g}" for v in values) + " mm"


def _check_grid(
    folder: Path,
    positions: np.ndarray,
    origins: np.ndarray,
    normal: np.ndarray,
    labels: list[str],
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
            f"uneven slice spacing ({steps.min():.2f} to {steps.max():.2f} mm; {labels[i]} "
            f"lies {abs(off[i]):.2f} mm off an even grid); resample the series to even "
            "spacing first",
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
    """The validated headers (pixel data not read) of one series folder's image slices, in
    stacking order (by position along the slice normal: :func:`_stacking_order`)."""
    folder = Path(folder)
    return _validate_series(folder, _read_headers(folder))


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
    ordered = read_series_headers(folder)
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
