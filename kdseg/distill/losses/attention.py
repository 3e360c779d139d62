"""IMD (EMKD) and attention transfer: distance between normalised spatial attention maps."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from kdseg.distill.adapters import resize_to
from kdseg.distill.losses.base import DistillLoss, check_number
from kdseg.distill.losses.registry import register_loss


def attention_map(feature: torch.Tensor, power: float) -> torch.Tensor:
    """Spatial attention map ``mean_c |F_c|^p`` of a (B, C, *spatial) feature -> (B, 1, *spatial).

    The absolute value makes odd powers meaningful; for even p it equals ``F^p``.
    """
    return feature.abs().pow(power).mean(dim=1, keepdim=True)


@register_loss("at", power=2.0, reduction="mean")
@register_loss("imd", power=4.0, reduction="sum")
class AttentionMapLoss(DistillLoss):
    """Importance map distillation (Qin et al. 2021) = attention transfer (Zagoruyko 2017).

    With ``Q = vec(mean_c |F_c|^p) / ||vec(mean_c |F_c|^p)||_2`` per sample, the loss is
    ``||Q_S - Q_T||_2^2``. ``reduction="sum"``: summed over pixels, averaged over the batch
    (EMKD's L_IMD, registered as ``imd`` with p = 4). ``reduction="mean"``: averaged over pixels
    and batch, as in Zagoruyko & Komodakis' code, whose loss weight beta/2 = 500 assumes that
    normalisation (registered as ``at`` with p = 2).

    Channel counts may differ (the map averages them away). A student map of another spatial
    size is resized (bi/trilinear) to the teacher's before normalisation.
    """

    def __init__(
        self, power: float = 4.0, reduction: Literal["sum", "mean"] = "sum", eps: float = 1e-12
    ) -> None:
        super().__init__()
        if reduction not in ("sum", "mean"):
            raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
        self.power = check_number("power", power)
        self.reduction = reduction
        self.eps = check_number("eps", eps)

    def compute(
        self, student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor | None
    ) -> torch.Tensor:
        map_teacher = attention_map(teacher, self.power)
        map_student = resize_to(attention_map(student, self.power), map_teacher.shape[2:])
        q_student = F.normalize(map_student.flatten(1), dim=1, eps=self.eps)
        q_teacher = F.normalize(map_teacher.flatten(1), dim=1, eps=self.eps)
        squared = (q_student - q_teacher).pow(2)
        return squared.sum(dim=1).mean() if self.reduction == "sum" else squared.mean()

    def extra_repr(self) -> str:
        return f"power={self.power}, reduction={self.reduction!r}"
