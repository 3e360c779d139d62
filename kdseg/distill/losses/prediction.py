"""PMD (EMKD) and pixel-wise Hinton KD: KL between softened class distributions per pixel."""

from __future__ import annotations

import torch

from kdseg.distill.adapters import resize_to
from kdseg.distill.losses.base import DistillLoss, check_number, softened_kl
from kdseg.distill.losses.registry import register_loss


@register_loss("kd", temperature=1.0)
@register_loss("pmd", temperature=4.0)
class SoftmaxKLLoss(DistillLoss):
    """Prediction map distillation (Qin et al. 2021, eq. for L_PMD; Hinton et al. 2015).

    ``L = T^2 / (B * N) * sum_{b, x} KL(softmax(z_T(b, x) / T) || softmax(z_S(b, x) / T))``
    over the N pixels (voxels) x of each map: every pixel is one sample of Hinton KD, so the
    "batchmean over pixels" of a conventional KD loss and EMKD's "average over all pixels" are
    the same number. ``pmd`` and ``kd`` are this one class; they differ only in the default
    temperature: 4 for PMD (the paper), 1 for ``kd``, the pixel-wise KD baseline usual in
    segmentation distillation (Liu et al. 2019 and later). The T^2 factor keeps gradient
    magnitudes comparable across temperatures.

    Channels (classes) must match. A student map of another size is resized (bi/trilinear) to
    the teacher's before the softmax.
    """

    needs_equal_channels = True

    def __init__(self, temperature: float = 4.0) -> None:
        super().__init__()
        temperature = check_number("temperature", temperature)
        self.temperature = float(temperature)

    def compute(
        self, student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor | None
    ) -> torch.Tensor:
        student = resize_to(student, teacher.shape[2:])
        per_pixel = softened_kl(student, teacher, self.temperature, dim=1)
        return self.reduce(per_pixel, labels, teacher) * self.temperature**2

    def reduce(
        self, per_pixel: torch.Tensor, labels: torch.Tensor | None, teacher: torch.Tensor
    ) -> torch.Tensor:
        """How the per-pixel KL becomes one number: the plain mean over every pixel here;
        the class-balanced and region variants (beyond the paper) override only this."""
        return per_pixel.mean()

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"
