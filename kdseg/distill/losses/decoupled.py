"""DKD (Zhao et al., CVPR 2022) per pixel: target-class and non-target-class KD, weighted apart."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdseg.distill.adapters import resize_to
from kdseg.distill.losses.base import DistillLoss, pixel_classes
from kdseg.distill.losses.registry import register_loss


def _kl(log_p_teacher: torch.Tensor, log_p_student: torch.Tensor, keep: torch.Tensor | None):
    """KL(teacher || student) summed over dim 1, over the entries where ``keep`` (all if None)."""
    terms = log_p_teacher.exp() * (log_p_teacher - log_p_student)
    if keep is not None:
        terms = torch.where(keep, terms, torch.zeros_like(terms))
    return terms.sum(dim=1)


@register_loss("dkd", temperature=4.0, alpha=1.0, beta=8.0)
class DecoupledKDLoss(DistillLoss):
    """DKD: Zhao, Cui, Song, Qiu, Liang, "Decoupled Knowledge Distillation", CVPR 2022, with
    every pixel (voxel) a sample.

    At each pixel with target class t and ``p = softmax(z / T)`` over the C classes:

    - TCKD ``= KL(b_T || b_S)`` on the binary distribution ``b = [p_t, 1 - p_t]`` (is the
      pixel of its class, and how sure);
    - NCKD ``= KL(q_T || q_S)`` on ``q = softmax over the classes other than t`` (how the
      teacher ranks the wrong classes: e.g. tumor against liver on a liver pixel);
    - ``L = T^2 mean_pixels (alpha TCKD + beta NCKD)`` (paper eq. 7 with its weights).

    Classical KD equals ``TCKD + (1 - p_t^T) NCKD`` (paper eq. 5): on the many pixels the
    teacher is sure of (most of a CT slice) the non-target knowledge is suppressed; DKD weighs
    it with its own beta. The target class t is the ground-truth label (resized, nearest, to
    the teacher's map); pixels labeled outside [0, C) (unlabeled) and batches without labels
    take the teacher's argmax. Defaults T = 4, alpha = 1, beta = 8 are the paper's CIFAR-100
    values (ImageNet: T = 1, alpha = 0.5, beta = 0.5); the paper has no segmentation setting.
    With C = 2 there is one non-target class and NCKD is 0. Channels (classes) must match;
    a student map of another size is resized (bi/trilinear) to the teacher's.
    """

    needs_equal_channels = True

    def __init__(self, temperature: float = 4.0, alpha: float = 1.0, beta: float = 8.0) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if alpha < 0 or beta < 0 or alpha + beta == 0:
            raise ValueError(f"alpha and beta must be >= 0, not both 0; got {alpha} and {beta}")
        self.temperature = float(temperature)
        self.alpha = float(alpha)
        self.beta = float(beta)

    def compute(
        self, student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor | None
    ) -> torch.Tensor:
        student = resize_to(student, teacher.shape[2:])
        target = pixel_classes(labels, teacher)
        is_target = F.one_hot(target, teacher.shape[1]).movedim(-1, 1).bool()  # (B, C, *spatial)
        binary, non_target = [], []
        for logits in (teacher, student):
            z = logits / self.temperature
            log_p = F.log_softmax(z, dim=1)
            log_p_t = torch.where(is_target, log_p, torch.zeros_like(log_p)).sum(1, keepdim=True)
            rest = torch.where(is_target, torch.full_like(log_p, -torch.inf), log_p)
            log_p_rest = torch.logsumexp(rest, dim=1, keepdim=True)  # log(1 - p_t), stably
            binary.append(torch.cat([log_p_t, log_p_rest], dim=1))
            masked = torch.where(is_target, torch.full_like(z, -torch.inf), z)
            non_target.append(F.log_softmax(masked, dim=1))
        tckd = _kl(binary[0], binary[1], None)
        nckd = _kl(non_target[0], non_target[1], ~is_target)
        return (self.alpha * tckd + self.beta * nckd).mean() * self.temperature**2

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, alpha={self.alpha}, beta={self.beta}"
