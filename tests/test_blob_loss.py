"""The blob loss (kdseg/lit/blob_loss.py): each ground-truth lesion weighs the same."""

from __future__ import annotations

import pytest
import torch
from monai.losses import DiceFocalLoss

from kdseg.lit.blob_loss import BlobDiceLoss, SegLossWithBlobs
from kdseg.lit.segment import build_seg_loss


def _logits(pred: torch.Tensor, classes: int = 3) -> torch.Tensor:
    """Saturated logits (B, C, *spatial) that predict the class map ``pred`` (B, *spatial)."""
    onehot = torch.nn.functional.one_hot(pred.long(), classes).movedim(-1, 1).float()
    return 20.0 * onehot


@pytest.mark.parametrize("shape", [(24, 24), (12, 12, 6)])
def test_blob_loss_is_zero_when_right_and_works_nd(shape: tuple[int, ...]) -> None:
    label = torch.zeros((2, *shape), dtype=torch.long)
    label[0, 2:10, 2:10] = 1
    label[0, 4:6, 4:6] = 2
    label[1, 1:3, 1:3] = 2
    loss = BlobDiceLoss()(_logits(label), label.unsqueeze(1))
    assert loss.item() == pytest.approx(0.0, abs=1e-4)
    wrong = BlobDiceLoss()(_logits(torch.zeros_like(label)), label.unsqueeze(1))
    assert wrong.item() == pytest.approx(1.0, abs=1e-4)  # every blob missed


def test_a_missed_small_blob_costs_as_much_as_a_missed_large_one() -> None:
    """Blob loss is instance-balanced; the batch Dice of L_seg is not."""
    label = torch.zeros((1, 32, 32), dtype=torch.long)
    label[0, 2:12, 2:12] = 2  # 100 pixels
    label[0, 20:22, 20:22] = 2  # 4 pixels
    big_only, small_only = label.clone(), label.clone()
    big_only[0, 20:22, 20:22] = 0
    small_only[0, 2:12, 2:12] = 0
    blob = BlobDiceLoss()
    a = blob(_logits(big_only), label.unsqueeze(1)).item()
    b = blob(_logits(small_only), label.unsqueeze(1)).item()
    assert a == pytest.approx(0.5, abs=1e-3) and b == pytest.approx(0.5, abs=1e-3)
    dice = DiceFocalLoss(include_background=False, to_onehot_y=True, softmax=True, batch=True)
    assert dice(_logits(big_only), label.unsqueeze(1)) < dice(
        _logits(small_only), label.unsqueeze(1)
    )


def test_blob_loss_masks_the_other_blobs_and_sends_gradients() -> None:
    """A prediction on blob 1 does not count as a false positive for blob 2; a batch
    without blobs gives a 0 that is still part of the graph."""
    label = torch.zeros((1, 16, 16), dtype=torch.long)
    label[0, 1:4, 1:4] = 2
    label[0, 10:13, 10:13] = 2
    assert BlobDiceLoss()(_logits(label), label).item() == pytest.approx(0.0, abs=1e-4)
    logits = torch.zeros((1, 3, 16, 16), requires_grad=True)
    BlobDiceLoss()(logits, label).backward()
    assert logits.grad is not None and logits.grad[0, 2, 2, 2] < 0  # raise tumor on a blob
    empty = torch.zeros((1, 3, 8, 8), requires_grad=True)
    zero = BlobDiceLoss()(empty, torch.zeros((1, 8, 8), dtype=torch.long))
    assert zero.item() == 0.0 and zero.requires_grad


def test_blob_weight_off_by_default_keeps_l_seg() -> None:
    assert isinstance(build_seg_loss({}), DiceFocalLoss)
    assert isinstance(build_seg_loss({"blob_weight": None}), DiceFocalLoss)
    with_blobs = build_seg_loss({"blob_weight": 0.5})
    assert isinstance(with_blobs, SegLossWithBlobs)
    label = torch.zeros((2, 1, 16, 16), dtype=torch.long)
    label[:, 0, 3:6, 3:6] = 2
    logits = torch.randn((2, 3, 16, 16))
    expected = build_seg_loss({})(logits, label) + 0.5 * BlobDiceLoss()(logits, label)
    assert with_blobs(logits, label).item() == pytest.approx(expected.item(), rel=1e-6)
