"""ResNet18 student: a 1x1 classifier on the stride-32 map, bilinear upsampling (the paper's).

The paper's third student (about 11.2M parameters). Deliberately decoder-free: the logits are
computed at stride 32 and upsampled 32x, which is why it is the weakest student on small
tumours and the one distillation helps most.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdseg.models.layers import (
    BasicBlock,
    ResNetEncoder,
    load_encoder_weights,
    pad_to_multiple,
    seg_output,
)
from kdseg.models.registry import register_model
from kdseg.models.taps import SegmentationModel, SegOutput


@register_model("resnet18")
class ResNet18(SegmentationModel):
    """ResNet18 (BasicBlock 2,2,2,2, 7x7 stem) + 1x1 conv on ``layer4`` + 32x bilinear upsampling.

    Params at in_channels=1, num_classes=2, width=1: 11.17M (paper 11.2M). ``width`` scales
    every channel count (multiple of 8, at least 8): params and mult-adds scale by ~width^2.

    Sizes: the input is replicate-padded to a multiple of 32 at the bottom/right, the logits
    are upsampled to the padded size (an exact 32x) and cropped back, so they have the input's
    size for any H, W. Taps (stride; size ``ceil(H/s) x ceil(W/s)``): ``stem`` (2),
    ``layer1`` (4), ``layer2`` (8), ``layer3`` (16), ``layer4`` (32); ``low`` = ``stem``,
    ``high`` = ``layer2``.

    ``encoder_weights``: path of a local torchvision-style ResNet18 state_dict for the encoder
    (``fc.*`` is ignored; an RGB stem is summed to ``in_channels=1``).
    """

    pad_multiple = 32

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        width: float = 1.0,
        encoder_weights: str | None = None,
    ) -> None:
        super().__init__()
        self.encoder = ResNetEncoder(BasicBlock, (2, 2, 2, 2), in_channels, width)
        self.classifier = nn.Conv2d(self.encoder.channels["layer4"], num_classes, 1)
        enc = self.encoder.tap_info()
        self.tap_info = {**enc, "low": enc["stem"], "high": enc["layer2"]}
        if encoder_weights:
            load_encoder_weights(self.encoder, encoder_weights)

    def forward(self, x: torch.Tensor) -> SegOutput:
        xp = pad_to_multiple(x, self.pad_multiple)
        feats = self.encoder(xp)
        logits = self.classifier(feats["layer4"])
        logits = F.interpolate(logits, size=xp.shape[-2:], mode="bilinear", align_corners=False)
        taps = {**feats, "low": feats["stem"], "high": feats["layer2"]}
        return seg_output(logits, taps, self.tap_info, x.shape[-2:])
