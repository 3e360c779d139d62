"""MobileNetV2 with an LR-ASPP head: the MobileNetV2 student with a light decoder and a skip.

Beyond the paper. Lite R-ASPP (from the MobileNetV3 paper) replaces the paper student's
1280-channel conv and stride-8 classifier by a gated 1x1 branch plus a classifier on a fine
skip, which recovers boundaries for almost no compute.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdseg.models.layers import (
    ConvBNAct,
    load_encoder_weights,
    pad_to_multiple,
    resize_to,
    scale_channels,
    seg_output,
)
from kdseg.models.mobilenetv2 import MobileNetV2Encoder
from kdseg.models.registry import register_model
from kdseg.models.taps import SegmentationModel, SegOutput, TapInfo


@register_model("mobilenetv2_lraspp")
class MobileNetV2LRASPP(SegmentationModel):
    """MobileNetV2 (output stride 8, no 1280 conv) + LR-ASPP head with a stride-2 skip.

    Head: on ``stage7`` (320 ch, stride 8) a 1x1 conv-BN-ReLU to ``head_channels`` (128) times a
    sigmoid gate from its global average (1x1 conv, no BN); upsampled to the stride-2 skip
    ``stage1`` (16 ch); logits = 1x1 classifier of the gated feature + 1x1 classifier of the
    skip; 2x bilinear upsampling. The original LR-ASPP uses strides 16/8 on MobileNetV3; here
    the backbone is the paper student's stride-8 one, so the skip comes from stride 2. 1.89M
    parameters at in_channels=1, num_classes=2, width=1. ``width`` scales every channel count
    (``head_channels`` included): params and mult-adds ~width^2.

    Sizes: input replicate-padded to a multiple of 8, logits cropped to H x W. Taps (stride;
    size ``ceil(H/s)``): the encoder stages ``stem`` .. ``stage7``, ``lraspp`` (stride 8, the
    gated head feature); ``low`` = ``stage1``, ``high`` = ``stage7``.
    ``encoder_weights``: local torchvision-style MobileNetV2 state_dict.
    """

    pad_multiple = 8

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        width: float = 1.0,
        head_channels: int = 128,
        encoder_weights: str | None = None,
    ) -> None:
        super().__init__()
        self.encoder = MobileNetV2Encoder(in_channels, width, output_stride=8, head_conv=False)
        high, low = self.encoder.channels["stage7"], self.encoder.channels["stage1"]
        ch = scale_channels(head_channels, width)
        self.cbr = ConvBNAct(high, ch, 1)
        self.scale = nn.Conv2d(high, ch, 1)
        self.high_classifier = nn.Conv2d(ch, num_classes, 1)
        self.low_classifier = nn.Conv2d(low, num_classes, 1)
        enc = self.encoder.tap_info()
        self.tap_info = {
            **enc,
            "lraspp": TapInfo(ch, 8),
            "low": enc["stage1"],
            "high": enc["stage7"],
        }
        if encoder_weights:
            load_encoder_weights(self.encoder, encoder_weights)

    def forward(self, x: torch.Tensor) -> SegOutput:
        xp = pad_to_multiple(x, self.pad_multiple)
        feats = self.encoder(xp)
        high, low = feats["stage7"], feats["stage1"]
        gated = self.cbr(high) * torch.sigmoid(self.scale(high.mean((2, 3), keepdim=True)))
        logits = resize_to(self.high_classifier(gated), low) + self.low_classifier(low)
        logits = F.interpolate(logits, size=xp.shape[-2:], mode="bilinear", align_corners=False)
        taps = {**feats, "lraspp": gated, "low": low, "high": high}
        return seg_output(logits, taps, self.tap_info, x.shape[-2:])
