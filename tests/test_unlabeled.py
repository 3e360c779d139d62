"""Unlabeled scans: the image-only cache, batches that mix labeled and unlabeled slices, and
L_seg on labeled images only (label-needing distillation terms see the teacher's argmax)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import TINY_DATA
from test_distill_module import STUDENT, _fake_teacher

from kdseg.data.cache import open_case
from kdseg.data.dataset import resolve_data
from kdseg.data.dicom_write import write_dicom_series
from kdseg.data.sources import discover_images
from kdseg.lit.distill import DistillationModule

SCANS = {"scan_a": "volume-0.nii.gz", "scan_b": "volume-3.nii.gz"}


def compose(name: str, overrides: list[str]) -> dict[str, Any]:
    """A composed, resolved plain config (the tiny test data settings first)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    import kdseg.config  # noqa: F401
    from kdseg.cli import CONFIG_PATH, to_dict

    with initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3"):
        return to_dict(hydra_compose(name, overrides=[*TINY_DATA, *overrides]))


def scan_folder(phantom: Path, folder: Path) -> Path:
    """A plain folder of NIfTI scans (copies of phantom volumes under other names: a link to
    a labeled case's file is refused as an unlabeled scan)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, volume in SCANS.items():
        shutil.copy(phantom / volume, folder / f"{name}.nii.gz")
    return folder


def unlabeled_data(phantom: Path, tmp_path: Path, scans: Path) -> dict[str, Any]:
    """The data config of the phantom with ``scans`` as its unlabeled scans."""
    overrides = [f"data.root={phantom}", f"data.cache_root={tmp_path / 'cache'}"]
    return compose("train", [*overrides, f"data.unlabeled_root={scans}"])["data"]


def test_image_only_cache_uses_the_same_preprocessing(phantom_lits: Path, tmp_path: Path) -> None:
    scans = scan_folder(phantom_lits, tmp_path / "scans")
    write_dicom_series(nib.load(phantom_lits / "volume-1.nii.gz"), scans / "series_c")
    before = sorted(p.name for p in scans.iterdir())
    cfg = unlabeled_data(phantom_lits, tmp_path, scans)
    setup = resolve_data(cfg)
    assert sorted(setup.unlabeled) == sorted([*SCANS, "series_c"])
    setup.prepare(progress=False)
    for name, volume in {**SCANS, "series_c": "volume-1.nii.gz"}.items():
        unlabeled = open_case(setup.unlabeled_dir, name)
        labeled = open_case(setup.cache_dir, volume.split(".")[0])
        assert not unlabeled.labeled and labeled.labeled
        assert not (unlabeled.folder / "label.npy").exists()
        assert unlabeled.organ_slices == () and unlabeled.n_slices == labeled.n_slices
        np.testing.assert_array_equal(unlabeled.image, labeled.image)
    assert sorted(p.name for p in scans.iterdir()) == before  # nothing written into the input
    # a layout folder lends its images only (LiTS: volumes, not segmentations)
    assert [c.case_id for c in discover_images(phantom_lits)] == [f"volume-{i}" for i in range(5)]


def test_what_the_unlabeled_folder_passes_over_is_one_warning_on_the_first_process(
    phantom_lits: Path, tmp_path: Path, caplog, monkeypatch
) -> None:
    """kdseg-train / kdseg-distill read data.unlabeled_root with kdseg-predict's folder reader:
    what it passes over is its one line, once (a DDP worker, RANK=1, says nothing)."""
    from kdseg.cli import check_data

    scans = scan_folder(phantom_lits, tmp_path / "scans")
    (scans / "notes.txt").write_text("not a scan")
    (scans / "empty").mkdir()
    plain = compose(
        "train",
        [
            f"data.root={phantom_lits}",
            f"data.cache_root={tmp_path / 'cache'}",
            f"data.unlabeled_root={scans}",
            "data.unlabeled_fraction=0.25",
        ],
    )
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID"):
        monkeypatch.delenv(key, raising=False)
    with caplog.at_level("WARNING", logger="kdseg.data.sources"):
        check_data(plain)
    (record,) = [r for r in caplog.records if r.name == "kdseg.data.sources"]
    assert record.getMessage() == (
        f"{scans}: passed over 2 entries: 1 not NIfTI (notes.txt), "
        "1 folder without a DICOM series (empty)"
    )
    caplog.clear()
    monkeypatch.setenv("RANK", "1")
    with caplog.at_level("WARNING", logger="kdseg.data.sources"):
        check_data(plain)
    assert not [r for r in caplog.records if r.name == "kdseg.data.sources"]


@pytest.mark.parametrize(
    "command,extra,expected",
    [
        (
            "distill",
            ["teacher.ckpt=unused.ckpt"],
            "data.unlabeled_root is set but data.unlabeled_fraction is 0: no batch would draw "
            "the scans; set data.unlabeled_fraction (e.g. 0.5) or drop data.unlabeled_root",
        ),
        (
            "train",
            ["data.unlabeled_fraction=0.5"],
            "data.unlabeled_root: kdseg-train has no teacher to learn from unlabeled scans; "
            "use kdseg-distill, or kdseg-pseudolabel then kdseg-train on its output",
        ),
    ],
    ids=["fraction_0", "no_teacher"],
)
def test_unlabeled_scans_no_batch_would_learn_from_are_refused_before_preparing(
    phantom_lits: Path, tmp_path: Path, command: str, extra: list[str], expected: str
) -> None:
    """With data.unlabeled_fraction 0 (the default) the scans were prepared, their stored
    teacher targets computed, and never drawn; kdseg-train (no teacher) mixed them into its
    batches, which only shrank the labeled share. One line, exit 2, nothing prepared."""
    from conftest import kdseg_here

    scans = scan_folder(phantom_lits, tmp_path / "scans")
    cache = tmp_path / "cache"
    result = kdseg_here(
        command,
        *TINY_DATA,
        f"data.root={phantom_lits}",
        f"data.cache_root={cache}",
        f"data.unlabeled_root={scans}",
        f"hydra.run.dir={tmp_path / 'run'}",
        *extra,
        check=False,
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0] == f"kdseg-{command}: error: {expected}"
    assert not cache.exists()


@pytest.mark.parametrize("how", ["symlink", "hardlink"])
def test_an_unlabeled_scan_that_is_a_labeled_cases_file_is_refused(
    phantom_lits: Path, tmp_path: Path, how: str
) -> None:
    """Case ids alone were compared: a link (or hard link) to a labeled val/test image under
    another name joined training as an unlabeled scan, and that case's scores were then of an
    image trained on. The same file is refused, naming both."""
    from kdseg.errors import InputError

    scans = tmp_path / "scans"
    scans.mkdir()
    labeled = phantom_lits / "volume-2.nii.gz"
    link = scans / "other-name.nii.gz"
    (os.symlink if how == "symlink" else os.link)(labeled, link)
    cfg = unlabeled_data(phantom_lits, tmp_path, scans)
    with pytest.raises(InputError) as refused:
        resolve_data(cfg)
    assert str(refused.value) == (
        f"{link}: data.unlabeled_root: this scan is the file of labeled case 'volume-2' "
        f"({labeled}); a labeled case's image must not also be an unlabeled scan (from val or "
        "test it would be scored after training on it)"
    )
    assert not (tmp_path / "cache").exists()


def _module(setup: Any, tmp_path: Path, distill: str = "emkd") -> DistillationModule:
    cfg = compose("distill", [*STUDENT, f"distill={distill}", "teacher.ckpt=unused"])
    teacher = _fake_teacher(tmp_path / "teacher.ckpt", cfg["student"], setup.info())
    return DistillationModule(
        model=cfg["student"],
        data=setup.info(),
        optim=cfg["optim"],
        loss=cfg["loss"],
        teacher={"ckpt": str(teacher)},
        distill=cfg["distill"],
    )


def mixed_setup(phantom: Path, tmp_path: Path, *extra: str) -> Any:
    """The data setup of a run with two unlabeled scans making a quarter of every batch."""
    scans = scan_folder(phantom, tmp_path / "scans")
    overrides = [
        f"data.root={phantom}",
        f"data.cache_root={tmp_path / 'cache'}",
        f"data.unlabeled_root={scans}",
        "data.unlabeled_fraction=0.25",
        *extra,
    ]
    return resolve_data(compose("train", overrides)["data"])


def test_mixed_batches_seg_only_on_labeled(phantom_lits: Path, tmp_path: Path) -> None:
    setup = mixed_setup(phantom_lits, tmp_path)
    dm = setup.datamodule(seed=1)
    dm.prepare_data()
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    assert len(batches) == 4  # samples_per_epoch 32 / batch 8
    for batch in batches:
        labeled = batch["labeled"]
        assert labeled.dtype == torch.bool and int((~labeled).sum()) == 2  # 0.25 of 8
        assert set(np.array(batch["case"])[~labeled.numpy()]) <= set(SCANS)
        assert set(np.array(batch["case"])[labeled.numpy()]) <= set(setup.split["train"])
        assert not batch["label"][~labeled].any()
    assert any(batch["label"][batch["labeled"]].any() for batch in batches)

    torch.manual_seed(0)
    module = _module(setup, tmp_path)
    batch = batches[0]
    mask = batch["labeled"]
    logits = module.net(batch["image"]).logits
    seg = module.labeled_seg_loss(logits, batch)
    torch.testing.assert_close(seg, module.seg_loss(logits[mask], batch["label"][mask]))
    poisoned = {**batch, "label": batch["label"].clone()}
    poisoned["label"][~mask] = 1  # what an unlabeled slice "says" must not matter
    torch.testing.assert_close(module.labeled_seg_loss(logits, poisoned), seg)
    changed = {**batch, "label": batch["label"].clone()}
    changed["label"][mask] = 1 - changed["label"][mask].clamp(max=1)
    assert not torch.allclose(module.labeled_seg_loss(logits, changed), seg)

    seen: dict[str, torch.Tensor] = {}
    original = module.criterion.forward

    def spy(student: Any, teacher: Any, labels: torch.Tensor, *progress: Any) -> Any:
        seen["labels"], seen["teacher"] = labels, teacher.logits.argmax(1)
        return original(student, teacher, labels, *progress)

    module.criterion.forward = spy  # type: ignore[method-assign]
    with pytest.warns(UserWarning):  # self.log outside a Trainer
        loss = module.training_step(batch, 0)
    assert torch.isfinite(loss)
    torch.testing.assert_close(seen["labels"][mask], batch["label"][mask, 0])
    torch.testing.assert_close(seen["labels"][~mask], seen["teacher"][~mask])


ROI = [
    "data.preprocess.body_crop=false",
    "data.preprocess.roi=organ",
    "data.preprocess.roi_margin_mm=10",
    "data.preprocess.roi_jitter_mm=0",
    "data.preprocess.window_level=organ",
    "data.preprocess.window=[-100,100]",
]


def _roi_setup(phantom: Path, tmp_path: Path, masks: Path | None) -> Any:
    scans = tmp_path / "scans"
    if not scans.exists():  # a second setup over the same folders
        scan_folder(phantom, scans)
    extra = [] if masks is None else [f"data.unlabeled_roi_labels={masks}"]
    cfg = compose(
        "train",
        [
            f"data.root={phantom}",
            f"data.cache_root={tmp_path / 'cache'}",
            f"data.unlabeled_root={scans}",
            *ROI,
            *extra,
        ],
    )["data"]
    return resolve_data(cfg)


def test_mixed_batches_keep_their_mix_under_ddp(phantom_lits: Path, tmp_path: Path) -> None:
    """Under DDP each process takes every other block of the one-process sequence, so every
    batch keeps its labeled / unlabeled mix, the processes see the same number of batches,
    and Lightning leaves the sampler unwrapped (it wraps anything not a DistributedSampler)."""
    from types import SimpleNamespace

    from torch.utils.data import DistributedSampler

    setup = mixed_setup(phantom_lits, tmp_path, "data.samples_per_epoch=40")

    def blocks(world: int, rank: int) -> tuple[list[list[int]], object]:
        dm = setup.datamodule(seed=1)
        dm.trainer = SimpleNamespace(world_size=world, global_rank=rank) if world > 1 else None
        dm.prepare_data()
        dm.setup("fit")
        loader = dm.train_dataloader()
        indices = list(loader.sampler)
        assert len(indices) == len(loader.sampler)
        return [indices[i : i + 8] for i in range(0, len(indices), 8)], loader.sampler

    one, sampler = blocks(1, 0)
    first, sampler0 = blocks(2, 0)
    second, _ = blocks(2, 1)
    assert isinstance(sampler0, DistributedSampler) and isinstance(sampler, DistributedSampler)
    assert len(one) == 5 and len(first) == len(second) == 3  # 40 slices: 5 batches, 6 under DDP
    assert first == one[0::2] and second[:2] == one[1::2]
    for block in first + second:  # 6 labeled slices, then 2 unlabeled (0.25 of 8)
        assert [i < sampler0.offset for i in block] == [True] * 6 + [False] * 2


def test_organ_roi_unlabeled_scans_take_their_box_from_given_masks(
    phantom_lits: Path, tmp_path: Path
) -> None:
    """A stage-2 (organ-ROI, organ-window) image-only cache: box and level from a mask folder
    (here the true organs, in a ``labelsTr/`` as kdseg-pseudolabel writes it) give the same
    slices as the labeled cache of the same volumes (no jitter)."""
    masks = tmp_path / "pseudo"
    (masks / "labelsTr").mkdir(parents=True)
    for name, volume in SCANS.items():
        seg = volume.replace("volume", "segmentation")
        os.symlink(phantom_lits / seg, masks / "labelsTr" / f"{name}.nii.gz")
    setup = _roi_setup(phantom_lits, tmp_path, masks)
    setup.prepare(progress=False)
    for name, volume in SCANS.items():
        unlabeled = open_case(setup.unlabeled_dir, name)
        labeled = open_case(setup.cache_dir, volume.split(".")[0])
        assert not unlabeled.labeled and unlabeled.n_slices == labeled.n_slices > 0
        np.testing.assert_array_equal(unlabeled.image, labeled.image)
        level = [
            json.loads((c.folder / "meta.json").read_text())["organ_level_hu"]
            for c in (unlabeled, labeled)
        ]
        assert level[0] == level[1]
    # other masks are another cache (their boxes differ), not a stale reuse of this one
    other = tmp_path / "other"
    other.mkdir()
    for name in SCANS:
        os.symlink(masks / "labelsTr" / f"{name}.nii.gz", other / f"{name}.nii.gz")
    assert _roi_setup(phantom_lits, tmp_path / "b", other).unlabeled_dir.name != (
        setup.unlabeled_dir.name
    )


def test_organ_roi_unlabeled_scans_without_fitting_masks_are_refused(
    phantom_lits: Path, tmp_path: Path
) -> None:
    from kdseg.errors import InputError

    with pytest.raises(InputError, match="data.unlabeled_roi_labels"):  # no masks at all
        _roi_setup(phantom_lits, tmp_path / "a", None).prepare(progress=False)
    masks = tmp_path / "masks"
    masks.mkdir()
    os.symlink(phantom_lits / "segmentation-0.nii.gz", masks / "scan_a.nii.gz")
    with pytest.raises(InputError, match="no mask scan_b.nii.gz"):  # one missing
        _roi_setup(phantom_lits, tmp_path / "b", masks)
    # a mask on another grid: the case's mask file is named, nothing is cached for it
    os.symlink(phantom_lits / "segmentation-1.nii.gz", masks / "scan_b.nii.gz")
    setup = _roi_setup(phantom_lits, tmp_path / "c", masks)
    if nib.load(masks / "scan_b.nii.gz").shape != nib.load(phantom_lits / "volume-3.nii.gz").shape:
        with pytest.raises(InputError, match="differs from image shape") as err:
            setup.prepare(progress=False)
        assert "scan_b.nii.gz" in str(err.value)
    else:  # pragma: no cover - the phantom fixture draws sizes per case
        pytest.fail("the fixture's volumes 1 and 3 should differ in shape")


def test_organ_roi_unlabeled_scans_mix_into_batches(phantom_lits: Path, tmp_path: Path) -> None:
    """Stage-2 batches with ROI unlabeled slices; masks without any organ give no slice and
    are refused at setup with one line, not an empty sampler."""
    masks = tmp_path / "masks"
    masks.mkdir()
    for name, volume in SCANS.items():
        os.symlink(
            phantom_lits / volume.replace("volume", "segmentation"), masks / f"{name}.nii.gz"
        )
    setup = _roi_setup(phantom_lits, tmp_path / "a", masks)
    setup.cfg["unlabeled_fraction"] = 0.25
    dm = setup.datamodule(seed=1)
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert int((~batch["labeled"]).sum()) == 2 and torch.isfinite(batch["image"]).all()
    assert set(np.array(batch["case"])[~batch["labeled"].numpy()]) <= set(SCANS)

    from kdseg.errors import InputError

    empty = tmp_path / "empty"
    empty.mkdir()
    for name, volume in SCANS.items():
        ref = nib.load(phantom_lits / volume)
        zeros = np.zeros(ref.shape, dtype=np.uint8)
        nib.save(nib.Nifti1Image(zeros, ref.affine), empty / f"{name}.nii.gz")
    setup = _roi_setup(phantom_lits, tmp_path / "b", empty)
    setup.cfg["unlabeled_fraction"] = 0.25
    dm = setup.datamodule(seed=1)
    dm.prepare_data()
    with pytest.raises(InputError, match="no slice of the unlabeled scans"):
        dm.setup("fit")


def test_predicted_masks_box_the_largest_component_like_the_cascade(
    phantom_lits: Path, tmp_path: Path
) -> None:
    """A predicted mask with a stray blob far from the organ boxes its largest component (as
    the cascade reads stage 1), so the scan's slices equal the labeled case's; kdseg-predict's
    ``<id>_0000`` names are found; a parent folder's dataset.json is not the mask's; masks
    written again make another cache."""
    masks = tmp_path / "stage1"
    masks.mkdir()
    (tmp_path / "dataset.json").write_text('{"labels": {"background": 0, "spleen": 1}}')
    for name, volume in SCANS.items():
        seg = nib.load(phantom_lits / volume.replace("volume", "segmentation"))
        data = np.asarray(seg.dataobj).astype(np.uint8)
        data[:2, :2, :2] = 1  # a false positive in a corner
        nib.save(nib.Nifti1Image(data, seg.affine), masks / f"{name}_0000.nii.gz")
    setup = _roi_setup(phantom_lits, tmp_path / "a", masks)
    setup.prepare(progress=False)
    for name, volume in SCANS.items():
        unlabeled = open_case(setup.unlabeled_dir, name)
        labeled = open_case(setup.cache_dir, volume.split(".")[0])
        np.testing.assert_array_equal(unlabeled.image, labeled.image)
    os.utime(masks / "scan_a_0000.nii.gz", ns=(1, 1))  # stage 1 run again into the folder
    again = _roi_setup(phantom_lits, tmp_path / "a", masks)
    assert again.unlabeled_dir != setup.unlabeled_dir
