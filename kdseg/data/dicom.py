"""Read a CT DICOM series into a NIfTI image (:mod:`kdseg.data.dicom_write` writes one).

The public entry of the DICOM reader: :func:`load_dicom_series` here puts together the parts,
each a module of its own so that each can be read alone, and the public names of those parts are
re-exported here (``from kdseg.data.dicom import ...`` keeps working):

- :mod:`kdseg.data.dicom_files`: which files of a folder are a series' slices (with or without
  the preamble), DICOMDIR handling (:func:`is_dicom_folder`, :func:`dicomdir_index`,
  :func:`dicomdir_refusal`);
- :mod:`kdseg.data.dicom_geometry`: the slice headers read and validated, the stacking order,
  the even grid and the RAS affine (:func:`read_series_headers`);
- :mod:`kdseg.data.dicom_pixels`: the pixels read and converted to Hounsfield units.

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

import os
from pathlib import Path

import nibabel as nib

from kdseg.data.dicom_files import DICOM_SUFFIXES, dicomdir_index, dicomdir_refusal, is_dicom_folder
from kdseg.data.dicom_geometry import RAS_LPS, _series_affine, read_series_headers
from kdseg.data.dicom_pixels import RESCALE_INTERCEPT, _read_pixels, _whole_rescale
from kdseg.errors import InputError

__all__ = [
    "DICOM_SUFFIXES",
    "RAS_LPS",
    "RESCALE_INTERCEPT",
    "SERIES_HEADERS",
    "dicomdir_index",
    "dicomdir_refusal",
    "is_dicom_folder",
    "load_dicom_series",
    "read_series_headers",
]

SERIES_HEADERS = "kdseg_series_headers"
"""Key in the ``extra`` of an image :func:`load_dicom_series` read: its slices' headers (pixel
data not read) in stacking order, for the DICOM SEG written for it (which so reads none)."""


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
