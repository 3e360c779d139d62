"""RAD (EMKD): distil the cosine affinities between class regions, for C classes."""

from __future__ import annotations

import torch

from kdseg.distill.adapters import resize_labels
from kdseg.distill.losses.base import DistillLoss, check_number, cosine_gram
from kdseg.distill.losses.registry import register_loss


def region_vectors(
    feature: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    eps: float,
    stride: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked average feature of every class region: (B, C, K) vectors, (B, C) presence.

    ``v_c = sum_x F(x) [y(x) = c] / (sum_x [y(x) = c] + eps)`` with the labels ``y`` resized
    to the feature's own size (:func:`~kdseg.distill.adapters.resize_labels`; ``stride``: the
    feature's). Label values outside [0, num_classes) belong to no
    region. An absent class gets a zero vector and ``present = False``.
    """
    labels = resize_labels(labels, feature.shape[2:], stride).flatten(1)  # (B, N)
    classes = torch.arange(num_classes, device=labels.device)
    masks = (labels[:, None, :] == classes[None, :, None]).to(feature.dtype)  # (B, C, N)
    area = masks.sum(dim=2)  # (B, C)
    sums = masks @ feature.flatten(2).transpose(1, 2)  # (B, C, K)
    return sums / (area[..., None] + eps), area > 0


@register_loss("rad")
class RegionAffinityLoss(DistillLoss):
    """Region affinity distillation (Qin et al. 2021, L_RAD), generalised to C classes.

    For each image, ``A(i, j) = cos(v_i, v_j)`` between the region vectors of classes i < j
    (see :func:`region_vectors`), computed separately for student and teacher with each network's
    own label resize, so channels and spatial sizes may differ. The loss is
    ``(A_S(i, j) - A_T(i, j))^2`` averaged over the pairs whose two classes are present in both
    networks' resized labels, then over the images that have at least one such pair; with two
    classes this is the paper's single background/foreground pair. A batch with no valid pair
    gives 0 (still attached to the graph), never NaN.
    """

    needs_labels = True

    def __init__(self, num_classes: int, eps: float = 1e-6) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"region affinity needs num_classes >= 2, got {num_classes}")
        self.num_classes = int(num_classes)
        self.eps = check_number("eps", eps)

    def compute(
        self, student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor | None
    ) -> torch.Tensor:
        assert labels is not None  # checked in forward
        (s_stride, t_stride), classes = self.tap_strides, self.num_classes
        vec_student, present_student = region_vectors(student, labels, classes, self.eps, s_stride)
        vec_teacher, present_teacher = region_vectors(teacher, labels, classes, self.eps, t_stride)
        present = present_student & present_teacher  # (B, C)
        size = (self.num_classes, self.num_classes)
        upper = torch.ones(size, dtype=torch.bool, device=present.device).triu(diagonal=1)
        valid = present[:, :, None] & present[:, None, :] & upper  # (B, C, C), pairs i < j
        squared = (cosine_gram(vec_student) - cosine_gram(vec_teacher)).pow(2)
        squared = torch.where(valid, squared, torch.zeros_like(squared))
        pairs_per_image = valid.sum(dim=(1, 2))
        per_image = squared.sum(dim=(1, 2)) / pairs_per_image.clamp_min(1)
        images = (pairs_per_image > 0).sum()
        return per_image.sum() / images.clamp_min(1)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, eps={self.eps}"
