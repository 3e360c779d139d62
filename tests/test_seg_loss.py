"""L_seg's focal term: MONAI's per-channel sigmoid by default (every recorded run), the
multi-class softmax focal with ``loss.focal=softmax``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from monai.losses import DiceFocalLoss

from kdseg.errors import ConfigError
from kdseg.lit.segment import SoftmaxDiceFocalLoss, build_seg_loss, check_focal


def _batch(classes: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn((2, classes, 9, 7), generator=gen, dtype=torch.float64).float()
    label = torch.randint(0, classes, (2, 1, 9, 7), generator=gen)
    return logits, label


def test_default_is_monai_dice_focal_unchanged() -> None:
    """``focal`` unset, null or ``sigmoid``: the DiceFocalLoss every recorded run used."""
    logits, label = _batch(3)
    reference = DiceFocalLoss(
        include_background=False,
        to_onehot_y=True,
        softmax=True,
        batch=True,
        gamma=2.0,
        lambda_dice=0.5,
        lambda_focal=0.5,
    )(logits, label)
    for cfg in ({}, {"focal": None}, {"focal": "sigmoid"}, {"focal": "Sigmoid"}):
        loss = build_seg_loss(cfg)
        assert isinstance(loss, DiceFocalLoss)
        assert torch.equal(loss(logits, label), reference)
    # the default's known behaviour, kept (docs/training.md): the focal term moves with a shift
    # of every logit, and gives the background logit no gradient
    default = build_seg_loss({})
    assert not torch.allclose(default(logits + 5.0, label), default(logits, label))
    x = logits.clone().requires_grad_()
    onehot = F.one_hot(label[:, 0], 3).permute(0, 3, 1, 2).float()
    default.focal(x, onehot).backward()
    assert x.grad is not None and float(x.grad[:, 0].abs().max()) == 0.0


@pytest.mark.parametrize("classes", [2, 3])
def test_softmax_focal_is_shift_invariant_and_trains_the_background(classes: int) -> None:
    logits, label = _batch(classes, seed=classes)
    loss = build_seg_loss({"focal": "softmax", "gamma": 2.0})
    assert isinstance(loss, SoftmaxDiceFocalLoss)
    base = loss(logits, label)
    assert float(base) > 0
    for shift in (5.0, -3.0, 40.0):
        assert float(loss(logits + shift, label)) == pytest.approx(float(base), rel=1e-5)
    x = logits.clone().requires_grad_()
    focal = loss.focal(x, F.one_hot(label[:, 0], classes).permute(0, 3, 1, 2).float())
    focal.sum(1).mean().backward()
    assert x.grad is not None and float(x.grad[:, 0].abs().max()) > 1e-4
    # the gradient of a softmax loss sums to zero over the classes of each voxel
    assert torch.allclose(x.grad.sum(1), torch.zeros_like(x.grad[:, 0]), atol=1e-7)


def test_softmax_focal_values() -> None:
    """gamma 0: the cross-entropy; the Dice: the default's, to the bit; weights apply."""
    logits, label = _batch(3, seed=7)
    ce = F.cross_entropy(logits, label[:, 0])
    only_focal = build_seg_loss(
        {"focal": "softmax", "gamma": 0.0, "dice_weight": 0.0, "focal_weight": 1.0}
    )
    assert float(only_focal(logits, label)) == pytest.approx(float(ce), rel=1e-6)
    # gamma 2 by hand
    logp = F.log_softmax(logits, 1).gather(1, label)
    by_hand = (-((1 - logp.exp()) ** 2) * logp).mean()
    focal2 = build_seg_loss({"focal": "softmax", "dice_weight": 0.0, "focal_weight": 1.0})
    assert float(focal2(logits, label)) == pytest.approx(float(by_hand), rel=1e-6)
    dice_only = {"dice_weight": 1.0, "focal_weight": 0.0}
    softmax = build_seg_loss({**dice_only, "focal": "softmax"})(logits, label)
    assert torch.equal(softmax, build_seg_loss(dice_only)(logits, label))
    mixed = build_seg_loss({"focal": "softmax"})(logits, label)
    expected = 0.5 * softmax + 0.5 * focal2(logits, label)
    assert float(mixed) == pytest.approx(float(expected), rel=1e-6)


def test_softmax_focal_3d_and_blobs() -> None:
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn((2, 3, 4, 5, 6), generator=gen)
    label = torch.randint(0, 3, (2, 1, 4, 5, 6), generator=gen)
    loss = build_seg_loss({"focal": "softmax", "blob_weight": 0.5})
    assert torch.isfinite(loss(logits, label))
    assert float(loss(logits + 2.0, label)) == pytest.approx(float(loss(logits, label)), rel=1e-5)


@pytest.mark.parametrize("bad", ["softmx", 1, True, ["softmax"]])
def test_focal_refuses_other_values(bad: object) -> None:
    with pytest.raises(ConfigError, match=r"loss\.focal must be null or one of"):
        check_focal(bad)
    with pytest.raises(ConfigError, match=r"loss\.focal"):
        build_seg_loss({"focal": bad})
