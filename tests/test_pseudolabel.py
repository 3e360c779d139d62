"""kdseg-pseudolabel: teacher labels on the input geometry, the confidence table, the filter, and
an output folder that kdseg-train trains on."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import TINY_DATA, error_lines, kdseg, kdseg_here
from test_distill_module import _fake_teacher
from test_unlabeled import compose

from kdseg.data.dataset import resolve_data
from kdseg.eval.checkpoint import load_bundle, read_checkpoint
from kdseg.eval.inference import Predictor
from kdseg.eval.pseudolabel import COLUMNS, read_table

SCANS = ("volume-0", "volume-2", "volume-4")


def test_pseudolabel_round_trip_filter_and_training(
    trained_enet: Path, phantom_lits: Path, tmp_path: Path
) -> None:
    scans = tmp_path / "scans"
    scans.mkdir()
    for name in SCANS:
        os.symlink(phantom_lits / f"{name}.nii.gz", scans / f"{name}.nii.gz")
    # an untrained network of the tiny ENet's config (seeded) labels every case differently,
    # which the filter needs
    hparams = read_checkpoint(trained_enet / "checkpoints" / "best.ckpt")["hyper_parameters"]
    torch.manual_seed(3)
    ckpt = _fake_teacher(tmp_path / "teacher.ckpt", hparams["model"], hparams["data"])
    out = tmp_path / "pseudo"
    kdseg_here("pseudolabel", f"ckpt={ckpt}", f"input={scans}", f"output={out}")

    rows = read_table(out / "confidence.csv")
    assert tuple(rows[0]) == COLUMNS and [r["case_id"] for r in rows] == list(SCANS)
    predictor = Predictor.from_bundle(load_bundle(ckpt))
    for row in rows:
        assert row["kept"] == "True"
        assert 0.0 <= float(row["mean_max_prob"]) <= 1.0 and 0.0 <= float(row["flip_dice"]) <= 1.0
        image = nib.load(scans / f"{row['case_id']}.nii.gz")
        label = nib.load(out / "labelsTr" / f"{row['case_id']}.nii.gz")
        assert label.shape == image.shape and np.allclose(label.affine, image.affine)
        # the very labels kdseg-predict's Predictor gives, and its foreground count
        expected = predictor.predict(image)
        np.testing.assert_array_equal(np.asarray(label.dataobj), expected)
        assert int(row["foreground_voxels"]) == int((expected > 0).sum())
        linked = out / "imagesTr" / f"{row['case_id']}_0000.nii.gz"
        assert (
            linked.is_symlink()
            and linked.resolve() == (phantom_lits / image.get_filename().split("/")[-1]).resolve()
        )

    # the filter: a threshold between the confidences keeps exactly the cases above it
    confidences = sorted(float(r["mean_max_prob"]) for r in rows)
    assert confidences[0] < confidences[-1], confidences
    cut = (confidences[0] + confidences[-1]) / 2
    filtered = tmp_path / "filtered"
    done = kdseg_here(
        "pseudolabel",
        f"ckpt={ckpt}",
        f"input={scans}",
        f"output={filtered}",
        f"min_confidence={cut}",
        "flip_check=false",
    )
    assert "flip Dice not checked" in done.stdout and "nan" not in done.stdout
    again = read_table(filtered / "confidence.csv")
    kept = {r["case_id"] for r in again if r["kept"] == "True"}
    assert kept == {r["case_id"] for r in rows if float(r["mean_max_prob"]) >= cut}
    assert 0 < len(kept) < len(SCANS)
    assert {p.name.split(".")[0] for p in (filtered / "labelsTr").iterdir()} == kept

    # the output is a dataset: kdseg-train reads the teacher's labels as ground truth, but a
    # seeded split would put teacher-labelled cases in val/test: refused, a split file asked for
    run = tmp_path / "run"
    train = [
        *TINY_DATA, "logger=csv", "data=nnunet", "model=enet", "model.width=0.25",
        "trainer.max_steps=2", "trainer.max_epochs=1", f"hydra.run.dir={run}",
    ]  # fmt: skip
    assert json.loads((out / "dataset.json").read_text())["kdseg_pseudolabel"] is True
    refused = kdseg_here("train", *train, f"data.root={out}", check=False)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert error_lines(refused.stderr) == [
        f"kdseg-train: error: {out / 'dataset.json'}: a kdseg-pseudolabel dataset: a seeded "
        "split would score val/test against the teacher's own labels; pass "
        "data.split_file=<a split with pseudo-labelled cases in train only, ground-truth cases "
        "in val and test>"
    ]
    assert not (run / "checkpoints").exists()
    # a command that takes the split a checkpoint records (export, bench; eval scoring the
    # agreement with the teacher) reads the folder: only training is refused
    data = compose("train", ["data=nnunet", f"data.root={out}", f"data.cache_root={run}-c"])
    assert set(resolve_data(data["data"], read_only=True).cases) == set(SCANS)
    # docs/unlabeled.md's workflow: one folder with the ground-truth cases and the pseudo-
    # labelled ones, and a split file keeping the teacher's labels in train
    mixed = tmp_path / "mixed"
    for sub in ("imagesTr", "labelsTr"):
        (mixed / sub).mkdir(parents=True)
        for path in (out / sub).iterdir():
            os.symlink(path.resolve(), mixed / sub / path.name)
    for n in (1, 3):
        os.symlink(phantom_lits / f"volume-{n}.nii.gz", mixed / "imagesTr" / f"gt-{n}_0000.nii.gz")
        os.symlink(phantom_lits / f"segmentation-{n}.nii.gz", mixed / "labelsTr" / f"gt-{n}.nii.gz")
    (mixed / "dataset.json").write_text((out / "dataset.json").read_text())
    split = tmp_path / "mixed_split.json"
    split.write_text(json.dumps({"train": [*SCANS, "gt-1"], "val": ["gt-3"], "test": []}))
    kdseg_here("train", *train, f"data.root={mixed}", f"data.split_file={split}")
    assert (run / "checkpoints" / "last.ckpt").exists()
    assert json.loads((run / "split.json").read_text())["val"] == ["gt-3"]
    assert not (scans / ".kdseg_cache").exists() and sorted(p.name for p in scans.iterdir()) == [
        f"{n}.nii.gz" for n in SCANS
    ]


def test_confidence_of_a_thresholded_binary_model_is_that_of_its_decided_class() -> None:
    """``mean_max_prob`` is the mean probability of the class each foreground voxel was given.
    With ``threshold=`` below 0.5 a voxel is foreground at p(fg) = 0.4, where the larger
    probability is the background's 0.6: that was counted, so a hesitant teacher looked 60%
    sure of its foreground. With argmax both are the same (the studies' numbers stay)."""
    from test_preprocess import _volume

    from kdseg.data.preprocess_config import PreprocessConfig
    from kdseg.data.tasks import Task
    from kdseg.eval.pseudolabel import score_case

    def hesitant(x: np.ndarray) -> np.ndarray:  # p(fg) = 0.4 in the body, ~0 in the air
        fg = np.where(x > -1.0, np.log(0.4 / 0.6), -20.0).astype(np.float32)
        return np.concatenate([np.zeros_like(x), fg], axis=1)

    img, _ = _volume("RAS")
    predictor = Predictor(hesitant, PreprocessConfig(), Task("organ"), threshold=0.3)
    label, row = score_case(predictor, img, flip=False)
    assert row["foreground_voxels"] == int((label > 0).sum()) > 0
    assert row["mean_max_prob"] == pytest.approx(0.4, abs=1e-5)
    argmax = Predictor(hesitant, PreprocessConfig(), Task("organ"))  # no foreground won
    assert score_case(argmax, img, flip=False)[1]["mean_max_prob"] == 0.0


def test_a_scan_without_orientation_is_refused_as_by_kdseg_predict(tmp_path: Path) -> None:
    """A NIfTI with qform and sform codes 0 (left and right a guess) is refused by
    kdseg-predict; kdseg-pseudolabel labelled it without a word, a dataset to train on with
    the patient perhaps mirrored. The same ``unoriented=`` option and check now."""
    import struct

    from omegaconf import OmegaConf
    from test_preprocess import _volume

    from kdseg.data.preprocess_config import PreprocessConfig
    from kdseg.data.tasks import Task
    from kdseg.errors import InputError
    from kdseg.eval.pseudolabel import pseudolabel_folder

    scans = tmp_path / "scans"
    scans.mkdir()
    img, _ = _volume("RAS")
    path = scans / "case.nii"
    nib.save(img, str(path))
    raw = bytearray(path.read_bytes())
    struct.pack_into("<hh", raw, 252, 0, 0)  # qform_code, sform_code
    path.write_bytes(bytes(raw))

    def sure(x: np.ndarray) -> np.ndarray:
        return np.concatenate([np.zeros_like(x), np.where(x > -1.0, 5.0, -5.0)], axis=1)

    predictor = Predictor(sure, PreprocessConfig(), Task("organ"))
    with pytest.raises(InputError, match="gives no orientation"):
        list(pseudolabel_folder(predictor, scans, tmp_path / "out", flip=False))
    assert not (tmp_path / "out").exists()
    rows = list(
        pseudolabel_folder(predictor, scans, tmp_path / "out", flip=False, unoriented="analyze")
    )
    assert [row["case_id"] for row in rows] == ["case"]
    assert OmegaConf.load(Path(__file__).parents[1] / "conf/pseudolabel.yaml").unoriented == "error"
    result = kdseg(  # the option is checked before the model loads
        "pseudolabel", "ckpt=none.ckpt", f"input={scans}", "output=o", "unoriented=ras",
        cwd=tmp_path, check=False,
    )  # fmt: skip
    assert result.returncode == 2 and "unoriented=ras: use one of error, analyze" in result.stderr


def test_pseudolabel_says_in_one_line_what_its_folder_holds_besides_scans(
    trained_enet: Path, phantom_lits: Path, tmp_path: Path
) -> None:
    """A file that is not a scan was passed over without a word: one warning line at the start
    counts it (stdout keeps its one line per case)."""
    scans = tmp_path / "scans"
    scans.mkdir()
    os.symlink(phantom_lits / "volume-0.nii.gz", scans / "scan-a.nii.gz")
    (scans / "README.txt").write_text("scans of site B")
    done = kdseg_here(
        "pseudolabel",
        f"ckpt={trained_enet / 'checkpoints' / 'best.ckpt'}",
        f"input={scans}",
        f"output={tmp_path / 'pseudo'}",
        "flip_check=false",
    )
    assert done.stderr.splitlines() == [
        f"kdseg-pseudolabel: warning: {scans}: passed over 1 entry: 1 not NIfTI (README.txt)"
    ], done.stderr
    assert done.stdout.startswith("scan-a: confidence"), done.stdout


def test_pseudolabel_postprocess_largest_and_its_record(tmp_path: Path) -> None:
    """``postprocess=largest`` (as kdseg-predict's) removes an island from each written label,
    the confidences staying the teacher's; dataset.json records the mode and the components
    kept (none: the default); ``auto`` (kdseg-eval's, on split=val) is refused in one line."""
    import json

    from omegaconf import OmegaConf
    from test_cascade import fine_backend
    from test_spacing_roi import stored_volume

    from kdseg.data.preprocess_config import PreprocessConfig
    from kdseg.data.tasks import Task
    from kdseg.eval.pseudolabel import pseudolabel_folder

    scans = tmp_path / "scans"
    scans.mkdir()
    big, small = (10, 21, 8, 23, 3, 9), (30, 34, 26, 30, 8, 11)
    img, labels = stored_volume("RAS", organs=(big, small))
    nib.save(img, scans / "case.nii.gz")
    predictor = Predictor(fine_backend, PreprocessConfig(), Task("multiclass"))
    rows = {}
    for mode, keep in (("none", 1), ("largest", 1)):
        out = tmp_path / mode
        rows[mode] = list(
            pseudolabel_folder(predictor, scans, out, flip=False, postprocess=(mode, keep))
        )
        written = np.asarray(nib.load(out / "labelsTr" / "case.nii.gz").dataobj)
        want = labels.copy()
        if mode == "largest":
            want[30:34, 26:30, 8:11] = 0  # the second organ: an island to one liver
        np.testing.assert_array_equal(written, want)
        dataset = json.loads((out / "dataset.json").read_text())
        assert dataset["postprocess"] == mode
        assert dataset["postprocess_keep"] == (None if mode == "none" else 1)
    same = ("mean_max_prob", "foreground_voxels", "kept")  # the teacher's, before it
    assert [[row[k] for k in same] for row in rows["none"]] == [
        [row[k] for k in same] for row in rows["largest"]
    ]
    assert OmegaConf.load(Path(__file__).parents[1] / "conf/pseudolabel.yaml").postprocess == "none"
    result = kdseg(  # checked before the model loads
        "pseudolabel", "ckpt=none.ckpt", f"input={scans}", "output=o", "postprocess=auto",
        cwd=tmp_path, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "postprocess=auto" in lines[0] and "none or largest" in lines[0]


def test_pseudolabel_folder_checks_its_postprocess_as_the_command_does(tmp_path: Path) -> None:
    """The library function took ``postprocess`` on trust: a tumor model with ``("largest",
    1)`` kept one lesion and dropped the rest (kdseg-pseudolabel refuses it), and a
    one-element tuple raised IndexError. Each is an InputError in one line, nothing written."""
    from test_cascade import fine_backend
    from test_spacing_roi import stored_volume

    from kdseg.data.preprocess_config import PreprocessConfig
    from kdseg.data.tasks import Task
    from kdseg.errors import InputError
    from kdseg.eval.pseudolabel import pseudolabel_folder

    scans = tmp_path / "scans"
    scans.mkdir()
    nib.save(stored_volume("RAS")[0], scans / "case.nii.gz")

    def lesions(x: np.ndarray) -> np.ndarray:  # background, tumor
        return fine_backend(x)[:, [0, 2]]

    tumor = Predictor(lesions, PreprocessConfig(), Task("tumor"))
    organ = Predictor(fine_backend, PreprocessConfig(), Task("multiclass"))
    for predictor, postprocess, message in (
        (tumor, ("largest", 1), "this model's task is tumor"),
        (organ, ("largest",), "must be a pair"),
        (organ, "largest", "must be a pair"),
        (organ, ("largest", 0), "must be a pair"),
        (organ, ("biggest", 1), "must be one of none, largest"),
    ):
        with pytest.raises(InputError, match=message) as error:
            list(pseudolabel_folder(predictor, scans, tmp_path / "out", postprocess=postprocess))
        assert "\n" not in str(error.value)
        assert not (tmp_path / "out").exists()
    rows = list(pseudolabel_folder(tumor, scans, tmp_path / "out", postprocess=("none", 1)))
    assert [row["case_id"] for row in rows] == ["case"]


def test_pseudolabel_cli_postprocess_largest_keeps_the_models_count(
    trained_enet: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The command's wiring: the count is the checkpoint's (here ``preprocess.roi_components:
    2``, not the default 1), and the written label is the postprocessed one: the scan's two
    large organs kept, its small island gone, where the labels without postprocessing hold
    all three. A model whose ``data.organ`` is None (a dataset.json naming no single organ)
    names label 1 ``organ`` in the dataset it writes, not ``null``."""
    from scipy import ndimage
    from test_cascade import fine_backend
    from test_spacing_roi import stored_volume

    import kdseg.cli.pseudolabel as cli

    scans = tmp_path / "scans"
    scans.mkdir()
    organs = ((10, 21, 8, 23, 3, 9), (26, 34, 22, 30, 3, 9), (30, 33, 4, 7, 8, 11))
    img, _ = stored_volume("RAS", organs=organs)  # 990, 384 and 27 voxels
    nib.save(img, scans / "case.nii.gz")
    # the trained model, recording roi_components 2 and no organ; its network is replaced by
    # one that labels the scan's organs exactly
    saved = torch.load(trained_enet / "checkpoints" / "best.ckpt", weights_only=True)
    data = saved["hyper_parameters"]["data"]
    data["organ"], data["preprocess"]["roi_components"] = None, 2
    ckpt = tmp_path / "kidneys.ckpt"
    torch.save(saved, ckpt)
    build = cli.build_predictor

    def exact(*args, **kwargs):
        predictor, *rest = build(*args, **kwargs)
        predictor.backend = fine_backend
        return (predictor, *rest)

    monkeypatch.setattr(cli, "build_predictor", exact)

    def components(label: np.ndarray) -> int:
        return ndimage.label(label > 0, structure=np.ones((3, 3, 3)))[1]

    for mode, keep, count in (("none", None, 3), ("largest", 2, 2)):
        out = tmp_path / mode
        kdseg_here(
            "pseudolabel", f"ckpt={ckpt}", f"input={scans}", f"output={out}",
            "flip_check=false", f"postprocess={mode}",
        )  # fmt: skip
        dataset = json.loads((out / "dataset.json").read_text())
        assert dataset["labels"] == {"background": 0, "organ": 1, "tumor": 2}
        assert dataset["min_flip_dice"] is None  # no flip check: no flip threshold recorded
        assert (dataset["postprocess"], dataset["postprocess_keep"]) == (mode, keep)
        label = np.asarray(nib.load(out / "labelsTr" / "case.nii.gz").dataobj)
        assert components(label) == count, mode
    assert not label[30:33, 4:7, 8:11].any() and label[26:34, 22:30, 3:9].all()


@pytest.mark.parametrize(
    "option,expected",
    [
        (
            "min_flip_dice=0.9",
            "min_flip_dice needs the flip check; set flip_check=true or min_flip_dice=0",
        ),
        ("organ=tumor", "organ='tumor' names the tumor label, not an organ"),
        ("organ=Background", "organ='Background' names the background label, not an organ"),
        ("organ=liver_lesion", "organ='liver_lesion' names the tumor label, not an organ"),
        ("organ=ignore", "organ='ignore' names the ignore label, not an organ"),
    ],
)
def test_pseudolabel_refuses_settings_it_would_ignore_or_break_before_the_model_loads(
    phantom_lits: Path, tmp_path: Path, option: str, expected: str
) -> None:
    """``min_flip_dice`` without the flip check filtered nothing while dataset.json recorded
    it; an organ name an nnU-Net reader takes for background, ignore or a tumor wrote
    ``{"background": 0, "tumor": 1, "tumor": 2}``-like labels. Both are one line, exit 2,
    before the checkpoint is read (here it does not exist), and no output is made."""
    scans = tmp_path / "scans"
    scans.mkdir()
    os.symlink(phantom_lits / "volume-0.nii.gz", scans / "scan-a.nii.gz")
    out = tmp_path / "pseudo"
    result = kdseg_here(
        "pseudolabel",
        f"ckpt={tmp_path / 'missing.ckpt'}",
        f"input={scans}",
        f"output={out}",
        "flip_check=false",
        option,
        check=False,
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("kdseg-pseudolabel: error: ") and expected in lines[0], lines
    assert not out.exists()
