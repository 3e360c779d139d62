"""Read and validate the headers of one DICOM series, stack its slices, and give its affine.

Split out of :mod:`kdseg.data.dicom` (the public entry, which re-exports what is public here):
everything decided from the slice headers alone, before any pixel is read. The usual ways a
series folder is wrong become one :class:`~kdseg.errors.InputError` line: several series in one
folder, slices that are not CT or lie in different frames of reference, a rescale to HU given on
some slices only, a matrix size that is no positive integer, a position or orientation that is
not finite numbers (or not two perpendicular unit vectors), two slices at one position, missing
slices, slices of different pixel sizes, and slices off the even, untilted grid a NIfTI affine
can describe (uneven spacing, gantry tilt), which would otherwise be read with every slice
misplaced. Slices are stacked by their position along the slice normal, as the DICOM standard
places them, not by InstanceNumber (Type 2: anonymisers blank it, PACS renumber); InstanceNumber
only picks the stacking direction and names slices in messages. The RAS affine is built here
too, since it holds exactly because of the grid check.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pydicom
from pydicom.misc import is_dicom
from pydicom.multival import MultiValue
from pydicom.uid import CTImageStorage

from kdseg.data.dicom_files import (
    DICOMDIR_CLASS,
    _series_files,
    _sop_class,
    _unreadable,
    _visible_files,
    dicomdir_refusal,
)
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

RAS_LPS = np.diag([-1.0, -1.0, 1.0])  # RAS <-> LPS (its own inverse)

_REQUIRED_TAGS = ("SeriesInstanceUID", "ImageOrientationPatient", "Rows", "Columns")
_MAX_LISTED = 5

DUPLICATE_POSITION_MM = 0.01
"""Two slices whose positions along the slice normal are closer than this are one position:
the series cannot be stacked (a slice copied twice, or two series in one folder)."""


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
