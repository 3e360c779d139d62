"""The HU window relative to the organ's own level (``preprocess.window_level=organ``)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from test_cascade import _cascade, fine_backend, organ_backend
from test_spacing_roi import stored_volume

from kdseg.data.boxes import organ_level
from kdseg.data.preprocess import Preprocessor, _holds
from kdseg.data.preprocess_config import PreprocessConfig
from kdseg.data.schema import check_data_info
from kdseg.data.tasks import Task
from kdseg.errors import InputError
from kdseg.eval.inference import CascadePredictor, Predictor

RELATIVE = PreprocessConfig(roi="organ", window_level="organ", window=(-100.0, 100.0))


def test_window_level_config_rules_and_digest() -> None:
    with pytest.raises(InputError, match="window_level must be null or 'organ'"):
        PreprocessConfig(roi="organ", window_level="liver")
    with pytest.raises(InputError, match="needs preprocess.roi=organ"):
        PreprocessConfig(window_level="organ")
    assert PreprocessConfig.from_dict(RELATIVE.to_dict()) == RELATIVE
    assert PreprocessConfig.from_dict({"roi": "organ", "window_level": None}).window_level is None
    # digests from before window_level existed (main at 92d0e83): the caches stay valid
    assert PreprocessConfig().digest() == "3564c15bb9"
    assert PreprocessConfig(roi="organ").digest() == "968811dee3"
    assert RELATIVE.digest() != PreprocessConfig(roi="organ", window=(-100.0, 100.0)).digest()
    data = {"task": "multiclass", "context": 0, "in_channels": 1, "num_classes": 3}
    assert check_data_info("m.onnx", {**data, "preprocess": RELATIVE.to_dict()}, "ONNX metadata")
    bad = {**data, "preprocess": {"window_level": "organ"}}
    with pytest.raises(InputError, match=r"m.onnx: ONNX metadata: unusable .*roi=organ"):
        check_data_info("m.onnx", bad, "ONNX metadata")


@pytest.mark.parametrize("dtype", [np.int16, np.float32])
@pytest.mark.parametrize("level", [153.4, -20.6])
def test_scale_with_a_level_is_the_absolute_window_shifted(dtype, level: float) -> None:
    """The level, rounded to a whole HU, shifts the window; integer CT keeps the fast integer
    clip (whole window ends) and the values are bit-equal to the absolute window's."""
    hu = np.random.default_rng(3).integers(-1024, 1500, (2, 9, 11)).astype(dtype)
    shift = round(level)
    pre = Preprocessor(RELATIVE)
    assert pre.hu_window(level) == (-100.0 + shift, 100.0 + shift)
    assert _holds(np.dtype(np.int16), *pre.hu_window(level))
    absolute = Preprocessor(PreprocessConfig(window=(-100.0 + shift, 100.0 + shift)))
    np.testing.assert_array_equal(pre.scale(hu, level), absolute.scale(hu))
    lo, hi = -100.0 + shift, 100.0 + shift
    want = (np.clip(hu, lo, hi, dtype=np.float32) - lo) * (2.0 / (hi - lo)) - 1.0
    np.testing.assert_array_equal(pre.scale(hu, level), want)
    with pytest.raises(InputError, match="relative to the organ's median HU"):
        pre.scale(hu)
    with pytest.raises(ValueError, match="absolute HU window"):
        absolute.scale(hu, level)


def test_organ_level_is_the_median_inside_the_box() -> None:
    hu = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    mask = np.zeros(hu.shape, bool)
    mask[1:3, 2:4, 1:5] = True
    assert organ_level(hu, mask) == float(np.round(np.median(hu[mask])))
    assert organ_level(hu, mask, (1, 3, 2, 4, 1, 5)) == organ_level(hu, mask)
    assert organ_level(hu, mask, (1, 2, 2, 3, 1, 3)) == 44.0  # voxels 43, 44 -> 43.5 -> 44
    assert organ_level(hu.astype(np.float32) + 0.3, mask, (1, 2, 2, 3, 1, 2)) == 43.0
    assert organ_level(hu, np.zeros_like(mask)) is None


def test_prepare_stores_the_level_and_a_bright_liver_keeps_its_tumor(tmp_path: Path) -> None:
    """A phantom liver at 178 HU: under [-60, 140] liver and tumor are one flat value; the
    window around the organ's level (stored in meta.json) keeps the tumor's contrast."""
    from kdseg.data.cache import case_folder
    from kdseg.data.phantom import PhantomConfig, generate_case
    from kdseg.data.prepare import prepare_case, window_warning
    from kdseg.data.sources import Case

    phantom = PhantomConfig(
        size_range=(48, 48), slices_range=(12, 12), max_tumors=2, p_no_tumor=0.0,
        tumor_mm_range=(20.0, 30.0),
    )  # fmt: skip
    image, label, truth = generate_case(phantom, 10)
    assert truth["organ_hu"] > 170 and truth["tumors"][0]["contrast_hu"] < -15
    nib.save(image, tmp_path / "volume-0.nii.gz")
    nib.save(label, tmp_path / "segmentation-0.nii.gz")
    case = Case("c0", tmp_path / "volume-0.nii.gz", tmp_path / "segmentation-0.nii.gz")
    contrast, metas = {}, {}
    for name, config in (("organ", RELATIVE), ("absolute", PreprocessConfig(roi="organ"))):
        prepare_case(case, config, tmp_path / name)
        folder = case_folder(tmp_path / name, "c0")
        metas[name] = json.loads((folder / "meta.json").read_text())
        x = np.load(folder / "image.npy").astype(np.float32)
        y = np.load(folder / "label.npy")
        contrast[name] = float(np.median(x[y == 2]) - np.median(x[y == 1]))
        if name == "organ":  # the window is centred on the stored level
            assert abs(np.median(x[y > 0])) < 0.02
    hu = np.asanyarray(image.dataobj)
    organ = np.asanyarray(label.dataobj) > 0
    assert metas["organ"]["organ_level_hu"] == np.round(np.median(hu[organ])) > 140
    assert "organ_level_hu" not in metas["absolute"]
    assert metas["absolute"]["organ_outside_window"][1] > 0.9  # all flattened at 140 HU
    assert metas["organ"]["organ_outside_window"] == [0.0, 0.0]
    assert contrast["absolute"] == 0.0 and contrast["organ"] < -0.1
    assert window_warning(tmp_path / "organ", ["c0"], RELATIVE.window, relative=True) is None
    line = window_warning(tmp_path / "absolute", ["c0"], (-100.0, 100.0), relative=True)
    assert line and "window [-100, 100] around the organ level" in line
    assert "at or above the organ level +100 HU" in line


def test_cascade_and_stage2_eval_pass_the_organ_level(tmp_path: Path) -> None:
    """Stage 1's organ gives the level (median HU under its largest component, 180 HU here):
    stage 2's window [L - 180, L + 20] = [0, 200] maps body, tumor and organ to the values
    fine_backend labels exactly (stored_volume + 60 HU: body 100, tumor 140, organ 180).
    kdseg-eval's stage-2-alone path takes the level from the reference organ."""
    from kdseg.data.sources import Case
    from kdseg.eval.evaluate import evaluate_cases

    dim, labels = stored_volume("LPS")
    img = nib.Nifti1Image(np.asanyarray(dim.dataobj) + np.int16(60), dim.affine)
    coarse = PreprocessConfig(window=(0.0, 200.0), spacing_mm=(1.6, 1.4))
    fine = PreprocessConfig(
        roi="organ", window_level="organ", window=(-180.0, 20.0), roi_margin_mm=4.0
    )
    stage2 = Predictor(fine_backend, fine, Task("multiclass"), batch_size=4)
    cascade = CascadePredictor(Predictor(organ_backend, coarse, Task("organ")), stage2)
    np.testing.assert_array_equal(cascade.predict(img), labels)
    assert cascade.last["organ_level_hu"] == 180.0
    plain = _cascade()  # an absolute stage-2 window: no level computed, none reported
    np.testing.assert_array_equal(plain.predict(dim), labels)
    assert "organ_level_hu" not in plain.last
    nib.save(img, tmp_path / "volume-0.nii.gz")
    nib.save(nib.Nifti1Image(labels, img.affine), tmp_path / "segmentation-0.nii.gz")
    case = Case("volume-0", tmp_path / "volume-0.nii.gz", tmp_path / "segmentation-0.nii.gz")
    row = evaluate_cases(stage2, [case], progress=False)[0]
    assert row["organ"]["dice"] == pytest.approx(1.0) and row["tumor"]["dice"] == pytest.approx(1.0)
    with pytest.raises(InputError, match="stage 2 of a cascade"):
        stage2.predict(img, roi=(10, 21, 8, 23, 3, 9))  # a box but no level
