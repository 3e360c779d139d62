"""Distillation losses, adapters, criterion and the conf/distill YAMLs (tiny CPU tensors)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kdseg.distill.adapters import ChannelAdapter, resize_labels, resize_to
from kdseg.distill.criterion import build_criterion, warmup_factor
from kdseg.distill.losses import available_losses, build_loss, loss_class
from kdseg.models.taps import SegOutput, TapInfo

torch.set_num_threads(1)

NUM_CLASSES = 3
#: every registered loss: a new file in kdseg/distill/losses/ is tested with no list to edit
LOSSES = available_losses()
#: the paper's and the baselines' losses, which must stay registered
PAPER_LOSSES = ["pmd", "kd", "imd", "at", "rad", "cwd", "skd"]
SPATIAL = {2: (8, 8), 3: (4, 6, 6)}
CONF_DIR = Path(__file__).resolve().parents[1] / "conf" / "distill"
#: every method preset: a new YAML in conf/distill/ is composed and built with no list to edit
PRESETS = sorted(p.stem for p in CONF_DIR.glob("*.yaml"))


def _loss(name: str, **options):
    if loss_class(name).needs_labels:
        options.setdefault("num_classes", NUM_CLASSES)
    return build_loss(name, **options)


def _labels(batch: int, size: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Random labels in which every class occurs in every image."""
    labels = torch.randint(0, NUM_CLASSES, (batch, *size), generator=generator)
    flat = labels.view(batch, -1)
    flat[:, :NUM_CLASSES] = torch.arange(NUM_CLASSES)
    return labels


def _pair(dims: int, channels: int = 3, batch: int = 2):
    g = torch.Generator().manual_seed(dims)
    size = SPATIAL[dims]
    student = torch.randn(batch, channels, *size, generator=g)
    teacher = torch.randn(batch, channels, *size, generator=g)
    return student, teacher, _labels(batch, size, g)


def test_registry_has_every_method_and_aliases_share_code():
    assert set(PAPER_LOSSES) <= set(LOSSES)
    #: beyond the paper: class-balanced KD / PMD, KD inside the dilated organ, DIST (NeurIPS
    #: 2022), DKD (CVPR 2022), logit matching (Ba & Caruana, NeurIPS 2014)
    assert {"kd_balanced", "pmd_balanced", "kd_region", "dist", "dkd", "mse"} <= set(LOSSES)
    assert loss_class("kd") is loss_class("pmd")
    assert loss_class("at") is loss_class("imd")
    assert build_loss("pmd").temperature == 4.0 and build_loss("kd").temperature == 1.0
    assert (build_loss("imd").power, build_loss("at").power) == (4.0, 2.0)
    assert loss_class("rad").needs_labels and not loss_class("imd").needs_labels
    assert loss_class("cwd").needs_equal_channels and not loss_class("skd").needs_equal_channels
    assert loss_class("kd_balanced") is loss_class("pmd_balanced")
    assert (build_loss("pmd_balanced").temperature, build_loss("kd_balanced").temperature) == (4, 1)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("name", LOSSES)
def test_zero_when_equal_positive_when_different(name: str, dims: int):
    student, teacher, labels = _pair(dims)
    loss = _loss(name)
    same = loss(teacher.clone(), teacher, labels)
    assert same.ndim == 0
    assert same.abs().item() < 1e-6
    assert loss(student, teacher, labels).item() > 0


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("name", LOSSES)
def test_gradient_reaches_student_never_teacher(name: str, dims: int):
    student, teacher, labels = _pair(dims)
    student.requires_grad_(True)
    teacher.requires_grad_(True)
    _loss(name)(student, teacher, labels).backward()
    assert student.grad is not None and torch.isfinite(student.grad).all()
    assert student.grad.abs().sum() > 0
    assert teacher.grad is None


@pytest.mark.parametrize("name", LOSSES)
def test_spatial_sizes_may_differ(name: str):
    g = torch.Generator().manual_seed(0)
    student = torch.randn(2, 3, 8, 8, generator=g, requires_grad=True)
    teacher = torch.randn(2, 3, 4, 4, generator=g)
    value = _loss(name)(student, teacher, _labels(2, (16, 16), g))
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(student.grad).all()


def test_pmd_is_pixelwise_hinton_kd():
    student, teacher, _ = _pair(2)
    temperature = 4.0
    pixels = lambda x: x.movedim(1, -1).reshape(-1, x.shape[1]) / temperature  # noqa: E731
    expected = F.kl_div(
        F.log_softmax(pixels(student), 1), F.softmax(pixels(teacher), 1), reduction="batchmean"
    )
    actual = build_loss("pmd", temperature=temperature)(student, teacher)
    torch.testing.assert_close(actual, expected * temperature**2)


@pytest.mark.parametrize("dims", [2, 3])
def test_mse_is_ba_and_caruanas_logit_regression(dims: int):
    """Ba & Caruana 2014: 1/2 the squared L2 distance of the logit vectors, each pixel (voxel)
    a sample: the mean over B and the pixels of the sum over the classes."""
    student, teacher, _ = _pair(dims)
    pixels = lambda x: x.movedim(1, -1).reshape(-1, x.shape[1])  # noqa: E731
    expected = 0.5 * (pixels(student) - pixels(teacher)).square().sum(1).mean()
    torch.testing.assert_close(build_loss("mse")(student, teacher), expected)
    # logits, not probabilities: a constant added to every class changes the loss (KD's not)
    shifted = teacher + 2.0
    assert build_loss("mse")(shifted, teacher).item() == pytest.approx(0.5 * 4.0 * 3)
    assert build_loss("kd")(shifted, teacher).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("dims", [2, 3])
def test_cwd_is_a_spatial_softmax_kl_per_channel(dims: int):
    """CWD (Shu et al. 2021, eq. 3-4): each channel's map is a distribution over the
    locations, KL(teacher || student) per channel, mean over (B, C), times T^2. A softmax
    over the channels instead (what pixel KD does) gives another number."""
    student, teacher, _ = _pair(dims, channels=4)
    temperature = 2.0
    flat = lambda x: x.flatten(2).reshape(-1, math.prod(x.shape[2:])) / temperature  # noqa: E731
    expected = F.kl_div(
        F.log_softmax(flat(student), 1), F.softmax(flat(teacher), 1), reduction="batchmean"
    )  # batchmean over the B * C rows: one distribution per (image, channel)
    actual = build_loss("cwd", temperature=temperature)(student, teacher)
    torch.testing.assert_close(actual, expected * temperature**2)
    # a constant added to a whole channel map changes no spatial softmax: CWD ignores it
    shifted = student + torch.arange(4.0).view(1, 4, *([1] * dims)) * 5
    torch.testing.assert_close(build_loss("cwd", temperature=temperature)(shifted, teacher), actual)


def test_imd_and_at_differ_only_in_normalisation():
    student, teacher, _ = _pair(2)
    pixels = math.prod(SPATIAL[2])
    summed = build_loss("imd", power=2)(student, teacher)
    torch.testing.assert_close(build_loss("at")(student, teacher), summed / pixels)


def _rad_example() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two 2x2 feature maps, labels at 4x4 (top half background, bottom half foreground).

    Image 0: student bg pixels (1,0), (3,0) -> mean (2,0); fg (1,1), (1,1) -> (1,1);
    cos = 2 / (2 * sqrt 2) = 1/sqrt 2. Teacher (3 channels): bg (0,0,1), fg (1,0,0) -> cos 0.
    Loss = (1/sqrt 2 - 0)^2 = 0.5. Image 1 is all background: no pair, excluded.
    """
    student = torch.tensor([[[1.0, 3.0], [1.0, 1.0]], [[0.0, 0.0], [1.0, 1.0]]])
    teacher = torch.zeros(3, 2, 2)
    teacher[2, 0, :] = 1.0
    teacher[0, 1, :] = 1.0
    labels = torch.zeros(2, 4, 4, dtype=torch.long)
    labels[0, 2:, :] = 1
    return torch.stack([student, student + 1]), torch.stack([teacher, -teacher]), labels


@pytest.mark.parametrize("num_classes", [2, 3])
def test_rad_hand_computed_with_absent_classes(num_classes: int):
    student, teacher, labels = _rad_example()
    student.requires_grad_(True)
    value = build_loss("rad", num_classes=num_classes)(student, teacher, labels)
    torch.testing.assert_close(value, torch.tensor(0.5), atol=1e-5, rtol=0)
    value.backward()
    assert torch.isfinite(student.grad).all()


def test_rad_batch_without_any_pair_is_zero_not_nan():
    student, teacher, labels = _rad_example()
    student.requires_grad_(True)
    value = build_loss("rad", num_classes=3)(student, teacher, torch.zeros_like(labels))
    value.backward()
    assert value.item() == 0.0 and torch.isfinite(student.grad).all()


def test_adapter_is_a_1x1_conv_in_2d_and_3d():
    adapter = ChannelAdapter(4, 6)
    conv = torch.nn.Conv2d(4, 6, 1)
    conv.weight.data = adapter.weight.data.view(6, 4, 1, 1).clone()
    conv.bias.data = adapter.bias.data.clone()
    x = torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(adapter(x), conv(x))
    assert adapter(torch.randn(1, 4, 2, 3, 3)).shape == (1, 6, 2, 3, 3)


def test_resize_helpers():
    labels = torch.tensor([[[0, 0, 2, 2], [0, 0, 2, 2], [1, 1, 1, 1], [1, 1, 1, 1]]])
    expected = torch.tensor([[[0, 2], [1, 1]]])
    assert torch.equal(resize_labels(labels, (2, 2)), expected)
    assert torch.equal(resize_labels(labels[:, None], (2, 2)), expected)
    x = torch.randn(1, 2, 3, 4, 4)
    assert resize_to(x, (3, 4, 4)) is x
    assert resize_to(x, (6, 8, 8)).shape == (1, 2, 6, 8, 8)


@pytest.mark.parametrize(
    ("shape", "stride"),
    [
        (shape, stride)
        for shape in [(96, 96), (384, 384), (16, 96, 96)]
        for stride in [2, 4, 8, 16, 32]
        if all(n % stride == 0 for n in shape)
    ],
)
def test_stride_aligned_labels_equal_nearest_on_multiples_of_the_stride(
    shape: tuple[int, ...], stride: int
):
    """Every recorded run's sizes (64, 96, 144, 216, 288, 384 with RAD on taps of stride 2
    and 8) are multiples of the tap's stride: there the stride-aligned labels are nearest's."""
    labels = torch.randint(0, 3, (2, *shape), generator=torch.Generator().manual_seed(stride))
    size = tuple(n // stride for n in shape)
    nearest = F.interpolate(labels[:, None].float(), size=size, mode="nearest")[:, 0].long()
    assert torch.equal(resize_labels(labels, size, stride), nearest)
    assert torch.equal(resize_labels(labels, size), nearest)


def test_stride_aligned_labels_sample_each_cell_of_the_tap():
    """H = 97, W = 83, stride 8: the tap is 13 x 11, its pixel i covers rows [8i, 8i + 8);
    each takes the label of its cell's first pixel (nearest drifts up to a cell: rows 0, 7,
    ..., 89). 3-D alike. A size the stride does not give falls back to nearest."""
    rows = torch.arange(97)[:, None].expand(97, 83)
    cols = torch.arange(83)[None, :].expand(97, 83)
    labels = ((rows // 8) * 100 + cols // 8)[None]  # each pixel's cell, as a label
    aligned = resize_labels(labels, (13, 11), 8)
    cells = torch.arange(13)[:, None] * 100 + torch.arange(11)[None, :]
    assert torch.equal(aligned[0], cells)
    nearest = resize_labels(labels, (13, 11))
    assert not torch.equal(nearest, aligned)
    assert resize_labels(labels[:, None], (13, 11), 8).shape == (1, 13, 11)
    volume = torch.arange(9 * 10 * 11).view(1, 9, 10, 11)
    assert torch.equal(resize_labels(volume, (3, 3, 3), 4), volume[:, ::4, ::4, ::4])
    # a map the stride does not give (e.g. stored predictions of another size): nearest
    assert torch.equal(resize_labels(labels, (5, 5), 8), resize_labels(labels, (5, 5)))


@pytest.mark.parametrize("loss", ["rad", "kd_balanced", "kd_region", "dkd"])
def test_criterion_samples_labels_on_the_taps_cells(loss: str):
    """Through the criterion, a loss given input-size labels (97 x 83) sees on a stride-8 tap
    exactly the labels of the tap's cells: the same value as labels given at the tap's size."""
    g = torch.Generator().manual_seed(5)
    taps = {"low": TapInfo(3, 2), "high": TapInfo(NUM_CLASSES, 8)}
    term = {"loss": loss, "weight": 1.0, "student_tap": "high", "teacher_tap": "high"}
    criterion = build_criterion([term], taps, taps, NUM_CLASSES)

    def out() -> SegOutput:
        tap = torch.randn((2, NUM_CLASSES, 13, 11), generator=g)
        return SegOutput(torch.randn((2, NUM_CLASSES, 97, 83), generator=g), {"high": tap})

    student, teacher = out(), out()
    labels = _labels(2, (97, 83), g)
    on_cells = labels[:, ::8, ::8]
    whole, _ = criterion(student, teacher, labels)
    at_tap, _ = criterion(student, teacher, on_cells)
    assert torch.equal(whole, at_tap)
    drifted = resize_labels(labels, (13, 11))  # what nearest gave
    assert not torch.equal(drifted, on_cells)


STUDENT_TAPS = {"low": TapInfo(4, 2), "high": TapInfo(6, 8)}
TEACHER_TAPS = {"low": TapInfo(5, 2), "high": TapInfo(7, 8), "stage4": TapInfo(9, 16)}
MISMATCHED_TERMS = [
    {"loss": "pmd", "weight": 0.1, "student_tap": "logits", "teacher_tap": "logits"},
    {"loss": "imd", "weight": 0.9, "student_tap": "low", "teacher_tap": "low"},
    {"loss": "rad", "weight": 0.9, "student_tap": "high", "teacher_tap": "high"},
    {"loss": "cwd", "weight": 1.0, "student_tap": "high", "teacher_tap": "high"},
    {"name": "cwd_x", "loss": "cwd", "weight": 1.0, "student_tap": "low", "teacher_tap": "stage4"},
    {"loss": "skd", "weight": 0.5, "student_tap": "high", "options": {"grid": 2}},
    {"loss": "at", "weight": 0.0, "student_tap": "low", "teacher_tap": "low"},
]


def _outputs(dims: int, g: torch.Generator) -> tuple[SegOutput, SegOutput, torch.Tensor]:
    size = 16  # stage4 (stride 8 here) must keep > 1 location for CWD's spatial softmax
    shape = lambda c, s: (2, c, *(s,) * dims)  # noqa: E731
    student = SegOutput(
        torch.randn(shape(NUM_CLASSES, size), generator=g, requires_grad=True),
        {"low": torch.randn(shape(4, size // 2), generator=g, requires_grad=True),
         "high": torch.randn(shape(6, size // 8), generator=g, requires_grad=True)},
    )  # fmt: skip
    teacher = SegOutput(
        torch.randn(shape(NUM_CLASSES, size), generator=g, requires_grad=True),
        {"low": torch.randn(shape(5, size // 4), generator=g, requires_grad=True),
         "high": torch.randn(shape(7, size // 4), generator=g, requires_grad=True),
         "stage4": torch.randn(shape(9, size // 8), generator=g, requires_grad=True)},
    )  # fmt: skip
    return student, teacher, _labels(2, (size,) * dims, g)


@pytest.mark.parametrize("dims", [2, 3])
def test_criterion_with_mismatched_taps_runs_forward_and_backward(dims: int):
    criterion = build_criterion(MISMATCHED_TERMS, STUDENT_TAPS, TEACHER_TAPS, NUM_CLASSES)
    assert set(criterion.adapters) == {"cwd_high", "cwd_x"}  # only where channels must match
    assert criterion.needs_labels
    student, teacher, labels = _outputs(dims, torch.Generator().manual_seed(dims))
    total, parts = criterion(student, teacher, labels)
    assert list(parts) == ["pmd", "imd_low", "rad_high", "cwd_high", "cwd_x", "skd_high"]
    weights = {"pmd": 0.1, "imd_low": 0.9, "rad_high": 0.9, "skd_high": 0.5}
    expected = sum(weights.get(name, 1.0) * value for name, value in parts.items())
    torch.testing.assert_close(total.detach(), expected)
    total.backward()
    for tensor in [student.logits, *student.taps.values()]:
        assert tensor.grad is not None and torch.isfinite(tensor.grad).all()
    for tensor in [teacher.logits, *teacher.taps.values()]:
        assert tensor.grad is None
    for param in criterion.adapters.parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0


@pytest.mark.parametrize("tap", ["logits", "high"])
@pytest.mark.parametrize("name", LOSSES)
def test_every_loss_is_a_criterion_term(name: str, tap: str):
    """Any registered loss works as a term of a method, on logits or on a tap whose channels
    and size differ between the networks (the criterion adds the adapter it needs)."""
    term = {"loss": name, "weight": 0.5, "student_tap": tap, "teacher_tap": tap}
    criterion = build_criterion([term], STUDENT_TAPS, TEACHER_TAPS, NUM_CLASSES)
    assert bool(criterion.adapters) == (tap != "logits" and loss_class(name).needs_equal_channels)
    student, teacher, labels = _outputs(2, torch.Generator().manual_seed(0))
    total, parts = criterion(student, teacher, labels)
    assert list(parts) == [f"{name}_{tap}" if tap != "logits" else name]
    assert torch.isfinite(total) and total.item() > 0
    total.backward()
    grad = student.logits.grad if tap == "logits" else student.taps[tap].grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_empty_criterion_gives_zero():
    criterion = build_criterion({}, STUDENT_TAPS, TEACHER_TAPS, NUM_CLASSES)
    student, teacher, labels = _outputs(2, torch.Generator().manual_seed(0))
    total, parts = criterion(student, teacher, labels)
    assert total.item() == 0.0 and parts == {} and not criterion.needs_labels


@pytest.mark.parametrize(
    ("term", "message"),
    [
        ({"loss": "nope", "weight": 1.0, "student_tap": "low"}, "unknown loss 'nope'.*imd.*pmd"),
        ({"loss": "imd", "weight": 1.0, "student_tap": "mid"}, "unknown student tap 'mid'.*high"),
        (
            {"loss": "imd", "weight": 1.0, "student_tap": "low", "teacher_tap": "stage9"},
            "unknown teacher tap 'stage9'.*stage4",
        ),
        (
            {"loss": "imd", "weight": 1.0, "student_tap": "low", "options": {"temp": 2}},
            "unknown option.*temp.*power",
        ),
        ({"loss": "imd", "wieght": 1.0, "student_tap": "low"}, "unknown key.*wieght"),
        ({"loss": "imd", "weight": -1.0, "student_tap": "low"}, "weight must be"),
        ({"loss": "imd", "student_tap": "low"}, "missing key.*weight"),
    ],
)
def test_config_validation(term: dict, message: str):
    with pytest.raises(ValueError, match=message):
        build_criterion([term], STUDENT_TAPS, TEACHER_TAPS, NUM_CLASSES)


def test_duplicate_term_names_rejected():
    term = {"loss": "imd", "weight": 1.0, "student_tap": "low"}
    with pytest.raises(ValueError, match="duplicate.*imd_low"):
        build_criterion([term, term], STUDENT_TAPS, TEACHER_TAPS, NUM_CLASSES)


EXPECTED_ACTIVE = {
    "emkd": {"pmd", "imd_low", "imd_high", "rad_low", "rad_high"},
    "emkd_pmd": {"pmd"},
    "emkd_imd": {"imd_low", "imd_high"},
    "emkd_rad": {"rad_low", "rad_high"},
    "emkd_pmd_imd": {"pmd", "imd_low", "imd_high"},
    "emkd_pmd_rad": {"pmd", "rad_low", "rad_high"},
    "emkd_imd_rad": {"imd_low", "imd_high", "rad_low", "rad_high"},
    "none": set(),
    "kd": {"kd"},
    "at": {"at_low", "at_high"},
    "cwd": {"cwd"},
    "skd": {"skd_high"},
    "emkd_balanced": {"pmd", "imd_low", "imd_high", "rad_low", "rad_high"},
    "emkd_warmup": {"pmd", "imd_low", "imd_high", "rad_low", "rad_high"},
    "kd_balanced": {"kd"},
    "kd_region": {"kd"},
    "dist": {"dist"},
    "dkd": {"dkd"},
    "logit_mse": {"mse"},
    # study v5's variants of emkd_balanced
    "emkd_balanced_pmd1": {"pmd", "imd_low", "imd_high", "rad_low", "rad_high"},
    "emkd_balanced_t1": {"pmd", "imd_low", "imd_high", "rad_low", "rad_high"},
    "emkd_balanced_region": {"pmd", "imd_low", "imd_high", "rad_low", "rad_high", "kd_region"},
    # study v10's: the same terms on a CutMix that teacher and student both see
    "emkd_balanced_region_cutmix": {
        "pmd",
        "imd_low",
        "imd_high",
        "rad_low",
        "rad_high",
        "kd_region",
    },
    # study v6's variants of emkd_balanced_region
    "emkd_balanced_region_imd2": {"pmd", "imd_low", "imd_high", "rad_low", "rad_high", "kd_region"},
    "emkd_balanced_region_at": {
        *("pmd", "imd_low", "imd_high", "rad_low", "rad_high", "kd_region", "at_low", "at_high")
    },
    "emkd_balanced_region_w2": {"pmd", "imd_low", "imd_high", "rad_low", "rad_high", "kd_region"},
}
#: warm-up of each preset (beyond the paper); every other preset has none
EXPECTED_WARMUP = {
    "emkd_balanced": 0.2,
    "emkd_warmup": 0.2,
    "dkd": 0.08,
    "emkd_balanced_pmd1": 0.2,
    "emkd_balanced_t1": 0.2,
    "emkd_balanced_region": 0.2,
    "emkd_balanced_region_cutmix": 0.2,
    "emkd_balanced_region_imd2": 0.2,
    "emkd_balanced_region_at": 0.2,
    "emkd_balanced_region_w2": 0.2,
}


def test_every_distill_yaml_composes_and_builds():
    hydra = pytest.importorskip("hydra")
    from omegaconf import OmegaConf

    assert set(EXPECTED_ACTIVE) <= set(PRESETS)  # the pinned presets are all still there
    built = {}
    with hydra.initialize_config_dir(config_dir=str(CONF_DIR.parent), version_base="1.3"):
        for config in PRESETS:  # every file: a new one needs no entry here
            cfg = hydra.compose(config_name=None, overrides=[f"+distill={config}"]).distill
            assert cfg.name == config
            assert cfg.get("mix") == ("cutmix" if config.endswith("_cutmix") else None), config
            terms = OmegaConf.to_container(cfg.terms, resolve=True)
            warmup = cfg.get("warmup", 0.0)
            built[config] = build_criterion(terms, STUDENT_TAPS, TEACHER_TAPS, NUM_CLASSES, warmup)
            active = {t.name for t in built[config].terms}
            assert active == EXPECTED_ACTIVE.get(config, active), config
            assert active or config == "none", f"{config}: no term of weight > 0"
            assert built[config].warmup == EXPECTED_WARMUP.get(config, warmup), config
    emkd = {t.name: t for t in built["emkd"].terms}  # the paper recipe
    assert emkd["pmd"].weight == 0.1 and emkd["pmd"].options == {"temperature": 4.0}
    assert all(emkd[n].weight == 0.9 for n in ["imd_low", "imd_high", "rad_low", "rad_high"])
    assert {t.loss for t in emkd.values()} == {"pmd", "imd", "rad"}
    balanced = {t.name: t for t in built["emkd_balanced"].terms}  # EMKD but a balanced PMD
    assert balanced["pmd"].loss == "pmd_balanced" and balanced["pmd"].weight == 0.1
    assert {n: (t.loss, t.weight, t.options) for n, t in balanced.items() if n != "pmd"} == {
        n: (t.loss, t.weight, t.options) for n, t in emkd.items() if n != "pmd"
    }
    # the v5 variants: emkd_balanced with one change each
    variants = {
        v: {t.name: t for t in built[v].terms}
        for v in ("emkd_balanced_pmd1", "emkd_balanced_t1", "emkd_balanced_region")
    }
    assert variants["emkd_balanced_pmd1"]["pmd"].weight == 1.0
    assert variants["emkd_balanced_pmd1"]["pmd"].options == {"temperature": 4.0}
    assert variants["emkd_balanced_t1"]["pmd"].weight == 1.0
    assert variants["emkd_balanced_t1"]["pmd"].options == {"temperature": 1.0}
    region = variants["emkd_balanced_region"]
    cutmix = {t.name: t for t in built["emkd_balanced_region_cutmix"].terms}
    assert cutmix == region  # the mix changes the images the terms see, not the terms
    assert region["kd_region"].loss == "kd_region" and region["kd_region"].weight == 1.0
    assert region["kd_region"].options == {"temperature": 1.0, "dilation": 4}
    for terms in variants.values():
        assert all(terms[n].loss == "pmd_balanced" for n in ["pmd"])
        assert {
            n: (t.loss, t.weight, t.options) for n, t in terms.items() if n in emkd and n != "pmd"
        } == {n: (t.loss, t.weight, t.options) for n, t in emkd.items() if n != "pmd"}

    # the v6 variants: emkd_balanced_region with one change each
    v6 = {
        v: {t.name: t for t in built[v].terms}
        for v in EXPECTED_ACTIVE
        if "region_" in v and not v.endswith("_cutmix")
    }
    assert v6["emkd_balanced_region_imd2"]["imd_low"].weight == 1.8
    assert v6["emkd_balanced_region_imd2"]["imd_high"].weight == 1.8
    assert v6["emkd_balanced_region_w2"]["kd_region"].weight == 2.0
    at = {t.name: t for t in built["at"].terms}
    assert {n: (t.loss, t.weight, t.options) for n, t in v6["emkd_balanced_region_at"].items()} == {
        **{n: (t.loss, t.weight, t.options) for n, t in region.items()},
        **{n: (t.loss, t.weight, t.options) for n, t in at.items()},
    }
    for name, terms in v6.items():
        changed = {"imd2": {"imd_low", "imd_high"}, "w2": {"kd_region"}, "at": set()}
        same = set(region) - changed[name.rsplit("_", 1)[1]]
        assert {n: (terms[n].loss, terms[n].weight, terms[n].options) for n in same} == {
            n: (region[n].loss, region[n].weight, region[n].options) for n in same
        }


# -- beyond the paper: class balance, region, DIST, warm-up ----------------------------------


def _per_pixel_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float):
    pixels = lambda x: x.movedim(1, -1).reshape(-1, x.shape[1]) / temperature  # noqa: E731
    kl = F.kl_div(
        F.log_softmax(pixels(student), 1), F.log_softmax(pixels(teacher), 1), log_target=True,
        reduction="none",
    )  # fmt: skip
    return kl.sum(1) * temperature**2  # (B * N,) in the order of labels.flatten()


@pytest.mark.parametrize("dims", [2, 3])
def test_balanced_kd_averages_within_classes_then_over_classes(dims: int):
    student, teacher, labels = _pair(dims)
    labels[labels == 2] = 0  # class 2 absent from the labels: it must not count as a class
    labels.view(2, -1)[1, :3] = -1  # three unlabeled pixels: they take the teacher's class
    kl = _per_pixel_kl(student, teacher, 4.0)
    classes = torch.where(labels >= 0, labels, teacher.argmax(1)).flatten()
    present = [c for c in range(NUM_CLASSES) if (classes == c).any()]
    expected = torch.stack([kl[classes == c].mean() for c in present]).mean()
    actual = build_loss("pmd_balanced")(student, teacher, labels)
    torch.testing.assert_close(actual, expected)
    # no labels at all: the teacher's argmax classes
    by_teacher = teacher.argmax(1).flatten()
    expected = torch.stack([kl[by_teacher == c].mean() for c in by_teacher.unique()]).mean()
    torch.testing.assert_close(build_loss("pmd_balanced")(student, teacher, None), expected)


def test_balanced_kd_gives_a_rare_class_the_weight_of_the_background():
    """One tumor pixel in 64: pixel KD barely sees its error, the balanced loss weighs it 1/2."""
    teacher = torch.zeros(1, 2, 8, 8)
    teacher[:, 0] = 4.0
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    labels[0, 3, 3] = 1
    teacher[0, :, 3, 3] = torch.tensor([-4.0, 4.0])
    student = teacher.clone()
    student[0, :, 3, 3] = torch.tensor([4.0, -4.0])  # the student erased the tumor
    tumor_kl = _per_pixel_kl(student, teacher, 1.0).max()
    torch.testing.assert_close(build_loss("kd")(student, teacher, labels), tumor_kl / 64)
    torch.testing.assert_close(build_loss("kd_balanced")(student, teacher, labels), tumor_kl / 2)


@pytest.mark.parametrize("dims", [2, 3])
def test_region_dilation_matches_scipy_box_dilation(dims: int):
    from scipy import ndimage

    from kdseg.distill.losses.region import dilate

    mask = torch.zeros(2, *SPATIAL[dims], dtype=torch.bool)
    mask[(0, *(1,) * dims)] = True
    mask[(1, *(s - 1 for s in SPATIAL[dims]))] = True
    for radius in [0, 1, 2, (0, 1, 2)[-dims:]]:  # the last: one radius per dim
        radii = (radius,) * dims if isinstance(radius, int) else radius
        box = np.ones([2 * r + 1 for r in radii], dtype=bool)
        expected = np.stack([ndimage.binary_dilation(m.numpy(), box) for m in mask])
        assert torch.equal(dilate(mask, radius), torch.as_tensor(expected)), radius


@pytest.mark.parametrize("dims", [2, 3])
def test_region_kd_averages_only_inside_the_dilated_foreground(dims: int):
    student, teacher, _ = _pair(dims)
    labels = torch.zeros(2, *SPATIAL[dims], dtype=torch.long)
    labels[(0, *(slice(2, 4),) * dims)] = 2  # a 2^dims lesion in image 0; image 1 all background
    loss = build_loss("kd_region", dilation=1)
    region = torch.zeros_like(labels, dtype=torch.bool)
    region[(0, *(slice(1, 5),) * dims)] = True  # the lesion dilated by one pixel
    kl = _per_pixel_kl(student, teacher, 1.0)
    torch.testing.assert_close(loss(student, teacher, labels), kl[region.flatten()].mean())
    far = student.clone()
    far[(..., *(slice(6, None),) * dims)] += 5.0  # change the student far from the organ only
    torch.testing.assert_close(loss(far, teacher, labels), loss(student, teacher, labels))
    empty = loss(student.requires_grad_(True), teacher, torch.zeros_like(labels))
    empty.backward()  # no foreground anywhere: 0, attached to the graph, never NaN
    assert empty.item() == 0.0 and torch.isfinite(student.grad).all()


def test_dist_matches_pearson_correlations_from_numpy():
    student, teacher, _ = _pair(2)
    temperature, beta, gamma = 2.0, 1.0, 3.0
    value = build_loss("dist", temperature=temperature, inter_weight=beta, intra_weight=gamma)
    probs = [
        F.softmax(x / temperature, 1).movedim(1, -1).reshape(-1, 3).double().numpy()
        for x in (student, teacher)
    ]
    inter = np.mean([1 - np.corrcoef(s, t)[0, 1] for s, t in zip(*probs, strict=True)])
    intra = np.mean([1 - np.corrcoef(probs[0][:, c], probs[1][:, c])[0, 1] for c in range(3)])
    expected = temperature**2 * (beta * inter + gamma * intra)
    assert value(student, teacher).item() == pytest.approx(expected, rel=1e-5)


def test_dkd_decomposes_classical_kd_as_the_paper_says():
    """Zhao et al. eq. 5: KD = TCKD + (1 - p_t^T) NCKD at every pixel (here 1x1 images)."""
    student, teacher, labels = _pair(2)
    temperature = 2.0
    pixels = lambda x: x.movedim(1, -1).reshape(-1, x.shape[1], 1, 1)  # noqa: E731
    s, t, y = pixels(student), pixels(teacher), labels.reshape(-1, 1, 1)
    tckd = build_loss("dkd", temperature=temperature, alpha=1.0, beta=0.0)
    nckd = build_loss("dkd", temperature=temperature, alpha=0.0, beta=1.0)
    kd = build_loss("kd", temperature=temperature)
    p_target = F.softmax(t / temperature, 1).gather(1, y[:, None])[:, 0, 0, 0]
    for i in range(0, s.shape[0], 7):
        pixel = (s[i : i + 1], t[i : i + 1], y[i : i + 1])
        decomposed = tckd(*pixel) + (1 - p_target[i]) * nckd(*pixel)
        torch.testing.assert_close(decomposed, kd(*pixel))
    # two classes: a single non-target class carries no ranking, NCKD is 0
    two = nckd(student[:, :2], teacher[:, :2], labels.clamp(max=1))
    assert abs(two.item()) < 1e-7


@pytest.mark.parametrize("dims", [2, 3])
def test_dkd_is_finite_and_exact_with_one_or_two_classes(dims: int):
    """C = 2: the binary [p_t, 1 - p_t] is the whole softmax and NCKD is 0, so DKD is
    alpha T^2 times the mean pixel KL whatever beta, with finite gradients. C = 1: the one
    class is every pixel's target, so both terms are 0; the logsumexp over the empty rest
    (a row of -inf) made the loss and the student's gradients NaN."""
    g = torch.Generator().manual_seed(dims)
    size = SPATIAL[dims]
    teacher = 3 * torch.randn(2, 2, *size, generator=g)
    student = torch.randn(2, 2, *size, generator=g, requires_grad=True)
    labels = torch.randint(0, 2, (2, *size), generator=g)
    temperature, alpha = 2.0, 0.5
    dkd = build_loss("dkd", temperature=temperature, alpha=alpha, beta=8.0)
    value = dkd(student, teacher, labels)
    log_s = F.log_softmax(student / temperature, 1)
    log_t = F.log_softmax(teacher / temperature, 1)
    kl = (log_t.exp() * (log_t - log_s)).sum(1).mean()
    torch.testing.assert_close(value, alpha * temperature**2 * kl)
    assert value.item() > 0
    value.backward()
    assert torch.isfinite(student.grad).all() and student.grad.abs().sum() > 0
    one = student[:, :1].detach().requires_grad_()
    for targets in (torch.zeros_like(labels), labels, None):  # label 1: outside [0, 1)
        value = dkd(one, teacher[:, :1], targets)
        assert value.item() == 0.0, targets
        value.backward()
        assert torch.equal(one.grad, torch.zeros_like(one))


def test_warmup_ramp_is_linear_from_zero_to_one_at_the_configured_step():
    # a fraction of the total steps: 20% of 50 = step 10
    ramp = [warmup_factor(0.2, step, 50) for step in range(13)]
    assert ramp[0] == 0.0 and ramp[5] == pytest.approx(0.5) and ramp[10:] == [1.0] * 3
    assert all(b - a == pytest.approx(0.1) for a, b in zip(ramp[:10], ramp[1:11], strict=True))
    # a whole number of steps, whatever the total
    assert [warmup_factor(4, step) for step in range(6)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    assert warmup_factor(0.0, 0) == 1.0  # off


@pytest.mark.parametrize("dims", [2, 3])
def test_criterion_warmup_scales_every_term_to_its_weight_at_the_step(dims: int):
    terms = MISMATCHED_TERMS[:3]  # pmd 0.1, imd 0.9, rad 0.9
    criterion = build_criterion(terms, STUDENT_TAPS, TEACHER_TAPS, NUM_CLASSES, warmup=0.25)
    student, teacher, labels = _outputs(dims, torch.Generator().manual_seed(dims))
    full, parts = criterion(student, teacher, labels)  # no step: the configured weights
    torch.testing.assert_close(
        full, 0.1 * parts["pmd"] + 0.9 * (parts["imd_low"] + parts["rad_high"])
    )
    total_steps = 40  # warm-up ends at step 10
    for step, factor in [(0, 0.0), (3, 0.3), (5, 0.5), (10, 1.0), (39, 1.0)]:
        total, same_parts = criterion(student, teacher, labels, step, total_steps)
        torch.testing.assert_close(total, factor * full)
        assert same_parts.keys() == parts.keys()  # logged values stay unweighted
    criterion(student, teacher, labels, 3, total_steps)[0].backward()
    assert student.logits.grad is not None and teacher.logits.grad is None


@pytest.mark.parametrize(
    ("warmup", "total", "message"),
    [
        (-0.1, 10, "number >= 0"),
        (True, 10, "number >= 0"),
        (float("nan"), 10, "number >= 0"),
        (2.5, 10, "whole number"),
        (0.2, None, "total is unknown"),
        (0.2, float("inf"), "total is unknown"),
    ],
)
def test_warmup_validation(warmup: float, total: float | None, message: str):
    with pytest.raises(ValueError, match=message):
        criterion = build_criterion([], STUDENT_TAPS, TEACHER_TAPS, NUM_CLASSES, warmup=warmup)
        criterion.ramp(1, total)


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("imd", {"power": float("nan")}, "power must be a finite number > 0"),
        ("at", {"power": float("inf")}, "power must be a finite number > 0"),
        ("imd", {"eps": 0.0}, "eps must be a finite number > 0"),
        ("dkd", {"alpha": float("nan")}, "alpha must be a finite number >= 0"),
        ("dist", {"inter_weight": float("nan")}, "inter_weight must be"),
        ("kd", {"temperature": True}, "temperature must be a finite number > 0, got True"),
        ("cwd", {"temperature": "4"}, "temperature must be"),
        ("skd", {"grid": 0}, "grid must be a whole number >= 1"),
        ("skd", {"grid": [4, 2.5]}, "grid must be a whole number >= 1"),
        ("rad", {"num_classes": 3, "eps": float("nan")}, "eps must be"),
    ],
)
def test_options_that_would_give_nan_are_refused(name: str, options: dict, message: str):
    """NaN passes every ``<`` check: each option is checked as a finite number instead."""
    with pytest.raises(ValueError, match=message):
        build_loss(name, **options)


@pytest.mark.parametrize("name", LOSSES)
def test_labels_of_another_batch_size_are_refused(name: str):
    """Broadcasting would give both images the first one's labels and say nothing."""
    student, teacher, labels = _pair(2)
    with pytest.raises(ValueError, match=r"labels \(1, 8, 8\) do not fit student"):
        _loss(name)(student, teacher, labels[:1])


def test_region_kd_ignores_a_nan_outside_its_region():
    student, teacher, _ = _pair(2)
    labels = torch.zeros(2, 8, 8, dtype=torch.long)
    labels[0, 2:4, 2:4] = 1
    loss = build_loss("kd_region", dilation=1)
    clean = loss(student, teacher, labels)
    student[1, :, 7, 7] = float("nan")  # image 1 has no foreground: outside the region
    torch.testing.assert_close(loss(student, teacher, labels), clean)


def test_dist_is_zero_for_equal_flat_inputs():
    """Uniform class probabilities (equal logits) have no direction: equal inputs still give 0."""
    flat = torch.zeros(2, 3, 8, 8)
    assert build_loss("dist")(flat, flat.clone()).item() == 0.0
    assert build_loss("dist")(flat, torch.randn(2, 3, 8, 8)).item() > 0
    # a flat student against a varied teacher: uncorrelated, 1 per term (inter + intra at
    # tau 1), and no gradient (it was ~1e6 from dividing by a clamped norm of 1e-8)
    student = flat.clone().requires_grad_()
    loss = build_loss("dist")(student, torch.randn(2, 3, 8, 8))
    loss.backward()
    assert loss.item() == 2.0
    assert student.grad is not None and not student.grad.any()


@pytest.mark.parametrize("gap", [5.0, 15.0, 20.0, 40.0])
@pytest.mark.parametrize("spatial", [(48, 48), (6, 12, 12)])
def test_dist_of_a_confident_teacher_against_itself_is_zero(gap, spatial):
    """A class the teacher is sure is absent has probabilities of 1e-7 to 1e-9 that vary from
    pixel to pixel: their norms' product fell below the fixed clamp of eps^2, and the loss of
    a map against itself was 0.18-0.67 (gaps 15-20) with a gradient. Now 0, gradient ~0."""
    g = torch.Generator().manual_seed(3)
    teacher = torch.zeros(4, 3, *spatial)
    teacher[:, 1] = -gap + torch.randn((4, *spatial), generator=g)
    teacher[:, 2] = -gap - 5 + torch.randn((4, *spatial), generator=g)
    student = teacher.clone().requires_grad_()
    loss = build_loss("dist")(student, teacher)
    loss.backward()
    assert abs(float(loss.detach())) < 1e-6
    assert student.grad is not None and float(student.grad.norm()) < 1e-6
    other = torch.randn(teacher.shape, generator=g)
    assert float(build_loss("dist")(other, teacher)) > 0.1


def test_cosine_gram_is_normalize_to_the_bit_and_a_zero_row_has_no_gradient():
    """Rows of norm > eps: F.normalize's result exactly. A zero (or <= eps) row: zero
    similarity and zero gradient; F.normalize divided it by eps (gradients of ~1e7 in RAD)."""
    from kdseg.distill.losses import cosine_gram

    g = torch.Generator().manual_seed(11)
    for dtype in (torch.float32, torch.float64):
        vectors = torch.randn((3, 4, 7), generator=g, dtype=torch.float64).to(dtype)
        vectors[1, 2] *= 1e-6  # small but above eps
        unit = F.normalize(vectors, p=2.0, dim=-1, eps=1e-8)
        assert torch.equal(cosine_gram(vectors), unit @ unit.transpose(-1, -2))
    vectors = torch.randn((2, 3, 5), generator=g)
    vectors[0, 1] = 0.0
    vectors[1, 2] = 1e-10
    vectors.requires_grad_()
    gram = cosine_gram(vectors)
    assert float(gram[0, 1].detach().abs().max()) == 0.0
    assert float(gram[1, :, 2].detach().abs().max()) == 0.0
    gram.pow(2).sum().backward()
    assert vectors.grad is not None and torch.isfinite(vectors.grad).all()
    assert float(vectors.grad[0, 1].abs().max()) == 0.0
    assert float(vectors.grad[1, 2].abs().max()) == 0.0
    assert float(vectors.grad.abs().max()) < 100


def test_rad_with_an_all_zero_student_region_has_small_finite_gradients():
    lab = torch.zeros((1, 8, 8), dtype=torch.long)
    lab[0, 2:4, 2:4] = 1
    g = torch.Generator().manual_seed(0)
    student = torch.rand((1, 4, 8, 8), generator=g)
    student[:, :, 2:4, 2:4] = 0.0
    student.requires_grad_()
    teacher = torch.rand((1, 4, 8, 8), generator=g)
    loss = build_loss("rad", num_classes=2)(student, teacher, lab)
    loss.backward()
    assert torch.isfinite(loss) and float(loss.detach()) > 0
    assert student.grad is not None and torch.isfinite(student.grad).all()
    assert float(student.grad.abs().max()) < 10  # was 2.4e7
