"""DKD (Zhao et al., CVPR 2022) per pixel: target-class and non-target-class KD, weighted apart."""

from __future__ import annotations

import torch

from kdseg.distill.adapters import resize_to
from kdseg.distill.losses.base import DistillLoss, check_number, pixel_classes
from kdseg.distill.losses.registry import register_loss


def _kl(log_p_teacher: torch.Tensor, log_p_student: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) of log-distributions along dim 1, summed over dim 1."""
    return (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(dim=1)


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
    With C = 2 there is one non-target class and NCKD is 0; with C = 1 the one class is every
    pixel's target and the loss is 0 (both terms). Channels (classes) must match;
    a student map of another size is resized (bi/trilinear) to the teacher's.
    """

    needs_equal_channels = True

    def __init__(self, temperature: float = 4.0, alpha: float = 1.0, beta: float = 8.0) -> None:
        super().__init__()
        temperature = check_number("temperature", temperature)
        alpha = check_number("alpha", alpha, inclusive=True)
        beta = check_number("beta", beta, inclusive=True)
        if alpha + beta == 0:
            raise ValueError(f"alpha and beta must be >= 0, not both 0; got {alpha} and {beta}")
        self.temperature = float(temperature)
        self.alpha = float(alpha)
        self.beta = float(beta)

    def compute(
        self, student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor | None
    ) -> torch.Tensor:
        student = resize_to(student, teacher.shape[2:])
        if teacher.shape[1] == 1:
            # one class: it is every pixel's target, p_t = 1 in both networks, and there is no
            # other class, so TCKD and NCKD are both 0. Computed, the logsumexp over the empty
            # rest (a row of -inf) gave NaN (and NaN gradients); the zero stays in the graph
            return 0.0 * student.sum()
        target = pixel_classes(labels, teacher, self.tap_strides[1])[:, None]  # (B, 1, *spatial)
        binary, non_target = [], []
        for logits in (teacher, student):
            z = logits / self.temperature
            log_all = torch.logsumexp(z, dim=1, keepdim=True)
            log_rest = torch.logsumexp(z.scatter(1, target, -torch.inf), dim=1, keepdim=True)
            # [log p_t, log (1 - p_t)], the latter stably as logsumexp over the other classes
            binary.append(torch.cat([z.gather(1, target) - log_all, log_rest - log_all], dim=1))
            # log q over the classes other than t; the target entry set to log 1 = 0 in both
            # networks adds exactly 0 to the KL (and gets no gradient: scatter overwrites it)
            non_target.append((z - log_rest).scatter(1, target, 0.0))
        tckd = _kl(*binary)
        nckd = _kl(*non_target)
        return (self.alpha * tckd + self.beta * nckd).mean() * self.temperature**2

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, alpha={self.alpha}, beta={self.beta}"
