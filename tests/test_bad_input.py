"""Bad input: one line naming the file, exit code 2, no traceback, nothing half-written."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

BIN = Path(sys.executable).parent


def _good_pair(root: Path, n: int = 0, shape=(24, 20, 6)) -> None:
    rng = np.random.default_rng(n)
    img = nib.Nifti1Image(
        rng.integers(-1000, 200, shape).astype(np.int16), np.diag([1.0, 1.0, 3.0, 1.0])
    )
    lab = np.zeros(shape, np.uint8)
    lab[5:10, 5:10, 2:4] = 1
    nib.save(img, str(root / f"volume-{n}.nii.gz"))
    nib.save(nib.Nifti1Image(lab, img.affine), str(root / f"segmentation-{n}.nii.gz"))


def _run(command: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled"}
    return subprocess.run(
        [str(BIN / command), *args], capture_output=True, text=True, cwd=cwd, env=env
    )


def _break(root: Path, how: str) -> Path:
    """Make case 1 of a good LiTS folder bad in one way; return the file the error must name."""
    _good_pair(root, 0)
    _good_pair(root, 1)
    vol, seg = root / "volume-1.nii.gz", root / "segmentation-1.nii.gz"
    affine = np.diag([1.0, 1.0, 3.0, 1.0])
    if how == "missing label":
        seg.unlink()
        return vol
    if how == "shape mismatch":
        nib.save(nib.Nifti1Image(np.zeros((24, 20, 5), np.uint8), affine), str(seg))
        return seg
    if how == "affine mismatch":
        nib.save(
            nib.Nifti1Image(np.zeros((24, 20, 6), np.uint8), np.diag([2.0, 1.0, 3.0, 1.0])),
            str(seg),
        )
        return seg
    if how == "corrupt":
        vol.write_bytes(b"this is not a nifti file at all" * 10)
        return vol
    if how == "truncated":
        data = vol.read_bytes()
        vol.write_bytes(data[: len(data) // 2])
        return vol
    if how == "not 3D":
        nib.save(nib.Nifti1Image(np.zeros((24, 20), np.int16), affine), str(vol))
        return vol
    if how == "unknown labels":
        lab = np.zeros((24, 20, 6), np.uint8)
        lab[0, 0, 0] = 7
        nib.save(nib.Nifti1Image(lab, affine), str(seg))
        return seg
    raise ValueError(how)


CASES = [
    "missing label",
    "shape mismatch",
    "affine mismatch",
    "corrupt",
    "truncated",
    "not 3D",
    "unknown labels",
]


@pytest.mark.parametrize("how", CASES)
def test_prepare_rejects_bad_case(tmp_path: Path, how: str) -> None:
    root = tmp_path / "lits"
    root.mkdir()
    culprit = _break(root, how)
    result = _run("kdseg-prepare", f"data.root={root}", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert culprit.name in lines[0] and "Traceback" not in result.stderr
    cache = root / ".kdseg_cache"
    assert not list(cache.rglob("volume-1/meta.json")) if cache.exists() else True
    assert not [p for p in root.rglob(".*") if p.is_file() and p.suffix in (".npy", ".gz", ".json")]


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = _run("kdseg-prepare", f"data.root={tmp_path / 'empty'}", cwd=tmp_path)
    assert result.returncode == 2
    assert (
        "empty" in result.stderr
        and "no cases" in result.stderr
        and "Traceback" not in result.stderr
    )


def test_truncated_gzip_is_detected_by_loader(tmp_path: Path) -> None:
    from kdseg.data.io import load_volume
    from kdseg.errors import InputError

    path = tmp_path / "v.nii.gz"
    path.write_bytes(gzip.compress(b"\x00" * 100))
    with pytest.raises(InputError, match="v.nii.gz"):
        load_volume(path)
