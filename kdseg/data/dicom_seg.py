"""Write a predicted label volume as a DICOM Segmentation of its source CT series (highdicom).

A PACS viewer overlays a DICOM SEG on the series it references; a NIfTI it cannot show. The
SEG written here references every source slice (SOP Instance UIDs, the series and study, the
frame of reference) and takes its geometry from them, one frame per source slice and segment
that has a label (empty frames are left out), or one per source slice and segment when a
segment is empty everywhere (no tumor found: a segment with no frame at all hangs OHIF's
loader; an empty result is a SEG of empty frames). It has one segment per class the model
predicts, with SNOMED-CT codes: the organ (liver / kidney, or "organ") and its tumor (a neoplasm
whose anatomic region is the organ), each with a recommended display colour. Its patient and
study attributes are the source's, verbatim (values highdicom refuses, such as a sex of "U"
or a date with dashes, too: a PACS files a SEG by them).

Array convention: the label is on the grid :func:`kdseg.data.dicom.load_dicom_series` returns,
``(X, Y, Z)`` with axis 0 along the DICOM rows (the column index of the pixel matrix), axis 1
along the columns and axis 2 across the slices in stacking order (by position along the slice
normal: :func:`kdseg.data.dicom.read_series_headers`), so slice ``k``'s frame is
``label[:, :, k].T``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Sequence
from copy import deepcopy
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid
from pydicom.valuerep import format_number_as_ds

import kdseg
from kdseg.data.dicom import SERIES_HEADERS
from kdseg.data.dicom_geometry import read_series_headers
from kdseg.errors import InputError, atomic_path

ORGAN_CODES = {"liver": codes.SCT.Liver, "kidney": codes.SCT.Kidney}
# Recommended display colours (RGB; stored as CIELab): a viewer otherwise picks its own, and
# OHIF stops at "Loading 100%" on a SEG whose segments have none (OHIF issue 3939).
ORGAN_RGB = (221, 130, 101)  # 3D Slicer's liver colour, for every organ
TUMOR_RGB = (255, 215, 0)  # yellow: apart from the organ and from grey CT
# Type 2 attributes of the patient and study modules a SEG copies from its source: present
# (maybe empty) in a conformant CT, but exporters and anonymisers drop them; empty is valid.
TYPE2_COPIED = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
)


def _segment(number: int, label: int, organ: str):
    """The highdicom description of segment ``number`` for dataset label ``label``."""
    import highdicom as hd

    algorithm = hd.AlgorithmIdentificationSequence(
        name="kdseg", family=codes.cid7162.ArtificialIntelligence, version=kdseg.__version__
    )
    site = ORGAN_CODES.get(organ)
    if label == 2:  # a neoplasm, in its organ's anatomic region where the organ is known
        category, kind = codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Neoplasm
        name, rgb = f"{organ} tumor", TUMOR_RGB
        regions = [site] if site is not None else None
    else:
        category, name, rgb, regions = codes.cid7150.AnatomicalStructure, organ, ORGAN_RGB, None
        kind = site if site is not None else codes.SCT.Organ
    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=name,
        segmented_property_category=category,
        segmented_property_type=kind,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
        anatomic_regions=regions,
        display_color=hd.color.CIELabColor.from_rgb(*rgb),
    )


REFERENCED = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "FrameOfReferenceUID")
"""Type 1 UIDs of a CT slice that a SEG references it by: a slice without one is refused."""


def source_slices(
    folder: str | os.PathLike, headers: Sequence[pydicom.Dataset] | None = None
) -> list[pydicom.Dataset]:
    """Headers of the series' image slices in stacking order (axis 2 of the volume):
    ``headers`` when given (those :func:`~kdseg.data.dicom.load_dicom_series` read, in that
    order), else read, validated and ordered from ``folder`` the same way.

    Raises :class:`InputError` naming the file of a slice that lacks one of the
    :data:`REFERENCED` UIDs or shares its SOPInstanceUID with another slice: a SEG could not
    reference it (highdicom fails with a traceback, or references one instance twice)."""
    if headers is None:
        pairs = read_series_headers(Path(folder))
    else:  # each header read from its file knows it (pydicom's ``filename``)
        pairs = [(Path(getattr(ds, "filename", None) or folder), ds) for ds in headers]
    seen: dict[str, Path] = {}
    for path, ds in pairs:
        missing = [keyword for keyword in REFERENCED if not ds.get(keyword)]
        if missing:
            raise InputError(
                path, f"lacks {', '.join(missing)}; a DICOM SEG cannot reference this slice"
            )
        first = seen.setdefault(str(ds.SOPInstanceUID), path)
        if first != path:
            raise InputError(
                path,
                f"shares its SOPInstanceUID with {first.name}; a DICOM SEG cannot tell the two "
                "slices apart",
            )
        # in memory, never in the files; on a loaded image's cached headers too: a value
        # filled in (here and SliceThickness below) is the same for every SEG of it
        for keyword in TYPE2_COPIED:
            if keyword not in ds:
                setattr(ds, keyword, "")
    headers = [ds for _, ds in pairs]
    # highdicom wants one orientation, exactly; the reader took cosines within its tolerance
    # (ORIENTATION_MATCH: rounding noise) as one, and so does the SEG: the first slice's
    orientation = list(headers[0].ImageOrientationPatient)
    for ds in headers[1:]:
        ds.ImageOrientationPatient = orientation
    for ds in headers:  # a negative thickness (some exporters) is a thickness all the same
        with contextlib.suppress(TypeError, ValueError):
            if (thickness := float(ds.get("SliceThickness") or 0)) < 0:
                ds.SliceThickness = format_number_as_ds(-thickness)
    if any(not ds.get("SliceThickness") for ds in headers):
        # Type 2 in a CT, often empty or absent; a SEG without it in its pixel measures fails
        # to load in highdicom itself: the slice spacing stands in (a SEG voxel's depth)
        ends = [[float(v) for v in ds.ImagePositionPatient] for ds in (headers[0], headers[-1])]
        spacing = float(np.linalg.norm(np.subtract(*ends))) / (len(headers) - 1)
        for ds in headers:
            if not ds.get("SliceThickness"):
                ds.SliceThickness = format_number_as_ds(spacing)
    return headers


def _set_aside_nonconformant(
    ds: pydicom.Dataset,
) -> tuple[pydicom.Dataset, dict[str, pydicom.DataElement]]:
    """``ds`` with the patient and study values highdicom's constructor refuses (a sex other
    than M, F or O, a date or time not in DICOM's format) blanked, in a copy, and those values,
    to be written into the SEG verbatim: a PACS files and matches the SEG by its source's
    patient and study. ``ds`` itself is not changed: it may be a loaded image's cached header,
    which the next SEG of that image reads again."""
    import highdicom as hd
    from pydicom.valuerep import DA, TM

    checks = {
        "PatientSex": hd.PatientSexValues,
        "PatientBirthDate": DA,
        "StudyDate": DA,
        "StudyTime": TM,
    }
    kept = {}
    for keyword, check in checks.items():
        value = ds.get(keyword)
        if value in (None, ""):
            continue
        try:
            check(value)
        except (TypeError, ValueError):
            kept[keyword] = ds[keyword]
    if kept:
        ds = deepcopy(ds)
        for keyword in kept:
            setattr(ds, keyword, "")
    return ds, kept


def _series_number(ds: pydicom.Dataset) -> int:
    """The source's SeriesNumber + 100 (the SEG's series next to its CT's), or 100 where that
    is not a positive IS (an absent, negative or huge source number)."""
    try:
        number = int(ds.get("SeriesNumber") or 0) + 100
    except (TypeError, ValueError):
        return 100
    return number if 1 <= number < 2**31 else 100


def write_dicom_seg(
    label: np.ndarray,
    series_folder: str | os.PathLike,
    target: str | os.PathLike,
    labels: Sequence[int] = (1, 2),
    organ: str = "organ",
    image: Any = None,
) -> Path:
    """Write ``label`` (dataset labels on the series' grid) as a DICOM SEG, atomically.

    ``labels``: the dataset labels the model predicts, one segment each, numbered 1.. in this
    order. ``image``: the series as :func:`~kdseg.data.dicom.load_dicom_series` read it, whose
    slice headers the SEG then takes instead of reading the folder's again. Raises
    :class:`InputError` when ``label`` does not fit the series.
    """
    import highdicom as hd

    logging.getLogger("highdicom").setLevel(logging.WARNING)  # its INFO: a line per module copied
    extra = getattr(image, "extra", None) or {}
    sources = source_slices(series_folder, extra.get(SERIES_HEADERS))
    rows, cols = int(sources[0].Rows), int(sources[0].Columns)
    if label.shape != (cols, rows, len(sources)):
        raise InputError(
            series_folder,
            f"label shape {label.shape} does not fit the series ({cols}, {rows}, {len(sources)})",
        )
    first, verbatim = _set_aside_nonconformant(sources[0])  # highdicom copies the first's
    sources = [first, *sources[1:]]
    lut = np.zeros(256, dtype=np.uint8)
    for number, value in enumerate(labels, start=1):
        lut[value] = number
    # (slices, rows, columns): a Fortran-ordered label's transpose is C-ordered, and the
    # lookup keeps that order, so the frames are one copy of the label, not two
    frames = np.ascontiguousarray(lut[label.transpose(2, 1, 0)])
    try:
        seg = _segmentation(hd, sources, frames, labels, organ)
    except ValueError as exc:  # highdicom's own checks of the sources: nothing written yet
        first = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise InputError(
            series_folder, f"cannot write a DICOM SEG of this series ({first})"
        ) from None
    for element in verbatim.values():
        seg[element.tag] = element
    target = Path(target)
    with atomic_path(target, suffix=".dcm") as tmp:
        seg.save_as(tmp)
    return target


def _segmentation(hd, sources: list[pydicom.Dataset], frames, labels, organ: str):
    """highdicom's Segmentation of ``frames`` (slices, rows, columns) over ``sources``."""
    return hd.seg.Segmentation(
        source_images=sources,
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[
            _segment(number, value, organ) for number, value in enumerate(labels, start=1)
        ],
        series_instance_uid=generate_uid(),
        series_number=_series_number(sources[0]),
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="kdseg",
        manufacturer_model_name="kdseg-predict",
        software_versions=kdseg.__version__,
        device_serial_number="0",
        series_description="kdseg segmentation",
        content_label="CT_SEG",  # highdicom's default reads Modality, Type 1 but often absent
        # empty frames are left out only while every segment keeps one: a segment described
        # with no frame (no tumor found) hangs OHIF's loader, and a SEG needs a frame
        omit_empty_frames=bool(np.isin(np.arange(1, len(labels) + 1), frames).all()),
    )
