"""DICOM series round trip through write_dicom_series / load_dicom_series, and bad folders."""

from __future__ import annotations

import contextlib
import os
import shutil

import nibabel as nib
import numpy as np
import pydicom
import pytest

from kdseg.data.dicom import is_dicom_folder, load_dicom_series
from kdseg.data.dicom_write import write_dicom_series
from kdseg.errors import InputError


def _volume(affine: np.ndarray) -> nib.Nifti1Image:
    rng = np.random.default_rng(0)
    hu = rng.integers(-1024, 1500, size=(32, 28, 8)).astype(np.int16)
    return nib.Nifti1Image(hu, affine)


# LPS-like storage (x and y flipped in RAS), anisotropic voxels, an offset origin.
AFFINE_FLIPPED = np.array(
    [[-0.7, 0, 0, 120.0], [0, -0.8, 0, 95.5], [0, 0, 2.5, -310.25], [0, 0, 0, 1]]
)
# Axes permuted (rows run along y) and slices stacked downwards.
AFFINE_PERMUTED = np.array(
    [[0, 0.75, 0, -40.0], [0.6, 0, 0, 12.0], [0, 0, -3.0, 80.0], [0, 0, 0, 1]]
)


@pytest.mark.parametrize("affine", [AFFINE_FLIPPED, AFFINE_PERMUTED], ids=["flipped", "permuted"])
def test_round_trip_any_file_order(tmp_path, affine):
    original = _volume(affine)
    paths = write_dicom_series(original, tmp_path / "series", rng=np.random.default_rng(1))
    assert len(paths) == 8 and is_dicom_folder(tmp_path / "series")
    assert sorted(p.name for p in paths) != [p.name for p in paths]  # random names
    loaded = load_dicom_series(tmp_path / "series")
    want, got = nib.as_closest_canonical(original), nib.as_closest_canonical(loaded)
    np.testing.assert_array_equal(np.asarray(got.dataobj), np.asarray(want.dataobj))
    np.testing.assert_allclose(got.affine, want.affine, atol=1e-4)


def test_a_series_is_read_into_a_fortran_ordered_volume(tmp_path):
    """Each slice one contiguous block, as nibabel reads a NIfTI file. ``np.stack`` of the
    transposed planes put the slice axis innermost (strides 4 bytes along it): the HU check
    copied such a volume whole and preprocessing ran 2.5x slower than on the same NIfTI
    (0.33 s against 0.13 s at 512 x 512 x 150), and the planes and the volume were both
    held (the volume's size again at peak)."""
    original = _volume(AFFINE_PERMUTED)
    write_dicom_series(original, tmp_path / "s")
    data = np.asanyarray(load_dicom_series(tmp_path / "s").dataobj)
    assert data.flags.f_contiguous and data.dtype == np.float32, data.strides
    np.testing.assert_array_equal(data, np.asarray(original.dataobj))


@pytest.fixture
def series(tmp_path):
    folder = tmp_path / "series"
    write_dicom_series(_volume(AFFINE_FLIPPED), folder)
    return folder


def test_empty_and_non_dicom_folders(tmp_path):
    (tmp_path / "notes.txt").write_text("not dicom")
    assert not is_dicom_folder(tmp_path)
    assert not is_dicom_folder(tmp_path / "notes.txt")
    with pytest.raises(InputError, match="no DICOM files") as err:
        load_dicom_series(tmp_path)
    assert err.value.path == str(tmp_path)


def test_two_series(series, tmp_path):
    """Each series is named by one of its files, its slice count and its description (the
    two 64-character UIDs told a reader nothing)."""
    write_dicom_series(_volume(AFFINE_FLIPPED), series / "..", series_uid="1.2.3.4")
    for path in (series / "..").glob("IM*.dcm"):
        ds = pydicom.dcmread(path)
        ds.SeriesDescription = "Topogram  0.6  T20f"
        ds.save_as(series / f"b_{path.name}")
        path.unlink()
    with pytest.raises(
        InputError,
        match=r"contains 2 series \(IM00001\.dcm: 8 slices, b_IM00001\.dcm: 8 slices "
        r"'Topogram 0\.6 T20f'\); pass one series folder$",
    ):
        load_dicom_series(series)


def test_a_localizer_in_the_series_is_named(series):
    """An orientation of its own was "slices have different ImageOrientationPatient", the
    folder named; now the slice that differs is. Rounding noise (1e-6) is one orientation."""
    whole = load_dicom_series(series)
    _edit(series, lambda k, ds: k % 2 and _tilt(ds, 1e-6))
    np.testing.assert_array_equal(load_dicom_series(series).dataobj, whole.dataobj)
    for k in (5, 0):  # the first file too: the orientation most slices share is the series'
        _edit(series, lambda i, ds, k=k: i == k and _tilt(ds, 0.5))
        with pytest.raises(
            InputError, match=r"ImageOrientationPatient .* differs from IM0000"
        ) as err:
            load_dicom_series(series)
        assert err.value.path == str(series / f"IM{k + 1:05d}.dcm")
        _edit(series, lambda i, ds, k=k: i == k and _tilt(ds, -0.5))


def _tilt(ds, by: float) -> None:
    """Turn a slice's row direction by about ``by`` radians in its plane (unit cosines kept)."""
    row, column = np.array(ds.ImageOrientationPatient, float).reshape(2, 3)
    row, column = row * np.cos(by) + column * np.sin(by), column * np.cos(by) - row * np.sin(by)
    ds.ImageOrientationPatient = [f"{v:.10f}" for v in (*row, *column)]


def test_missing_slice_position_gap(series):
    (series / "IM00004.dcm").unlink()
    with pytest.raises(InputError, match=r"missing slice: \S+ mm between InstanceNumber 3 ") as err:
        load_dicom_series(series)
    assert err.value.path == str(series)


def test_a_gap_in_instance_numbers_alone_is_read(series):
    """A complete series numbered 1, 3, 5, ... (a PACS renumbering, localizers left out) was
    refused as "missing slice: no InstanceNumber 2, 4, ..."; its slice positions are evenly
    spaced, so it is read as the series numbered 1 to 8: the same voxels and affine."""
    whole = load_dicom_series(series)
    for k in range(1, 9):
        path = series / f"IM{k:05d}.dcm"
        ds = pydicom.dcmread(path)
        ds.InstanceNumber = 2 * k - 1
        ds.save_as(path)
    renumbered = load_dicom_series(series)
    np.testing.assert_array_equal(np.asarray(renumbered.dataobj), np.asarray(whole.dataobj))
    np.testing.assert_array_equal(renumbered.affine, whole.affine)
    (series / "IM00004.dcm").unlink()  # a slice really missing: its position says so
    with pytest.raises(InputError, match=r"missing slice: \S+ mm between InstanceNumber 5 "):
        load_dicom_series(series)


def test_garbage_or_truncated_slice_is_named(series):
    """A slice overwritten with garbage is no DICOM file any more: named .dcm, it is named
    itself; under another name the missing-slice error names it; a slice whose pixel data is
    cut short is named as the file that cannot be read."""
    good = (series / "IM00006.dcm").read_bytes()
    (series / "IM00006.dcm").write_bytes(os.urandom(len(good)))
    with pytest.raises(InputError, match="named like a DICOM file but not one") as err:
        load_dicom_series(series)
    assert err.value.path == str(series / "IM00006.dcm")
    (series / "IM00006.dcm").rename(series / "IM00006")
    with pytest.raises(InputError, match="missing slice: .*; not DICOM here: IM00006$"):
        load_dicom_series(series)
    (series / "IM00006").unlink()
    (series / "IM00006.dcm").write_bytes(good[:-300])
    with pytest.raises(InputError, match="cannot read the DICOM pixel data") as err:
        load_dicom_series(series)
    assert err.value.path == str(series / "IM00006.dcm")


def test_missing_slice_with_renumbered_instances(series):
    """InstanceNumbers made contiguous again: the gap is found in the slice positions."""
    (series / "IM00004.dcm").unlink()
    for k in range(5, 9):
        path = series / f"IM{k:05d}.dcm"
        ds = pydicom.dcmread(path)
        ds.InstanceNumber = k - 1
        ds.save_as(path)
    with pytest.raises(InputError, match=r"missing slice: 5\.00 mm between InstanceNumber 3"):
        load_dicom_series(series)


def test_ignores_non_image_files(series):
    (series / "README.txt").write_text("exported by a viewer")
    ds = pydicom.dcmread(series / "IM00001.dcm")
    del ds.ImagePositionPatient  # like a DICOMDIR or a report: no image position
    ds.SeriesInstanceUID = "9.9.9"
    ds.save_as(series / "DICOMDIR")
    assert load_dicom_series(series).shape == (32, 28, 8)


def _dicomdir(path) -> None:
    """A minimal DICOMDIR (Media Storage Directory Storage), as a CD's root holds."""
    from pydicom.dataset import Dataset, FileMetaDataset

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"
    meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.FileSetID = "CD"
    ds.DirectoryRecordSequence = []
    ds.save_as(path, enforce_file_format=True)


def test_a_dicomdir_is_no_series_and_a_cd_root_names_its_series(tmp_path):
    """A DICOMDIR made its folder a series: beside series folders the folder was refused as
    "DICOM slices beside 1 other scan(s)", and a CD's root (DICOMDIR, DICOM/ST0/SE0) as "no
    DICOM image slices"."""
    from kdseg.data.sources import folder_inputs

    root = tmp_path / "cd"
    write_dicom_series(_volume(AFFINE_FLIPPED), root / "s1")
    _dicomdir(root / "DICOMDIR")
    assert not is_dicom_folder(root)
    assert folder_inputs(root)[0] == [root / "s1"]
    (root / "DICOM" / "ST0").mkdir(parents=True)
    (root / "s1").rename(root / "DICOM" / "ST0" / "SE0")  # the CD layout: one more level
    assert folder_inputs(root / "DICOM" / "ST0")[0] == [root / "DICOM" / "ST0" / "SE0"]
    message = r"a DICOMDIR index; pass the series folder under it \(e\.g\. DICOM/ST0/SE0\)$"
    with pytest.raises(InputError, match=message) as err:
        folder_inputs(root)
    assert err.value.path == str(root)
    with pytest.raises(InputError, match=message):
        load_dicom_series(root)


@pytest.mark.parametrize("numbers", ["shuffled", "empty", "equal"])
def test_slices_are_stacked_by_position_not_instance_number(series, numbers):
    """An InstanceNumber out of spatial order, blanked (Type 2: anonymisers empty it) or one
    number for every slice was refused; the slice positions order the series, as the DICOM
    standard places slices, into the same voxels and affine."""
    whole = load_dicom_series(series)
    values = {"shuffled": [1, 3, 2, 4, 8, 6, 7, 5], "empty": [None] * 8, "equal": [1] * 8}
    _edit(series, lambda k, ds: setattr(ds, "InstanceNumber", values[numbers][k]))
    read = load_dicom_series(series)
    if numbers == "shuffled":  # it counts up along the normal, as before
        np.testing.assert_array_equal(read.dataobj, whole.dataobj)
        np.testing.assert_array_equal(read.affine, whole.affine)
    else:  # stacked up the slice normal: the same scan, the same place in space
        want, got = nib.as_closest_canonical(whole), nib.as_closest_canonical(read)
        np.testing.assert_array_equal(got.dataobj, want.dataobj)
        np.testing.assert_allclose(got.affine, want.affine, atol=1e-4)


def test_two_slices_at_one_position_are_named(series):
    shutil.copy(series / "IM00003.dcm", series / "IM00003 copy.dcm")
    ds = pydicom.dcmread(series / "IM00003 copy.dcm")
    ds.SOPInstanceUID, ds.InstanceNumber = pydicom.uid.generate_uid(), 99
    ds.save_as(series / "IM00003 copy.dcm")
    with pytest.raises(InputError, match=r"IM00003.* and IM00003.* lie at one position"):
        load_dicom_series(series)


def _edit(series, change) -> None:
    """Apply ``change(k, dataset)`` to slice k (InstanceNumber order) and save it."""
    for k, path in enumerate(sorted(series.glob("IM*.dcm"))):
        ds = pydicom.dcmread(path)
        change(k, ds)
        ds.save_as(path)


def _move(k: int, ds, axis: int, mm: float) -> None:
    position = [float(v) for v in ds.ImagePositionPatient]
    position[axis] += mm
    ds.ImagePositionPatient = position


def test_gantry_tilt_is_refused(series):
    """Each slice shifted 1 mm further within the slice plane: a sheared grid no NIfTI affine
    of the reader describes; read as it was, every slice would sit up to 7 mm off."""
    _edit(series, lambda k, ds: _move(k, ds, 1, 1.0 * k))
    with pytest.raises(InputError, match=r"not stacked along their normal: .* moves 7\.00 mm"):
        load_dicom_series(series)


def test_uneven_slice_spacing_is_refused_and_rounding_is_not(series):
    """A 3.7 mm step among 2.5 mm ones (under the missing-slice limit) would be read at one mean
    spacing with slices misplaced; position rounding of 0.01 mm is fine."""
    _edit(series, lambda k, ds: _move(k, ds, 2, 0.01 * (-1) ** k))
    assert load_dicom_series(series).shape == (32, 28, 8)
    _edit(series, lambda k, ds: _move(k, ds, 2, 1.2 if k >= 4 else 0.0))
    with pytest.raises(InputError, match=r"uneven slice spacing \(2\.4\d to 3\.7\d mm"):
        load_dicom_series(series)


def test_positions_stored_with_one_decimal_read(tmp_path):
    """Thin slices (0.625 mm) whose positions a scanner rounded to 0.1 mm: up to 0.1 mm off an
    exact grid (more than 5% of the step), which misplaces nothing, so the series reads."""
    affine = AFFINE_FLIPPED.copy()
    affine[2, 2:] = [0.625, -310.27]
    folder = tmp_path / "thin"
    write_dicom_series(_volume(affine), folder)
    _edit(
        folder,
        lambda k, ds: setattr(
            ds, "ImagePositionPatient", [round(float(v), 1) for v in ds.ImagePositionPatient]
        ),
    )
    assert load_dicom_series(folder).shape == (32, 28, 8)


def test_slices_of_another_pixel_size_are_refused(series):
    def change(k: int, ds) -> None:
        if k == 3:
            ds.PixelSpacing = [0.7, 0.7]

    _edit(series, change)
    with pytest.raises(InputError, match="PixelSpacing 0.7 x 0.7 mm differs from") as err:
        load_dicom_series(series)
    assert err.value.path == str(series / "IM00004.dcm")


@pytest.mark.parametrize(
    ("keyword", "value", "message"),
    [
        ("Rows", None, "Rows is empty, not a positive integer"),
        ("Columns", 0, "Columns is 0, not a positive integer"),
        ("ImagePositionPatient", ["1", "2"], r"ImagePositionPatient is .*not 3 finite numbers"),
        ("ImagePositionPatient", ["nan", "0", "0"], "ImagePositionPatient is .*not 3 finite"),
        ("ImageOrientationPatient", ["0"] * 6, "lengths 0 and 0, not 1"),
        ("ImageOrientationPatient", [2, 0, 0, 0, 2, 0], "lengths 2 and 2, not 1"),
        ("ImageOrientationPatient", [1, 0, 0, 0.5, 0.8660254, 0], "not perpendicular"),
    ],
)
def test_a_slice_that_cannot_be_ordered_or_placed_is_named(series, keyword, value, message):
    """An empty Rows or Columns, or a position of two values, was an internal error; a zero,
    scaled or skewed orientation was refused for something else or read as a wrong affine."""

    def change(k: int, ds) -> None:
        if k == 3 or keyword == "ImageOrientationPatient":
            setattr(ds, keyword, value)

    with pytest.warns(UserWarning) if "nan" in str(value) else contextlib.nullcontext():
        _edit(series, change)
    with pytest.raises(InputError, match=message) as err:
        load_dicom_series(series)
    k = 3 if keyword != "ImageOrientationPatient" else 0
    assert err.value.path == str(series / f"IM{k + 1:05d}.dcm")


@pytest.mark.parametrize("keyword", ["RescaleIntercept", "RescaleSlope"])
def test_a_rescale_missing_on_some_slices_is_refused(series, keyword):
    """Read as 0 (1) before: that slice alone was 1,024 HU off, without a word."""
    _edit(series, lambda k, ds: delattr(ds, keyword) if k == 5 else None)
    with pytest.raises(InputError, match=f"{keyword} is missing in IM00006.dcm but given"):
        load_dicom_series(series)
    # missing on every slice (or varying per slice) stays each slice's own rescale
    _edit(series, lambda k, ds: delattr(ds, keyword) if keyword in ds else None)
    load_dicom_series(series)


def test_a_series_that_is_not_ct_or_mixes_frames_of_reference_is_refused(series):
    _edit(series, lambda k, ds: setattr(ds, "FrameOfReferenceUID", f"1.2.3.{k % 2}"))
    with pytest.raises(InputError, match=r"2 frames of reference .*1\.2\.3\.0, 1\.2\.3\.1"):
        load_dicom_series(series)
    _edit(series, lambda k, ds: setattr(ds, "FrameOfReferenceUID", "1.2.3"))
    load_dicom_series(series)
    _edit(series, lambda k, ds: setattr(ds, "Modality", "MR"))
    with pytest.raises(InputError, match="Modality MR, not CT") as err:
        load_dicom_series(series)
    assert err.value.path == str(series)


def test_compressed_pixels_without_a_decoder_say_what_to_install(series):
    """Was pydicom's plugin list cut at 200 characters ("... requires gdcm>=3.0.10 py")."""
    from pydicom.encaps import encapsulate
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEGLosslessSV1

    if get_decoder(JPEGLosslessSV1).is_available:
        pytest.skip("a JPEG Lossless decoder is installed here")
    path = series / "IM00003.dcm"
    ds = pydicom.dcmread(path)
    ds.PixelData = encapsulate([b"\xff\xd8 not decoded \xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(InputError, match="compressed as JPEG Lossless.*pip install pylibjpeg"):
        load_dicom_series(series)


def test_a_slice_without_a_preamble_is_read_and_an_empty_copy_is_named(series):
    """Both were left out without a word: the last slice of the series was simply gone (its
    InstanceNumber was the highest, so no gap showed), 7 slices read instead of 8."""
    whole = np.asarray(load_dicom_series(series).dataobj)
    last = series / "IM00008.dcm"
    raw = last.read_bytes()
    last.write_bytes(raw[132:])  # no 128-byte preamble and no "DICM", as older exports write
    np.testing.assert_array_equal(np.asarray(load_dicom_series(series).dataobj), whole)
    last.write_bytes(b"")  # a copy that failed
    with pytest.raises(InputError, match=r"named like a DICOM file but not one \(0 bytes"):
        load_dicom_series(series)


def _bare_report(path, sop_class="1.2.840.10008.5.1.4.1.1.88.67") -> None:
    """A dose report (an SR: no pixels, no position) written without the preamble."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ImplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = sop_class, generate_uid(), "SR"
    ds.SeriesInstanceUID = generate_uid()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=False)
    assert not pydicom.misc.is_dicom(path)


def test_a_report_without_a_preamble_is_skipped_as_with_one(series):
    """A dose report named .dcm without the preamble refused the whole series as "named like
    a DICOM file but not one"; with a preamble it was skipped. Now both are skipped, and a CT
    slice of the series without a position is still refused, preamble or not."""
    whole = np.asarray(load_dicom_series(series).dataobj)
    _bare_report(series / "dose.dcm")
    np.testing.assert_array_equal(np.asarray(load_dicom_series(series).dataobj), whole)
    last = series / "IM00008.dcm"
    ds = pydicom.dcmread(last)
    del ds.ImagePositionPatient
    ds.save_as(last)
    last.write_bytes(last.read_bytes()[132:])
    with pytest.raises(InputError, match="CT slice without ImagePositionPatient") as err:
        load_dicom_series(series)
    assert err.value.path == str(last)


def test_a_series_written_without_preambles_is_a_dicom_folder(series, tmp_path):
    """It loaded, but ``is_dicom_folder`` counted only files with a preamble, so kdseg-predict
    said "no NIfTI files or DICOM series in this folder"."""
    from kdseg.cli.predict import plan_outputs

    for path in series.iterdir():
        path.write_bytes(path.read_bytes()[132:])
    assert not any(pydicom.misc.is_dicom(p) for p in series.iterdir())
    assert is_dicom_folder(series)
    assert plan_outputs(series, tmp_path / "out") == [(series, tmp_path / "out/series.nii.gz")]
    assert plan_outputs(tmp_path, tmp_path / "out") == [(series, tmp_path / "out/series.nii.gz")]


def test_a_series_without_preambles_has_each_header_parsed_once(series, monkeypatch):
    """The preamble-less probe parsed each file's header, and the header reader parsed it
    again: now the probe's header is the one read (the pixels are a read of their own)."""
    whole = np.asarray(load_dicom_series(series).dataobj)
    for path in series.iterdir():
        path.write_bytes(path.read_bytes()[132:])
    headers: list[str] = []
    dcmread = pydicom.dcmread

    def counted(path, *args, **kwargs):
        if kwargs.get("stop_before_pixels"):
            headers.append(os.path.basename(path))
        return dcmread(path, *args, **kwargs)

    monkeypatch.setattr(pydicom, "dcmread", counted)
    np.testing.assert_array_equal(np.asarray(load_dicom_series(series).dataobj), whole)
    assert sorted(headers) == sorted(p.name for p in series.iterdir()), headers


def test_a_ct_slice_without_a_position_is_named_not_left_out(series):
    """It was taken for a DICOMDIR or a report and left out: 7 slices read instead of 8."""
    last = series / "IM00008.dcm"
    ds = pydicom.dcmread(last)
    del ds.ImagePositionPatient
    ds.save_as(last)
    with pytest.raises(InputError, match="CT slice without ImagePositionPatient") as err:
        load_dicom_series(series)
    assert err.value.path == str(last)


def test_an_enhanced_multi_frame_ct_says_so(tmp_path):
    """Was "no DICOM image slices (no file has an ImagePositionPatient)" for a CT of 8 frames."""
    from pydicom.uid import EnhancedCTImageStorage

    write_dicom_series(_volume(AFFINE_FLIPPED), tmp_path / "s")
    ds = pydicom.dcmread(tmp_path / "s" / "IM00001.dcm")
    del ds.ImagePositionPatient, ds.ImageOrientationPatient  # per frame in an enhanced CT
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = EnhancedCTImageStorage
    ds.NumberOfFrames = 8
    folder = tmp_path / "enhanced"
    folder.mkdir()
    ds.save_as(folder / "CT.dcm")
    with pytest.raises(InputError, match="multi-frame .enhanced. image of 8 frames") as err:
        load_dicom_series(folder)
    assert err.value.path == str(folder / "CT.dcm")


def test_a_folder_of_non_dicom_files_is_not_parsed_as_bare_dicom(tmp_path, monkeypatch):
    """The preamble-less probe reads two bytes before asking pydicom: a file of zeros (a raw
    mask, 50 MB took 13 s through ``dcmread(force=True)``) or an ANALYZE ``.img`` is never
    handed to the parser, and the folder is no DICOM folder."""
    folder = tmp_path / "masks"
    folder.mkdir()
    (folder / "big.raw").write_bytes(bytes(1 << 20))
    (folder / "mask.img").write_bytes(b"\x5c\x01" + bytes(4096))
    parsed = []
    monkeypatch.setattr(pydicom, "dcmread", lambda *a, **k: parsed.append(a) or {})
    assert not is_dicom_folder(folder)
    assert parsed == []


@pytest.mark.parametrize(
    ("slope", "intercept", "dtype", "in_float32"),
    [("1", "-1024", np.int16, True), ("1.0", "-1000.0", np.uint16, True),
     ("1", "0", np.int16, True), ("0.5", "-1024", np.int16, False),
     ("1", "-1024.5", np.int16, False), ("2.5", "7", np.uint16, False)],
)  # fmt: skip
def test_slices_are_rescaled_in_float32_when_that_is_exact(
    tmp_path, slope, intercept, dtype, in_float32
):
    """Each slice went to float64 for slope and intercept and back to float32: two float64
    copies of the slice at a time, five passes over it. With slope 1, a whole intercept and
    16-bit pixels every HU value is a whole number float32 holds exactly, so the slice is
    rescaled in float32 (the same values, to the bit); any other rescale keeps float64."""
    import tracemalloc

    rng = np.random.default_rng(3)
    write_dicom_series(nib.Nifti1Image(np.zeros((512, 512, 3), np.int16), np.eye(4)), tmp_path)
    want = []
    for k, path in enumerate(sorted(tmp_path.glob("*.dcm"))):
        ds = pydicom.dcmread(path)
        stored = rng.integers(0 if dtype == np.uint16 else -2000, 3000, (512, 512)).astype(dtype)
        stored[0, 0] = np.iinfo(dtype).max if k == 0 else np.iinfo(dtype).min
        ds.PixelRepresentation = int(dtype == np.int16)
        ds.PixelData = stored.tobytes()
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        ds.save_as(path)
        hu = stored.astype(np.float64) * float(slope) + float(intercept)
        want.append(hu.astype(np.float32).T)
    load_dicom_series(tmp_path)  # what a first read imports and caches is not the slices'
    tracemalloc.start()
    try:
        data = np.asanyarray(load_dicom_series(tmp_path).dataobj)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(data, np.stack(want, axis=-1), strict=True)
    if in_float32:  # no float64 copy of a slice
        assert peak < data.nbytes + 512 * 512 * 8, f"{peak:,} bytes for {data.nbytes:,}"


@pytest.mark.parametrize(
    ("slope", "intercept", "dtype", "extreme", "want_int16"),
    [("1", "-1024", np.uint16, 4095, True), ("1", "0", np.int16, -32768, True),
     ("1", "-1024", np.int16, -32768, False), ("1", "-1024", np.uint16, 65535, False),
     ("0.5", "-1024", np.int16, 0, False), ("1", "-1024.5", np.int16, 0, False)],
)  # fmt: skip
def test_an_int16_series_holds_the_same_hounsfield_units(
    tmp_path, slope, intercept, dtype, extreme, want_int16
):
    """``int16=True`` (what prediction reads) keeps HU in int16, half of float32's memory,
    where every slice's HU are whole numbers int16 holds; a series with one slice beyond
    that (here the last) is read as float32. The values are the float32 read's either way."""
    rng = np.random.default_rng(4)
    write_dicom_series(nib.Nifti1Image(np.zeros((16, 12, 3), np.int16), np.eye(4)), tmp_path)
    paths = sorted(tmp_path.glob("*.dcm"), key=lambda p: int(pydicom.dcmread(p).InstanceNumber))
    for k, path in enumerate(paths):
        ds = pydicom.dcmread(path)
        stored = rng.integers(0, 3000, (12, 16)).astype(dtype)
        stored[0, 0] = extreme if k == len(paths) - 1 else 0
        ds.PixelRepresentation = int(dtype == np.int16)
        ds.PixelData = stored.tobytes()
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        ds.save_as(path)
    want = np.asanyarray(load_dicom_series(tmp_path).dataobj)
    got = np.asanyarray(load_dicom_series(tmp_path, int16=True).dataobj)
    assert got.dtype == (np.int16 if want_int16 else np.float32) and got.flags.f_contiguous
    np.testing.assert_array_equal(got.astype(np.float32), want, strict=True)


@pytest.mark.parametrize(
    ("slope", "intercept", "extreme", "pixel_reads"),
    [("0.5", "-1024", 0, 3), ("1", "-1024.5", 0, 3), ("1", "-1024", 65535, 6),
     ("1", "-1024", 4095, 3)],
)  # fmt: skip
def test_an_int16_read_reads_each_header_once_and_pixels_twice_only_beyond_its_range(
    tmp_path, monkeypatch, slope, intercept, extreme, pixel_reads
):
    """A rescale int16 does not hold (here the last slice's) is seen in the headers: the
    series is read as float32 at once, not as int16 up to that slice and then again. Pixels
    beyond int16's range are seen only in the pixels: those slices are read twice (into a
    float32 volume, not both volumes at once), the headers once."""
    from kdseg.data import dicom_geometry, dicom_pixels

    write_dicom_series(nib.Nifti1Image(np.zeros((16, 12, 3), np.int16), np.eye(4)), tmp_path)
    paths = sorted(tmp_path.glob("*.dcm"), key=lambda p: int(pydicom.dcmread(p).InstanceNumber))
    ds = pydicom.dcmread(paths[-1])
    stored = np.full((12, 16), 100, np.uint16)
    stored[0, 0] = extreme
    ds.PixelRepresentation, ds.PixelData = 0, stored.tobytes()
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    ds.save_as(paths[-1])
    want = np.asanyarray(load_dicom_series(tmp_path).dataobj)
    calls = {"headers": 0, "pixels": 0}
    for module, name, key in (
        (dicom_geometry, "_read_headers", "headers"),
        (dicom_pixels, "_hounsfield", "pixels"),
    ):
        real = getattr(module, name)

        def counted(*args, _real=real, _key=key):
            calls[_key] += 1
            return _real(*args)

        monkeypatch.setattr(module, name, counted)
    got = np.asanyarray(load_dicom_series(tmp_path, int16=True).dataobj)
    np.testing.assert_array_equal(got.astype(np.float32), want, strict=True)
    assert got.dtype == (np.int16 if extreme == 4095 else np.float32)
    assert calls == {"headers": 1, "pixels": pixel_reads}


def test_an_unreadable_slice_is_a_read_error(series, monkeypatch):
    """A slice without read permission surfaced as an OSError that kdseg's catch-all said
    as "cannot write it (Permission denied)"; it is a read."""
    import builtins

    real = builtins.open

    def forbidden(path, *args, **kwargs):
        if str(path).endswith("IM00001.dcm"):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", forbidden)
    for read in (is_dicom_folder, load_dicom_series):
        with pytest.raises(InputError, match=r"cannot read it \(Permission denied\)$") as err:
            read(series)
        assert err.value.path == str(series / "IM00001.dcm")


@pytest.mark.parametrize("syntax", ["1.2.840.113619.5.2", ""])
def test_a_private_or_empty_transfer_syntax(series, syntax):
    """A private syntax (GE's implicit big endian) made pydicom's ``is_compressed`` raise, an
    empty one came as a str without it: both internal errors. A private one is refused by
    name; an empty one is absent, as pydicom takes it (which then decodes no pixels)."""
    path = series / "IM00003.dcm"
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = syntax
    ds.save_as(path)
    message = (
        f"transfer syntax '{syntax}' is not one kdseg"
        if syntax
        else "has no .* 'Transfer Syntax UID'"
    )
    with pytest.raises(InputError, match=message) as err:
        load_dicom_series(series)
    assert err.value.path == str(path)


def test_a_dcm_output_for_a_folder_of_series_is_refused(series, tmp_path):
    """``output=x.dcm`` for several inputs silently became a folder named x.dcm; the suffix
    is told in any case (``x.DCM`` was a folder name for one series)."""
    from kdseg.cli.predict import _seg_path, plan_outputs

    for name in ("x.dcm", "x.DCM"):
        with pytest.raises(InputError, match="needs an output folder, not a file name"):
            plan_outputs(tmp_path, tmp_path / name)
    assert plan_outputs(series, tmp_path / "x.DCM") == [(series, tmp_path / "x.DCM")]
    assert _seg_path(tmp_path / "x.DCM") == tmp_path / "x.DCM"
    # a rerun knows its own SEG in any case (it was "not a kdseg prediction" as X.DCM)
    from kdseg.data.io import written_by_kdseg

    first = next(p for p in sorted(series.iterdir()) if p.suffix == ".dcm")
    ds = pydicom.dcmread(first)
    for name, maker, ours in (
        ("X.DCM", "kdseg", True),
        ("y.dcm", "kdseg", True),
        ("z.DCM", "x", False),
    ):
        ds.Manufacturer = maker
        ds.save_as(tmp_path / name)
        assert written_by_kdseg(tmp_path / name) is ours, name


@pytest.mark.parametrize("kind", ["nothing", "loop"])
def test_a_broken_link_in_a_series_is_refused_naming_it(series, kind):
    """An end slice that is a link to nothing, or a symlink loop, was skipped without a word
    (only a gap in the middle is noticed): the volume was one slice short."""
    last = sorted(p for p in series.iterdir() if p.suffix == ".dcm")[-1]
    last.unlink()
    os.symlink(last if kind == "loop" else series / "gone.dcm", last)
    with pytest.raises(InputError, match="symlink loop" if kind == "loop" else "a link to nothing"):
        load_dicom_series(series)


def test_the_public_entry_reexports_the_parts_names() -> None:
    """dicom.py held the file finding, the header checks, the pixel read and the affine in 744
    lines; they are now :mod:`~kdseg.data.dicom_files`, :mod:`~kdseg.data.dicom_geometry` and
    :mod:`~kdseg.data.dicom_pixels`. Every name imported from :mod:`kdseg.data.dicom` before is
    still there, and is the part's own object (one definition, not a copy)."""
    from kdseg.data import dicom, dicom_files, dicom_geometry, dicom_pixels

    parts = {
        dicom_files: ("DICOM_SUFFIXES", "dicomdir_index", "dicomdir_refusal", "is_dicom_folder"),
        dicom_geometry: ("RAS_LPS", "read_series_headers"),
        dicom_pixels: ("RESCALE_INTERCEPT",),
    }
    for module, names in parts.items():
        for name in names:
            assert getattr(dicom, name) is getattr(module, name), name
            assert name in dicom.__all__, name
    assert {"load_dicom_series", "SERIES_HEADERS"} <= set(dicom.__all__)


@pytest.mark.parametrize("first", ["dicom", "dicom_files", "dicom_geometry", "dicom_pixels"])
def test_each_dicom_module_imports_first_and_reads_without_torch(series, first) -> None:
    """Each part imports on its own in a fresh interpreter (no import cycle among them), and a
    series read through the public entry then imports neither torch nor MONAI: the ONNX deploy
    path reads DICOM with pydicom alone."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        f"import sys, kdseg.data.{first}\n"
        "from kdseg.data.dicom import load_dicom_series\n"
        f"image = load_dicom_series({str(series)!r}, int16=True)\n"
        "print(image.shape, 'torch' in sys.modules, 'monai' in sys.modules)"
    )
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(root)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-2:] == ["False", "False"], result.stdout
