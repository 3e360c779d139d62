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
