"""CPU deployment: ONNX / int8 / pruned / AOTI artefacts, the artefact-only CLIs, the benchmark.

Everything runs on a tiny phantom dataset and a tiny network registered here (a few layers,
with a residual addition and a concatenation, so pruning has coupled channels to respect):
the dynamo ONNX exporter costs seconds per graph node on two cores, so the zoo's networks are
left to ``kdseg-bench``. The AOTInductor test compiles C++ (about 90 s on two busy cores) and
runs only with ``KDSEG_TEST_AOTI=1``.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import error_lines
from torch import nn

from kdseg.data.dataset import resolve_data
from kdseg.data.io import load_volume
from kdseg.data.phantom import PhantomConfig, write_dataset
from kdseg.deploy.artifact import load_artifact, read_metadata, resolve_bundle
from kdseg.deploy.bench import check_targets
from kdseg.deploy.export import export_checkpoint
from kdseg.deploy.export_options import ExportOptions, Int8Options, PruneOptions
from kdseg.deploy.onnx_export import compare
from kdseg.deploy.prune import prune_channels
from kdseg.errors import InputError
from kdseg.eval.checkpoint import load_bundle
from kdseg.eval.inference import Predictor
from kdseg.models import SegmentationModel, SegOutput, TapInfo, register_model
from kdseg.models.cost import count_params

PREPROCESS = {
    "window": [-60, 140],
    "axcodes": "RAS",
    "body_crop": True,
    "body_margin": 2,
    "in_plane_size": [32, 32],
    "crop_size": None,
    "store_dtype": "float16",
}


@register_model("tiny_deploy_net")
class TinyNet(SegmentationModel):
    """Stride-8 encoder (residual block, concatenating decoder), 1x1 classifier, bilinear up."""

    def __init__(self, in_channels: int = 1, num_classes: int = 3, width: float = 1.0) -> None:
        super().__init__()
        c = max(int(8 * width), 4)

        def block(i: int, o: int, stride: int = 1) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(i, o, 3, stride, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU()
            )

        self.stem, self.down1, self.down2 = (
            block(in_channels, c, 2),
            block(c, 2 * c, 2),
            block(2 * c, 2 * c, 2),
        )
        self.res = block(2 * c, 2 * c)
        self.fuse = block(4 * c, 2 * c)
        self.classifier = nn.Conv2d(2 * c, num_classes, 1)
        self.tap_info = {"low": TapInfo(c, 2), "high": TapInfo(2 * c, 8)}

    def forward(self, x: torch.Tensor) -> SegOutput:
        low = self.stem(x)
        mid = self.down1(low)
        high = self.down2(mid)
        high = high + self.res(high)
        up = F.interpolate(high, size=mid.shape[-2:], mode="bilinear", align_corners=False)
        logits = self.classifier(self.fuse(torch.cat([up, mid], dim=1)))
        logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return SegOutput(logits, {"low": low, "high": high})


def _checkpoint(run: Path, model: dict, data_cfg: dict, setup) -> Path:
    """A kdseg checkpoint (``net.*`` weights + model/data hyperparameters) and its run config."""
    torch.manual_seed(0)
    from kdseg.models import build_from_config

    net = build_from_config(model)
    ckpt = run / "checkpoints" / "best.ckpt"
    ckpt.parent.mkdir(parents=True)
    torch.save(
        {
            "state_dict": {f"net.{k}": v for k, v in net.state_dict().items()},
            "hyper_parameters": {"model": model, "data": setup.info()},
        },
        ckpt,
    )
    (run / "config.yaml").write_text(yaml.safe_dump({"data": data_cfg, "seed": 1}))
    return ckpt


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """Backends set torch's global thread count; give the next test module the original back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Phantom LiTS folder (5 small cases), its prepared cache, and two tiny checkpoints."""
    root = tmp_path_factory.mktemp("deploy")
    data = root / "lits"
    write_dataset(
        data,
        PhantomConfig(dataset="lits", size_range=(40, 48), slices_range=(8, 10)),
        n_cases=5,
        seed=3,
        progress=False,
    )
    data_cfg = {
        "name": "lits",
        "layout": "lits",
        "root": str(data),
        "task": "multiclass",
        "context": 0,
        "in_channels": 1,
        "num_classes": 3,
        "organ": "liver",
        "preprocess": PREPROCESS,
        "split_fractions": [0.6, 0.2, 0.2],
        "batch_size": 4,
        "samples_per_epoch": 8,
    }
    setup = resolve_data(data_cfg)
    setup.prepare(progress=False)
    tiny = _checkpoint(
        root / "tiny",
        {"name": "tiny_deploy_net", "in_channels": 1, "num_classes": 3, "width": 1.0},
        data_cfg,
        setup,
    )
    enet = _checkpoint(
        root / "enet",
        {"name": "enet", "in_channels": 1, "num_classes": 3, "width": 0.25},
        data_cfg,
        setup,
    )
    return {"root": root, "data": data, "setup": setup, "tiny": tiny, "enet": enet}


@pytest.fixture(scope="module")
def onnx_fp32(workspace: dict) -> Path:
    result = export_checkpoint(ExportOptions(ckpt=str(workspace["tiny"]), check_slices=8))
    return result.artifact


def test_a_channels_last_checkpoint_exports_and_passes_the_check(workspace: dict) -> None:
    """``model.channels_last`` is how a network runs in torch, not part of it: the export
    builds it contiguous, and the artefact passes the same check as the plain one's."""
    ckpt = torch.load(workspace["tiny"], weights_only=True)
    ckpt["hyper_parameters"]["model"]["channels_last"] = True
    twin = workspace["root"] / "tiny-cl" / "checkpoints" / "best.ckpt"
    twin.parent.mkdir(parents=True)
    torch.save(ckpt, twin)
    shutil.copy(workspace["tiny"].parents[1] / "config.yaml", twin.parents[1] / "config.yaml")
    from kdseg.deploy.export import _start
    from kdseg.models.memory_format import is_channels_last

    assert is_channels_last(load_bundle(twin).model)
    job = _start(ExportOptions(ckpt=str(twin), check_slices=8))
    assert not is_channels_last(job.model) and not is_channels_last(job.bundle.model)
    result = export_checkpoint(ExportOptions(ckpt=str(twin), check_slices=8))
    meta = read_metadata(result.artifact)
    info = meta["export"]
    assert info["check"]["argmax_agreement"] >= 0.999 and info["check"]["max_abs_diff"] < 1e-3
    assert "channels_last" not in meta["model"]  # how torch ran it is not part of the graph


def _predict_and_check(
    bundle, backend: str, artifact, image: nib.Nifti1Image, tta: str = "none"
) -> np.ndarray:
    predictor = Predictor.from_bundle(
        bundle, backend=backend, artifact=artifact, threads=1, batch_size=4, tta=tta
    )
    label = predictor.predict(image)
    assert label.shape == image.shape and label.dtype == np.uint8
    return label


def test_onnx_round_trip_matches_pytorch(workspace: dict, onnx_fp32: Path) -> None:
    assert onnx_fp32 == workspace["root"] / "tiny" / "export" / "tiny_deploy_net.onnx"
    meta = read_metadata(onnx_fp32)
    info = meta["export"]
    assert info["check"]["argmax_agreement"] >= 0.999 and info["check"]["max_abs_diff"] < 1e-3
    assert info["input_dims"][0] == "batch" and all(
        isinstance(d, str) for d in info["input_dims"][2:]
    )
    assert (
        meta["data"]["preprocess"]["in_plane_size"] == [32, 32]
        and meta["model"]["name"] == "tiny_deploy_net"
    )
    # artefact alone (no checkpoint) vs the checkpoint's network: same labels on a whole volume
    case = workspace["setup"].cases[workspace["setup"].split["test"][0]]
    image = load_volume(case.image)
    bundle, backend, artifact = resolve_bundle(None, str(onnx_fp32), "torch")
    assert backend == "onnx" and bundle.model is None and bundle.task.name == "multiclass"
    described = resolve_bundle(str(workspace["tiny"]), str(onnx_fp32), "onnx")[0]  # its own ckpt
    assert described.data["preprocess"] == bundle.data["preprocess"]
    from_onnx = _predict_and_check(bundle, backend, artifact, image)
    from_torch = _predict_and_check(load_bundle(workspace["tiny"]), "torch", None, image)
    assert (from_onnx == from_torch).mean() > 0.999
    # dynamic batch and spatial size: other shapes than the export example run
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_fp32), providers=["CPUExecutionProvider"])
    assert session.run(None, {"image": np.zeros((3, 1, 40, 24), np.float32)})[0].shape == (
        3,
        3,
        40,
        24,
    )


def test_int8_artefact_predicts_input_geometry(workspace: dict) -> None:
    out = workspace["root"] / "int8" / "tiny.int8.onnx"

    def dumps() -> set[Path]:  # what ORT's failed symbolic shape inference writes to the cwd
        return {*Path.cwd().glob("*.data"), *Path.cwd().glob("sym_shape_infer_temp.onnx")}

    dumps_before = dumps()
    result = export_checkpoint(
        ExportOptions(
            ckpt=str(workspace["tiny"]),
            output=str(out),
            quantize="int8",
            check_slices=4,
            threads=1,
            int8=Int8Options(calibration_slices=8, time_slices=2, repeats=1, min_speedup=100.0),
        )
    )
    assert result.artifact == out and (out.parent / "tiny.fp32.onnx").is_file()
    info = read_metadata(out)["export"]
    assert (
        info["precision"] == "int8" and info["int8"]["slower_than_fp32"]
    )  # min_speedup=100 forces the warning
    assert (
        len(info["int8"]["kept_fp32"]) == 2 and info["check_vs_onnx_fp32"]["argmax_agreement"] > 0.8
    )
    assert any("not faster" in w for w in result.warnings)
    assert dumps() == dumps_before
    # int8 is checked on slices it was not calibrated on (the metadata says where they came from)
    from kdseg.deploy.samples import sample_positions

    assert info["int8"]["check_slices_from"] == {
        "splits": ["val", "train"],
        "disjoint_from_calibration": True,
        "slices": 4,
    }
    setup = workspace["setup"]
    calibrated = set(sample_positions(setup, ("train",), 8, seed=1))
    checked = sample_positions(setup, ("val", "train"), 4, seed=0, exclude=calibrated)
    assert len(checked) == 4 and not set(checked) & calibrated
    train = {(c, z) for c in setup.split["train"] for z in range(100)}
    assert sample_positions(setup, ("train",), 4, exclude=train) == []
    case = workspace["setup"].cases[workspace["setup"].split["test"][0]]
    image = load_volume(case.image)
    _predict_and_check(load_artifact(out), "onnx", str(out), image)


def test_int8_that_disagrees_with_fp32_is_refused_unless_forced(
    workspace: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a foreground-Dice minimum no int8 file can meet, the export refuses int8 (no file,
    the reason and the fp32 twin named); ``force`` writes it and records that it was forced."""
    import kdseg.deploy.export as export

    monkeypatch.setattr(export, "MIN_FOREGROUND_DICE_INT8", 1.01)
    out = workspace["root"] / "refused" / "tiny.int8.onnx"
    twin = out.parent / "tiny.fp32.onnx"
    quick = Int8Options(calibration_slices=8, time_slices=2, repeats=1)
    opts = ExportOptions(
        ckpt=str(workspace["tiny"]), output=str(out), quantize="int8", check_slices=4, threads=1
    )
    # somebody's file where the fp32 twin goes: refused before any work, unless overwrite=true
    out.parent.mkdir(parents=True)
    twin.write_bytes(b"somebody's model")
    with pytest.raises(InputError, match="tiny.fp32.onnx: exists and is not a kdseg export"):
        export_checkpoint(ExportOptions(**{**opts.__dict__, "int8": quick}))
    assert twin.read_bytes() == b"somebody's model" and not out.exists()
    with pytest.raises(InputError, match="int8 refused.*foreground Dice.*int8.force=true"):
        export_checkpoint(ExportOptions(**{**opts.__dict__, "int8": quick, "overwrite": True}))
    assert not out.exists() and read_metadata(twin)["export"]["precision"] == "fp32"
    forced = Int8Options(**{**quick.__dict__, "force": True})
    result = export_checkpoint(ExportOptions(**{**opts.__dict__, "int8": forced}))
    info = read_metadata(out)["export"]["int8"]
    assert info["forced"] and info["op_types"] == ["Conv", "ConvTranspose"]
    assert info["fp32_artifact"] == twin.name and result.extra_files == [twin]
    assert any("int8 forced" in w for w in result.warnings)
    # a refused or interrupted re-export keeps the earlier int8 file, and leaves no temporary
    good = out.read_bytes()
    with pytest.raises(InputError, match="int8 refused"):
        export_checkpoint(ExportOptions(**{**opts.__dict__, "int8": quick}))
    assert out.read_bytes() == good and not list(out.parent.glob(".*"))

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(export, "time_alternating", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_checkpoint(ExportOptions(**{**opts.__dict__, "int8": forced}))
    assert out.read_bytes() == good and not list(out.parent.glob(".*"))
    assert read_metadata(out)["export"]["precision"] == "int8"


def test_pruned_export_reports_real_parameter_count(workspace: dict) -> None:
    bundle = load_bundle(workspace["tiny"])
    example = torch.zeros(1, 1, 32, 32)
    for method in ("magnitude", "group_norm"):
        pruned, report = prune_channels(bundle.model, 0.5, example, num_classes=3, method=method)
        assert count_params(pruned) == report.params_after < report.params_before
        assert report.classifier == ["classifier"] and pruned.classifier.out_channels == 3
        with torch.no_grad():
            assert pruned(torch.zeros(2, 1, 40, 24)).logits.shape == (2, 3, 40, 24)
    assert count_params(bundle.model) == report.params_before  # the original is left intact
    out = workspace["root"] / "pruned" / "tiny-pruned.onnx"
    summary = Path(workspace["tiny"]).parent.parent / "summary.json"
    summary.write_text(json.dumps({"best_score": 0.99}))  # the original run's val Dice
    finetune = {
        "trainer": {
            "max_epochs": 1,
            "limit_train_batches": 2,
            "limit_val_batches": 1,
            "enable_progress_bar": False,
            "enable_model_summary": False,
        }
    }
    result = export_checkpoint(
        ExportOptions(
            ckpt=str(workspace["tiny"]),
            output=str(out),
            prune=0.5,
            check_slices=4,
            pruning=PruneOptions(finetune=finetune),
        )
    )
    summary.unlink()
    info = result.metadata["export"]
    # the export succeeded: its fine-tune run stays, named in the metadata, beside the output
    run = Path(info["pruning"]["finetune_run"])
    assert run.parent == out.parent and (run / "summary.json").is_file()
    assert info["pruning"]["params_after"] == report.params_after == info["params"]
    assert info["pruning"]["original_best_val_dice"] == 0.99
    recovered = info["pruning"]["finetune_best_val_dice"]
    assert recovered < 0.97 and any("pruning cost" in w for w in result.warnings)
    assert info["check"]["argmax_agreement"] >= 0.999
    case = workspace["setup"].cases[workspace["setup"].split["test"][0]]
    image = load_volume(case.image)
    label = _predict_and_check(load_artifact(out), "onnx", str(out), image)
    saved = nib.load(str(_save(label, image, workspace["root"] / "pruned" / "label.nii.gz")))
    assert saved.shape == image.shape and np.allclose(saved.affine, image.affine)


@pytest.mark.parametrize("when", ["after the fine-tune", "during the fine-tune"])
@pytest.mark.parametrize("how", ["SIGTERM", "a failed check"])
def test_a_stopped_pruned_export_leaves_no_finetune_run_and_no_new_folder(
    workspace: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, when: str, how: str
) -> None:
    """A pruned export that fails or is stopped once its fine-tune has started leaves neither
    the fine-tune run (``prune-finetune-*``: checkpoints, csv, summary.json) nor the empty
    folders it made for its output; an output folder that already held a file stays with it.
    SIGTERM is what the command's handler raises (``Terminated``, a ``BaseException``): the
    same exit path as the signal, at the same point of the export."""
    import kdseg.deploy.export as export
    import kdseg.lit.train as train
    from kdseg.cli.boundary import Terminated

    stop = Terminated(15) if how == "SIGTERM" else InputError("check.onnx", "disagrees")
    if when == "after the fine-tune":  # a real fine-tune, then the ONNX export step fails

        def fail(*args: object, **kwargs: object) -> None:
            raise stop

        monkeypatch.setattr(export, "export_onnx", fail)
    else:  # stopped while training: the run folder already holds a checkpoint

        def fail(module: object, data: object, cfg: object, run_dir: str) -> None:
            (Path(run_dir) / "checkpoints").mkdir()
            (Path(run_dir) / "checkpoints" / "last.ckpt").write_bytes(b"partial")
            raise stop

        monkeypatch.setattr(train, "fit", fail)
    finetune = {"trainer": {"max_epochs": 1, "limit_train_batches": 1, "limit_val_batches": 1}}
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    for out in (tmp_path / "new" / "deeper" / "tiny-pruned.onnx", kept / "tiny-pruned.onnx"):
        opts = ExportOptions(
            ckpt=str(workspace["tiny"]),
            output=str(out),
            prune=0.5,
            check_slices=2,
            pruning=PruneOptions(finetune=finetune),
        )
        with pytest.raises(type(stop)):
            export_checkpoint(opts)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["kept", "notes.txt"]


def _save(label: np.ndarray, image: nib.Nifti1Image, path: Path) -> Path:
    from kdseg.data.io import save_label

    return save_label(label, image, path)


@pytest.mark.slow  # compiles C++ (about 90 s on 2 cores): `make test-slow`
def test_aoti_package_loads_and_predicts(workspace: dict) -> None:
    result = export_checkpoint(
        ExportOptions(ckpt=str(workspace["tiny"]), format="aoti", check_slices=4)
    )
    assert result.artifact.suffix == ".pt2" and Path(f"{result.artifact}.json").is_file()
    assert result.metadata["export"]["check"]["argmax_agreement"] >= 0.999
    case = workspace["setup"].cases[workspace["setup"].split["test"][0]]
    image = load_volume(case.image)
    bundle, backend, artifact = resolve_bundle(None, str(result.artifact), "torch")
    assert backend == "aoti"
    _predict_and_check(bundle, backend, artifact, image)


def _cli(
    module: str, args: list[str], capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> tuple:
    """Run a kdseg Hydra command in-process; return (exit code, stdout, stderr)."""
    import importlib

    monkeypatch.setattr(sys, "argv", [module, *args])
    code = 0
    try:
        importlib.import_module(f"kdseg.cli.{module}").main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_predict_and_eval_with_artefact_only(
    workspace: dict, onnx_fp32: Path, capsys, monkeypatch
) -> None:
    case = workspace["setup"].cases[workspace["setup"].split["test"][0]]
    target = workspace["root"] / "predict" / "label.nii.gz"
    code, out, err = _cli(
        "predict",
        ["ckpt=null", f"artifact={onnx_fp32}", f"input={case.image}", f"output={target}"],
        capsys,
        monkeypatch,
    )
    assert code == 0, err
    saved, image = nib.load(str(target)), nib.load(str(case.image))
    assert saved.shape == image.shape and np.allclose(saved.affine, image.affine)
    results = workspace["root"] / "eval"
    args = [f"artifact={onnx_fp32}", f"data.root={workspace['data']}", f"output_dir={results}"]
    code, out, err = _cli("evaluate", ["ckpt=null", *args], capsys, monkeypatch)
    assert code == 0, err
    summary = json.loads((results / "summary.json").read_text())
    assert summary["backend"] == "onnx" and summary["checkpoint"] is None
    assert set(summary["summary"]) == {"organ", "tumor"}


def test_eval_of_an_artefact_beside_its_checkpoint_keeps_the_checkpoints_results(
    workspace: dict, onnx_fp32: Path, capsys, monkeypatch
) -> None:
    """``kdseg-eval ckpt=<run>/checkpoints/best.ckpt artifact=<onnx>`` wrote to the run's
    ``eval-test-full/``, the checkpoint's own evaluation, and replaced it without a word: an
    artefact's evaluation now goes to ``eval-<artefact stem>-test-full/`` beside it."""
    run = workspace["tiny"].parents[1]
    data = f"data.root={workspace['data']}"
    code, _, err = _cli("evaluate", [f"ckpt={workspace['tiny']}", data], capsys, monkeypatch)
    assert code == 0, err
    plain = run / "eval-test-full" / "summary.json"
    before = plain.read_bytes()
    args = [f"ckpt={workspace['tiny']}", f"artifact={onnx_fp32}", data]
    code, out, err = _cli("evaluate", args, capsys, monkeypatch)
    assert code == 0, err
    mine = run / f"eval-{onnx_fp32.stem}-test-full" / "summary.json"
    assert json.loads(mine.read_text())["backend"] == "onnx" and str(mine.parent) in out
    assert plain.read_bytes() == before  # the checkpoint's evaluation is untouched
    assert json.loads(before)["backend"] == "torch"


NO_TORCH = """
import sys
BLOCKED = ("torch", "lightning", "pytorch_lightning", "monai", "matplotlib", "torchvision")
sys.modules.update(dict.fromkeys(BLOCKED))  # None in sys.modules: `import torch` raises
from kdseg.cli.predict import main
sys.argv = ["kdseg-predict", *sys.argv[1:]]
try:
    main()
finally:
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED and sys.modules[m])
    print("LOADED", loaded, "PYDICOM", "pydicom" in sys.modules, "ONNX", "onnx" in sys.modules,
          "NDIMAGE", "scipy.ndimage" in sys.modules)
"""


def _no_torch(*args: str):
    """``kdseg-predict args`` in a fresh process where torch and friends cannot be imported;
    it must succeed. Its stdout ends with what it loaded."""
    import os
    import subprocess

    done = subprocess.run(
        [sys.executable, "-c", NO_TORCH, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.parametrize("tta", ["none", "flip"])
def test_onnx_predict_in_a_fresh_process_never_imports_torch(
    workspace: dict, onnx_fp32: Path, tmp_path: Path, tta: str
) -> None:
    """The deploy path runs with torch, lightning, monai and matplotlib unimportable, and
    predicts exactly what the same artefact predicts in this (torch-importing) process, with
    and without test-time mirroring. A NIfTI prediction does not import pydicom either (nibabel
    would: kdseg.data hides it), nor the ``onnx`` package (ONNX Runtime's session gives the
    metadata)."""

    case = workspace["setup"].cases[workspace["setup"].split["test"][0]]
    target = tmp_path / "label.nii.gz"
    args = ["ckpt=null", f"artifact={onnx_fp32}", "backend=onnx", "verbose=true", f"tta={tta}"]
    done = _no_torch(*args, f"input={case.image}", f"output={target}")
    # NIfTI in and out: no pydicom; no scipy.ndimage either (a seventh of a second)
    assert "LOADED [] PYDICOM False ONNX False NDIMAGE False" in done.stdout
    assert "time (s): load model" in done.stdout and "network" in done.stdout
    image = load_volume(case.image)
    bundle, backend, artifact = resolve_bundle(None, str(onnx_fp32), "onnx")
    expected = _predict_and_check(bundle, backend, artifact, image, tta=tta)
    np.testing.assert_array_equal(np.asanyarray(nib.load(str(target)).dataobj), expected)
    report = json.loads((tmp_path / "label.lesions.json").read_text())
    assert report.get("tta", "none") == tta


def test_onnx_predict_of_a_dicom_series_never_imports_torch(
    workspace: dict, onnx_fp32: Path, tmp_path: Path
) -> None:
    """A DICOM series is read by pydicom alone on the deploy path (no MONAI, so no torch),
    and predicts what the same artefact predicts for it in this process."""

    from kdseg.data.dicom_write import write_dicom_series

    case = workspace["setup"].cases[workspace["setup"].split["test"][0]]
    series = tmp_path / "series"
    write_dicom_series(load_volume(case.image), series, rng=np.random.default_rng(3))
    target = tmp_path / "label.nii.gz"
    args = ["ckpt=null", f"artifact={onnx_fp32}", "backend=onnx", "report=false"]
    done = _no_torch(*args, f"input={series}", f"output={target}")
    assert "LOADED [] PYDICOM True ONNX False" in done.stdout
    image = load_volume(series)
    bundle, backend, artifact = resolve_bundle(None, str(onnx_fp32), "onnx")
    expected = _predict_and_check(bundle, backend, artifact, image)
    saved = nib.load(str(target))
    np.testing.assert_array_equal(np.asanyarray(saved.dataobj), expected)
    np.testing.assert_array_equal(saved.affine, image.affine)


def _on_two_terminals(*args: str) -> tuple[str, str]:
    """``kdseg-predict args`` as :func:`_no_torch` runs it, stdout and stderr each on a
    terminal of its own (so that the bar is drawn); their texts, line ends as newlines."""
    import os
    import select
    import subprocess

    ends = [os.openpty(), os.openpty()]  # (reader, terminal) for stdout, for stderr
    child = subprocess.Popen(
        [sys.executable, "-c", NO_TORCH, *args],
        stdin=subprocess.DEVNULL,
        stdout=ends[0][1],
        stderr=ends[1][1],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    texts = {reader: b"" for reader, _ in ends}
    try:
        for _, terminal in ends:
            os.close(terminal)
        open_readers = set(texts)
        while open_readers:
            ready, _, _ = select.select(sorted(open_readers), [], [], 120)
            assert ready, "kdseg-predict printed nothing for 120 s"
            for reader in ready:
                try:
                    chunk = os.read(reader, 65536)
                except OSError:  # EIO: the child closed the terminal
                    chunk = b""
                texts[reader] += chunk
                if not chunk:
                    open_readers.discard(reader)
        assert child.wait(timeout=60) == 0, texts[ends[1][0]].decode(errors="replace")[-3000:]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        for reader, _ in ends:
            os.close(reader)
    out, err = (texts[r].decode(errors="replace").replace("\r\n", "\n") for r, _ in ends)
    return out, err


def test_predict_progress_bar_is_on_stderr(
    workspace: dict, onnx_fp32: Path, tmp_path: Path
) -> None:
    """kdseg-predict's "predict slices" bar (drawn where it goes to a terminal) is on stderr,
    stdout holds the result lines alone; still without torch. It was drawn on stdout."""
    case = workspace["setup"].cases[workspace["setup"].split["test"][0]]
    target = tmp_path / "label.nii.gz"
    args = ["ckpt=null", f"artifact={onnx_fp32}", "backend=onnx", "verbose=true"]
    out, err = _on_two_terminals(*args, f"input={case.image}", f"output={target}")
    assert "predict slices" in err and "predict slices" not in out, (out, err)
    assert "\x1b" not in out and "\r" not in out, out  # no terminal controls: result lines
    assert "time (s): load model" in out and "LOADED []" in out, out
    assert target.is_file()


@pytest.mark.parametrize(
    "bad", ["missing ckpt", "corrupt onnx", "onnx without metadata", "corrupt pt2"]
)
def test_bad_input_is_one_line_exit_2(
    workspace: dict, tmp_path: Path, bad: str, capsys, monkeypatch
) -> None:
    case = workspace["setup"].cases[workspace["setup"].split["test"][0]]
    if bad == "missing ckpt":
        culprit = tmp_path / "nope.ckpt"
        command, args = "export", [f"ckpt={culprit}"]
    else:
        culprit = tmp_path / ("model.pt2" if bad == "corrupt pt2" else "model.onnx")
        if bad == "onnx without metadata":
            import onnx
            from onnx import TensorProto, helper

            graph = helper.make_graph(
                [helper.make_node("Relu", ["image"], ["logits"])],
                "g",
                [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1])],
                [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1])],
            )
            onnx.save(helper.make_model(graph), str(culprit))
        else:
            culprit.write_bytes(b"definitely not a model" * 20)
        command, args = (
            "predict",
            [
                "ckpt=null",
                f"artifact={culprit}",
                f"input={case.image}",
                f"output={tmp_path / 'out.nii.gz'}",
            ],
        )
    code, _out, err = _cli(command, args, capsys, monkeypatch)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and str(culprit) in lines[0] and "Traceback" not in err, (
        err
    )
    assert not (tmp_path / "out.nii.gz").exists()


@pytest.mark.parametrize("command", ["predict", "eval", "export", "bench", "models"])
def test_more_threads_than_cpus_is_one_line_for_every_command(
    workspace: dict, onnx_fp32: Path, tmp_path: Path, command: str, capsys, monkeypatch
) -> None:
    """``threads=100000`` went to ONNX Runtime as it was: on two cores the process grew to
    4,289 threads and 16 GB, and did not stop at SIGTERM. Every command that takes a thread
    count refuses one above the CPUs it may use (here 3), naming it, before any work; the
    limit itself is taken."""
    import kdseg.guards

    monkeypatch.setattr(kdseg.guards, "usable_cpus", lambda: 3)
    case = workspace["setup"].cases[workspace["setup"].split["test"][0]]
    out = tmp_path / "out.nii.gz"
    model = ["ckpt=null", f"artifact={onnx_fp32}", "backend=onnx"]
    args = {
        "predict": [*model, f"input={case.image}", f"output={out}"],
        "eval": [*model, f"data.root={workspace['data']}", f"output_dir={tmp_path / 'eval'}"],
        "export": [f"ckpt={workspace['tiny']}", f"output={tmp_path / 'm.onnx'}"],
        "bench": [f"entries=[{{name: a, artifact: {onnx_fp32}, backend: onnx}}]"],
    }
    option = "--time " if command == "models" else "threads="
    module = "evaluate" if command == "eval" else command
    argv = ["--time", "4"] if command == "models" else [*args[command], "threads=4"]
    code, _, err = _cli(module, argv, capsys, monkeypatch)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.endswith(
        f"error: {option}4: more threads than the 3 CPUs this process may use; give at most 3\n"
    ), err
    assert list(tmp_path.iterdir()) == []
    assert kdseg.guards.check_threads(3) == 3 and kdseg.guards.check_threads(None) is None
    monkeypatch.setattr(kdseg.guards, "usable_cpus", lambda: 1)  # the default 2 stays valid
    assert kdseg.guards.check_threads(2) == 2
    with pytest.raises(InputError, match="threads=3: more threads than the 1 CPU this"):
        kdseg.guards.check_threads(3)


@pytest.mark.parametrize("bad", ["empty", "garbage", "cut short", "dangling node input"])
def test_an_onnx_file_that_does_not_load_is_named_plainly(tmp_path: Path, bad: str) -> None:
    """The refusal quoted ONNX Runtime whole: its status code and name
    (``[ONNXRuntimeError] : 7 : INVALID_PROTOBUF``) and the file again, resolved. It says
    plainly what is wrong with the file, named as given (here through a link)."""
    from onnx import TensorProto, helper, numpy_helper

    from kdseg.eval.inference import onnx_session

    weights = numpy_helper.from_array(np.ones((3, 1, 1, 1), np.float32), "w")
    inputs = ["x", "w"] if bad != "dangling node input" else ["x", "nowhere"]
    graph = helper.make_graph(
        [helper.make_node("Conv", inputs, ["logits"])],
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 1, "h", "w"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", 3, "h", "w"])],
        [weights],
    )
    raw = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    data = {
        "empty": b"",
        "garbage": b"garbage" * 99,
        "cut short": raw.SerializeToString()[:-30],
        "dangling node input": raw.SerializeToString(),
    }[bad]
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "model.onnx").write_bytes(data)
    link = tmp_path / "student.onnx"
    link.symlink_to(tmp_path / "store" / "model.onnx")
    with pytest.raises(InputError) as caught:
        onnx_session(link, threads=1)
    message = str(caught.value)
    assert message.startswith(f"{link}: ") and "model.onnx" not in message, message
    assert "ONNXRuntimeError" not in message and "INVALID" not in message, message
    assert "\n" not in message and len(message) < 300, message
    expected = {
        "empty": "empty file (0 bytes), not an ONNX model",
        "garbage": "not an ONNX model, or a damaged or cut-short copy of one (693 bytes",
        "cut short": "not an ONNX model, or a damaged or cut-short copy of one",
        "dangling node input": "an ONNX model that ONNX Runtime cannot load: ",
    }[bad]
    assert expected in message, message
    if bad == "dangling node input":
        assert "nowhere" in message, message


def test_resolve_bundle_rejects_inconsistent_requests(onnx_fp32: Path) -> None:
    with pytest.raises(InputError, match="needs artifact"):
        resolve_bundle(None, None, "onnx")
    with pytest.raises(InputError, match="cannot run"):
        resolve_bundle(None, str(onnx_fp32), "aoti")


def test_bench_quick(workspace: dict, onnx_fp32: Path, capsys, monkeypatch) -> None:
    out = workspace["root"] / "bench"
    entries = [
        {
            "name": "enet-torch",
            "ckpt": str(workspace["enet"]),
            "backend": "torch",
            "role": "distilled",
        },
        {"name": "tiny-onnx", "artifact": str(onnx_fp32), "backend": "onnx", "role": "student"},
    ]
    entries_file = workspace["root"] / "entries.yaml"
    entries_file.write_text(yaml.safe_dump(entries))
    code, stdout, err = _cli(
        "bench",
        [
            "quick=true",
            "threads=1",
            f"data.root={workspace['data']}",
            f"volume_dir={workspace['root'] / 'volume'}",
            f"output_dir={out}",
            f"entries_file={entries_file}",
        ],
        capsys,
        monkeypatch,
    )
    assert code == 0, err
    results = json.loads((out / "bench.json").read_text())
    rows = {r["name"]: r for r in results["rows"]}
    assert all(r["ok"] for r in rows.values()), rows
    for r in rows.values():
        assert len(r["e2e_s"]) == 2 and r["slices"] == 12 and r["peak_rss_mb"] > 50
        assert 0 < r["io_median_s"] < r["e2e_median_s"] - r["model_median_s"]
        assert r["mult_adds"] > 0 and r["params"] > 0 and 0 < r["peak_fraction"]
        assert set(r["dice"]) == {"organ", "tumor"}
    assert rows["tiny-onnx"]["macs_source"] == "metadata"
    # the fresh-process column: the CLI itself, start-up included, slower than the warm run
    for r in rows.values():
        assert r["fresh_median_s"] > r["e2e_median_s"], r.get("fresh_skipped")
    assert "fresh process (s)" in stdout
    assert results["peak"]["gflops"] > 0
    assert (out / "bench.png").stat().st_size > 1000 and "| enet-torch |" in stdout


def test_bench_refuses_files_it_did_not_write_and_replaces_its_own(
    onnx_fp32: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    """``kdseg-bench`` replaces ``<name>.md/.json/.png`` only when they are an earlier bench
    run's (docs/bench.*, its hand-edited provenance line included), else refuses in one line
    before measuring anything, unless ``overwrite=true``."""
    import kdseg.cli.bench as cli
    from kdseg.deploy.bench import check_bench_replaceable

    docs = Path(__file__).resolve().parents[1] / "docs"
    for suffix in (".md", ".json", ".png"):  # a real earlier run: replaced without overwrite
        shutil.copy(docs / f"bench{suffix}", tmp_path / f"bench{suffix}")
    check_bench_replaceable(tmp_path, "bench")
    check_bench_replaceable(tmp_path, "nothing-yet")
    measured: list[str] = []

    def fake_run(bench: object) -> dict:
        measured.append("run")
        return {"markdown": "", "rows": []}

    monkeypatch.setattr(cli, "run_bench", fake_run)
    entry = f"entries=[{{name: a, artifact: {onnx_fp32}, backend: onnx}}]"
    foreign = {
        "notes.md": "# my notes\n",  # somebody's Markdown
        "results.json": '{"rows": []}\n',  # a JSON of other keys
        "plot.png": (docs / "bench.png").read_bytes(),  # a PNG with no bench report beside it
    }
    for name, content in foreign.items():
        path = tmp_path / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        args = ["dice=false", f"output_dir={tmp_path}", f"name={path.stem}", entry]
        code, _out, err = _cli("bench", args, capsys, monkeypatch)
        lines = error_lines(err)
        assert code == 2 and len(lines) == 1, err
        assert f"{path}: exists and is not a kdseg bench output; overwrite=true" in lines[0]
        assert (
            not measured
            and path.read_bytes()[:4]
            == (content if isinstance(content, bytes) else content.encode())[:4]
        )
        code, _out, err = _cli("bench", [*args, "overwrite=true"], capsys, monkeypatch)
        assert code == 0 and measured == ["run"], err
        measured.clear()
    bad = tmp_path / "bench.md"  # a report whose title is gone is somebody's file now
    bad.write_text("notes\n" + (docs / "bench.md").read_text())
    with pytest.raises(InputError, match="bench.md: exists and is not a kdseg bench output"):
        check_bench_replaceable(tmp_path, "bench")
    # a folder where an output goes: refused with or without overwrite, before measuring (with
    # overwrite the whole run was measured, then its last rename failed as an internal error)
    (tmp_path / "folder.json").mkdir()
    args = ["dice=false", f"output_dir={tmp_path}", "name=folder", entry]
    for extra in ([], ["overwrite=true"]):
        code, _out, err = _cli("bench", [*args, *extra], capsys, monkeypatch)
        lines = error_lines(err)
        assert code == 2 and len(lines) == 1 and not measured, err
        assert "folder.json: exists and is not a file, where a bench output goes" in lines[0]


def test_a_failed_bench_write_leaves_no_report_beside_an_older_plot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``<name>.png``, ``.json`` and ``.md`` are one group: the report and the JSON were
    written before the plot, so a failure while writing the plot left them beside an earlier
    run's ``<name>.png`` (a stale plot of other numbers). Now a failure in any of the three
    leaves none of the new files: an earlier run's three as they were, or nothing at all."""
    import kdseg.errors as errors
    from kdseg.deploy.bench import bench_outputs, check_bench_replaceable, write_bench_outputs

    docs = Path(__file__).resolve().parents[1] / "docs"
    results = json.loads((docs / "bench.json").read_text())
    results["rows"] = [r for r in results["rows"] if r.get("ok")][:2]  # a run of 2 entries
    results["markdown"] = (docs / "bench.md").read_text().replace("| ", "|  ", 1)
    real_commit = errors._commit
    for failing in ("bench.png", "bench.json", "bench.md"):

        def fail(tmp: Path, target: Path, failing: str = failing) -> None:
            if target.name == failing:
                raise OSError(28, "No space left on device")
            real_commit(tmp, target)

        monkeypatch.setattr(errors, "_commit", fail)
        fresh = tmp_path / f"fresh-{failing}"
        with pytest.raises(OSError):
            write_bench_outputs(results, fresh, "bench")
        assert not fresh.exists()  # no file, no temporary, not the folder it made
        old = tmp_path / f"old-{failing}"
        old.mkdir()
        for suffix in (".md", ".json", ".png"):
            shutil.copy(docs / f"bench{suffix}", old / f"bench{suffix}")
        with pytest.raises(OSError):
            write_bench_outputs(results, old, "bench")
        for suffix in (".md", ".json", ".png"):
            assert (old / f"bench{suffix}").read_bytes() == (docs / f"bench{suffix}").read_bytes()
        assert len(list(old.iterdir())) == 3
        monkeypatch.setattr(errors, "_commit", real_commit)
    out = tmp_path / "old-bench.md"
    assert write_bench_outputs(results, out, "bench") == bench_outputs(out, "bench")
    md, js, png = bench_outputs(out, "bench")
    assert md.read_text() == results["markdown"]
    assert json.loads(js.read_text())["rows"] == results["rows"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.read_bytes() != (docs / "bench.png").read_bytes()  # the new plot
    assert len(list(out.iterdir())) == 3
    check_bench_replaceable(out, "bench")  # a rerun still knows them as its own


def test_teacher_ratio_targets_report_end_to_end_model_time_and_bound() -> None:
    def row(name: str, role: str, e2e: float, net: float, width: float = 1.0) -> dict:
        model = "enet" if role == "distilled" else "raunet"
        timings = {"e2e_median_s": e2e, "model_median_s": net}
        return {"name": name, "role": role, "model": model, "width": width, "ok": True, **timings}

    rows = [
        row("student", "distilled", 2.0, 1.0),
        row("slow student", "distilled", 3.0, 0.5),
        row("teacher torch", "teacher", 12.0, 11.0),
        row("teacher onnx", "teacher", 9.0, 8.0),
        row("narrow teacher", "teacher", 3.0, 2.0, width=0.5),  # not the paper's teacher
    ]
    e2e, model = check_targets(rows, {"vs_teacher": {"raunet": 5}})
    assert e2e["met"] is False and e2e["value"].startswith("4.5x (teacher onnx vs student)")
    assert "at most 9.0x: 1.00 s" in e2e["value"]
    assert model["met"] is True and model["value"].startswith("16.0x model time")
    assert "(teacher onnx vs slow student)" in model["value"]  # the fastest network


def test_bench_report_header_names_commit_and_cpu_and_int8_pairs_by_input_size() -> None:
    """bench.json records the commit and the CPU model and the report's header prints them; a
    bench.json written before they were recorded still renders, saying so. Two int8/fp32 pairs
    of one model at two input sizes get two labels (they had one: the model's name)."""
    import re

    from kdseg.deploy.bench import source_commit
    from kdseg.deploy.bench_report import markdown_report

    def row(name: str, precision: str, size: int, model_s: float) -> dict:
        pre = {"body_crop": True, "in_plane_size": [size, size]}
        return {
            "name": name, "role": "distilled", "ok": True, "backend": "onnx",
            "precision": precision, "model": "mobilenetv2", "source": "m.ckpt",
            "preprocess": pre, "input_shape": [8, 1, size, size], "e2e_median_s": 2 * model_s,
            "model_median_s": model_s, "io_median_s": 0.5, "peak_rss_mb": 100.0,
        }  # fmt: skip

    rows = [row("fp32", "fp32", 96, 1.0), row("int8", "int8", 96, 0.5)]
    rows += [row("fp32 256", "fp32", 256, 8.0), row("int8 256", "int8", 256, 4.0)]
    targets = check_targets(rows, {"int8_speedup": 1.5})
    labels = [t["target"] for t in targets if t["target"].startswith("int8 vs fp32")]
    assert labels == [
        "int8 vs fp32 ONNX Runtime, mobilenetv2, 96x96",
        "int8 vs fp32 ONNX Runtime, mobilenetv2, 256x256",
    ]
    # two pairs that model and size do not tell apart: the second is named by its entry
    twin = [{**r, "name": r["name"] + " b", "source": "b.ckpt"} for r in rows[:2]]
    again = [t["target"] for t in check_targets(rows[:2] + twin, {"int8_speedup": 1.5})]
    assert again[:2] == [labels[0], labels[0] + " (int8 b)"]
    machine = {"cores": 2, "torch": "2", "onnxruntime": "1", "python": "3.11"}
    old = {
        "machine": machine, "load_average": [0.1, 0.2], "threads": 2, "runs": 5, "warmup": 1,
        "rounds": 1, "peak": {"size": 2048, "threads": 2, "gflops": 100.0},
        "volume_shape": [512, 512, 200], "dice_split": "test", "dice_cases": 3, "rows": rows,
        "targets": targets,
    }  # fmt: skip
    old = json.loads(json.dumps(old))  # as read back from a bench.json
    header = markdown_report(old).splitlines()[2]
    assert header.startswith("Commit: not recorded. Machine: CPU model not recorded, 2 cores")
    new = {**old, "commit": "abc1234-dirty", "machine": {**machine, "cpu": "Intel Xeon X"}}
    text = markdown_report(json.loads(json.dumps(new)))
    assert text.splitlines()[2].startswith("Commit: abc1234-dirty. Machine: Intel Xeon X, 2 cores")
    assert "| int8 vs fp32 ONNX Runtime, mobilenetv2, 256x256 | 2.00x model time" in text
    outside = markdown_report({**new, "commit": None}).splitlines()[2]
    assert outside.startswith("Commit: none (kdseg ran outside a git checkout). Machine: Intel")
    commit = source_commit()  # this checkout's, or None outside one
    assert commit is None or re.fullmatch(r"[0-9a-f]{4,40}(-dirty)?", commit), commit


def test_export_check_catches_a_dropped_organ_that_pixel_agreement_hides() -> None:
    x = np.zeros((3, 1, 20, 20), np.float32)
    x[:, :, :4, :4] = 1.0  # 4% of each slice is organ for the reference

    def reference(v: np.ndarray) -> np.ndarray:
        return np.concatenate([np.full_like(v, 0.5), v, np.zeros_like(v)], axis=1)

    def background_only(v: np.ndarray) -> np.ndarray:
        return np.concatenate([np.ones_like(v), np.zeros_like(v), np.zeros_like(v)], axis=1)

    dropped = compare(background_only, reference, x, "reference")
    assert dropped.argmax_agreement == pytest.approx(0.96) and dropped.foreground_dice == 0.0
    assert not dropped.acceptable(min_agreement=0.95, min_dice=0.9)
    same = compare(reference, reference, x, "reference")
    assert same.foreground_dice == 1.0 and same.acceptable(min_agreement=0.999, min_dice=0.99)
    assert "lowest foreground Dice 0.0000" in str(dropped)


def test_cascade_export_predict_and_bench(workspace: dict, capsys, monkeypatch) -> None:
    """``ckpt=[stage1,stage2]`` exports both stages; the two artefacts run as a cascade in
    predict, and kdseg-bench times the cascade as one entry."""
    from kdseg.deploy.export_options import stage_options

    tiny = str(workspace["tiny"])
    opts = stage_options({"ckpt": [tiny, tiny], "output": None, "check_slices": 4})
    assert [Path(o.output).name for o in opts] == [
        "tiny_deploy_net.onnx",
        "tiny_deploy_net-stage2.onnx",
    ]
    out = workspace["root"] / "cascade"
    code, stdout, err = _cli(
        "export",
        [
            f"ckpt=[{tiny},{tiny}]",
            f"output=[{out / 's1.onnx'},{out / 's2.onnx'}]",
            "check_slices=4",
        ],
        capsys,
        monkeypatch,
    )
    assert code == 0, err
    assert "cascade: kdseg-predict" in stdout
    pair = f"artifact=[{out / 's1.onnx'},{out / 's2.onnx'}]"
    case = workspace["setup"].cases[workspace["setup"].split["test"][0]]
    code, stdout, err = _cli(
        "predict",
        ["ckpt=null", pair, f"input={case.image}", f"output={out / 'label.nii.gz'}"],
        capsys,
        monkeypatch,
    )
    assert code == 0, err
    image, label = nib.load(str(case.image)), nib.load(str(out / "label.nii.gz"))
    assert label.shape == image.shape
    np.testing.assert_allclose(label.affine, image.affine, atol=1e-5)
    entries = [
        {
            "name": "cascade-onnx",
            "artifact": [str(out / "s1.onnx"), str(out / "s2.onnx")],
            "backend": "onnx",
            "role": "student",
        }
    ]
    (out / "entries.yaml").write_text(yaml.safe_dump(entries))
    code, stdout, err = _cli(
        "bench",
        [
            "quick=true",
            "threads=1",
            f"data.root={workspace['data']}",
            f"volume_dir={workspace['root'] / 'volume'}",
            f"output_dir={out}",
            "name=cascade",
            f"entries_file={out / 'entries.yaml'}",
        ],
        capsys,
        monkeypatch,
    )
    assert code == 0, err
    row = json.loads((out / "cascade.json").read_text())["rows"][0]
    assert row["ok"], row
    assert row["model"] == "tiny_deploy_net+tiny_deploy_net" and row["slices"] >= 12
    assert row["macs_source"] == "cascade, per-slice mean" and row["mult_adds"] > 0
    targets = json.loads((out / "cascade.json").read_text())["targets"]
    assert any(t["target"].startswith("fastest cascade <= 3 s") for t in targets)


def test_prelu_rewrite_is_exact() -> None:
    """The PReLU rewrite of exported graphs leaves no PRelu and gives the same logits bit for
    bit in ONNX Runtime (per-channel slopes, positive, negative and zero inputs)."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from kdseg.deploy.onnx_passes import prelu_as_relu

    rng = np.random.default_rng(0)
    slope = rng.normal(0, 0.5, (1, 4, 1, 1)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("PRelu", ["x", "a"], ["h"]),
            helper.make_node("PRelu", ["h", "a"], ["y"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4, 5, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4, 5, 6])],
        [numpy_helper.from_array(slope, "a")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = rng.normal(0, 2, (3, 4, 5, 6)).astype(np.float32)
    x[0, 0, 0, :3] = [0.0, -0.0, 1e-40]

    def run(m) -> np.ndarray:
        session = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        return session.run(None, {"x": x})[0]

    want = run(model)
    assert prelu_as_relu(model) == 2
    onnx.checker.check_model(model)
    assert not [n for n in model.graph.node if n.op_type == "PRelu"]
    np.testing.assert_array_equal(run(model), want)


def test_export_and_bench_refuse_what_would_mislabel_or_misplace(
    workspace: dict, tmp_path: Path, capsys, monkeypatch
) -> None:
    """An int8 file that quantized nothing, a data_root that is not there, stage 1 written
    before stage 2 is known to load, two bench entries pooled under one name, bench results
    inside the dataset, an export's cache inside its data_root: each refused in one line before
    anything is written."""
    from kdseg.deploy.bench import BenchConfig
    from kdseg.deploy.bench_report import check_targets as targets
    from kdseg.deploy.export_options import stage_options

    tiny = str(workspace["tiny"])
    quick = Int8Options(calibration_slices=4, time_slices=2, repeats=1, op_types=("conv",))
    out = tmp_path / "typo" / "tiny.int8.onnx"
    opts = ExportOptions(ckpt=tiny, output=str(out), quantize="int8", check_slices=4, threads=1)
    with pytest.raises(InputError, match=r"int8.op_types: \['conv'\] is no ONNX operator"):
        export_checkpoint(ExportOptions(**{**opts.__dict__, "int8": quick}))
    assert not out.exists()
    missing = tmp_path / "typo-data"
    with pytest.raises(InputError, match="data_root= folder not found"):
        export_checkpoint(
            ExportOptions(ckpt=tiny, output=str(tmp_path / "a.onnx"), data_root=str(missing))
        )
    with pytest.raises(InputError, match="list of two for a cascade only"):
        stage_options({"ckpt": tiny, "output": ["a.onnx", "b.onnx"]})
    with pytest.raises(InputError, match="nope.ckpt"):
        stage_options({"ckpt": [tiny, str(tmp_path / "nope.ckpt")], "output": ["a.onnx", "b.onnx"]})
    assert not (tmp_path / "a.onnx").exists()
    twin = {"ckpt": [tiny, tiny], "quantize": "int8", "output": ["a.onnx", "a.fp32.onnx"]}
    with pytest.raises(InputError, match="a.fp32.onnx: both cascade stages"):  # stage 1's twin
        stage_options(twin)
    entry = {"name": "m", "ckpt": tiny}
    with pytest.raises(InputError, match="two bench entries are named 'm'"):
        BenchConfig.from_dict({"entries": [entry, {**entry, "backend": "onnx"}]})
    with pytest.raises(InputError, match="runs=0: a whole number, at least 1"):
        BenchConfig.from_dict({"entries": [entry], "runs": 0})
    with pytest.raises(InputError, match=r"name='../x': a file name, not a path"):
        BenchConfig.from_dict({"entries": [entry], "name": "../x"})  # out of output_dir
    bad = tmp_path / "entries.yaml"
    bad.write_text("- {name: m, ckpt: [unclosed\n")
    with pytest.raises(InputError, match="entries.yaml: not valid YAML"):
        BenchConfig.from_dict({"entries_file": str(bad)})
    inside = workspace["data"] / "bench"
    code, _out, err = _cli(
        "bench", ["quick=true", f"data.root={workspace['data']}", f"output_dir={inside}",
                  f"entries=[{{name: m, ckpt: {tiny}}}]"], capsys, monkeypatch,
    )  # fmt: skip
    assert code == 2 and "lies inside the input folder" in err and not inside.exists(), err
    # export resolves its data read-only but fills the cache to draw its check slices: a
    # cache root inside the dataset (KDSEG_CACHE_DIR there) is refused too, in one line
    data = workspace["data"]
    before = sorted(data.rglob("*"))
    monkeypatch.setenv("KDSEG_CACHE_DIR", str(data / "cache"))
    out = tmp_path / "inside.onnx"
    code, _out, err = _cli(
        "export", [f"ckpt={tiny}", f"output={out}", "check_slices=4", f"data_root={data}"],
        capsys, monkeypatch,
    )  # fmt: skip
    lines = error_lines(err)
    assert code == 2 and len(lines) == 1 and "data.cache_root lies inside data_root" in lines[0]
    assert sorted(data.rglob("*")) == before and not out.exists(), err
    rows = [{"name": "s", "role": "student", "ok": True, "e2e_median_s": 1.0}]
    assert targets(rows, {"max_volume_s": 10})[0]["target"].startswith(
        "fastest student (no distilled entry)"
    )
    # the YAML's defaults are floats, so a fractional override is a setting; shown as written
    half = targets(rows, {"max_volume_s": 7.5, "vs_teacher": {"raunet": 5.0}})
    assert half[0]["target"].endswith("<= 7.5 s per volume") and half[0]["met"]
    assert half[1]["target"] == "fastest student >= 5x faster than raunet"
    from omegaconf import OmegaConf

    from kdseg.cli.options import check_option_types

    for value in ("targets.max_volume_s=7.5", "targets.vs_teacher.raunet=2.5"):
        check_option_types(OmegaConf.from_dotlist([value]), "bench")  # no "whole number"


def test_int8_that_quantizes_no_layer_is_refused_not_written(
    onnx_fp32: Path, tmp_path: Path
) -> None:
    """An operator type the network has none of to quantize (a real ONNX operator, so the
    typo check lets it pass), or every convolution kept in fp32: quantize_static then writes
    an fp32 graph, which must not be handed over under an int8 name."""
    import onnx

    from kdseg.deploy.quantize import conv_nodes, quantize_int8

    calibration = np.random.default_rng(0).uniform(-1, 1, (2, 1, 32, 32)).astype(np.float32)
    convs = conv_nodes(onnx.load(str(onnx_fp32)))
    for options in ({"op_types": ("MatMul",)}, {"keep_fp32": tuple(convs)}):
        out = tmp_path / "none.int8.onnx"
        with pytest.raises(InputError, match="int8: no layer was quantized"):
            quantize_int8(onnx_fp32, out, calibration, **options)
        assert not out.exists() and not list(tmp_path.iterdir())  # nor a temporary
    quantize_int8(onnx_fp32, out, calibration)  # the default quantizes: the guard lets it by
    assert any(n.op_type == "QuantizeLinear" for n in onnx.load(str(out)).graph.node)


def test_export_of_native_size_slices_and_fresh_paths_are_clear(
    workspace: dict, tmp_path: Path, capsys, monkeypatch
) -> None:
    """A checkpoint that sees native-size slices of different sizes: one line naming it, exit
    2 (was an internal error). The bench's fresh-process command names absolute paths (it
    runs in a temporary folder), and a skipped measurement says why in the table."""
    from kdseg.deploy.bench_report import markdown_table
    from kdseg.deploy.fresh import predict_command

    ckpt = torch.load(workspace["tiny"], weights_only=True)
    ckpt["hyper_parameters"]["data"]["preprocess"]["in_plane_size"] = None
    native = tmp_path / "native" / "checkpoints" / "best.ckpt"
    native.parent.mkdir(parents=True)
    torch.save(ckpt, native)
    cfg = yaml.safe_load((workspace["tiny"].parents[1] / "config.yaml").read_text())
    cfg["data"]["preprocess"]["in_plane_size"] = None
    (native.parents[1] / "config.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "native.onnx"
    code, _out, err = _cli(
        "export", [f"ckpt={native}", f"output={out}", "check_slices=8"], capsys, monkeypatch
    )
    lines = error_lines(err)  # after the phantoms' HU-window warning
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert str(native) in lines[-1] and "differ in size" in lines[-1] and not out.exists()
    monkeypatch.chdir(tmp_path)
    entry = {"artifact": "m.onnx", "ckpt": None, "backend": "onnx"}
    command = predict_command(entry, Path("v.nii.gz"), Path("o.nii.gz"), 1)
    assert (
        f"artifact={tmp_path / 'm.onnx'}" in command and f"input={tmp_path / 'v.nii.gz'}" in command
    )
    row = {"name": "m", "role": "student", "ok": True, "backend": "onnx", "precision": "fp32"}
    row |= {"preprocess": {}, "e2e_median_s": 1.0, "model_median_s": 0.5, "io_median_s": 0.1}
    row |= {"peak_rss_mb": 100.0, "fresh_skipped": "kdseg-predict exited 2: x | y"}
    assert "| skipped: kdseg-predict exited 2: x / y |" in markdown_table([row])


def test_export_draws_from_the_checkpoints_recorded_split(workspace: dict, tmp_path: Path) -> None:
    """Calibration and check slices come from the split the checkpoint records, whatever split
    the folder resolves to today (cases added, the cache's persisted split deleted): a case the
    model validated on is never calibrated on. Recorded cases gone from the folder are said in
    one line; a checkpoint that records no split uses the folder's."""
    from kdseg.deploy.samples import export_data_setup, run_config, sample_positions

    folder = workspace["setup"].split
    assert folder["train"] and folder["val"], folder
    held_out = folder["train"][0]  # in the folder's train set, in this model's val set
    recorded = {
        "train": [*folder["val"], *folder["test"], *folder["train"][1:]],
        "val": [held_out, "volume-999"],  # the second is no longer in the folder
        "test": [],
        "root": str(workspace["data"].resolve()),
    }
    ckpt = torch.load(workspace["tiny"], weights_only=True)
    ckpt["hyper_parameters"]["data"]["split"] = recorded
    moved = tmp_path / "run" / "checkpoints" / "best.ckpt"
    moved.parent.mkdir(parents=True)
    torch.save(ckpt, moved)
    shutil.copy(workspace["tiny"].parents[1] / "config.yaml", moved.parents[1] / "config.yaml")
    bundle = load_bundle(moved)
    notes: list[str] = []
    setup = export_data_setup(bundle, None, run_config(moved), notes)
    assert setup is not None
    assert setup.split == {**{s: recorded[s] for s in ("train", "test")}, "val": [held_out]}
    assert len(notes) == 1 and "'volume-999'" in notes[0] and "recorded split" in notes[0]
    calibrated = sample_positions(setup, ("train",), 32, seed=1)
    assert calibrated and held_out not in {case for case, _ in calibrated}
    out = tmp_path / "m.onnx"
    result = export_checkpoint(ExportOptions(ckpt=str(moved), output=str(out), check_slices=4))
    assert notes[0] in result.warnings and out.exists()
    # a checkpoint of an older kdseg (no recorded split): the folder's split, no note
    del bundle.data["split"]
    notes.clear()
    older = export_data_setup(bundle, None, run_config(moved), notes)
    assert older is not None and older.split == folder and not notes
    # none of the recorded validation cases left: pruning, whose recovery validates on them,
    # is refused in one line (it ran on an empty loader, without its Dice-drop check)
    ckpt["hyper_parameters"]["data"]["split"] = {**recorded, "val": ["volume-999"]}
    torch.save(ckpt, moved)
    with pytest.raises(InputError, match="pruning recovery validates on this checkpoint's val"):
        export_checkpoint(
            ExportOptions(ckpt=str(moved), output=str(tmp_path / "p.onnx"), prune=0.3)
        )
    assert not (tmp_path / "p.onnx").exists()


def test_artefact_metadata_missing_an_inference_key_is_refused(onnx_fp32: Path) -> None:
    """An artefact's data section must hold every key inference reads that its schema carries:
    one missing (or ``preprocess: {}``) is one line naming the file and the key, not a run with
    defaults. Keys added after schema 1 keep their defaults in a schema 1 artefact; a schema
    newer than this kdseg's is refused."""
    from kdseg.deploy.artifact import REQUIRED_KEYS, SCHEMA_VERSION, parse_metadata

    meta = read_metadata(onnx_fp32)
    assert meta is not None and meta["schema"] == SCHEMA_VERSION
    assert parse_metadata(onnx_fp32, json.dumps(meta)) == meta
    for key in REQUIRED_KEYS[SCHEMA_VERSION]:
        broken = json.loads(json.dumps(meta))
        section, _, name = key.rpartition(".")
        del (broken["data"][section] if section else broken["data"])[name]
        with pytest.raises(InputError, match=rf"data\.{key} is missing") as err:
            parse_metadata(onnx_fp32, json.dumps(broken))
        assert str(err.value.path) == str(onnx_fp32) and "\n" not in str(err.value)
    empty = json.loads(json.dumps(meta))
    empty["data"]["preprocess"] = {}
    with pytest.raises(InputError, match=r"data\.preprocess\.window is missing"):
        parse_metadata(onnx_fp32, json.dumps(empty))
    old = json.loads(json.dumps(meta))
    old["schema"] = 1
    for key in ("spacing_mm", "roi", "window_level", "label_resize"):  # added after schema 1
        del old["data"]["preprocess"][key]
    assert parse_metadata(onnx_fp32, json.dumps(old)) == old
    del old["data"]["preprocess"]["in_plane_size"]  # every schema 1 artefact carried it
    with pytest.raises(InputError, match=r"data\.preprocess\.in_plane_size is missing"):
        parse_metadata(onnx_fp32, json.dumps(old))
    newer = {**meta, "schema": SCHEMA_VERSION + 1}
    with pytest.raises(InputError, match="written by a newer kdseg.*update kdseg"):
        parse_metadata(onnx_fp32, json.dumps(newer))


def test_artefact_records_provenance_and_export_recognises_it_by_hash(
    workspace: dict, onnx_fp32: Path, tmp_path: Path
) -> None:
    """The artefact records kdseg's version, the source commit and the checkpoint's sha256; the
    export's overwrite rule recognises the checkpoint by that hash (moved: the same; other
    bytes at the same path: not), by its path for an artefact that records none."""
    import hashlib

    import onnx

    import kdseg
    from kdseg.deploy.artifact import made_from
    from kdseg.deploy.bench_report import markdown_report
    from kdseg.deploy.onnx_export import update_onnx_metadata
    from kdseg.deploy.provenance import describe_provenance, source_commit

    proto = onnx.load(str(onnx_fp32))  # what the lean runtime's floor, onnxruntime 1.20, runs
    assert [o.version for o in proto.opset_import if o.domain == ""] == [20]
    assert proto.ir_version <= 10
    meta = read_metadata(onnx_fp32)
    assert meta is not None
    sha = hashlib.sha256(workspace["tiny"].read_bytes()).hexdigest()
    assert meta["provenance"] == {
        "kdseg_version": kdseg.__version__,
        "source_commit": source_commit(),
        "checkpoint_sha256": sha,
    }
    ckpt = tmp_path / "a" / "best.ckpt"
    ckpt.parent.mkdir()
    shutil.copy(workspace["tiny"], ckpt)
    art = tmp_path / "m.onnx"
    shutil.copy(onnx_fp32, art)
    assert made_from(art, ckpt) and made_from(art, workspace["tiny"])  # moved: same bytes
    ckpt.write_bytes(ckpt.read_bytes() + b"\0")  # other bytes at that path
    assert not made_from(art, ckpt)
    older = {k: v for k, v in meta.items() if k != "provenance"} | {"schema": 1}
    older["source_checkpoint"] = str(ckpt.resolve())
    update_onnx_metadata(art, older)
    assert made_from(art, ckpt) and not made_from(art, workspace["tiny"])
    line = describe_provenance(meta)
    assert line is not None and sha[:12] in line and kdseg.__version__ in line
    results = {
        "machine": {"cores": 2, "torch": "t", "onnxruntime": "o", "python": "p"},
        "peak": {"gflops": 1.0},
        "load_average": [0.0, 0.0],
        "volume_shape": [8, 8, 8],
        **{"threads": 1, "runs": 1, "rounds": 1, "warmup": 0, "dice_split": "val"},
        "dice_cases": 0,
        "rows": [{"name": "m", "role": "student", "ok": False, "provenance": meta["provenance"]}],
    }
    assert f"- m: {line}" in markdown_report(results)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"int8": Int8Options(calibration_slices=0)}, r"int8\.calibration_slices=0: a whole"),
        ({"int8": Int8Options(time_slices=0)}, r"int8\.time_slices=0: a whole number"),
        ({"int8": Int8Options(time_batch=0)}, r"int8\.time_batch=0: a whole number, at least 1"),
        ({"int8": Int8Options(repeats=-2)}, r"int8\.repeats=-2: a whole number, at least 1"),
        ({"check_slices": -1}, r"check_slices=-1: a whole number, at least 0"),
        ({"threads": -1}, r"threads=-1: a whole number, at least 1"),
        ({"prune": 1.5}, r"prune=1\.5: the fraction of channels to remove, in \(0, 1\)"),
        ({"prune": -0.2}, r"prune=-0\.2: the fraction"),
    ],
)
def test_bad_export_counts_are_refused_before_any_work(
    tmp_path: Path, change: dict, message: str
) -> None:
    """Counts below their least and a prune fraction outside (0, 1) are refused up front, before
    the checkpoint (here: none) is read (was: an internal error after the fp32 work, or a
    timing recorded with batch 0)."""
    opts = ExportOptions(ckpt=str(tmp_path / "none.ckpt"), quantize="int8", **change)
    with pytest.raises(InputError, match=message):
        export_checkpoint(opts)
    with pytest.raises(InputError, match="none.ckpt"):  # prune=0 and null: no pruning
        export_checkpoint(ExportOptions(ckpt=str(tmp_path / "none.ckpt"), prune=0))


def test_fresh_column_passes_batch_size_and_times_out(tmp_path: Path, monkeypatch) -> None:
    """The fresh-process command runs at the bench's batch size; a kdseg-predict that hangs is
    killed after ``timeout_s`` and the row says so (it hung kdseg-bench forever)."""
    from kdseg.deploy import fresh

    entry = {"name": "m", "ckpt": "m.ckpt", "backend": "torch"}
    command = fresh.predict_command(entry, Path("v.nii.gz"), Path("o.nii.gz"), 2, 4)
    assert "batch_size=4" in command and "threads=2" in command
    hang = [sys.executable, "-c", "import time; time.sleep(60)"]
    monkeypatch.setattr(fresh, "predict_command", lambda *a, **k: hang)
    result = fresh.fresh_cli_seconds(entry, tmp_path / "v.nii.gz", 1, 1, {}, 4, timeout_s=0.5)
    assert result == {"fresh_skipped": "kdseg-predict timed out after 0.5 s"}


def test_bench_rows_pair_an_artefact_with_its_older_checkpoint() -> None:
    """A schema-2 artefact writes every preprocessing key; the checkpoint it came from may
    predate some (``roi_components``, ``label_resize``). kdseg-bench's rows hold the settings as
    inference reads them, so the report pairs the two (its "within the limit of PyTorch fp32"
    reference) as it did before."""
    from kdseg.data.preprocess_config import PreprocessConfig
    from kdseg.deploy.artifact import inference_preprocess
    from kdseg.deploy.bench_report import _reference

    full = PreprocessConfig(in_plane_size=(48, 48)).to_dict()
    older = {k: v for k, v in full.items() if k not in ("roi_components", "label_resize")}
    assert older != full
    rows = [
        {"name": n, "ok": True, "backend": b, "precision": "fp32", "source": "a.ckpt",
         "preprocess": inference_preprocess({"preprocess": p})}
        for n, b, p in (("torch", "torch", older), ("onnx", "onnx", full))
    ]  # fmt: skip
    assert _reference(rows, rows[1]) is rows[0]
