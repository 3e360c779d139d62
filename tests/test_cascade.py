"""The organ-to-tumor cascade: geometry on NIfTI and DICOM inputs, edge cases, the CLIs."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import kdseg_here
from test_spacing_roi import stored_volume

from kdseg.data.dicom_write import write_dicom_series
from kdseg.data.io import load_volume
from kdseg.data.preprocess_config import PreprocessConfig
from kdseg.data.tasks import Task
from kdseg.errors import InputError
from kdseg.eval.inference import CascadePredictor, Predictor, largest_component_box


def organ_backend(x: np.ndarray) -> np.ndarray:
    """Binary 'organ' logits: organ and tumor (scaled value above 0.25) are foreground."""
    return np.concatenate([np.full_like(x, 0.5), 2 * x], axis=1)


def fine_backend(x: np.ndarray) -> np.ndarray:
    """Multi-class logits that are right on exact values: 0 body, 0.4 tumor, 0.8 organ."""
    return np.concatenate([np.full_like(x, 0.2), 5 * x - 2.5, 1 - 5 * np.abs(x - 0.4)], axis=1)


def _cascade(stage2_spacing=None, components=None) -> CascadePredictor:
    coarse = PreprocessConfig(spacing_mm=(1.6, 1.4))  # stage 1 at half the resolution
    fine = PreprocessConfig(
        roi="organ", roi_margin_mm=4.0, spacing_mm=stage2_spacing, roi_components=components
    )
    return CascadePredictor(
        Predictor(organ_backend, coarse, Task("organ"), batch_size=4),
        Predictor(fine_backend, fine, Task("multiclass"), batch_size=4),
    )


@pytest.mark.parametrize("codes", ["RAS", "LPS", "PIR"])
@pytest.mark.parametrize("stage2_spacing", [None, (0.4, 0.35)])
def test_cascade_keeps_geometry_and_labels(codes: str, stage2_spacing) -> None:
    img, labels = stored_volume(codes)
    cascade = _cascade(stage2_spacing)
    pred = cascade.predict(img)
    assert pred.shape == img.shape and pred.flags.f_contiguous
    np.testing.assert_array_equal(pred, labels)
    assert cascade.last["organ_found"] and cascade.last["components"] == 1
    assert cascade.notes == []
    # the box is reported in the input's array indices (the label's and the lesions' frame),
    # not on stage 2's canonical grid: the same voxels, whatever the input's orientation
    box, _ = cascade.organ_roi(img)
    assert box is not None and "box" not in cascade.last
    i0, i1, j0, j1, k0, k1 = cascade.last["box_voxel"]
    marked = np.zeros(img.shape, np.uint8)
    marked[i0:i1, j0:j1, k0:k1] = 1
    want = np.zeros_like(cascade.pre.reorient(img, marked))
    want[box[0] : box[1], box[2] : box[3], box[4] : box[5]] = 1
    np.testing.assert_array_equal(cascade.pre.reorient(img, marked), want)


def test_cascade_reports_an_organ_box_larger_than_the_model_grid() -> None:
    img, labels = stored_volume("LPS")
    cascade = _cascade()
    fine = PreprocessConfig(
        roi="organ", roi_margin_mm=4.0, spacing_mm=(0.8, 0.7), crop_size=(8, 30)
    )
    cascade.stages = (cascade.stages[0], Predictor(fine_backend, fine, Task("multiclass")))
    pred = cascade.predict(img)
    assert pred.shape == img.shape
    # stage 1's box + 5 voxels (4 mm / 0.8 mm) of margin a side along x, cut to 8 voxels
    x0, x1 = cascade.last["box_voxel"][:2]  # LPS: x is the input's first axis too
    assert cascade.last["box_cropped_mm"] == [round((x1 - x0 + 10 - 8) * 0.8, 1), 0.0]
    assert "larger than stage 2's model grid" in cascade.notes[0]
    assert (pred > 0).sum() < (labels > 0).sum()


def test_cascade_on_dicom_keeps_geometry(tmp_path: Path) -> None:
    img, labels = stored_volume("LPS")
    write_dicom_series(img, tmp_path / "series", rng=np.random.default_rng(0))
    series = load_volume(tmp_path / "series")
    pred = _cascade((0.4, 0.35)).predict(series)
    assert pred.shape == series.shape
    got = nib.as_closest_canonical(nib.Nifti1Image(pred, series.affine))
    want = nib.as_closest_canonical(nib.Nifti1Image(labels, img.affine))
    np.testing.assert_allclose(got.affine, want.affine, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(got.dataobj), np.asarray(want.dataobj))


def test_stage1_finds_nothing() -> None:
    img, _ = stored_volume("LPS", organs=((10, 21, 8, 23, 3, 9),))
    data = np.asanyarray(img.dataobj).copy()
    data[data > 60] = 40  # no organ left
    empty = nib.Nifti1Image(data, img.affine)
    cascade = _cascade()
    cascade.predict(img)  # a case with an organ first: stage 2 runs and times its steps
    assert cascade.stages[1].timings["network"] > 0
    pred = cascade.predict(empty)
    assert pred.shape == empty.shape and not pred.any()
    assert cascade.last == {"organ_found": False, "components": 0, "organ_voxels": 0}
    assert cascade.notes == ["stage 1 found no organ: labels left empty"]
    # stage 2 did not run: the timings are stage 1's alone, not the previous case's added
    assert cascade.stages[1].timings == {} and cascade.timings == cascade.stages[0].timings


def test_a_note_is_a_warning_on_stderr_even_without_a_report(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """What the report notes (stage 1 found no organ) is also one warning line on stderr per
    case, naming it: with ``report=false`` it was said nowhere."""
    from omegaconf import OmegaConf

    from kdseg.cli.predict import _predict_one

    img, _ = stored_volume("LPS", organs=((10, 21, 8, 23, 3, 9),))
    data = np.asanyarray(img.dataobj).copy()
    data[data > 60] = 40
    empty = nib.Nifti1Image(data, img.affine)
    cfg = OmegaConf.create({"report": False, "overlay": False, "output_format": "nifti"})
    files = [tmp_path / "case.nii.gz"]
    _predict_one(cfg, _cascade(), None, empty, tmp_path / "in.nii.gz", files, {})
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "found no organ" in line]
    assert len(lines) == 1, err
    assert lines[0].endswith(
        f"warning: {tmp_path / 'in.nii.gz'}: stage 1 found no organ: labels left empty"
    )
    assert files[0].exists() and sorted(p.name for p in tmp_path.iterdir()) == ["case.nii.gz"]


def test_two_components_keep_the_largest_and_tiny_and_edge_organs() -> None:
    big, small = (10, 21, 8, 23, 3, 9), (30, 34, 26, 30, 8, 11)
    img, labels = stored_volume("RAS", organs=(big, small))
    cascade = _cascade()
    pred = cascade.predict(img)
    assert cascade.last["components"] == 2
    assert tuple(cascade.last["box_voxel"])[4:] == (3, 9)
    np.testing.assert_array_equal(pred[:, :, :12][labels == 2], 2)
    assert not pred[30:34, 26:30, 10:11].any()  # the small component is outside the box
    # an organ at the volume's edge (box clipped) and a one-voxel organ
    edge = np.zeros((40, 36, 12), bool)
    edge[0:4, 30:36, 10:12] = True
    assert largest_component_box(edge)[0] == (0, 4, 30, 36, 10, 12)
    dot = np.zeros((40, 36, 12), bool)
    dot[5, 6, 7] = True
    box, info = largest_component_box(dot)
    assert box == (5, 6, 6, 7, 7, 8) and info["largest_component_voxels"] == 1
    img, labels = stored_volume("LPS", organs=((0, 5, 0, 6, 9, 12),))
    np.testing.assert_array_equal(_cascade((0.4, 0.35)).predict(img), labels)


def test_paired_organs_give_the_box_of_both_and_no_stray_blob() -> None:
    """``roi_components: 2`` (kits19's default): both kidneys make the box, so stage 2 sees
    the organ it trained on (a ground-truth box spans both); a blob under a tenth of the
    largest component does not widen it; 1 (the default) keeps the largest alone."""
    left, right = (4, 12, 8, 20, 3, 9), (26, 33, 8, 19, 3, 9)  # 576 and 462 voxels
    img, labels = stored_volume("LPS", organs=(left, right))
    pred = _cascade(components=2).predict(img)
    assert _cascade(components=2).stages[1].pre.config.roi_components == 2
    np.testing.assert_array_equal(pred, labels)  # both kidneys found, nothing lost
    one = _cascade()
    assert (one.predict(img) > 0).sum() < (labels > 0).sum() and one.last["components"] == 2
    mask = np.zeros((40, 36, 12), bool)
    mask[slice(*left[:2]), slice(*left[2:4]), slice(*left[4:])] = True
    mask[30:32, 30:32, 0:2] = True  # 8 voxels: a stray blob
    assert largest_component_box(mask, keep=2)[0] == largest_component_box(mask)[0] == left
    assert largest_component_box(mask, keep=2)[1]["kept_components"] == 1
    cubes = np.zeros((40, 36, 12), bool)  # three equal components: ties go to the first
    for x in (1, 11, 21):
        cubes[x : x + 3, 1:4, 1:4] = True
    one, two = largest_component_box(cubes)[0], largest_component_box(cubes, keep=2)[0]
    assert one == (1, 4, 1, 4, 1, 4) and two == (1, 14, 1, 4, 1, 4)
    assert PreprocessConfig(roi="organ", roi_components=1) == PreprocessConfig(roi="organ")
    assert (
        PreprocessConfig(roi_components=2).digest() == PreprocessConfig().digest()
    )  # no ROI: the key does nothing
    with pytest.raises(InputError, match="roi_components"):
        PreprocessConfig(roi="organ", roi_components=0)


def test_cli_cascade_nifti_dicom_eval_and_no_organ(
    trained_enet: Path, phantom_lits: Path, tmp_path: Path
) -> None:
    """``ckpt=[stage1,stage2]`` in predict (NIfTI and DICOM) and eval; an empty scan reports."""
    ckpt = trained_enet / "checkpoints" / "best.ckpt"
    pair = f"ckpt=[{ckpt},{ckpt}]"
    case = sorted(phantom_lits.glob("volume-*.nii.gz"))[0]
    image = nib.load(str(case))
    write_dicom_series(image, tmp_path / "series")
    for name, source in (("nifti", case), ("dicom", tmp_path / "series")):
        out = tmp_path / f"{name}.nii.gz"
        kdseg_here("predict", pair, f"input={source}", f"output={out}")
        pred, src = nib.load(str(out)), load_volume(source)
        assert pred.shape == src.shape
        np.testing.assert_allclose(pred.affine, src.affine, atol=1e-4)
        report = json.loads((tmp_path / f"{name}.lesions.json").read_text())
        assert len(report["cascade"]["box_voxel"]) == 6 and "box" not in report["cascade"]
    # air with scanner noise (a constant volume is refused as not an image)
    noise = np.random.default_rng(0).integers(-5, 6, (48, 40, 6))
    air = nib.Nifti1Image((noise - 1000).astype(np.int16), np.diag([0.9, 0.9, 3.0, 1]))
    nib.save(air, str(tmp_path / "air.nii.gz"))
    result = kdseg_here(
        "predict", pair, f"input={tmp_path / 'air.nii.gz'}", f"output={tmp_path / 'e'}"
    )
    assert "stage 1 found no organ" in result.stdout
    # the note is also one warning line on stderr, and stage 2 (this checkpoint, not trained
    # on organ crops) is said to be one
    assert result.stderr.count("stage 1 found no organ") == 1
    assert result.stderr.count("was not trained on organ crops") == 1
    assert not np.asarray(nib.load(str(tmp_path / "e" / "air.nii.gz")).dataobj).any()
    report = json.loads((tmp_path / "e" / "air.lesions.json").read_text())
    assert report["notes"] == ["stage 1 found no organ: labels left empty"]
    result = kdseg_here(
        "eval",
        "experiment=demo",
        f"data.root={phantom_lits}",
        pair,
        f"output_dir={tmp_path / 'ev'}",
    )
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["cascade"] == [str(ckpt), str(ckpt)] and "organ" in summary["summary"]
    bad = kdseg_here(
        "predict", f"ckpt=[{ckpt},{ckpt},{ckpt}]", f"input={case}", "output=y", check=False
    )
    assert bad.returncode == 2 and "two stages" in bad.stderr


def test_a_cascade_whose_stage_1_was_trained_on_organ_crops_is_refused_as_swapped(
    trained_enet: Path, phantom_lits: Path, tmp_path: Path
) -> None:
    """``ckpt=[stage2,stage1]``: the pair was taken, and every case failed with "run it as
    stage 2 of a cascade", which names no file and asks for what the user did. Now one line
    before any case runs, naming the first checkpoint."""
    ckpt = trained_enet / "checkpoints" / "best.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    state["hyper_parameters"]["data"]["preprocess"]["roi"] = "organ"
    stage2 = tmp_path / "stage2.ckpt"
    torch.save(state, stage2)
    case = sorted(phantom_lits.glob("volume-*.nii.gz"))[0]
    out = tmp_path / "out"
    bad = kdseg_here(
        "predict", f"ckpt=[{stage2},{ckpt}]", f"input={case}", f"output={out}", check=False
    )
    assert bad.returncode == 2, bad.stderr
    assert bad.stderr.count("\n") == 1 and str(stage2) in bad.stderr
    assert "the stages look swapped" in bad.stderr and not out.exists()
    good = kdseg_here("predict", f"ckpt=[{ckpt},{stage2}]", f"input={case}", f"output={out}")
    assert "was not trained on organ crops" not in good.stderr


REAL_CT = Path(__file__).parent / "data" / "real_ct"


def test_real_scan_through_predict_keeps_its_geometry(trained_enet: Path, tmp_path: Path) -> None:
    """The real TotalSegmentator scan (tests/data/real_ct, see its README): single stage and
    cascade outputs have its exact shape, affine and header zooms."""
    ckpt = trained_enet / "checkpoints" / "best.ckpt"
    ct = nib.load(str(REAL_CT / "ct.nii.gz"))
    for name, arg in (("single", f"ckpt={ckpt}"), ("cascade", f"ckpt=[{ckpt},{ckpt}]")):
        out = tmp_path / f"{name}.nii.gz"
        kdseg_here("predict", arg, f"input={REAL_CT / 'ct.nii.gz'}", f"output={out}")
        pred = nib.load(str(out))
        assert pred.shape == ct.shape == (122, 101, 30)
        np.testing.assert_array_equal(pred.affine, ct.affine)
        assert pred.header.get_zooms() == ct.header.get_zooms()
        assert set(np.unique(np.asarray(pred.dataobj)).tolist()) <= {0, 1, 2}
    assert sorted(p.name for p in REAL_CT.iterdir()) == [
        "README.md",
        "ct.nii.gz",
        "kidney_left_reference.nii.gz",
        "kidney_right_reference.nii.gz",
        "liver_reference.nii.gz",
        "spleen_reference.nii.gz",
    ]  # predict never writes into its input folder


def test_stage2_alone_is_evaluated_in_the_reference_organ_box(tmp_path: Path) -> None:
    """kdseg-eval of a stage-2 model without stage 1 runs it in the reference organ's box (an
    oracle stage 1): an organ the reference does not hold, outside that box, stays background.
    Prediction alone needs a box (a cascade)."""
    from kdseg.data.sources import Case
    from kdseg.eval.evaluate import evaluate_cases

    big, small = (10, 21, 8, 23, 3, 9), (30, 34, 26, 30, 8, 11)
    img, labels = stored_volume("RAS", organs=(big, small))
    reference = labels.copy()
    reference[30:34, 26:30, 8:11] = 0  # the reference holds the big organ (and its tumor) only
    nib.save(img, tmp_path / "volume-0.nii.gz")
    nib.save(nib.Nifti1Image(reference, img.affine), tmp_path / "segmentation-0.nii.gz")
    stage2 = Predictor(
        fine_backend, PreprocessConfig(roi="organ", roi_margin_mm=0.0), Task("multiclass")
    )
    case = Case("volume-0", tmp_path / "volume-0.nii.gz", tmp_path / "segmentation-0.nii.gz")
    row = evaluate_cases(stage2, [case], progress=False)[0]
    assert row["organ"]["dice"] == pytest.approx(1.0) and row["tumor"]["dice"] == pytest.approx(1.0)
    with pytest.raises(InputError, match="stage 2 of a cascade"):
        stage2.predict(img)
    assert stage2.predict(img, roi=(10, 34, 8, 30, 3, 11))[30:34, 26:30, 8:11].all()
