"""Fast gzip behind nibabel: files stay standard gzip, every codec agrees, and it falls back."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from kdseg.data.niigz import PREFERENCE, decompress, load_nifti, pick_codec, save_nifti

CODECS = sorted({pick_codec([name]).name for name in PREFERENCE})


def _image() -> nib.Nifti1Image:
    data = np.zeros((30, 20, 7), np.int16, order="F")
    data[5:25, 3:17, 1:6] = np.arange(20 * 14 * 5).reshape(20, 14, 5) - 500
    return nib.Nifti1Image(data, np.diag([0.7, 0.8, 2.5, 1.0]))


@pytest.mark.parametrize("name", CODECS)
def test_written_files_are_standard_gzip_and_round_trip(tmp_path: Path, name: str) -> None:
    codec = pick_codec([name])
    assert codec.name == name
    img = _image()
    path = save_nifti(img, tmp_path / "v.nii.gz", codec)
    raw = gzip.decompress(path.read_bytes())  # the standard library reads it
    assert raw == img.to_bytes()
    back = nib.load(str(path))  # and so does nibabel on its own
    np.testing.assert_array_equal(np.asanyarray(back.dataobj), img.get_fdata())
    np.testing.assert_allclose(back.affine, img.affine)
    # files nibabel wrote itself read back through the codec, data and header alike
    nib.save(img, str(tmp_path / "n.nii.gz"))
    ours = load_nifti(tmp_path / "n.nii.gz", codec)
    np.testing.assert_array_equal(np.asanyarray(ours.dataobj), np.asanyarray(img.dataobj))
    assert ours.header.get_zooms() == img.header.get_zooms()
    assert save_nifti(img, tmp_path / "again.nii.gz", codec).read_bytes() == path.read_bytes()


@pytest.mark.parametrize("name", CODECS)
def test_corrupt_and_truncated_streams_raise_the_standard_errors(name: str) -> None:
    codec = pick_codec([name])
    stream = gzip.compress(np.arange(50000, dtype=np.int32).tobytes())
    with pytest.raises(EOFError):
        decompress(stream[: len(stream) // 2], codec)
    with pytest.raises(zlib.error):
        decompress(stream[:20] + b"\xff" * 40 + stream[60:], codec)
    with pytest.raises(gzip.BadGzipFile):
        decompress(b"not a gzip file at all", codec)


def test_falls_back_to_the_standard_library() -> None:
    assert pick_codec(["no_such_gzip_module"]).name == "gzip"


def test_uncompressed_nifti_goes_straight_to_nibabel(tmp_path: Path) -> None:
    img = _image()
    path = save_nifti(img, tmp_path / "v.nii")
    np.testing.assert_array_equal(np.asanyarray(load_nifti(path).dataobj), img.dataobj)


def test_prefetched_bytes_serve_only_the_same_unchanged_file(tmp_path: Path) -> None:
    """prefetch() then load_nifti() gives the file's image; a file rewritten in between is read
    again, never served stale; a corrupt one still fails on the real read; non-files are
    ignored."""
    import os

    from kdseg.data import niigz

    niigz.forget_prefetched()
    path = save_nifti(_image(), tmp_path / "v.nii.gz")
    niigz.prefetch(path)
    niigz.prefetch(tmp_path / "missing.nii.gz")
    niigz.prefetch(tmp_path)
    assert list(niigz._PREFETCHED) == [str(path.resolve())]
    got = load_nifti(path)
    np.testing.assert_array_equal(np.asanyarray(got.dataobj), np.asanyarray(_image().dataobj))
    assert not niigz._PREFETCHED  # taken once

    niigz.prefetch(path)
    niigz._PREFETCHED[str(path.resolve())].join()
    changed = nib.Nifti1Image(np.ones((4, 5, 6), np.int16), np.eye(4))
    save_nifti(changed, path)
    os.utime(path, ns=(1, 1))  # a different mtime even on a coarse clock
    assert np.asanyarray(load_nifti(path).dataobj).shape == (4, 5, 6)
    assert not niigz._PREFETCHED  # the stale entry was dropped, not kept

    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"\x1f\x8b not really gzip")
    niigz.prefetch(bad)
    with pytest.raises((zlib.error, OSError, EOFError)):
        load_nifti(bad)
    niigz.prefetch(path)
    niigz.forget_prefetched()  # what a command's exit path does
    assert not niigz._PREFETCHED


def _ct(shape: tuple[int, ...] = (20, 18, 6)) -> np.ndarray:
    return np.random.default_rng(0).integers(-1000, 1000, size=shape).astype(np.int16)


def test_labels_keep_the_stored_header_geometry(tmp_path):
    """A label is placed wherever a viewer places its image: qform and sform with their codes,
    voxel sizes, NIfTI version and a singleton fourth axis all come back as stored."""
    from kdseg.data.io import label_image, load_volume

    split = nib.Nifti1Image(_ct(), np.diag([1.6, 1.5, 3.0, 1.0]))
    split.set_qform(np.diag([1.5, 1.5, 3.0, 1.0]), code=1)  # qform and sform disagree
    split.set_sform(np.diag([1.6, 1.5, 3.0, 1.0]), code=2)
    four = nib.Nifti1Image(_ct()[..., None], np.diag([0.9, 0.9, 5.0, 1.0]))
    four.header.set_zooms((0.9, 0.9, 5.0, 2.5))
    unset = nib.Nifti1Image(_ct(), None)  # no form set: the voxel sizes alone
    unset.header.set_zooms((0.9, 0.8, 5.0))
    version2 = nib.Nifti2Image(_ct(), np.diag([0.8, 0.8, 2.0, 1.0]))
    for name, image in [("split", split), ("four", four), ("unset", unset), ("v2", version2)]:
        path = tmp_path / f"{name}.nii.gz"
        nib.save(image, path)
        stored = nib.load(path)
        loaded = load_volume(path)
        label = label_image(np.zeros(loaded.shape, np.uint8), loaded)
        assert type(label) is type(stored), name
        assert label.shape == stored.shape, name
        assert label.header.get_zooms() == stored.header.get_zooms(), name
        for key in ("qform_code", "sform_code"):
            assert int(label.header[key]) == int(stored.header[key]), (name, key)
        np.testing.assert_array_equal(label.get_qform(), stored.get_qform())
        np.testing.assert_array_equal(label.get_sform(), stored.get_sform())


def test_a_normalised_image_is_not_taken_for_hounsfield_units(tmp_path):
    """z-scored or rescaled by a broken slope, the values span a few units, not hundreds of HU."""
    from kdseg.data.io import load_volume
    from kdseg.errors import InputError

    scaled = nib.Nifti1Image(((_ct() + 400) / 400).astype(np.float32), np.eye(4))
    nib.save(scaled, tmp_path / "z.nii.gz")
    with pytest.raises(InputError, match=r"within 3\.\d+ of 0 .*a normalised image"):
        load_volume(tmp_path / "z.nii.gz")


def test_the_hounsfield_check_samples_a_fortran_volume_without_copying_it():
    """Its fixed-stride sample took ``data.reshape(-1)``, which copies a Fortran-ordered array
    (every NIfTI and DICOM volume) whole: 0.3-0.4 s and the volume's size again for one scan
    of 512 x 512 x 150. The sample is the same voxels, so is the verdict."""
    import tracemalloc

    from kdseg.data.io import check_volume
    from kdseg.errors import InputError

    data = np.full((256, 256, 256), -1000, np.int16, order="F")  # 32 MB
    data[64:192, 64:192, :] = 40
    data[120:136, 120:136, :] = 700
    img = nib.Nifti1Image(data, np.diag([0.8, 0.8, 2.0, 1.0]))
    tracemalloc.start()
    try:
        check_volume(img, "ct.nii.gz")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < data.nbytes / 2, f"{peak:,} bytes for a {data.nbytes:,}-byte volume"
    data[data > -1000] = 1  # padding, and near 0 everywhere else: no HU, in either order
    data[data == -1000] = -3024
    for volume in (data, np.ascontiguousarray(data)):
        with pytest.raises(InputError, match="a normalised image"):
            check_volume(nib.Nifti1Image(volume, np.diag([0.8, 0.8, 2.0, 1.0])), "ct.nii.gz")


def test_a_finite_float_volume_is_not_scanned_again_for_nan(monkeypatch):
    """Min and max, which the image checks take anyway, are finite only where every voxel is
    (NaN propagates, an Inf is one of them): the NaN / Inf count over the whole volume (and its
    mask of the volume's size) runs only when they are not. A DICOM series is float32."""
    from kdseg.data.io import check_volume
    from kdseg.errors import InputError

    data = np.asfortranarray(_ct().astype(np.float32))
    scanned: list[int] = []
    isfinite = np.isfinite

    def spy(x, *args, **kwargs):
        if np.size(x) == data.size:
            scanned.append(np.size(x))
        return isfinite(x, *args, **kwargs)

    monkeypatch.setattr(np, "isfinite", spy)
    check_volume(nib.Nifti1Image(data, np.eye(4)), "ct.nii.gz")
    assert scanned == []
    for value, kind in ((np.nan, "NaN"), (np.inf, "Inf"), (-np.inf, "-Inf")):
        bad = data.copy(order="F")
        bad[3, 4, 1] = value
        with pytest.raises(InputError, match="1 of .* voxels are NaN or Inf"):
            check_volume(nib.Nifti1Image(bad, np.eye(4)), "ct.nii.gz")
        fixed = check_volume(nib.Nifti1Image(bad, np.eye(4)), "ct.nii.gz", nonfinite="min")
        assert np.asanyarray(fixed.dataobj)[3, 4, 1] == data.min(), kind


def _scaled_4d_image() -> nib.Nifti1Image:
    """int16 stored with a slope and intercept (read as float) and a singleton fourth axis."""
    img = nib.Nifti1Image(_image().get_fdata(dtype=np.float32)[..., None], np.eye(4))
    img.header.set_data_dtype(np.int16)
    img.header.set_slope_inter(2.0, -10.0)
    return img


@pytest.mark.parametrize("name", CODECS)
@pytest.mark.parametrize(
    "make",
    [_image, _scaled_4d_image, lambda: nib.Nifti2Image(_image().dataobj, _image().affine)],
    ids=["int16", "scaled-4d", "nifti2"],
)
def test_a_streamed_read_gives_what_a_whole_read_gives(tmp_path: Path, name: str, make) -> None:
    """read_streamed decompresses straight into the volume (its size once, not twice) and
    gives the voxels (dtype and scaling included), affine and header of a whole read."""
    from kdseg.data.niigz import read_streamed

    path = tmp_path / "v.nii.gz"
    nib.save(make(), str(path))
    klass = nib.Nifti2Image if "nifti2" in str(type(make())).lower() else nib.Nifti1Image
    whole = klass.from_bytes(gzip.decompress(path.read_bytes()))
    got = read_streamed(path, pick_codec([name]))
    want = np.asanyarray(whole.dataobj)
    np.testing.assert_array_equal(np.asanyarray(got.dataobj), want, strict=True)
    assert type(got) is type(whole) and np.array_equal(got.affine, whole.affine)
    assert got.header.get_data_dtype() == whole.header.get_data_dtype()
    assert got.header.get_data_shape() == whole.header.get_data_shape()


@pytest.mark.parametrize("name", CODECS)
def test_a_nii_gz_is_read_with_its_volume_once_in_memory(tmp_path: Path, name: str) -> None:
    """A whole read held the decompressed bytes and nibabel's copy of them at once (a
    512 x 512 x 400 CT: 420 MB for a 210 MB volume); load_nifti decompresses straight into
    the volume, a chunk at a time."""
    import tracemalloc

    from kdseg.data.niigz import READ_CHUNK

    data = np.random.default_rng(0).integers(-1024, 2000, (128, 128, 96), dtype=np.int16)
    path = save_nifti(nib.Nifti1Image(data, np.eye(4)), tmp_path / "v.nii.gz", pick_codec([name]))
    tracemalloc.start()
    try:
        got = np.asanyarray(load_nifti(path, pick_codec([name])).dataobj)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(got, data, strict=True)
    assert peak < data.nbytes + 2 * READ_CHUNK, f"{peak:,} bytes for {data.nbytes:,}"


@pytest.mark.parametrize("name", CODECS)
def test_a_streamed_read_checks_the_gzip_trailer(tmp_path: Path, name: str) -> None:
    """The voxels end before the gzip trailer: the stream is read on to its end, so a file
    cut short there, or with a wrong CRC, fails as reading it whole does."""
    from kdseg.data.niigz import read_streamed

    good = save_nifti(_image(), tmp_path / "good.nii.gz").read_bytes()
    cut, crc = tmp_path / "cut.nii.gz", tmp_path / "crc.nii.gz"
    cut.write_bytes(good[:-6] + good[-4:])  # the size field stays: the header check passes
    crc.write_bytes(good[:-8] + bytes(b ^ 0xFF for b in good[-8:-4]) + good[-4:])
    with pytest.raises((EOFError, zlib.error, OSError)):
        read_streamed(cut, pick_codec([name]))
    with pytest.raises((zlib.error, OSError)):
        read_streamed(crc, pick_codec([name]))
