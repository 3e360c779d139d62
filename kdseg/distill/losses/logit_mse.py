"""Logit matching (Ba & Caruana, NeurIPS 2014): the student regresses the teacher's logits
with a squared error, per pixel (beyond the paper)."""

from __future__ import annotations

import torch

from kdseg.distill.adapters import resize_to
from kdseg.distill.losses.base import DistillLoss
from kdseg.distill.losses.registry import register_loss


@register_loss("mse")
class LogitMSELoss(DistillLoss):
    """Ba, Caruana, "Do Deep Nets Really Need to be Deep?", NeurIPS 2014: the student learns
    the teacher's logits (the values before the softmax) by regression, ``1/2 ||z_S - z_T||^2``
    per sample. Here every pixel (voxel) x of a (B, C, *spatial) map is a sample:

    ``L = 1 / (2 B N) * sum_{b, x} sum_c (z_S(b, c, x) - z_T(b, c, x))^2``

    over the N pixels of each map. No temperature and no softmax: the logits' scale is learned
    too, which is what KD with T -> infinity approaches (Hinton et al. 2015, sec. 2.1). The
    simplest logit baseline, and a published one, hence kept beside ``kd`` (beyond the paper:
    not part of EMKD).

    Channels must match: on logits they are the classes; on another tap the criterion puts a
    learned 1x1 adapter on the student side (regressing a feature map through an adapter is
    FitNets' hint, Romero et al. 2015). A student map of another size is resized
    (bi/trilinear) to the teacher's.
    """

    needs_equal_channels = True

    def compute(
        self, student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor | None
    ) -> torch.Tensor:
        student = resize_to(student, teacher.shape[2:])
        return 0.5 * (student - teacher).square().sum(dim=1).mean()
