"""Class-balanced pixel KD / PMD (beyond the paper): the KL averaged per class, then over them."""

from __future__ import annotations

import torch

from kdseg.distill.losses.base import pixel_classes
from kdseg.distill.losses.prediction import SoftmaxKLLoss
from kdseg.distill.losses.registry import register_loss


def class_balanced_mean(
    values: torch.Tensor, classes: torch.Tensor, num_classes: int
) -> torch.Tensor:
    """Mean of ``values`` within each class of ``classes`` (same shape), then over the classes
    that occur: ``1/|P| sum_{c in P} mean_{x: class(x) = c} values(x)``.

    Differentiable in ``values``; 0 (attached to the graph) when ``values`` is empty.
    """
    flat_classes = classes.reshape(-1)
    flat_values = values.reshape(-1)
    sums = flat_values.new_zeros(num_classes).index_add(0, flat_classes, flat_values)
    counts = torch.bincount(flat_classes, minlength=num_classes)
    present = counts > 0
    if not bool(present.any()):
        return flat_values.sum()
    return (sums[present] / counts[present].to(sums.dtype)).mean()


@register_loss("kd_balanced", temperature=1.0)
@register_loss("pmd_balanced", temperature=4.0)
class ClassBalancedKLLoss(SoftmaxKLLoss):
    """Pixel-wise Hinton KD / PMD with every class weighted equally (kdseg, beyond the paper).

    The per-pixel ``T^2 KL(softmax(z_T / T) || softmax(z_S / T))`` of
    :class:`~kdseg.distill.losses.prediction.SoftmaxKLLoss` is averaged within each class c
    over the batch's pixels X_c of that class, then over the classes present:
    ``L = T^2 / |P| sum_{c in P} 1/|X_c| sum_{x in X_c} KL_x``.
    With pixel averaging (PMD, KD) about 70% of the loss comes from background pixels and
    a few percent from a tumor covering 0.6% of the pixels, so the student first learns to
    push the tumor logit down everywhere; here the tumor pixels weigh as much as the
    background. The class of a pixel is its ground-truth label (resized, nearest, to the
    teacher's map); a pixel with a label outside [0, C) (e.g. -1 for an unlabeled image), or
    every pixel when no labels are given, takes the teacher's argmax class.

    ``pmd_balanced`` (T = 4, EMKD's PMD) and ``kd_balanced`` (T = 1) are this class. Channels
    (classes) must match; a student map of another size is resized to the teacher's.
    """

    def reduce(
        self, per_pixel: torch.Tensor, labels: torch.Tensor | None, teacher: torch.Tensor
    ) -> torch.Tensor:
        classes = pixel_classes(labels, teacher, self.tap_strides[1])
        return class_balanced_mean(per_pixel, classes, teacher.shape[1])
