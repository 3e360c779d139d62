"""Connected-component postprocessing (``postprocess=largest``, nnU-Net's "keep the largest
component"; beyond the paper, default off): islands and tumor outside the organ go, paired
kidneys stay, empty labels and dtypes are kept; kdseg-eval scores it and decides it on
validation only (``postprocess=auto``), kdseg-predict writes it."""

from __future__ import annotations

import json
from pathlib import Path

import cc3d
import nibabel as nib
import numpy as np
import pytest
from conftest import error_lines, kdseg, kdseg_here
from test_cascade import fine_backend
from test_deploy import _no_torch
from test_spacing_roi import stored_volume

from kdseg.data.preprocess_config import PreprocessConfig
from kdseg.data.sources import Case
from kdseg.data.tasks import Task
from kdseg.errors import InputError
from kdseg.eval.evaluate import evaluate_modes, summarize_rows
from kdseg.eval.inference import Predictor
from kdseg.eval.postprocess import (
    check_for_task,
    check_postprocess,
    choose,
    components_to_keep,
    keep_largest,
    note,
    postprocess_labels,
)


def _labels(shape=(30, 24, 12)) -> np.ndarray:
    """An organ (label 1) with a tumor inside (2), an organ island, a tumor island."""
    label = np.zeros(shape, np.uint8)
    label[2:14, 2:14, 2:10] = 1
    label[5:8, 5:8, 4:6] = 2  # inside the organ
    label[20:23, 18:21, 3:5] = 1  # an island off the organ
    label[25:27, 2:4, 8:10] = 2  # tumor outside the organ
    return label


def test_an_island_and_a_tumor_outside_the_organ_are_removed() -> None:
    label = _labels()
    before = label.copy()
    out, info = keep_largest(label)
    want = before.copy()
    want[20:23, 18:21, 3:5] = 0
    want[25:27, 2:4, 8:10] = 0
    np.testing.assert_array_equal(out, want)
    assert (out == 2).sum() == 18  # the tumor inside the organ stays
    assert info == {"components": 3, "kept_components": 1, "removed_voxels": 18 + 8}
    np.testing.assert_array_equal(label, before)  # the input is not touched


def test_a_tumor_touching_the_organ_by_a_corner_stays() -> None:
    """26-connectivity: a tumor meeting the organ at one corner is part of it."""
    label = np.zeros((12, 12, 12), np.uint8)
    label[2:6, 2:6, 2:6] = 1
    label[6:8, 6:8, 6:8] = 2  # shares only the corner (5, 5, 5) - (6, 6, 6)
    np.testing.assert_array_equal(keep_largest(label)[0], label)


def test_two_kidneys_stay_with_two_components_and_a_blob_goes() -> None:
    label = np.zeros((40, 20, 10), np.uint8)
    label[2:12, 4:14, 2:8] = 1  # right kidney, 600 voxels
    label[26:35, 4:14, 2:8] = 1  # left kidney, 540
    label[28:30, 6:8, 4:6] = 2  # its tumor
    label[18:20, 17:19, 1:3] = 1  # a blob of 8 voxels: below a tenth of the largest
    one, _ = keep_largest(label, keep=1)
    assert one[2:12, 4:14, 2:8].all() and not one[14:].any()
    two, info = keep_largest(label, keep=2)
    want = label.copy()
    want[18:20, 17:19, 1:3] = 0
    np.testing.assert_array_equal(two, want)
    assert info == {"components": 3, "kept_components": 2, "removed_voxels": 8}
    three, _ = keep_largest(label, keep=3)  # the blob is no third kidney
    np.testing.assert_array_equal(three, want)


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16])
def test_empty_labels_dtype_shape_and_order_are_kept(order: str, dtype) -> None:
    empty = np.zeros((7, 5, 3), dtype, order=order)
    out, info = keep_largest(empty)
    assert out is not empty and out.dtype == dtype and out.shape == (7, 5, 3)
    assert not out.any() and info["removed_voxels"] == 0
    label = np.asarray(_labels(), dtype=dtype, order=order)
    out = keep_largest(label)[0]
    assert out.dtype == dtype and out.shape == label.shape
    assert out.flags.f_contiguous == (order == "F") and out.flags.c_contiguous == (order == "C")
    assert postprocess_labels(label, "none") == (label, {})  # none: the array itself
    assert postprocess_labels(label, None) == (label, {})  # postprocess=null: none, too
    info = postprocess_labels(empty, "largest")[1]
    assert info["components"] == 0 and note(info) is None  # an empty prediction: no note


def test_binary_organ_labels_and_settings() -> None:
    organ = (_labels() > 0).astype(np.uint8)  # an organ model's labels: 0 / 1
    out, info = postprocess_labels(organ, "largest")
    assert info["mode"] == "largest" and cc3d.connected_components(out, connectivity=26).max() == 1
    assert info["keep"] == 1 and "(1 of at most 1)" in note(info)
    assert check_postprocess(None) == "none" and check_postprocess("largest") == "largest"
    with pytest.raises(InputError, match="decided by kdseg-eval on split=val"):
        check_postprocess("auto")
    with pytest.raises(InputError, match="postprocess must be one of none, largest, got 'big'"):
        check_postprocess("big")
    with pytest.raises(InputError, match="this model's task is tumor"):
        check_for_task("largest", Task("tumor"))
    check_for_task("none", Task("tumor"))
    check_for_task("largest", Task("organ"))


def test_components_to_keep() -> None:
    """roi_components where set; else the organ: kidney 2 (a kits19 model saved before
    roi_components, a data=nnunet kidney model), liver 1; an unknown organ is refused."""
    assert components_to_keep("largest", 2, "liver") == 2
    assert components_to_keep("largest", None, "kidney") == 2
    assert components_to_keep("auto", None, "Kidney") == 2
    assert components_to_keep("largest", None, "liver") == 1
    assert components_to_keep("none", None, None) == 1  # nothing to keep: never refused
    for organ in (None, "organ", "spleen"):
        with pytest.raises(InputError, match="neither preprocess.roi_components nor an organ"):
            components_to_keep("largest", None, organ)


def test_protocol_paper_refuses_postprocessing_with_one_message() -> None:
    """kdseg-eval's check and the library's (evaluate_modes) are one function, one line."""
    from kdseg.eval.postprocess import check_for_protocol

    want = "protocol=paper is the paper's protocol: use postprocess=none"
    for modes in ("largest", ("none", "largest")):
        with pytest.raises(InputError) as info:
            check_for_protocol("paper", modes)
        assert str(info.value).endswith(want)
    check_for_protocol("paper", "none")
    check_for_protocol("full", ("none", "largest"))
    predictor = Predictor(lambda x: x, PreprocessConfig(), Task("organ"))
    with pytest.raises(InputError) as info:  # before any case is read
        evaluate_modes(predictor, [], "paper", False, ("largest",), organ="liver")
    assert str(info.value).endswith(want)


def _summary(organ: float, tumor: float) -> dict:
    return {"organ": {"dice_mean": organ}, "tumor": {"dice_mean": tumor}}


def test_the_choice_is_nnunets_rule() -> None:
    """largest when the mean over classes rises and no class falls; a tie keeps none."""
    better = choose({"none": _summary(0.8, 0.5), "largest": _summary(0.9, 0.5)})
    assert better["choice"] == "largest" and better["per_class"]["tumor"]["better"] == "same"
    mixed = choose({"none": _summary(0.8, 0.5), "largest": _summary(0.9, 0.45)})
    assert mixed["choice"] == "none" and mixed["per_class"]["tumor"]["better"] == "none"
    same = choose({"none": _summary(0.8, 0.5), "largest": _summary(0.8, 0.5)})
    assert same["choice"] == "none"


def test_evaluation_scores_both_from_one_prediction(tmp_path: Path) -> None:
    """A second organ the reference does not hold is an island to the organ's Dice; largest
    removes it, the tumor is untouched, and the choice is largest."""
    big, small = (10, 21, 8, 23, 3, 9), (30, 34, 26, 30, 8, 11)
    img, labels = stored_volume("RAS", organs=(big, small))
    reference = labels.copy()
    reference[30:34, 26:30, 8:11] = 0
    nib.save(img, tmp_path / "volume-0.nii.gz")
    nib.save(nib.Nifti1Image(reference, img.affine), tmp_path / "segmentation-0.nii.gz")
    case = Case("volume-0", tmp_path / "volume-0.nii.gz", tmp_path / "segmentation-0.nii.gz")
    calls: list[int] = []

    def backend(x: np.ndarray) -> np.ndarray:
        calls.append(len(x))
        return fine_backend(x)

    predictor = Predictor(backend, PreprocessConfig(), Task("multiclass"))
    with pytest.raises(InputError, match="data.organ=None"):  # how many to keep: unknown
        evaluate_modes(predictor, [case], progress=False, modes=("none", "largest"))
    assert not calls  # refused before any prediction
    rows = evaluate_modes(
        predictor, [case], progress=False, modes=("none", "largest"), organ="liver"
    )
    assert sum(calls) == img.shape[2]  # one prediction for both
    assert rows["none"][0]["organ"]["dice"] < 0.99
    assert rows["largest"][0]["organ"]["dice"] == pytest.approx(1.0)
    assert rows["largest"][0]["tumor"] == rows["none"][0]["tumor"]
    decision = choose({m: summarize_rows(r, "full") for m, r in rows.items()})
    assert decision["choice"] == "largest"
    with pytest.raises(InputError, match="task is tumor"):
        evaluate_modes(
            Predictor(backend, PreprocessConfig(), Task("tumor")),
            [case],
            progress=False,
            modes=("largest",),
        )


def pointwise_onnx(path: Path, organ: str | None = "liver", **preprocess) -> Path:
    """An ONNX artefact of :func:`test_cascade.fine_backend` (per pixel: 0 body, 0.4 tumor,
    0.8 organ; window [-60, 140]: 40, 80 and 120 HU) with kdseg metadata, on the native grid:
    a model whose labels are known exactly, without training one."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from kdseg.deploy.artifact import set_onnx_metadata

    consts = {"zero": 0.0, "c02": 0.2, "five": 5.0, "c25": 2.5, "c04": 0.4, "one": 1.0}
    nodes = [
        helper.make_node("Mul", ["x", "zero"], ["x0"]),
        helper.make_node("Add", ["x0", "c02"], ["body"]),
        helper.make_node("Mul", ["x", "five"], ["x5"]),
        helper.make_node("Sub", ["x5", "c25"], ["organ"]),
        helper.make_node("Sub", ["x", "c04"], ["d"]),
        helper.make_node("Abs", ["d"], ["ad"]),
        helper.make_node("Mul", ["ad", "five"], ["ad5"]),
        helper.make_node("Sub", ["one", "ad5"], ["tumor"]),
        helper.make_node("Concat", ["body", "organ", "tumor"], ["logits"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "pointwise",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 1, "h", "w"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", 3, "h", "w"])],
        [numpy_helper.from_array(np.array(v, np.float32), k) for k, v in consts.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    data = {
        "task": "multiclass",
        "context": 0,
        "in_channels": 1,
        "num_classes": 3,
        "preprocess": {**PreprocessConfig().to_dict(), "window": [-60, 140], **preprocess},
    }
    data.update({} if organ is None else {"organ": organ})
    set_onnx_metadata(model, {"schema": 1, "model": {"name": "pointwise"}, "data": data})
    onnx.save(model, path)
    return path


def _components(label: np.ndarray) -> int:
    return int(cc3d.connected_components(label > 0, connectivity=26).max())


def _volumes(path: Path) -> tuple[float, float]:
    """The organ (labels 1 and 2) and tumor volumes in mL of a written label NIfTI."""
    img = nib.load(path)
    label, voxel_ml = np.asarray(img.dataobj), float(np.prod(img.header.get_zooms())) / 1000
    return np.count_nonzero(label) * voxel_ml, np.count_nonzero(label == 2) * voxel_ml


def _known_val_set(root: Path, img: nib.Nifti1Image, reference: np.ndarray) -> Path:
    """A LiTS folder of one validation case: ``img`` and its ``reference``."""
    from kdseg.data.manifest import FOLDER_SPLIT_NAME, write_split

    root.mkdir(parents=True)
    nib.save(img, root / "volume-0.nii.gz")
    nib.save(nib.Nifti1Image(reference, img.affine), root / "segmentation-0.nii.gz")
    write_split({"train": [], "val": ["volume-0"], "test": []}, root / FOLDER_SPLIT_NAME)
    return root


def test_cli_predict_and_eval(tmp_path: Path) -> None:
    """kdseg-predict postprocess=largest (ONNX without torch, one stage, a cascade, and a DICOM
    SEG) writes the organ's largest component, and its report (made from what is written)
    says so; postprocess=null writes the raw labels. kdseg-eval postprocess=auto on val, where
    largest removes an island the reference lacks, chooses largest, keeps the raw summary and
    the postprocessed one, and prints one line; largest scores the postprocessed labels; a
    later evaluation into auto's folder removes its per_case_largest.csv; auto on test is
    refused in one line before anything is written."""
    import pydicom

    from kdseg.data.dicom_write import write_dicom_series
    from kdseg.deploy.artifact import load_artifact

    artifact = pointwise_onnx(tmp_path / "pointwise.onnx")
    stage2 = pointwise_onnx(tmp_path / "stage2.onnx", roi="organ", roi_margin_mm=100.0)
    img, labels = stored_volume("RAS", organs=((10, 21, 8, 23, 3, 9), (30, 34, 26, 30, 8, 11)))
    nib.save(img, tmp_path / "scan.nii.gz")
    predictor = Predictor.from_bundle(load_artifact(artifact), "onnx", str(artifact), threads=1)
    raw = predictor.predict(img)
    assert _components(raw) == 2  # the organ (with its tumor) and an island
    want = raw.copy()
    want[30:34, 26:30, 8:11] = 0
    runs = (
        ("one", f"artifact={artifact}", "largest"),
        ("two", f"artifact=[{artifact},{stage2}]", "largest"),
        ("null", f"artifact={artifact}", "null"),
    )
    for name, arg, mode in runs:
        out = tmp_path / f"{name}.nii.gz"
        args = (
            "ckpt=null",
            arg,
            "backend=onnx",
            f"input={tmp_path / 'scan.nii.gz'}",
            f"output={out}",
            f"postprocess={mode}",
            "threads=1",
        )
        if name == "one":  # the deploy path: torch, lightning ... unimportable
            assert "LOADED [] PYDICOM False ONNX False" in _no_torch(*args).stdout
        else:
            kdseg("predict", *args)
        written = np.asarray(nib.load(out).dataobj)
        report = json.loads((tmp_path / f"{name}.lesions.json").read_text())
        organ_ml, tumor_ml = _volumes(out)
        assert report["organ_volume_ml"] == pytest.approx(organ_ml)  # not the raw label's
        assert report["tumor_volume_ml"] == pytest.approx(tumor_ml)
        if mode == "null":  # postprocess=null is none: nothing removed, nothing reported
            np.testing.assert_array_equal(written, raw)
            assert "postprocess" not in report and "notes" not in report, report
            continue
        np.testing.assert_array_equal(written, want)
        assert report["postprocess"] == {
            "mode": "largest",
            "keep": 1,
            "components": 2,
            "kept_components": 1,
            "removed_voxels": 4 * 4 * 3,
        }
        assert any(n.startswith("postprocess=largest") for n in report["notes"])

    write_dicom_series(img, tmp_path / "series", rng=np.random.default_rng(0))
    kdseg(
        "predict",
        "ckpt=null",
        f"artifact={artifact}",
        "backend=onnx",
        f"input={tmp_path / 'series'}",
        f"output={tmp_path / 'seg'}",
        "output_format=dicom-seg",
        "postprocess=largest",
        "threads=1",
    )
    seg = pydicom.dcmread(tmp_path / "seg" / "series.seg.dcm")
    assert int(np.asarray(seg.pixel_array).sum()) == np.count_nonzero(want)  # island gone
    report = json.loads((tmp_path / "seg" / "series.lesions.json").read_text())
    assert report["postprocess"]["removed_voxels"] == 4 * 4 * 3

    reference = labels.copy()
    reference[30:34, 26:30, 8:11] = 0  # the island is a false positive
    data = _known_val_set(tmp_path / "data", img, reference)
    common = ("eval", "ckpt=null", f"artifact={artifact}", f"data.root={data}", "threads=1")
    result = kdseg_here(*common, "split=val", "postprocess=auto")  # default folder: beside it
    auto = tmp_path / "eval-pointwise-val-full-pp-auto"
    summary = json.loads((auto / "summary.json").read_text())
    assert summary["postprocess"] == "auto" and summary["split"] == "val"
    assert summary["postprocess_keep"] == 1
    decision = summary["postprocess_decision"]
    assert decision["choice"] == "largest"
    assert summary["summary"]["organ"]["dice_mean"] < 0.99  # without: the island counts
    assert summary["summary_largest"]["organ"]["dice_mean"] == pytest.approx(1.0)
    assert summary["summary_largest"]["tumor"] == summary["summary"]["tumor"]
    assert set(decision["per_class"]) == set(summary["summary_largest"]) == {"organ", "tumor"}
    assert (auto / "per_case_largest.csv").is_file() and (auto / "per_case.csv").is_file()
    lines = [line for line in result.stdout.splitlines() if "postprocess=auto on val" in line]
    assert len(lines) == 1 and "use postprocess=largest" in lines[0], result.stdout

    kdseg_here(*common, "split=val", "postprocess=largest")
    largest = json.loads(
        (tmp_path / "eval-pointwise-val-full-pp-largest" / "summary.json").read_text()
    )
    assert largest["postprocess"] == "largest" and largest["postprocess_keep"] == 1
    assert largest["summary"]["organ"]["dice_mean"] == pytest.approx(1.0)
    assert not (tmp_path / "eval-pointwise-val-full-pp-largest" / "per_case_largest.csv").exists()

    kdseg_here(*common, "split=val", "postprocess=none", f"output_dir={auto}")  # into auto's folder
    summary = json.loads((auto / "summary.json").read_text())
    assert summary["postprocess"] == "none" and summary["postprocess_keep"] is None
    assert not (auto / "per_case_largest.csv").exists()  # auto's file would pass for this run's
    assert sorted(p.name for p in auto.iterdir()) == ["per_case.csv", "summary.json"]

    refused = kdseg_here(
        *common, "split=test", "postprocess=auto", f"output_dir={tmp_path / 'no'}", check=False
    )
    assert refused.returncode == 2
    lines = error_lines(refused.stderr)
    assert len(lines) == 1 and "postprocess=auto decides on the validation cases" in lines[0]
    assert not (tmp_path / "no").exists()


def test_a_per_case_largest_csv_of_another_origin_stays(tmp_path: Path) -> None:
    """Only a per_case_largest.csv beside a postprocess=auto summary.json counts as stale."""
    from kdseg.cli.evaluate import _written_by_auto

    (tmp_path / "per_case_largest.csv").write_text("mine\n")
    assert not _written_by_auto(tmp_path)  # no summary.json: somebody's file
    (tmp_path / "summary.json").write_text(json.dumps({"postprocess": "none"}))
    assert not _written_by_auto(tmp_path)
    (tmp_path / "summary.json").write_text("[1]")
    assert not _written_by_auto(tmp_path)
    (tmp_path / "summary.json").write_text(json.dumps({"postprocess": "auto"}))
    assert _written_by_auto(tmp_path)


def test_a_kidney_model_without_roi_components_keeps_both_kidneys(tmp_path: Path) -> None:
    """A kidney model whose roi_components is unset (a kits19 checkpoint saved before the key, a
    data=nnunet kidney model) keeps both kidneys and drops a blob; a model without an organ
    is refused in one line, before anything is written."""
    kidneys = ((2, 16, 8, 23, 3, 9), (22, 36, 8, 23, 3, 9), (30, 34, 26, 30, 8, 11))
    img, _ = stored_volume("RAS", organs=kidneys)
    nib.save(img, tmp_path / "scan.nii.gz")
    artifact = pointwise_onnx(tmp_path / "kidney.onnx", organ="kidney")
    common = ("predict", "ckpt=null", "backend=onnx", f"input={tmp_path / 'scan.nii.gz'}")
    kdseg(*common, f"artifact={artifact}", f"output={tmp_path / 'k.nii.gz'}", "postprocess=largest")
    written = np.asarray(nib.load(tmp_path / "k.nii.gz").dataobj)
    assert written[2:16, 8:23, 3:9].all() and written[22:36, 8:23, 3:9].all()  # both kidneys
    assert not written[30:34, 26:30, 8:11].any()  # the blob (a tenth of a kidney or less)
    report = json.loads((tmp_path / "k.lesions.json").read_text())
    assert report["postprocess"]["keep"] == 2 and report["postprocess"]["kept_components"] == 2

    unknown = pointwise_onnx(tmp_path / "unknown.onnx", organ=None)
    refused = kdseg(
        *common,
        f"artifact={unknown}",
        f"output={tmp_path / 'u.nii.gz'}",
        "postprocess=largest",
        check=False,
    )
    assert refused.returncode == 2
    lines = error_lines(refused.stderr)
    assert len(lines) == 1 and "set" in lines[0] and "roi_components" in lines[0], lines
    assert not (tmp_path / "u.nii.gz").exists() and not (tmp_path / "u.lesions.json").exists()


def test_evaluation_files_are_written_as_one_group(tmp_path: Path) -> None:
    """per_case_largest.csv, per_case.csv and summary.json are renamed together, summary.json
    last: when it cannot be written, neither of the others is left behind."""
    from kdseg.eval.evaluate import write_results

    (tmp_path / "summary.json").mkdir()  # the last rename fails
    rows = [{"case": "a", "organ": {"dice": 1.0}}]
    with pytest.raises(OSError):
        write_results(rows, {}, tmp_path, {}, {"per_case_largest.csv": "case\n"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]
    write_results(rows, {}, tmp_path / "ok", {}, {"per_case_largest.csv": "case\n"})
    assert sorted(p.name for p in (tmp_path / "ok").iterdir()) == [
        "per_case.csv",
        "per_case_largest.csv",
        "summary.json",
    ]
