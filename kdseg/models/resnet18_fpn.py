"""ResNet18 with a small FPN decoder: the ResNet18 student plus a light top-down path.

Beyond the paper. The paper's ResNet18 student predicts at stride 32; this variant keeps the
same encoder and adds a feature pyramid (as in Panoptic FPN's semantic head, slimmed down) so
the logits come from a stride-4 map that has seen every encoder stage.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdseg.models.layers import (
    BasicBlock,
    ConvBNAct,
    ResNetEncoder,
    load_encoder_weights,
    pad_to_multiple,
    resize_to,
    scale_channels,
    seg_output,
)
from kdseg.models.registry import register_model
from kdseg.models.taps import SegmentationModel, SegOutput, TapInfo

_LEVELS = ("layer1", "layer2", "layer3", "layer4")


@register_model("resnet18_fpn")
class ResNet18FPN(SegmentationModel):
    """ResNet18 encoder + FPN (1x1 laterals, top-down sum) + a semantic head at stride 4.

    Decoder: every stage ``layer1..4`` gets a 1x1 lateral conv to ``fpn_channels`` (64); the
    top-down path adds each coarser level, bilinearly upsampled, to the next finer one. Each
    pyramid level then goes through one 3x3 conv-BN-ReLU to ``fpn_channels``, is upsampled to
    stride 4 and summed; a 1x1 classifier and 4x bilinear upsampling give the logits. The
    decoder adds about 0.21M parameters: 11.38M in all at in_channels=1, num_classes=2,
    width=1. ``width`` scales every channel count (``fpn_channels`` included): params and
    mult-adds ~width^2.

    Sizes: input replicate-padded to a multiple of 32, logits cropped back to H x W. Taps
    (stride; size ``ceil(H/s)``): ``stem`` (2), ``layer1`` (4), ``layer2`` (8), ``layer3`` (16),
    ``layer4`` (32), ``fpn`` (4, the summed pyramid before the classifier); ``low`` = ``stem``,
    ``high`` = ``layer2``. ``encoder_weights``: local torchvision-style ResNet18 state_dict.
    """

    pad_multiple = 32

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        width: float = 1.0,
        fpn_channels: int = 64,
        encoder_weights: str | None = None,
    ) -> None:
        super().__init__()
        self.encoder = ResNetEncoder(BasicBlock, (2, 2, 2, 2), in_channels, width)
        ch = scale_channels(fpn_channels, width)
        self.lateral = nn.ModuleList(
            nn.Conv2d(self.encoder.channels[name], ch, 1) for name in _LEVELS
        )
        self.smooth = nn.ModuleList(ConvBNAct(ch, ch, 3) for _ in _LEVELS)
        self.classifier = nn.Conv2d(ch, num_classes, 1)
        enc = self.encoder.tap_info()
        self.tap_info = {**enc, "fpn": TapInfo(ch, 4), "low": enc["stem"], "high": enc["layer2"]}
        if encoder_weights:
            load_encoder_weights(self.encoder, encoder_weights)

    def forward(self, x: torch.Tensor) -> SegOutput:
        xp = pad_to_multiple(x, self.pad_multiple)
        feats = self.encoder(xp)
        laterals = [conv(feats[name]) for conv, name in zip(self.lateral, _LEVELS, strict=True)]
        for i in range(len(laterals) - 2, -1, -1):  # top-down: coarse into fine
            laterals[i] = laterals[i] + resize_to(laterals[i + 1], laterals[i])
        finest = laterals[0]
        fpn = sum(resize_to(conv(p), finest) for conv, p in zip(self.smooth, laterals, strict=True))
        logits = self.classifier(fpn)
        logits = F.interpolate(logits, size=xp.shape[-2:], mode="bilinear", align_corners=False)
        taps = {**feats, "fpn": fpn, "low": feats["stem"], "high": feats["layer2"]}
        return seg_output(logits, taps, self.tap_info, x.shape[-2:])
