"""Distilling from a folder of a teacher's saved predictions instead of a live teacher: hard
labels and probability volumes over labeled and unlabeled scans; feature terms refused; a
prediction whose geometry is not the image's refused with exit 2 and one line."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from conftest import TINY_DATA, error_lines, kdseg_here
from test_distill_module import STUDENT
from test_nnunet import FIXTURE
from test_unlabeled import SCANS, scan_folder

from kdseg.data.manifest import resolve_split
from kdseg.data.sources import discover_cases


def train_ids(phantom: Path) -> list[str]:
    """The training cases of the phantom's split (written now if no run did yet)."""
    ids = [c.case_id for c in discover_cases("lits", phantom)]
    return resolve_split(phantom, ids, manifest="lits.json")["train"]


def predictions(phantom: Path, folder: Path) -> Path:
    """Label NIfTIs for the training cases, (C, x, y, z) .npy probabilities for the scans."""
    folder.mkdir()
    for case in train_ids(phantom):
        shutil.copy(
            phantom / f"segmentation-{case.split('-')[1]}.nii.gz", folder / f"{case}.nii.gz"
        )
    for name, volume in SCANS.items():
        seg = np.asarray(nib.load(phantom / volume.replace("volume", "segmentation")).dataobj)
        one_hot = (seg[None] == np.arange(3).reshape(3, 1, 1, 1)).astype(np.float32)
        soft = 0.8 * one_hot + 0.2 / 3
        np.save(folder / f"{name}.npy", soft)
    return folder


def distill(phantom: Path, tmp_path: Path, teacher: Path, *extra: str, check: bool = True):
    scans = tmp_path / "scans"
    if not scans.exists():
        scan_folder(phantom, scans)
    return kdseg_here(
        "distill",
        *TINY_DATA,
        *STUDENT,
        "logger=csv",
        f"data.root={phantom}",
        f"data.cache_root={tmp_path / 'cache'}",
        f"teacher.predictions={teacher}",
        f"data.unlabeled_root={scans}",
        "data.unlabeled_fraction=0.25",
        "trainer.max_steps=2",
        "trainer.log_every_n_steps=1",
        "trainer.max_epochs=1",
        f"hydra.run.dir={tmp_path / 'run'}",
        *extra,
        check=check,
    )


def test_distill_from_stored_predictions_with_unlabeled_scans(
    phantom_lits: Path, tmp_path: Path
) -> None:
    teacher = predictions(phantom_lits, tmp_path / "preds")
    distill(phantom_lits, tmp_path, teacher, "distill=kd")
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()
    metrics = (tmp_path / "run" / "csv" / "metrics.csv").read_text()
    assert "distill/kd" in metrics and "train/seg" in metrics
    caches = {p.name.split("-")[0] for p in (tmp_path / "cache").iterdir()}
    assert caches == {"lits", "unlabeled", "teacher"}
    # hard labels cached as one-hot on the slice grid, equal to the cached labels
    cache = next((tmp_path / "cache").glob("teacher-*"))
    lits = next((tmp_path / "cache").glob("lits-*-*"))  # (lits-<key>/ holds the split)
    grid = np.load(cache / "cases" / "volume-1" / "teacher.npy")
    np.testing.assert_array_equal(
        grid.argmax(1), np.load(lits / "cases" / "volume-1" / "label.npy")
    )

    refused = distill(
        phantom_lits,
        tmp_path,
        teacher,
        "distill=emkd",
        f"hydra.run.dir={tmp_path / 'emkd'}",
        check=False,
    )
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 2 and len(lines) == 1, refused.stderr
    assert "feature terms" in lines[0] and "imd_low" in lines[0]


def test_prediction_with_mismatched_geometry_exits_2_with_one_line(
    phantom_lits: Path, tmp_path: Path
) -> None:
    teacher = predictions(phantom_lits, tmp_path / "preds")
    case = train_ids(phantom_lits)[1]
    (teacher / f"{case}.nii.gz").unlink()  # an nnU-Net file of another image in its place
    shutil.copy(FIXTURE / "fix_001.npz", teacher / f"{case}.npz")
    shutil.copy(FIXTURE / "fix_001.pkl", teacher / f"{case}.pkl")
    result = distill(phantom_lits, tmp_path, teacher, "distill=kd", check=False)
    lines = error_lines(result.stderr)  # after the phantoms' HU-window warning
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert f"{case}.npz" in lines[0] and "voxels" in lines[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_prediction_gone_from_the_folder_is_refused_though_its_case_is_cached(
    phantom_lits: Path, tmp_path: Path
) -> None:
    """A prediction must exist for every case each time: a predictions folder written again
    without one case kept that case's cached targets of the earlier teacher, a cache mixing
    two teachers. Now it is the one line of a case never cached."""
    import pytest
    from test_pipeline import _data_cfg

    from kdseg.data.dataset import resolve_data
    from kdseg.errors import InputError

    teacher = predictions(phantom_lits, tmp_path / "preds")
    cfg = _data_cfg(phantom_lits, **{"data.cache_root": tmp_path / "cache"})
    setup = resolve_data(cfg, teacher_predictions=str(teacher))
    setup.prepare(progress=False)
    case = train_ids(phantom_lits)[0]
    assert (setup.teacher_dir / "cases" / case / "teacher.npy").exists()
    (teacher / f"{case}.nii.gz").unlink()
    again = resolve_data(cfg, teacher_predictions=str(teacher))
    with pytest.raises(InputError, match=f"no teacher prediction for case '{case}'"):
        again.prepare(progress=False)


def test_stage2_distill_from_stored_predictions_cuts_them_like_the_images(
    phantom_lits: Path, tmp_path: Path
) -> None:
    """An organ-ROI (stage-2) student learns from stored predictions: each is cut with the box
    its case's image slices were cut with (ground truth or the scan's mask, both jittered), so
    teacher and image slices align, labeled and unlabeled."""
    from test_unlabeled import ROI

    teacher = predictions(phantom_lits, tmp_path / "preds")
    masks = tmp_path / "masks"
    masks.mkdir()
    for name, volume in SCANS.items():
        seg = phantom_lits / volume.replace("volume", "segmentation")
        (masks / f"{name}.nii.gz").symlink_to(seg)
    jitter = [o for o in ROI if "roi_jitter_mm" not in o] + ["data.preprocess.roi_jitter_mm=5"]
    distill(
        phantom_lits,
        tmp_path,
        teacher,
        "distill=kd",
        *jitter,
        f"data.unlabeled_roi_labels={masks}",
    )
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()
    cache = tmp_path / "cache"
    targets, labeled = next(cache.glob("teacher-*-roi-*")), next(cache.glob("lits-*-*"))
    for case in train_ids(phantom_lits):
        grid = np.load(targets / "cases" / case / "teacher.npy")
        label = np.load(labeled / "cases" / case / "label.npy")
        np.testing.assert_array_equal(grid.argmax(1), label)  # the same box, the same slices
    scans = next(cache.glob("unlabeled-*-roi-*"))
    for name in SCANS:
        grid = np.load(targets / "cases" / name / "teacher.npy")
        image = np.load(scans / "cases" / name / "image.npy")
        assert grid.shape[0] == image.shape[0] > 0 and grid.shape[2:] == image.shape[1:]


def test_training_patches_cut_stored_teacher_probabilities_like_the_image(
    phantom_lits: Path, tmp_path: Path
) -> None:
    """``data.patch_size``: a stored teacher's probabilities (here one-hot labels) are cut with
    the same window as the image and label, so the patch's teacher argmax is its label."""
    from test_pipeline import _data_cfg

    from kdseg.data.dataset import resolve_data

    teacher = tmp_path / "preds"
    teacher.mkdir()
    for case in train_ids(phantom_lits):
        shutil.copy(
            phantom_lits / f"segmentation-{case.split('-')[1]}.nii.gz", teacher / f"{case}.nii.gz"
        )
    overrides = {
        "data.patch_size": "[24,24]",
        "data.patch_ratios": "[1,1,4]",
        "data.cache_root": tmp_path / "cache",
    }
    setup = resolve_data(_data_cfg(phantom_lits, **overrides), teacher_predictions=str(teacher))
    setup.prepare(progress=False)
    dm = setup.datamodule(seed=2)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["teacher"].shape == (8, 3, 24, 24)
    assert torch.equal(batch["teacher"].argmax(1, keepdim=True), batch["label"])
