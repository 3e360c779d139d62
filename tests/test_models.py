"""Model zoo: sizes, taps, parameter counts, gradients and ONNX export of every network.

Kept small for two shared CPU cores: width 0.25, 35 x 37 inputs (odd on purpose), parameter
counts on the meta device. The ONNX tests are the slow part (the dynamo exporter takes
several seconds per network whatever its width): every student is exported with fixed shapes;
the dynamic batch/H/W export of all eight networks is opt-in (KDSEG_TEST_DYNAMIC_EXPORT=1).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from kdseg.errors import ConfigError, InputError
from kdseg.models import (
    LogitsOnly,
    SegOutput,
    available_models,
    batch_norm_refusal,
    build_from_config,
    build_model,
    model_options,
)
from kdseg.models.cost import (
    PAPER_PARAMS_M,
    ROLES,
    count_params,
    main_table,
    model_cost,
    model_rows,
)
from kdseg.models.layers import adaptive_avg_pool2d, load_encoder_weights, scale_channels
from kdseg.models.registry import _MODELS

#: every network kdseg registers: a new file in kdseg/models/ is tested with no list to edit
#: (a test's own network, registered when its module is imported, is not one of them)
ALL = [n for n in available_models() if _MODELS[n].__module__.startswith("kdseg.models.")]
#: exported with fixed shapes in the default run: every network but the paper's teachers
STUDENTS = [name for name in ALL if ROLES.get(name) != "teacher"]
#: the networks that take ``encoder_weights`` (a local state_dict for their ``encoder``)
ENCODER_WEIGHTS = [name for name in ALL if "encoder_weights" in model_options(name)]
CONF_MODEL = Path(__file__).resolve().parents[1] / "conf" / "model"


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _small(name: str, in_channels: int = 1, num_classes: int = 2) -> nn.Module:
    torch.manual_seed(0)
    return build_model(name, in_channels=in_channels, num_classes=num_classes, width=0.25)


def test_every_network_is_registered():
    """The paper's networks and kdseg's extra ones are found without any list of modules."""
    assert set(ROLES) <= set(ALL)
    assert {"enet", "raunet"} <= set(STUDENTS) | set(ROLES)
    assert "raunet" not in STUDENTS and "enet" in STUDENTS
    assert {"raunet", "resnet18", "resnet18_fpn"} <= set(ENCODER_WEIGHTS)
    assert "enet" not in ENCODER_WEIGHTS


@pytest.mark.parametrize("name", ALL)
def test_every_network_has_its_yaml(name: str):
    """``model=<name>`` (and ``student=<name>``: conf/student links to conf/model) needs
    conf/model/<name>.yaml naming it, whose keys the network takes."""
    from omegaconf import OmegaConf

    path = CONF_MODEL / f"{name}.yaml"
    assert path.is_file(), f"{name} is registered but has no {path}"
    cfg = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    assert cfg["name"] == name
    speed = {"channels_last", "compile"}  # how it runs, not constructor options
    options = set(model_options(name))
    assert {"in_channels", "num_classes", "width"} <= options
    assert set(cfg) - {"name", *speed} <= options, path
    assert (CONF_MODEL.parent / "student" / f"{name}.yaml").is_file()


def test_every_model_yaml_names_a_registered_network():
    assert {p.stem for p in CONF_MODEL.glob("*.yaml")} <= set(ALL)


def test_scale_channels():
    assert scale_channels(64, 1.0) == 64
    assert scale_channels(64, 0.25) == 16
    assert scale_channels(16, 0.25) == 8  # floor
    assert scale_channels(1280, 0.5) == 640


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("in_channels", [1, 3])
def test_output_size_and_taps(name: str, in_channels: int):
    model = _small(name, in_channels, num_classes=3).eval()
    h, w = 35, 37
    with torch.no_grad():
        out = model(torch.randn(1, in_channels, h, w))
    assert isinstance(out, SegOutput)
    assert out.logits.shape == (1, 3, h, w)
    assert {"low", "high"} <= set(out.taps)
    assert set(out.taps) == set(model.tap_info)
    assert model.tap_info["low"].stride == 2
    assert model.tap_info["high"].stride == 8
    for tap_name, tap in out.taps.items():
        info = model.tap_info[tap_name]
        # taps are cropped to the part covering the input: ceil(H / stride) for any padding
        expected = (1, info.channels, math.ceil(h / info.stride), math.ceil(w / info.stride))
        assert tuple(tap.shape) == expected, tap_name


@pytest.mark.parametrize("name", ALL)
def test_logits_exact_for_multiples_of_the_stride(name: str):
    """A 64 x 64 input needs no padding: the crop is the identity, the taps are H/s."""
    model = _small(name).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, 64, 64))
    assert out.logits.shape == (2, 2, 64, 64)
    assert out.taps["high"].shape[-2:] == (8, 8)
    assert out.taps["low"].shape[-2:] == (32, 32)


@pytest.mark.parametrize("name", sorted(PAPER_PARAMS_M))
def test_full_width_params_match_the_paper(name: str):
    with torch.device("meta"):
        model = build_model(name, in_channels=1, num_classes=2, width=1.0)
    params = count_params(model)
    assert params == pytest.approx(PAPER_PARAMS_M[name] * 1e6, rel=0.03), params


@pytest.mark.parametrize("name", ALL)
def test_backward_reaches_the_first_conv(name: str):
    model = _small(name).train()
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first.in_channels == 1
    out = model(torch.randn(1, 1, 35, 37))  # batch 1 must train too
    loss = out.logits.square().mean() + out.taps["high"].mean() + out.taps["low"].mean()
    loss.backward()
    assert first.weight.grad is not None and first.weight.grad.abs().sum() > 0


def test_raunet_full_res_skip_adds_a_stride_one_branch():
    """``full_res_skip`` (beyond the paper): a stride-1 tap feeds the head; off by default."""
    torch.manual_seed(0)
    plain = build_model("raunet", in_channels=5, num_classes=3, width=0.25)
    torch.manual_seed(0)
    model = build_model("raunet", in_channels=5, num_classes=3, width=0.25, full_res_skip=True)
    assert "full" not in plain.tap_info  # the default keeps every checkpoint's keys
    assert not any(k.startswith("full.") for k in plain.state_dict())
    extra = set(model.state_dict()) - set(plain.state_dict())
    assert extra and all(k.startswith("full.") for k in extra)
    assert model.tap_info["full"].stride == 1
    x = torch.randn(2, 5, 35, 37, requires_grad=True)
    out = model.eval()(x)
    assert out.logits.shape == (2, 3, 35, 37)
    assert out.taps["full"].shape == (2, model.tap_info["full"].channels, 35, 37)
    # the logit at one pixel sees that pixel's input through the branch: drop the branch's
    # contribution (zero its last BN's scale and shift) and the gradient there changes
    grad = torch.autograd.grad(out.logits[0, 1, 17, 18], x)[0][0, :, 17, 18]
    with torch.no_grad():
        model.full[1][1].weight.zero_()
        model.full[1][1].bias.zero_()
    without = torch.autograd.grad(model(x).logits[0, 1, 17, 18], x)[0][0, :, 17, 18]
    assert not torch.allclose(grad, without)
    with pytest.raises(ValueError, match="full_res_skip"):
        build_model("raunet", width=0.25, full_res_skip="yes")


def test_no_inplace_activations():
    for name in ALL:
        for module in _small(name).modules():
            assert not getattr(module, "inplace", False), (name, module)


def test_exportable_adaptive_pool_matches_torch():
    x = torch.randn(2, 3, 5, 11)
    for bins in (1, 2, 3, 6):
        expected = torch.nn.functional.adaptive_avg_pool2d(x, bins)
        torch.testing.assert_close(adaptive_avg_pool2d(x, bins), expected)


def _export(model: nn.Module, dynamic: bool):
    """Export ``LogitsOnly(model)`` with the dynamo exporter; return an onnxruntime session."""
    ort = pytest.importorskip("onnxruntime")
    example = torch.randn(2, 1, 64, 64)  # batch 2: a batch of 1 would be specialised
    dynamic_shapes = None
    if dynamic:
        dyn = torch.export.Dim.DYNAMIC
        dynamic_shapes = ({0: dyn, 2: dyn, 3: dyn},)
    program = torch.onnx.export(
        LogitsOnly(model).eval(),
        (example,),
        dynamo=True,
        external_data=False,
        dynamic_shapes=dynamic_shapes,
        optimize=False,
        verbose=False,
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(
        program.model_proto.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def _max_diff(session, model: nn.Module, shape: tuple[int, ...]) -> float:
    x = torch.randn(*shape)  # random normal: no max-pool ties, so ENet's unpooling agrees
    (onnx_out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        torch_out = model(x).logits.numpy()
    assert onnx_out.shape == torch_out.shape
    return float(np.abs(onnx_out - torch_out).max())


@pytest.mark.slow
@pytest.mark.parametrize("name", STUDENTS)
def test_student_exports_to_onnx(name: str):
    model = _small(name).eval()
    session = _export(model, dynamic=False)
    assert _max_diff(session, model, (2, 1, 64, 64)) < 1e-4


@pytest.mark.slow  # dynamic-shape export takes 30-70 s per network: `make test-slow`
@pytest.mark.parametrize("name", ALL)
def test_export_with_dynamic_batch_and_size(name: str):
    """One ONNX graph for every batch and H, W, odd sizes included (padding is in the graph)."""
    model = _small(name).eval()
    session = _export(model, dynamic=True)
    for shape in [(2, 1, 64, 64), (1, 1, 35, 37), (3, 1, 48, 80)]:
        assert _max_diff(session, model, shape) < 1e-4, shape


def test_cost_of_an_instance():
    model = _small("enet")
    cost = model_cost(model, size=64)
    assert cost["params"] == count_params(model)
    assert cost["mult_adds"] > 0
    taps = {t["name"]: t for t in cost["taps"]}
    assert taps["high"]["shape"] == (model.tap_info["high"].channels, 8, 8)
    assert cost["logits_shape"] == (2, 64, 64)
    assert next(model.parameters()).device.type == "cpu"  # the model itself is untouched


def test_cost_table_lists_every_model():
    rows = model_rows(size=64, width=0.25, names=["enet", "resnet18"])
    assert [r["name"] for r in rows] == ["enet", "resnet18"]
    assert rows[1]["mult_adds"] > rows[0]["mult_adds"] > 0
    table = main_table(size=64, width=0.25, names=["enet", "resnet18"])
    assert table.startswith("| Model |")
    assert "| enet | student |" in table and "| resnet18 | student |" in table


def test_cost_table_times_the_forward_pass():
    rows = model_rows(size=32, width=0.25, names=["enet"], time_threads=1)
    assert rows[0]["forward_ms"] > 0
    table = main_table(size=32, width=0.25, names=["enet"], time_threads=1)
    header, _, row = table.splitlines()[:3]
    assert "CPU ms/slice (1 thr)" in header and "GMAC/s" in header
    assert header.count("|") == row.count("|")


@pytest.mark.parametrize("name", ENCODER_WEIGHTS)
def test_encoder_weights_round_trip(name: str, tmp_path):
    source = _small(name)
    path = tmp_path / "encoder.pt"
    torch.save(source.encoder.state_dict(), path)
    torch.manual_seed(1)
    target = build_model(name, width=0.25, encoder_weights=str(path))
    for (key, a), b in zip(
        source.encoder.state_dict().items(), target.encoder.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, msg=key)


def test_encoder_weights_adapt_an_rgb_stem_and_ignore_the_classifier(tmp_path):
    rgb = _small("resnet18", in_channels=3)
    state = {**rgb.encoder.state_dict(), "fc.weight": torch.zeros(10, 128)}
    path = tmp_path / "rgb.pt"
    torch.save({"state_dict": state}, path)
    grey = _small("resnet18", in_channels=1)
    report = load_encoder_weights(grey.encoder, path)
    assert report["unexpected"] == 1 and report["missing"] == 0 and report["mismatched"] == 0
    torch.testing.assert_close(
        grey.encoder.conv1.weight, rgb.encoder.conv1.weight.sum(1, keepdim=True)
    )


def test_encoder_weights_that_do_not_fit_are_a_clear_error(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"backbone.conv.weight": torch.zeros(3)}, path)
    with pytest.raises(InputError, match="no tensor of this file fits"):
        build_model("resnet18", width=0.25, encoder_weights=str(path))
    with pytest.raises(InputError, match="not found"):
        build_model("resnet18", width=0.25, encoder_weights=str(tmp_path / "missing.pt"))


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (
            lambda w: w.flatten().index_fill(0, torch.tensor([5]), math.nan).view_as(w),
            "holds 1 NaN",
        ),
        (lambda w: torch.full_like(w, float("inf")), "NaN or Inf value(s); a damaged file"),
        (lambda w: w.to(torch.int64), "is a int64 tensor, where the encoder's is floating"),
        (lambda w: w > 0, "is a bool tensor, where the encoder's is floating point"),
    ],
)
def test_encoder_weights_with_nan_or_a_non_float_tensor_are_refused(tmp_path, damage, words):
    """A NaN/Inf weight made every prediction NaN from the first step, and an int or bool
    tensor loaded silently cast (a bool weight of 0/1): both are refused naming the file and
    the key, and the encoder keeps its weights. The RGB stem (adapted) is checked too."""
    source = _small("resnet18", in_channels=3)
    for key in ("layer1.0.conv1.weight", "conv1.weight"):
        state = source.encoder.state_dict()
        state[key] = damage(state[key])
        path = tmp_path / "encoder.pt"
        torch.save(state, path)
        target = _small("resnet18")
        before = {k: v.clone() for k, v in target.encoder.state_dict().items()}
        with pytest.raises(InputError, match=re.escape(words)) as refused:
            load_encoder_weights(target.encoder, path)
        assert str(refused.value).startswith(f"{path}: encoder weights: {key} ")
        for k, v in target.encoder.state_dict().items():
            assert torch.equal(v, before[k]), k
    state = source.encoder.state_dict()  # the int64 BatchNorm counters stay fine
    state["bn1.num_batches_tracked"] = torch.tensor(7)
    torch.save(state, tmp_path / "fine.pt")
    assert load_encoder_weights(_small("resnet18").encoder, tmp_path / "fine.pt")["loaded"] > 0


@pytest.mark.parametrize("name", ALL)
def test_bad_constructor_values_are_config_errors_naming_the_option(name: str):
    """Width 0 or negative failed as a ValueError deep inside a constructor, width NaN or
    1e308 as an OverflowError, and in_channels=0 / num_classes=0 built a network with zero
    channels: every network refuses them once, in the registry, naming ``model.<option>``."""
    options = model_options(name)
    cases = [
        ({"width": 0}, "model.width 0: must be a number above 0 and at most 64"),
        ({"width": -0.5}, "model.width -0.5"),
        ({"width": float("nan")}, "model.width nan"),
        ({"width": 1e308}, "model.width 1e+308"),
        ({"width": "1"}, "model.width '1'"),
        ({"in_channels": 0}, "model.in_channels 0: must be a whole number >= 1"),
        ({"num_classes": 0}, "model.num_classes 0: must be a whole number >= 1"),
        ({"num_classes": -2}, "model.num_classes -2"),
        ({"in_channels": True}, "model.in_channels True"),
        ({"in_channels": 1.5}, "model.in_channels 1.5"),
        *[({k: 0}, f"model.{k} 0") for k in ("base", "fpn_channels", "head_channels")],
        ({"dropout": 1.5}, "model.dropout 1.5: must be a number from 0 to 1"),
    ]
    for values, words in cases:
        if not set(values) <= set(options):
            continue
        config = {"name": name, "width": 0.25, **values}
        with pytest.raises(ConfigError, match=re.escape(words)):
            build_from_config(config)
        with torch.device("meta"), pytest.raises(ConfigError, match=re.escape(words)):
            build_model(**config)
    with torch.device("meta"):
        build_model(name, in_channels=1, num_classes=1, width=64)  # the bounds themselves


def test_an_unknown_model_name_is_a_config_error():
    """``model.name: nonet`` was a KeyError traceback; a list or a mapping, a TypeError."""
    for name in ("nonet", None, ["enet"], {"enet": 1}):
        with pytest.raises(ConfigError, match=r"model.name .*: unknown model; registered: enet"):
            build_from_config({"name": name, "width": 0.25})
    with pytest.raises(ConfigError, match="model.name 'nonet'"):
        model_options("nonet")


@pytest.mark.parametrize("name", ALL)
def test_batch_norm_refusal_finds_a_one_by_one_map_on_the_meta_device(name: str):
    """A batch of one slice so small that a BatchNorm layer sees 1 x 1 is told (the training
    check of kdseg.lit.train refuses it); two slices, or larger ones, are not. The global
    random stream is left as it was (the run's draws after the check are unchanged)."""
    config = {"name": name, "in_channels": 1, "num_classes": 2, "width": 0.25}
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    small = batch_norm_refusal(config, (1, 1, 32, 32))
    assert torch.equal(torch.rand(3), expected)
    assert batch_norm_refusal(config, (2, 1, 32, 32)) is None
    assert batch_norm_refusal(config, (1, 1, 64, 64)) is None
    if name in ("raunet", "resnet18", "resnet18_fpn"):  # layer4, stride 32: 1 x 1 at 32 x 32
        assert small is not None and "Expected more than 1 value per channel" in small
        with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
            build_model(name, width=0.25).train()(torch.randn(1, 1, 32, 32))
    else:
        assert small is None


def test_the_batch_norm_check_passes_sync_batchnorm_over_several_processes():
    """SyncBatchNorm takes its statistics over every process's batch (torch refuses one value
    only in a world of one): ``trainer.sync_batchnorm`` over 2 processes trains a batch of 1
    on small slices, and the check let it through only without that option."""
    from types import SimpleNamespace

    from kdseg.errors import ConfigError
    from kdseg.lit.train import check_batch_norm

    model = {"name": "resnet18", "in_channels": 1, "num_classes": 2, "width": 0.25}
    module = SimpleNamespace(hparams={"model": model})
    data = SimpleNamespace(cfg=SimpleNamespace(batch_size=1), training_sizes=lambda: [(32, 32)])
    synced = {"accelerator": "cpu", "sync_batchnorm": True}
    for trainer in (None, {**synced, "devices": 1}, {"devices": 2, "accelerator": "cpu"}):
        with pytest.raises(ConfigError, match="data.batch_size 1 with 32 x 32"):
            check_batch_norm(module, data, 1, trainer)
    check_batch_norm(module, data, 1, {**synced, "devices": 2})
    check_batch_norm(module, data, 1, {**synced, "devices": 1, "num_nodes": 2})


def test_a_checkpoint_loads_without_its_encoder_weights_file(tmp_path):
    """``encoder_weights`` initialises training only: the checkpoint's own weights replace it,
    so the checkpoint loads on a machine without the file (or after it moved)."""
    from kdseg.data.preprocess_config import PreprocessConfig
    from kdseg.eval.checkpoint import NET_PREFIX, load_bundle

    encoder = tmp_path / "imagenet.pt"
    torch.save(_small("resnet18").encoder.state_dict(), encoder)
    model = {"name": "resnet18", "in_channels": 1, "num_classes": 2, "width": 0.25}
    model["encoder_weights"] = str(encoder)
    torch.manual_seed(1)
    net = build_model(**model).eval()
    data = {"task": "organ", "context": 0, "in_channels": 1, "num_classes": 2}
    data["preprocess"] = PreprocessConfig().to_dict()
    state = {f"{NET_PREFIX}{k}": v for k, v in net.state_dict().items()}
    ckpt = tmp_path / "best.ckpt"
    torch.save({"hyper_parameters": {"model": model, "data": data}, "state_dict": state}, ckpt)
    encoder.unlink()
    bundle = load_bundle(ckpt)
    x = torch.randn(1, 1, 35, 37)
    with torch.no_grad():
        torch.testing.assert_close(bundle.model(x).logits, net(x).logits, rtol=0, atol=0)
    with pytest.raises(InputError, match="not found"):  # training still needs the file
        build_from_config(model)


def test_enet_refuses_a_stage_narrower_than_its_initial_block():
    """Width 0.125 with 5 input channels (data.context=2): the initial block has 9 channels and
    stage 1 only 8; the main path's zero-padding would be negative and drop one silently."""
    build_model("enet", in_channels=3, width=0.125)  # 8 -> 8: fine
    with pytest.raises(ValueError, match="fewer than the initial block's 9"):
        build_model("enet", in_channels=5, width=0.125)


def test_cost_table_compares_with_the_paper_only_at_its_settings():
    """The paper's counts are at in_channels=1, num_classes=2, width=1: at width 0.25 the
    table must not report ResNet18 as "-94%" of the paper's."""
    narrow = main_table(size=32, width=0.25, names=["resnet18"])
    assert "| 11.2 |" in narrow and "%" not in narrow.split("\n")[2]
    full = main_table(size=32, names=["resnet18"])
    assert "| 11.2 (-0.3%) |" in full
