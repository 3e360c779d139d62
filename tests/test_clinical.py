"""Clinical paths end to end: DICOM input, lesion reports and overlays, the paper protocol."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import TINY_DATA, kdseg_here

from kdseg.data.dicom_write import write_dicom_series
from kdseg.data.phantom import PhantomConfig, generate_case
from kdseg.eval.lesions import lesion_report

SMALL = PhantomConfig(
    dataset="lits",
    size_range=(64, 72),
    slices_range=(14, 18),
    max_tumors=4,
    p_no_tumor=0.0,
    tumor_mm_range=(8, 30),
)


def test_dicom_series_predicts_like_its_nifti(trained_enet: Path, tmp_path: Path) -> None:
    img, _, _ = generate_case(SMALL, 11)
    nifti = tmp_path / "case.nii.gz"
    nib.save(img, str(nifti))
    series = tmp_path / "series"
    write_dicom_series(img, series, rng=np.random.default_rng(0))  # shuffled order, random names
    ckpt = trained_enet / "checkpoints" / "best.ckpt"
    kdseg_here(
        "predict", f"ckpt={ckpt}", f"input={nifti}", f"output={tmp_path / 'from_nifti.nii.gz'}"
    )
    kdseg_here(
        "predict", f"ckpt={ckpt}", f"input={series}", f"output={tmp_path / 'from_dicom.nii.gz'}"
    )
    a = nib.as_closest_canonical(nib.load(str(tmp_path / "from_nifti.nii.gz")))
    b = nib.as_closest_canonical(nib.load(str(tmp_path / "from_dicom.nii.gz")))
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-4)
    assert np.asarray(a.dataobj).any()  # labels to compare, not background everywhere
    np.testing.assert_array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))
    # the series renumbered 1, 3, 5, ... (a PACS's numbering; positions unchanged): once
    # refused as missing slices, now the same labels
    import shutil

    import pydicom

    odd = tmp_path / "odd"
    shutil.copytree(series, odd)
    for path in odd.iterdir():
        ds = pydicom.dcmread(path)
        ds.InstanceNumber = 2 * int(ds.InstanceNumber) - 1
        ds.save_as(path)
    kdseg_here("predict", f"ckpt={ckpt}", f"input={odd}", f"output={tmp_path / 'odd.nii.gz'}")
    renumbered = np.asarray(nib.load(str(tmp_path / "odd.nii.gz")).dataobj)
    np.testing.assert_array_equal(
        renumbered, np.asarray(nib.load(str(tmp_path / "from_dicom.nii.gz")).dataobj)
    )
    # the same series out as a DICOM SEG: voxel for voxel the NIfTI, referencing the series
    import highdicom as hd

    from kdseg.data.dicom_seg import source_slices

    kdseg_here(
        "predict",
        f"ckpt={ckpt}",
        f"input={series}",
        f"output={tmp_path}",
        "output_format=dicom-seg",
    )
    seg = hd.seg.segread(tmp_path / "series.seg.dcm")
    sources = source_slices(series)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == sources[0].SeriesInstanceUID
    frames = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[ds.SOPInstanceUID for ds in sources], combine_segments=True
    )
    nifti_label = np.asarray(nib.load(str(tmp_path / "from_dicom.nii.gz")).dataobj)
    np.testing.assert_array_equal(frames, nifti_label.transpose(2, 1, 0))  # multiclass: 1, 2
    # a rerun as NIfTI into the same folder replaces the SEG run's report, kdseg's own
    kdseg_here("predict", f"ckpt={ckpt}", f"input={series}", f"output={tmp_path}")
    assert (tmp_path / "series.nii.gz").is_file() and (tmp_path / "series.seg.dcm").is_file()


def test_dicom_folder_with_two_series_is_rejected(trained_enet: Path, tmp_path: Path) -> None:
    img, _, _ = generate_case(SMALL, 12)
    write_dicom_series(img, tmp_path / "mixed")
    write_dicom_series(img, tmp_path / "mixed2")
    for f in (tmp_path / "mixed2").iterdir():
        f.rename(tmp_path / "mixed" / f"b-{f.name}")
    result = kdseg_here(
        "predict",
        f"ckpt={trained_enet / 'checkpoints' / 'best.ckpt'}",
        f"input={tmp_path / 'mixed'}",
        f"output={tmp_path / 'out.nii.gz'}",
        check=False,
    )
    assert result.returncode == 2 and "series" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out.nii.gz").exists()


def test_lesion_report_matches_phantom_truth() -> None:
    _, label, truth = generate_case(SMALL, 3)
    spacing = label.header.get_zooms()[:3]
    report = lesion_report(np.asarray(label.dataobj), spacing)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    assert report["n_lesions"] == len(truth["tumors"]) == 3
    assert report["tumor_volume_ml"] == pytest.approx(
        sum(t["voxels"] for t in truth["tumors"]) * voxel_ml
    )
    organ_ml = (truth["organ_voxels"] + sum(t["voxels"] for t in truth["tumors"])) * voxel_ml
    assert report["organ_volume_ml"] == pytest.approx(organ_ml, rel=0.02)
    largest = max(t["diameter_mm"] for t in truth["tumors"])
    assert report["lesions"][0]["max_diameter_mm"] == pytest.approx(largest, rel=0.35)


def test_predict_writes_lesion_report_and_overlay(
    trained_enet: Path, phantom_lits: Path, tmp_path: Path
) -> None:
    out = tmp_path / "pred"
    kdseg_here(
        "predict",
        f"ckpt={trained_enet / 'checkpoints' / 'best.ckpt'}",
        f"input={phantom_lits / 'volume-0.nii.gz'}",
        f"output={out}",
        "overlay=true",
    )
    report = json.loads((out / "volume-0.lesions.json").read_text())
    assert {"organ_volume_ml", "tumor_volume_ml", "n_lesions"} <= set(report)
    assert "Lesions" in (out / "volume-0.lesions.txt").read_text()
    assert (out / "volume-0.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_paper_protocol_on_a_binary_tumor_model(
    phantom_lits: Path, trained_enet: Path, tmp_path: Path
) -> None:
    run = tmp_path / "tumor"
    kdseg_here(
        "train",
        *TINY_DATA,
        "logger=csv",
        f"data.root={phantom_lits}",
        "data.task=tumor",
        "data.sampling=target",
        "model=enet",
        "model.width=0.25",
        "trainer.max_epochs=1",
        f"hydra.run.dir={run}",
    )
    ckpt = run / "checkpoints" / "last.ckpt"
    kdseg_here(
        "eval",
        *TINY_DATA,
        f"data.root={phantom_lits}",
        "data.task=tumor",
        f"ckpt={ckpt}",
        "protocol=paper",
    )
    summary = json.loads((run / "eval-test-paper" / "summary.json").read_text())
    assert summary["protocol"] == "paper" and set(summary["summary"]) == {"tumor"}
    assert 0.0 <= summary["summary"]["tumor"]["dice"] <= 1.0
    multiclass = kdseg_here(
        "eval",
        *TINY_DATA,
        f"data.root={phantom_lits}",
        f"ckpt={trained_enet / 'checkpoints' / 'best.ckpt'}",
        "protocol=paper",
        check=False,
    )
    assert multiclass.returncode == 2 and "binary model" in multiclass.stderr


def test_a_series_named_dot_or_dotdot_names_its_output_after_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``kdseg-predict input=.`` inside a DICOM series folder (or ``input=..`` below it): the
    label is ``<output>/<folder name>.nii.gz`` and its reports go beside it, not a hidden
    ``.nii.gz`` with reports outside the output folder."""
    from kdseg.cli.predict import plan_outputs

    img, _, _ = generate_case(SMALL, 11)
    series = tmp_path / "series1"
    write_dicom_series(img, series)
    out = tmp_path / "out"
    monkeypatch.chdir(series)
    assert plan_outputs(Path("."), out) == [(Path("."), out / "series1.nii.gz")]
    (series / "sub").mkdir()
    monkeypatch.chdir(series / "sub")
    assert plan_outputs(Path(".."), out) == [(Path(".."), out / "series1.nii.gz")]


def test_predict_overlay_is_drawn_from_ras_arrays_whatever_the_model_axcodes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The overlay draws (X, Y, Z) arrays as RAS (anterior up, the patient's right on the
    left). A model whose canonical orientation is not RAS (``preprocess.axcodes=LPS``) used to
    hand the montage its own canonical arrays: both in-plane directions mirrored, and no
    sign of it in the picture."""
    from omegaconf import OmegaConf
    from test_preprocess import _volume

    import kdseg.eval.overlay as overlay
    from kdseg.cli.predict import _predict_one
    from kdseg.data.preprocess_config import PreprocessConfig
    from kdseg.data.tasks import Task
    from kdseg.eval.inference import Predictor

    def bright(x: np.ndarray) -> np.ndarray:  # organ where the scaled HU is high
        return np.concatenate([np.zeros_like(x), 4 * x, np.full_like(x, -9.0)], axis=1)

    seen: dict = {}
    monkeypatch.setattr(
        overlay,
        "save_overlay",
        lambda image, label, path, **kw: seen.update(i=image, l=label, **kw),
    )
    img, _ = _volume("PIL")  # stored neither RAS nor LPS, its axial axis second and flipped
    predictor = Predictor(bright, PreprocessConfig(axcodes="LPS"), Task("multiclass"))
    cfg = OmegaConf.create({"report": False, "overlay": True, "output_format": "nifti"})
    files = [tmp_path / "case.png", tmp_path / "case.nii.gz"]
    _predict_one(cfg, predictor, None, img, tmp_path / "case.nii.gz", files, {})
    written = nib.load(str(files[-1]))
    ras = nib.as_closest_canonical(img)
    np.testing.assert_array_equal(seen["i"], np.asanyarray(ras.dataobj))
    want = np.asanyarray(nib.as_closest_canonical(written).dataobj)
    assert want.any()
    np.testing.assert_array_equal(seen["l"], want)
    assert tuple(seen["spacing"]) == pytest.approx((0.8, 0.7, 2.5))
    # each panel is titled with the label's own index of its slice (the frame of the report's
    # centroid_voxel), not the RAS array's: here the input's second axis, reversed
    titles = seen["slice_titles"]
    assert len(titles) == 12 and titles[3] == "y = 8" and titles[0] == "y = 11"
    label = np.asanyarray(written.dataobj)
    for z, title in enumerate(titles):
        axis, index = "xyz".index(title[0]), int(title.split(" = ")[1])
        drawn = np.bincount(seen["l"][:, :, z].ravel(), minlength=3)
        np.testing.assert_array_equal(
            np.bincount(np.take(label, index, axis).ravel(), minlength=3), drawn
        )


def test_overlay_without_matplotlib_is_refused_before_the_model_loads(
    trained_enet: Path, phantom_lits: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lean runtime (requirements-runtime.txt) has no matplotlib: ``overlay=true`` there
    failed after the whole inference with an internal error; now one line, exit code 2,
    before any model loads, and nothing written."""
    import sys

    import kdseg.cli.predict as predict

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(predict, "build_predictor", no_model)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises
    out = tmp_path / "pred"
    args = [
        f"ckpt={trained_enet / 'checkpoints' / 'best.ckpt'}",
        f"input={phantom_lits / 'volume-0.nii.gz'}",
        f"output={out}",
    ]
    result = kdseg_here("predict", *args, "overlay=true", check=False)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].endswith("overlay=true needs matplotlib: pip install matplotlib")
    assert not out.exists()
