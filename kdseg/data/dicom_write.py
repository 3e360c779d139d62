"""Write a 3-D HU volume as a CT DICOM series, for tests, demos and users who need a series.

The inverse of :func:`kdseg.data.dicom.load_dicom_series`, with the same array convention (a
(X, Y, Z) volume, axis 0 along the DICOM rows, axis 2 across slices). Split out of
:mod:`kdseg.data.dicom`: reading is on the deploy path, writing is not.
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import format_number_as_ds

from kdseg.data.dicom_geometry import RAS_LPS
from kdseg.data.dicom_pixels import RESCALE_INTERCEPT
from kdseg.errors import atomic_path


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def write_dicom_series(
    img: nib.Nifti1Image,
    folder: str | os.PathLike,
    *,
    series_uid: str | None = None,
    rng: np.random.Generator | None = None,
) -> list[Path]:
    """Write a 3-D HU volume as a CT DICOM series (one file per slice along axis 2).

    The geometry comes from the NIfTI affine, which must have orthogonal axes (no shear).
    Values are rounded to integers and stored as int16 with ``RESCALE_INTERCEPT``. With ``rng``
    the files are written in a shuffled order under random names (to exercise readers that
    must not rely on either); otherwise they are ``IM00001.dcm``, ... Each file is written
    atomically. Returns the paths in slice order.
    """
    data = np.asarray(img.dataobj)
    if data.ndim != 3:
        raise ValueError(f"expected a 3-D volume, got shape {data.shape}")
    stored = np.rint(data.astype(np.float64) - RESCALE_INTERCEPT)
    if stored.min() < np.iinfo(np.int16).min or stored.max() > np.iinfo(np.int16).max:
        raise ValueError("HU values out of the int16 range after the -1024 intercept")
    stored = stored.astype(np.int16)
    lps = RAS_LPS @ img.affine[:3, :]  # columns: LPS step of each array axis, then the origin
    zooms = np.linalg.norm(lps[:, :3], axis=0)
    gram = lps[:, :3].T @ lps[:, :3]
    if not np.allclose(gram, np.diag(zooms**2), atol=1e-6 * zooms.max() ** 2):
        raise ValueError("the affine has non-orthogonal axes; DICOM cannot store a sheared grid")
    row_cosine, col_cosine = _unit(lps[:, 0]), _unit(lps[:, 1])

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    n_slices = data.shape[2]
    series_uid = series_uid or generate_uid()
    study_uid, frame_uid = generate_uid(), generate_uid()
    if rng is None:
        names = [f"IM{k + 1:05d}.dcm" for k in range(n_slices)]
        write_order = range(n_slices)
    else:
        names = [f"{rng.integers(16**12):012x}.dcm" for _ in range(n_slices)]
        write_order = rng.permutation(n_slices)

    def ds_values(values) -> list[str]:
        return [format_number_as_ds(float(v)) for v in values]

    paths = [folder / name for name in names]
    for k in write_order:
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(paths[k].name, {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.Modality = "CT"
        ds.PatientName, ds.PatientID = "kdseg^synthetic", "kdseg"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.SeriesNumber, ds.InstanceNumber = 1, int(k) + 1
        ds.ImageOrientationPatient = ds_values([*row_cosine, *col_cosine])
        ds.ImagePositionPatient = ds_values(lps[:, 3] + k * lps[:, 2])
        ds.PixelSpacing = ds_values([zooms[1], zooms[0]])  # row spacing, column spacing
        ds.SliceThickness = format_number_as_ds(float(zooms[2]))
        ds.RescaleIntercept, ds.RescaleSlope = format_number_as_ds(RESCALE_INTERCEPT), "1"
        ds.RescaleType = "HU"
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = data.shape[1], data.shape[0]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()
        with atomic_path(paths[k], suffix=".dcm") as tmp:
            ds.save_as(tmp, enforce_file_format=True)
    return paths
