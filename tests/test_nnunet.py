"""nnU-Net v2 formats: the raw dataset layout (labels mapped by name) and ``--save_probabilities``
files written by nnU-Net's own export code (tests/fixtures/nnunet/make_fixture.py), read and
resampled onto the slice grid."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from test_unlabeled import compose

from kdseg.data.cache import open_case
from kdseg.data.dataset import resolve_data
from kdseg.data.nnunet import kdseg_label_map, probabilities_on_image, remap_labels
from kdseg.data.preprocess import Preprocessor
from kdseg.data.preprocess_config import PreprocessConfig
from kdseg.data.sources import ImageCase, discover_cases, discover_images
from kdseg.data.teacher_targets import label_map_of, prepare_teacher_case
from kdseg.errors import InputError

FIXTURE = Path(__file__).parent / "fixtures" / "nnunet"
#: labels in nnU-Net's dataset.json order that is not kdseg's: 1 tumor, 2 liver
LABELS = {"background": 0, "tumor": 1, "liver": 2}


def nnunet_folder(phantom: Path, root: Path) -> Path:
    """The phantom as an nnU-Net raw dataset whose label values are swapped (see LABELS)."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for n in range(5):
        os.symlink(phantom / f"volume-{n}.nii.gz", root / "imagesTr" / f"liver_{n:03d}_0000.nii.gz")
        seg = nib.load(phantom / f"segmentation-{n}.nii.gz")
        swapped = np.asarray(seg.dataobj).astype(np.uint8)
        swapped = np.choose(swapped, [0, 2, 1]).astype(np.uint8)
        nib.save(nib.Nifti1Image(swapped, seg.affine), root / "labelsTr" / f"liver_{n:03d}.nii.gz")
    (root / "dataset.json").write_text(
        json.dumps({"channel_names": {"0": "CT"}, "labels": LABELS, "file_ending": ".nii.gz"})
    )
    return root


def test_nnunet_layout_reads_like_the_lits_original(phantom_lits: Path, tmp_path: Path) -> None:
    root = nnunet_folder(phantom_lits, tmp_path / "Dataset001_Liver")
    cases = discover_cases("nnunet", root)
    assert [c.case_id for c in cases] == [f"liver_{n:03d}" for n in range(5)]
    assert cases[0].label_map == ((0, 0), (1, 2), (2, 1))
    cache = f"data.cache_root={tmp_path / 'cache'}"
    nn = resolve_data(compose("train", ["data=nnunet", f"data.root={root}", cache])["data"])
    lits = resolve_data(compose("train", [f"data.root={phantom_lits}", cache])["data"])
    nn.prepare(progress=False, ids=["liver_002"])
    lits.prepare(progress=False, ids=["volume-2"])
    mine, theirs = open_case(nn.cache_dir, "liver_002"), open_case(lits.cache_dir, "volume-2")
    np.testing.assert_array_equal(mine.label, theirs.label)
    np.testing.assert_array_equal(mine.image, theirs.image)
    assert mine.tumor_slices == theirs.tumor_slices and mine.tumor_slices
    # imagesTr as unlabeled images, ids without the channel suffix
    assert [c.case_id for c in discover_images(root)][:2] == ["liver_000", "liver_001"]
    assert discover_images(root / "imagesTr")[4].case_id == "liver_004"  # as an imagesTs folder


def resolved_window(overrides: list[str]) -> list[float]:
    """The window after ``OmegaConf.resolve``, as Hydra's ``--cfg job --resolve`` makes it: the
    resolver returned a Python list, which that refused (a traceback, exit 1)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    from kdseg.cli import CONFIG_PATH

    with initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3"):
        cfg = hydra_compose("train", overrides=overrides)
    OmegaConf.resolve(cfg)
    return list(cfg.data.preprocess.window)


def test_the_organ_is_the_one_dataset_json_names(phantom_lits: Path, tmp_path: Path) -> None:
    """data=nnunet inherited lits' ``organ: liver``: a kidney dataset trained without
    ``data.organ=kidney`` made a model whose ``postprocess=largest`` kept one kidney, whose
    cascade boxed one kidney, whose DICOM SEG said liver. The organ is now the organ label's
    name in dataset.json (``data.organ`` set wins), and a kidney keeps two components and
    takes KiTS19's HU window (it had LiTS' liver window, -60 to 140)."""
    from kdseg.data.nnunet import dataset_organ
    from kdseg.data.tasks import ORGAN_WINDOWS
    from kdseg.eval.postprocess import components_to_keep

    root = nnunet_folder(phantom_lits, tmp_path / "Dataset064_KiTS19")
    (root / "dataset.json").write_text(
        json.dumps({"labels": {"background": 0, "Kidney": 1, "Tumor": 2}, "file_ending": ".nii.gz"})
    )
    cache = f"data.cache_root={tmp_path / 'cache'}"
    data = compose("train", ["data=nnunet", f"data.root={root}", cache])["data"]
    assert data["organ"] == "kidney" and data["preprocess"]["roi_components"] == 2
    assert data["preprocess"]["window"] == [-200, 300]  # KiTS19's, not LiTS' liver window
    assert resolved_window(["data=nnunet", f"data.root={root}", cache]) == [-200, 300]
    info = resolve_data(data).info()  # what the checkpoint records
    assert info["organ"] == "kidney" and info["preprocess"]["roi_components"] == 2
    assert components_to_keep("largest", info["preprocess"]["roi_components"], "kidney") == 2
    chosen = compose("train", ["data=nnunet", f"data.root={root}", "data.organ=liver", cache])
    assert chosen["data"]["organ"] == "liver"  # set: it wins, and a liver is one component
    assert chosen["data"]["preprocess"]["roi_components"] is None
    assert chosen["data"]["preprocess"]["window"] == [-60, 140]
    window = ["data.preprocess.window=[-100,200]"]  # set: it wins
    own = compose("train", ["data=nnunet", f"data.root={root}", cache, *window])
    assert own["data"]["preprocess"]["window"] == [-100, 200]
    unnamed = compose("train", ["data=nnunet", f"data.root={root}", "data.organ=null", cache])
    assert resolve_data(unnamed["data"]).info()["organ"] == "organ"  # not None
    assert unnamed["data"]["preprocess"]["window"] == [-60, 140]  # LiTS' default
    for name, organ in (("lits", "liver"), ("kits19", "kidney")):  # one table, the configs'
        assert compose("train", [f"data={name}"])["data"]["preprocess"]["window"] == list(
            ORGAN_WINDOWS[organ]
        )
    liver = compose(
        "train", ["data=nnunet", f"data.root={nnunet_folder(phantom_lits, tmp_path / 'L')}"]
    )
    assert (
        liver["data"]["organ"] == "liver" and liver["data"]["preprocess"]["roi_components"] is None
    )
    # nothing to read, or no single organ named: none (reading the dataset says what is wrong)
    assert (
        compose("train", ["data=nnunet", f"data.root={tmp_path / 'none'}"])["data"]["organ"] is None
    )
    (tmp_path / "two").mkdir()
    (tmp_path / "two" / "dataset.json").write_text(
        json.dumps({"labels": {"background": 0, "liver": 1, "spleen": 2}})
    )
    assert dataset_organ(tmp_path / "two") is None
    (tmp_path / "two" / "dataset.json").write_text("{")
    assert dataset_organ(tmp_path / "two") is None


def test_label_names_that_do_not_fit_are_refused(tmp_path: Path) -> None:
    assert kdseg_label_map({"background": 0, "kidney": 1, "kidney_tumor": 2}, tmp_path) is None
    with pytest.raises(InputError, match="all organs"):
        kdseg_label_map({"background": 0, "liver": 1, "spleen": 2}, tmp_path)
    with pytest.raises(InputError, match="region"):
        kdseg_label_map({"background": 0, "liver": [1, 2], "tumor": 2}, tmp_path)
    # nnU-Net's ignore label (sparse annotation) is named as such, not as a second organ
    with pytest.raises(InputError, match="'ignore' \\(3\\) is nnU-Net's ignore label") as info:
        kdseg_label_map({"background": 0, "liver": 1, "tumor": 2, "ignore": 3}, tmp_path)
    assert "organ" not in str(info.value)


def test_channels_beyond_the_first_are_named_once(
    phantom_lits: Path, tmp_path: Path, caplog
) -> None:
    """A dataset.json of several input channels trains on _0000 alone: one warning line naming
    the channel read and those ignored, once however often the file is read."""
    root = nnunet_folder(phantom_lits, tmp_path / "Dataset002_Two")
    info = json.loads((root / "dataset.json").read_text())
    info["channel_names"] = {"0": "CT", "1": "noNorm", "2": "PET"}
    (root / "dataset.json").write_text(json.dumps(info))
    with caplog.at_level("WARNING", logger="kdseg.data.nnunet"):
        discover_cases("nnunet", root)
        discover_cases("nnunet", root)
        discover_images(root)
    (record,) = caplog.records
    assert record.getMessage() == (
        f"{root / 'dataset.json'}: channel_names names 3 input channels; kdseg reads channel 0 "
        "(CT, the _0000 files) only and ignores 1 (noNorm), 2 (PET)"
    )


def test_label_values_are_read_as_the_dataset_json_names_them(
    phantom_lits: Path, tmp_path: Path
) -> None:
    """A tumor stored as 300 is tumor (a cast to uint8 first made it 44, then background); a
    value the file does not name (2 beside background 0 and liver 1) is refused, not read as
    tumor; a negative label value is refused by name."""
    from kdseg.data.prepare import case_label

    seg = nib.load(phantom_lits / "segmentation-1.nii.gz")
    truth = np.asarray(seg.dataobj).astype(np.uint8)
    assert (truth == 2).any()

    def folder(name: str, labels: dict, stored: np.ndarray) -> Path:
        root = tmp_path / name
        (root / "imagesTr").mkdir(parents=True)
        (root / "labelsTr").mkdir()
        os.symlink(phantom_lits / "volume-1.nii.gz", root / "imagesTr" / "c_001_0000.nii.gz")
        nib.save(nib.Nifti1Image(stored, seg.affine), root / "labelsTr" / "c_001.nii.gz")
        (root / "dataset.json").write_text(json.dumps({"labels": labels}))
        return root

    wide = folder("wide", {"background": 0, "liver": 1, "tumor": 300},
                  np.choose(truth, [0, 1, 300]).astype(np.int16))  # fmt: skip
    (case,) = discover_cases("nnunet", wide)
    image = nib.load(case.image)
    np.testing.assert_array_equal(case_label(case, image), truth)
    undeclared = folder("undeclared", {"background": 0, "liver": 1}, truth)
    (case,) = discover_cases("nnunet", undeclared)
    with pytest.raises(InputError, match=r"unknown label values \[2\]"):
        case_label(case, image)
    with pytest.raises(InputError, match="'tumor' is -1: label values are 0 or more"):
        kdseg_label_map({"background": 0, "liver": 1, "tumor": -1}, tmp_path)


def test_a_decathlon_folder_gives_its_images_not_an_nnunet_error(tmp_path: Path) -> None:
    """The Decathlon's own dataset.json (v1: values to names) beside imagesTr/ and imagesTs/
    of plain NIfTI files: its images, as unlabeled scans (it used to be read as nnU-Net v2 and
    refused for region labels)."""
    root = tmp_path / "Task03_Liver"
    for folder, name in (("imagesTr", "liver_0"), ("imagesTr", "liver_1"), ("imagesTs", "liver_9")):
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / f"{name}.nii.gz").write_bytes(b"stand-in")
    labels = {"0": "background", "1": "liver", "2": "cancer"}
    (root / "dataset.json").write_text(json.dumps({"name": "Liver", "labels": labels}))
    ids = [c.case_id for c in discover_images(root)]
    assert ids == ["liver_0", "liver_1", "liver_9"]


def _digest(folder: Path) -> str:
    return hashlib.sha1(b"".join(p.read_bytes() for p in sorted(folder.iterdir()))).hexdigest()


def test_nnunet_probabilities_match_its_segmentation_and_resample(tmp_path: Path) -> None:
    before = _digest(FIXTURE)
    image = nib.load(FIXTURE / "fix_001_0000.nii.gz")
    seg = np.asarray(nib.load(FIXTURE / "fix_001.nii.gz").dataobj)  # nnU-Net's own argmax
    probs = probabilities_on_image(FIXTURE / "fix_001.npz", image.shape, image.affine)
    assert probs.shape == (3, *image.shape)
    np.testing.assert_array_equal(probs.argmax(0), seg)  # (C, z, y, x) read as nibabel's (x, y, z)
    truth = remap_labels(seg, label_map_of(FIXTURE))  # nnU-Net's 1 tumor / 2 liver -> kdseg's
    assert set(np.unique(truth)) == {0, 1, 2}

    for size, agreement in ((None, 1.0), ((24, 20), 0.9)):
        config = PreprocessConfig(window=(-100.0, 200.0), in_plane_size=size)
        cache = tmp_path / f"teacher-{size}"
        loaded = nib.load(FIXTURE / "fix_001_0000.nii.gz")
        scan = ImageCase("fix_001", FIXTURE / "fix_001_0000.nii.gz")
        prepare_teacher_case(scan, FIXTURE, config, cache)
        grid = np.load(cache / "cases" / "fix_001" / "teacher.npy").astype(np.float32)
        pre = Preprocessor(config)
        slices, geom = pre.image(loaded)
        assert grid.shape == (slices.shape[0], 3, *slices.shape[1:])
        np.testing.assert_allclose(grid.sum(1), 1.0, atol=5e-3)
        expected = pre.label(truth, loaded, geom)
        assert (grid.argmax(1) == expected).mean() >= agreement
    assert _digest(FIXTURE) == before  # the predictions folder is only read


def test_eval_scores_an_nnunet_reference_in_kdseg_labels(tmp_path: Path) -> None:
    """kdseg-eval maps the reference through dataset.json as training does: liver stored as 2
    and tumor as 1 (or tumor as 3) score as the LiTS original, not swapped or refused."""
    from test_cascade import fine_backend
    from test_spacing_roi import stored_volume

    from kdseg.data.sources import Case
    from kdseg.data.tasks import Task
    from kdseg.eval.evaluate import evaluate_cases
    from kdseg.eval.inference import Predictor

    img, labels = stored_volume("RAS")
    nib.save(img, tmp_path / "img.nii.gz")
    predictor = Predictor(fine_backend, PreprocessConfig(), Task("multiclass"))
    for name, stored in (("swapped", (0, 2, 1)), ("tumor3", (0, 1, 3))):
        path = tmp_path / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(np.choose(labels, stored).astype(np.uint8), img.affine), path)
        label_map = tuple((s, k) for k, s in enumerate(stored))
        case = Case(name, tmp_path / "img.nii.gz", path, label_map)
        row = evaluate_cases(predictor, [case], progress=False)[0]
        assert row["organ"]["dice"] == pytest.approx(1.0), name
        assert row["tumor"]["dice"] == pytest.approx(1.0), name
        assert row["tumor"]["gt_voxels"] == int((labels == 2).sum()), name


def test_bench_scores_an_nnunet_reference_in_kdseg_labels(
    phantom_lits: Path, tmp_path: Path
) -> None:
    """kdseg-bench's Dice cases carry the layout's label mapping to its workers, as eval's."""
    from kdseg.deploy.bench import BenchConfig, dice_cases
    from kdseg.deploy.bench_worker import _case

    root = nnunet_folder(phantom_lits, tmp_path / "Dataset001_Liver")
    cfg = compose("train", ["data=nnunet", f"data.root={root}", f"data.cache_root={tmp_path}/c"])
    bench = BenchConfig(entries=[], data=cfg["data"])
    cases = json.loads(json.dumps(dice_cases(bench)))  # as the workers get them
    assert cases and _case(cases[0]).label_map == ((0, 0), (1, 2), (2, 1))
