"""CWD: channel-wise distillation (Shu et al., ICCV 2021)."""

from __future__ import annotations

import torch

from kdseg.distill.adapters import resize_to
from kdseg.distill.losses.base import DistillLoss, check_number, softened_kl
from kdseg.distill.losses.registry import register_loss


@register_loss("cwd", temperature=1.0)
class ChannelWiseLoss(DistillLoss):
    """Channel-wise distillation: each channel's map becomes a distribution over locations.

    ``L = T^2 / (B * C) * sum_{b, c} KL(softmax_x(y_T[b, c] / T) || softmax_x(y_S[b, c] / T))``
    (Shu et al. 2021, eq. 3-4): the softmax runs over the spatial positions x, so the KL puts its
    weight on each channel's most salient region. Works on logits (the paper's segmentation
    setting) or features. Default T = 1, as in the authors' released segmentation configs (the
    paper's text also reports T = 4; set ``temperature`` in the YAML).

    Channels must match (the criterion adds a 1x1 adapter otherwise). A student tensor of
    another spatial size is resized (bi/trilinear) to the teacher's.
    """

    needs_equal_channels = True

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        temperature = check_number("temperature", temperature)
        self.temperature = float(temperature)

    def compute(
        self, student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor | None
    ) -> torch.Tensor:
        student = resize_to(student, teacher.shape[2:])
        per_channel = softened_kl(student.flatten(2), teacher.flatten(2), self.temperature, dim=2)
        return per_channel.mean() * self.temperature**2

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"
