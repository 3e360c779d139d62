"""DICOM SEG output: read back with highdicom, it is the label voxel for voxel on the source
series' geometry, and it references the source series."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest

from kdseg.data.dicom import load_dicom_series
from kdseg.data.dicom_seg import source_slices, write_dicom_seg
from kdseg.data.dicom_write import write_dicom_series
from kdseg.data.io import save_label
from kdseg.errors import InputError

# rows along y, slices stacked downwards: a frame is not simply the array's first two axes
AFFINE = np.array([[0, 0.75, 0, -40.0], [0.6, 0, 0, 12.0], [0, 0, -3.0, 80.0], [0, 0, 0, 1]])


def _series(tmp_path: Path) -> tuple[Path, nib.Nifti1Image]:
    hu = np.random.default_rng(0).integers(-200, 200, size=(30, 26, 9)).astype(np.int16)
    folder = tmp_path / "series"
    write_dicom_series(nib.Nifti1Image(hu, AFFINE), folder, rng=np.random.default_rng(2))
    return folder, load_dicom_series(folder)


def _expected_frames(nifti: nib.Nifti1Image, sources: list[pydicom.Dataset]) -> np.ndarray:
    """The label at every source pixel's patient position, from DICOM and NIfTI geometry
    alone (LPS pixel centres -> RAS -> NIfTI voxel): independent of the writer's conventions."""
    data = np.asarray(nifti.dataobj)
    inverse = np.linalg.inv(nifti.affine)
    frames = []
    for ds in sources:
        iop = np.array(ds.ImageOrientationPatient, dtype=float)
        row_spacing, col_spacing = (float(v) for v in ds.PixelSpacing)
        r, c = np.meshgrid(np.arange(ds.Rows), np.arange(ds.Columns), indexing="ij")
        lps = (
            np.array(ds.ImagePositionPatient, dtype=float)[:, None, None]
            + iop[:3, None, None] * c * col_spacing
            + iop[3:, None, None] * r * row_spacing
        )
        ras = lps * np.array([-1.0, -1.0, 1.0])[:, None, None]
        ijk = np.einsum("ab,bxy->axy", inverse[:3, :3], ras) + inverse[:3, 3, None, None]
        i, j, k = np.rint(ijk).astype(int)
        frames.append(data[i, j, k])
    return np.stack(frames)


def test_seg_round_trip_matches_the_nifti_and_references_the_series(tmp_path: Path) -> None:
    folder, image = _series(tmp_path)
    label = np.zeros(image.shape, np.uint8)
    label[4:20, 3:15, 1:7] = 1
    label[6:10, 5:12, 2:4] = 2
    label[22:25, 18:22, 6] = 2  # a second lesion, on one slice only
    nifti = nib.load(str(save_label(label, image, tmp_path / "label.nii.gz")))
    path = write_dicom_seg(label, folder, tmp_path / "out" / "label.seg.dcm", organ="liver")
    assert sorted(p.name for p in path.parent.iterdir()) == ["label.seg.dcm"]  # no temp left

    seg = hd.seg.segread(path)
    sources = source_slices(folder)
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"  # Segmentation Storage
    assert seg.StudyInstanceUID == sources[0].StudyInstanceUID
    assert seg.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    referenced = seg.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == sources[0].SeriesInstanceUID
    assert {i.ReferencedSOPInstanceUID for i in referenced.ReferencedInstanceSequence} == {
        ds.SOPInstanceUID for ds in sources
    }
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["liver", "liver tumor"]
    assert seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == "10200004"

    uids = [ds.SOPInstanceUID for ds in sources]
    frames = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=uids, combine_segments=True, assert_missing_frames_are_empty=True
    )
    assert frames.shape == (len(sources), sources[0].Rows, sources[0].Columns)
    np.testing.assert_array_equal(frames, _expected_frames(nifti, sources))
    assert int(seg.NumberOfFrames) < 2 * len(sources)  # empty frames are left out
    # a viewer may place a frame by its position, not its source: both name the same slice
    by_uid = {ds.SOPInstanceUID: ds for ds in sources}
    for item in seg.PerFrameFunctionalGroupsSequence:
        uid = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        position = item.PlanePositionSequence[0].ImagePositionPatient
        np.testing.assert_allclose(
            [float(v) for v in position], [float(v) for v in by_uid[uid].ImagePositionPatient]
        )


def test_seg_of_a_binary_model_and_of_an_empty_label(tmp_path: Path) -> None:
    folder, image = _series(tmp_path)
    label = np.zeros(image.shape, np.uint8)
    label[5:9, 5:9, 3:5] = 2
    seg = hd.seg.segread(write_dicom_seg(label, folder, tmp_path / "t.dcm", labels=(2,)))
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["organ tumor"]
    uids = [ds.SOPInstanceUID for ds in source_slices(folder)]
    frames = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, combine_segments=True)
    assert int(frames.sum()) == int((label == 2).sum())  # label 2 is segment 1
    empty = write_dicom_seg(np.zeros_like(label), folder, tmp_path / "e.dcm", labels=(1, 2))
    assert int(hd.seg.segread(empty).NumberOfFrames) >= 1


def test_seg_refuses_a_label_of_another_grid(tmp_path: Path) -> None:
    folder, image = _series(tmp_path)
    with pytest.raises(InputError, match="does not fit"):
        write_dicom_seg(np.zeros((3, 3, 3), np.uint8), folder, tmp_path / "x.dcm")
    assert not (tmp_path / "x.dcm").exists()


def test_segments_have_a_display_colour_and_the_tumor_its_organ(tmp_path: Path) -> None:
    """OHIF hangs loading a SEG whose segments lack RecommendedDisplayCIELabValue (OHIF
    issue 3939), and "Neoplasm" alone does not say where: the tumor's AnatomicRegionSequence
    names its organ (liver, kidney); an unnamed organ gives no region."""
    folder, image = _series(tmp_path)
    label = np.zeros(image.shape, np.uint8)
    label[4:20, 3:15, 1:7] = 1
    label[6:10, 5:12, 2:4] = 2
    for organ, code in (("liver", "10200004"), ("kidney", "64033007"), ("organ", None)):
        seg = pydicom.dcmread(
            write_dicom_seg(label, folder, tmp_path / f"{organ}.dcm", organ=organ)
        )
        colours = [tuple(s.RecommendedDisplayCIELabValue) for s in seg.SegmentSequence]
        assert len(colours) == 2 and len(set(colours)) == 2  # each its own colour
        organ_item, tumor = seg.SegmentSequence
        assert tumor.SegmentedPropertyTypeCodeSequence[0].CodeValue == "108369006"  # Neoplasm
        regions = [r.CodeValue for r in tumor.get("AnatomicRegionSequence", [])]
        assert regions == ([code] if code else [])
        assert "AnatomicRegionSequence" not in organ_item  # the organ is its own type


def test_every_segment_has_frames_when_one_is_empty(tmp_path: Path) -> None:
    """No tumor found (the common case) or nothing found at all: a segment described with no
    frame hangs OHIF's loader (OHIF issue 3991), so then every frame is kept, empty or not."""
    folder, image = _series(tmp_path)
    uids = [ds.SOPInstanceUID for ds in source_slices(folder)]
    organ_only = np.zeros(image.shape, np.uint8)
    organ_only[4:20, 3:15, 1:7] = 1
    for name, label in (("organ", organ_only), ("none", np.zeros_like(organ_only))):
        seg = hd.seg.segread(write_dicom_seg(label, folder, tmp_path / f"{name}.dcm"))
        framed = {
            int(f.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
            for f in seg.PerFrameFunctionalGroupsSequence
        }
        assert framed == {1, 2}
        frames = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=uids, combine_segments=True
        )
        np.testing.assert_array_equal(frames, label.transpose(2, 1, 0))


def _edit_series(folder: Path, edit) -> list[Path]:
    """Rewrite every slice of ``folder`` with ``edit(index, dataset)`` applied (InstanceNumber
    order); returns the files in that order."""
    files = sorted(folder.iterdir(), key=lambda p: int(pydicom.dcmread(p).InstanceNumber))
    for index, path in enumerate(files):
        ds = pydicom.dcmread(path)
        edit(index, ds)
        ds.save_as(path)
    return files


def test_seg_of_a_series_with_nonconformant_patient_and_study_values(tmp_path: Path) -> None:
    """Real exports carry values highdicom's constructor refuses (a sex of U, dates and times
    with separators, a negative series number) or lack Type 2 / optional tags (SliceThickness,
    Modality): the SEG is still written, its patient and study values the source's verbatim
    (a PACS files it by them), its series number a valid one."""
    folder, image = _series(tmp_path)
    odd = {"PatientSex": "U", "PatientBirthDate": "1980-01-02", "StudyTime": "12:30:00"}

    def edit(index: int, ds: pydicom.Dataset) -> None:
        for keyword, value in odd.items():
            setattr(ds, keyword, value)
        ds.SeriesNumber = -150
        del ds.SliceThickness, ds.Modality

    with pytest.warns(UserWarning):  # pydicom's, on writing the odd values into the source
        _edit_series(folder, edit)
    label = np.zeros(image.shape, np.uint8)
    label[4:20, 3:15, 1:7] = 1
    seg = pydicom.dcmread(write_dicom_seg(label, folder, tmp_path / "odd.dcm"))
    assert {keyword: str(seg[keyword].value) for keyword in odd} == odd
    assert int(seg.SeriesNumber) >= 1 and seg.Modality == "SEG"
    uids = [ds.SOPInstanceUID for ds in source_slices(folder)]
    frames = hd.seg.segread(tmp_path / "odd.dcm").get_pixels_by_source_instance(
        source_sop_instance_uids=uids, combine_segments=True
    )
    np.testing.assert_array_equal(frames, label.transpose(2, 1, 0))


def test_a_series_with_dates_and_times_pydicom_calls_invalid_reads_without_a_warning(
    tmp_path: Path, caplog
) -> None:
    """Every slice's dates and times with separators (``2020-01-02``, ``12:30:07``: values
    pydicom validates as invalid for DA / TM, each slice another) are read and written into
    the SEG without a line from pydicom, as a warning or through its logger: kdseg-predict on
    a real export printed nothing, and this keeps it so."""
    import warnings

    folder, _ = _series(tmp_path)

    def edit(index: int, ds: pydicom.Dataset) -> None:
        for keyword in ("PatientBirthDate", "StudyDate", "SeriesDate", "ContentDate"):
            setattr(ds, keyword, f"2020-01-{index + 1:02d}")
        for keyword in ("StudyTime", "SeriesTime", "ContentTime", "AcquisitionTime"):
            setattr(ds, keyword, f"12:30:{index:02d}")
        ds.PatientSex = "U"

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's, on writing the odd values
        _edit_series(folder, edit)
    caplog.clear()
    with warnings.catch_warnings(record=True) as caught, caplog.at_level("DEBUG", "pydicom"):
        warnings.simplefilter("always")
        image = load_dicom_series(folder)
        label = np.zeros(image.shape, np.uint8)
        label[4:20, 3:15, 1:7] = 1
        write_dicom_seg(label, folder, tmp_path / "odd.dcm", image=image)
    assert [str(w.message) for w in caught] == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= 30] == []


def _unset(keyword: str, *slices: int):
    return lambda i, ds: (i in slices or not slices) and delattr(ds, keyword)


@pytest.mark.parametrize(
    ("damage", "culprit", "message"),
    [
        (_unset("FrameOfReferenceUID"), 0, "lacks FrameOfReferenceUID"),  # every slice
        (_unset("SOPInstanceUID", 3), 3, "lacks SOPInstanceUID"),
        (_unset("StudyInstanceUID", 4), 4, "lacks StudyInstanceUID"),
        (lambda i, ds: i in (2, 5) and setattr(ds, "SOPInstanceUID", "1.2.3"), 5, "shares"),
    ],
)
def test_seg_refuses_slices_it_cannot_reference(
    tmp_path: Path, damage, culprit: int, message: str
) -> None:
    """A slice without a UID a SEG references it by (or with another slice's SOP Instance
    UID) is refused in one line naming its file; nothing is written."""
    folder, image = _series(tmp_path)
    files = _edit_series(folder, damage)
    with pytest.raises(InputError, match=message) as error:
        write_dicom_seg(np.ones(image.shape, np.uint8), folder, tmp_path / "x.dcm")
    assert files[culprit].name in str(error.value)
    assert not (tmp_path / "x.dcm").exists()


def test_seg_is_a_new_series_of_the_source_study_made_by_kdseg(tmp_path: Path) -> None:
    """What a PACS files the SEG by: the source's patient and study, a new series and instance
    each run (never the CT's), kdseg and its version as the equipment and the algorithm."""
    import kdseg

    folder, image = _series(tmp_path)
    label = np.zeros(image.shape, np.uint8)
    label[4:20, 3:15, 1:7] = 1
    source = source_slices(folder)[0]
    first, second = (
        pydicom.dcmread(write_dicom_seg(label, folder, tmp_path / f"{n}.dcm")) for n in "ab"
    )
    for keyword in ("PatientName", "PatientID", "StudyInstanceUID", "FrameOfReferenceUID"):
        assert first[keyword].value == source[keyword].value
    for keyword in ("SeriesInstanceUID", "SOPInstanceUID"):
        assert len({first[keyword].value, second[keyword].value, source[keyword].value}) == 3
    assert int(first.SeriesNumber) == int(source.SeriesNumber) + 100
    assert (first.Manufacturer, first.SoftwareVersions) == ("kdseg", kdseg.__version__)
    algorithm = first.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("kdseg", kdseg.__version__)
    assert first.SegmentSequence[0].SegmentAlgorithmType == "AUTOMATIC"


def test_seg_of_a_loaded_series_reads_no_header_again(tmp_path: Path, monkeypatch) -> None:
    """kdseg-predict read and validated every slice header of the series twice, for the
    volume and again for its DICOM SEG (0.2 s of 150 slices): the SEG now takes the headers
    the volume was read with, and is the same SEG."""
    import kdseg.cli.predict as predict
    import kdseg.data.dicom_seg as dicom_seg

    folder, image = _series(tmp_path)
    label = np.zeros(image.shape, np.uint8)
    label[4:20, 3:15, 1:7] = 1
    label[6:10, 5:12, 2:4] = 2
    again = hd.seg.segread(write_dicom_seg(label, folder, tmp_path / "again.dcm"))
    read: list[object] = []
    dcmread = pydicom.dcmread
    monkeypatch.setattr(pydicom, "dcmread", lambda *a, **k: read.append(a) or dcmread(*a, **k))
    kept = hd.seg.segread(write_dicom_seg(label, folder, tmp_path / "kept.dcm", image=image))
    assert read == []
    uids = [ds.SOPInstanceUID for ds in source_slices(folder)]
    for seg in (again, kept):
        assert {
            i.ReferencedSOPInstanceUID
            for i in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence
        } == set(uids)
    np.testing.assert_array_equal(
        *(
            seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, combine_segments=True)
            for seg in (again, kept)
        )
    )
    passed: dict = {}
    monkeypatch.setattr(dicom_seg, "write_dicom_seg", lambda *a, **k: passed.update(k))
    task = type("Task", (), {"output_labels": (1, 2)})()
    predict._write_seg(label, folder, tmp_path / "p.dcm", task, {}, image)
    assert passed["image"] is image


def test_two_segs_of_one_loaded_series_both_keep_its_nonconformant_values(tmp_path: Path) -> None:
    """The SEG takes the slice headers cached in the loaded image (``image.extra``); blanking
    the values highdicom refuses on those shared headers made a second SEG of the same image
    lose them (PatientSex U written as empty): each SEG must carry the source's values, and
    the loaded image's headers stay as read."""
    from kdseg.data.dicom import SERIES_HEADERS

    folder, _ = _series(tmp_path)
    odd = {"PatientSex": "U", "PatientBirthDate": "1980-01-02", "StudyTime": "12:30:00"}

    def edit(index: int, ds: pydicom.Dataset) -> None:
        for keyword, value in odd.items():
            setattr(ds, keyword, value)

    with pytest.warns(UserWarning):  # pydicom's, on writing the odd values into the source
        _edit_series(folder, edit)
    image = load_dicom_series(folder)
    label = np.zeros(image.shape, np.uint8)
    label[4:20, 3:15, 1:7] = 1
    for name in ("a.dcm", "b.dcm"):
        seg = pydicom.dcmread(write_dicom_seg(label, folder, tmp_path / name, image=image))
        assert {keyword: str(seg[keyword].value) for keyword in odd} == odd, name
    first = image.extra[SERIES_HEADERS][0]
    assert {keyword: str(first[keyword].value) for keyword in odd} == odd


def test_seg_of_a_series_with_orientation_noise_and_a_negative_thickness(tmp_path: Path) -> None:
    """Cosines 1e-6 apart (rounding) read as one orientation but made highdicom refuse the SEG
    after inference ("internal error: ... must have a shared orientation"); a negative
    SliceThickness was copied into the SEG's pixel measures. The files stay as they were."""
    folder, _ = _series(tmp_path)

    def edit(index: int, ds: pydicom.Dataset) -> None:
        cosines = [float(v) for v in ds.ImageOrientationPatient]
        cosines[1] += 1e-6 * (index % 2)
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in cosines]
        ds.SliceThickness = "-3.0"

    files = _edit_series(folder, edit)
    before = [p.read_bytes() for p in files]
    image = load_dicom_series(folder)
    seg = pydicom.dcmread(
        write_dicom_seg(np.ones(image.shape, np.uint8), folder, tmp_path / "s.dcm", image=image)
    )
    measures = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert float(measures.SliceThickness) == 3.0
    assert [p.read_bytes() for p in files] == before


def test_seg_frames_follow_slice_positions_not_instance_numbers(tmp_path: Path) -> None:
    """Blanked InstanceNumbers (an anonymiser's) were refused; the slices are stacked by
    position, and the SEG's frame of each source slice is that slice's label plane."""
    folder, _ = _series(tmp_path)
    _edit_series(folder, lambda index, ds: setattr(ds, "InstanceNumber", None))
    image = load_dicom_series(folder)
    label = np.zeros(image.shape, np.uint8)
    label[4:20, 3:15, 1:7] = 1
    label[6:10, 5:12, 2:4] = 2
    nifti = nib.load(str(save_label(label, image, tmp_path / "label.nii.gz")))
    seg = hd.seg.segread(write_dicom_seg(label, folder, tmp_path / "s.dcm", organ="liver"))
    sources = source_slices(folder)
    frames = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[ds.SOPInstanceUID for ds in sources],
        combine_segments=True,
        assert_missing_frames_are_empty=True,
    )
    np.testing.assert_array_equal(frames, _expected_frames(nifti, sources))


def test_seg_highdicom_refuses_is_one_line_naming_the_series(tmp_path: Path) -> None:
    """A slice of another study (one series UID, two StudyInstanceUIDs): highdicom's
    ValueError was an internal error; it is one line naming the folder, nothing written."""
    folder, image = _series(tmp_path)
    _edit_series(folder, lambda index, ds: index == 4 and setattr(ds, "StudyInstanceUID", "1.2"))
    with pytest.raises(InputError, match="cannot write a DICOM SEG of this series") as error:
        write_dicom_seg(np.ones(image.shape, np.uint8), folder, tmp_path / "out" / "x.dcm")
    assert error.value.path == str(folder)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
