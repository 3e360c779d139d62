"""The one output type every network returns: logits plus named feature taps.

Distillation, export and benchmarking rely on this type and on nothing else about a network
(the seam MMRazor calls a recorder, simplified): a loss asks for taps by name, never for a
module path. ``TapInfo`` describes each tap statically (channels and stride), like timm's
``feature_info``, so a criterion can size its adapters before the first forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass(frozen=True)
class TapInfo:
    """Static description of one feature tap: channel count and stride w.r.t. the input."""

    channels: int
    stride: int


@dataclass
class SegOutput:
    """Logits of shape (B, num_classes, *spatial) at the input size, and named feature taps."""

    logits: torch.Tensor
    taps: dict[str, torch.Tensor] = field(default_factory=dict)


class SegmentationModel(nn.Module):
    """Base class of every registered network.

    Subclasses implement :meth:`forward` returning :class:`SegOutput` whose taps include at
    least ``low`` (stride 2) and ``high`` (stride 8), plus every encoder stage by name, and set
    ``self.tap_info`` to the matching :class:`TapInfo` mapping.
    """

    tap_info: dict[str, TapInfo]

    def forward(self, x: torch.Tensor) -> SegOutput:  # pragma: no cover - abstract
        raise NotImplementedError


class LogitsOnly(nn.Module):
    """Wrap a :class:`SegmentationModel` so it returns only logits (for ONNX, AOTI, compile)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).logits
