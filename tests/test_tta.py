"""Test-time mirroring (``tta=flip`` in kdseg-eval, kdseg-predict and kdseg-pseudolabel): the
class probabilities of the four in-plane mirrorings are averaged, each mirrored back; a network
that commutes with mirroring gives the same labels as without; the backend sees four times the
slices; a bad value is a one-line config error; the evaluation records the setting."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import TINY_DATA, kdseg_here
from test_preprocess import _volume

from kdseg.data.preprocess_config import PreprocessConfig
from kdseg.data.tasks import Task
from kdseg.errors import InputError
from kdseg.eval.inference import Predictor, check_tta, softmax

CFG = PreprocessConfig(body_crop=True, body_margin=1, in_plane_size=(16, 16))


def _pointwise(x: np.ndarray) -> np.ndarray:
    """Logits from each pixel alone (organ where bright, tumor where brightest): it commutes
    with mirroring."""
    logits = np.zeros((len(x), 3, *x.shape[2:]), np.float32)
    logits[:, 1] = 4 * x[:, 0]
    logits[:, 2] = 8 * (x[:, 0] - 0.5)
    return logits


def _ramped(x: np.ndarray) -> np.ndarray:
    """Pointwise logits plus a left-to-right and a top-to-bottom ramp: mirroring changes it."""
    logits = _pointwise(x)
    h, w = x.shape[2:]
    logits[:, 1] += np.linspace(-3, 3, w, dtype=np.float32)[None, None, :]
    logits[:, 2] += np.linspace(2, -2, h, dtype=np.float32)[None, :, None]
    return logits


def test_probabilities_average_the_four_mirrored_passes() -> None:
    calls: list[np.ndarray] = []

    def backend(x: np.ndarray) -> np.ndarray:
        calls.append(x.copy())
        return _ramped(x)

    batch = np.random.default_rng(0).random((3, 1, 16, 12), dtype=np.float32)
    got = Predictor(backend, CFG, Task("multiclass"), tta="flip").probabilities(batch)
    want = np.mean(
        [
            np.flip(softmax(_ramped(np.flip(batch, axes))), axes)
            for axes in ((), (-2,), (-1,), (-2, -1))
        ],
        axis=0,
    )
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    assert len(calls) == 4 and all(c.flags.c_contiguous for c in calls)  # ONNX wants C order
    np.testing.assert_array_equal(calls[3], batch[:, :, ::-1, ::-1])
    plain = Predictor(_ramped, CFG, Task("multiclass")).probabilities(batch)
    np.testing.assert_array_equal(plain, softmax(_ramped(batch)))
    assert not np.allclose(plain, got)  # the ramps do not commute with mirroring
    np.testing.assert_allclose(got.sum(1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("codes", ["RAS", "LPS"])
def test_a_network_that_commutes_with_mirroring_gives_the_same_labels(codes: str) -> None:
    """Same labels, same input grid; the backend saw four times the slices."""
    img, _ = _volume(codes, shape=(40, 36, 9))
    seen = {"none": 0, "flip": 0}
    labels = {}
    for mode in seen:

        def backend(x: np.ndarray, mode: str = mode) -> np.ndarray:
            seen[mode] += len(x)
            return _pointwise(x)

        labels[mode] = Predictor(backend, CFG, Task("multiclass"), tta=mode).predict(img)
    np.testing.assert_array_equal(labels["flip"], labels["none"])
    assert labels["flip"].shape == img.shape and labels["none"].any()
    assert seen["flip"] == 4 * seen["none"] > 0


def test_a_bad_setting_is_a_config_error() -> None:
    assert check_tta(None) == "none" and check_tta("flip") == "flip"
    with pytest.raises(InputError, match="tta must be one of none, flip, got 'rot90'"):
        check_tta("rot90")
    with pytest.raises(InputError, match="tta must be one of"):
        Predictor(_pointwise, CFG, Task("multiclass"), tta="mirror")


def test_kdseg_eval_and_predict_with_tta(
    trained_enet: Path, phantom_lits: Path, tmp_path: Path
) -> None:
    """The evaluation records ``tta``; predict keeps the input's geometry; a bad value exits 2
    with one line naming the option."""
    ckpt = trained_enet / "checkpoints" / "best.ckpt"
    kdseg_here("eval", *TINY_DATA, f"data.root={phantom_lits}", f"ckpt={ckpt}", "tta=flip",
               "threads=1")  # fmt: skip
    out = trained_enet / "eval-test-full-tta-flip"  # beside the plain evaluation, not over it
    assert json.loads((out / "summary.json").read_text())["tta"] == "flip"
    volume = sorted(phantom_lits.glob("volume-*.nii*"))[0]
    pred = tmp_path / "pred.nii.gz"
    kdseg_here("predict", f"ckpt={ckpt}", f"input={volume}", f"output={pred}", "tta=flip",
               "threads=1")  # fmt: skip
    src, got = nib.load(volume), nib.load(pred)
    assert got.shape == src.shape and np.allclose(got.affine, src.affine)
    bad = kdseg_here("predict", f"ckpt={ckpt}", f"input={volume}",
                     f"output={tmp_path / 'x.nii.gz'}", "tta=rot90", check=False)  # fmt: skip
    assert bad.returncode == 2, bad.stderr
    lines = [line for line in bad.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "tta must be one of none, flip" in lines[0], bad.stderr
    assert not (tmp_path / "x.nii.gz").exists()
    # pseudo-labels: mirroring makes the flip check pass every case, so the pair is refused
    pseudo = kdseg_here("pseudolabel", f"ckpt={ckpt}", f"input={volume.parent}",
                        f"output={tmp_path / 'ds'}", "tta=flip", check=False)  # fmt: skip
    assert pseudo.returncode == 2 and "set flip_check=false" in pseudo.stderr, pseudo.stderr
    assert not (tmp_path / "ds").exists()


def test_nan_logits_from_finite_weights_are_refused_naming_the_checkpoint(
    tmp_path: Path,
) -> None:
    """A damaged checkpoint can hold finite weights that give NaN logits (a negative
    BatchNorm variance: sqrt of a negative number). NaN loses every comparison, so such a
    network used to give an all-background label and exit 0; it is one InputError naming the
    checkpoint, on the torch backend as on ONNX."""
    from types import SimpleNamespace

    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 3, 1)
            self.bn = nn.BatchNorm2d(3)

        def forward(self, x: torch.Tensor) -> SimpleNamespace:
            return SimpleNamespace(logits=self.bn(self.conv(x)))

    net = Net().eval()
    with torch.no_grad():
        net.bn.running_var.fill_(-1.0)  # finite, and check_finite_weights lets it pass
    ckpt = tmp_path / "damaged.ckpt"
    bundle = SimpleNamespace(model=net, preprocess=CFG, task=Task("multiclass"), context=0)
    bundle.path = ckpt
    predictor = Predictor.from_bundle(bundle, backend="torch", threads=1)
    img, _ = _volume("RAS")
    with pytest.raises(InputError, match="damaged.ckpt: the network gives NaN or Inf logits"):
        predictor.predict(img)


def _conv_onnx(path: Path, weights: np.ndarray) -> Path:
    """A one-convolution ONNX file: (B, 1, h, w) slices to (B, 3, h, w) logits."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["logits"])],
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 1, "h", "w"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", 3, "h", "w"])],
        [numpy_helper.from_array(weights, "w")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_onnx_logits_are_checked_for_nan_once(tmp_path: Path, monkeypatch) -> None:
    """The ONNX backend scanned every batch's logits for NaN, and the predictor scanned them
    again: the predictor's check alone runs now, and refuses NaN logits naming the artefact;
    the export's check runner, with no predictor around it, keeps its own."""
    from kdseg.deploy.onnx_export import onnx_runner
    from kdseg.eval.inference import onnx_backend

    weights = np.array([1.0, 2.0, -1.0], np.float32).reshape(3, 1, 1, 1)
    good = onnx_backend(_conv_onnx(tmp_path / "good.onnx", weights), threads=1)
    weights[1] = np.nan
    path = _conv_onnx(tmp_path / "nan.onnx", weights)
    calls: list[int] = []

    def counted(x: np.ndarray) -> np.ndarray:
        calls.append(len(x))
        return good(x)

    scans: list[tuple[int, ...]] = []
    isfinite = np.isfinite

    def spy(x, *args, **kwargs):
        if np.ndim(x) == 4:
            scans.append(np.shape(x))
        return isfinite(x, *args, **kwargs)

    monkeypatch.setattr(np, "isfinite", spy)
    img, _ = _volume("RAS")
    Predictor(counted, CFG, Task("multiclass"), batch_size=4, source="good.onnx").predict(img)
    assert calls and len(scans) == len(calls), (calls, scans)

    predictor = Predictor(onnx_backend(path, threads=1), CFG, Task("multiclass"), source=path)
    with pytest.raises(InputError, match="nan.onnx: the network gives NaN or Inf logits"):
        predictor.predict(img)
    batch = np.zeros((2, 1, 8, 8), np.float32)
    with pytest.raises(InputError, match="nan.onnx: the network gives NaN or Inf logits"):
        onnx_runner(path, threads=1)(batch)
