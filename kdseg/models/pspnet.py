"""PSPNet teacher (T2): dilated ResNet50 with a deep stem, output stride 8, pyramid pooling.

The paper's largest teacher (about 46.7M parameters): context from a pyramid of pooled
summaries (1x1, 2x2, 3x3, 6x6 bins) concatenated to the stride-8 feature map.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdseg.models.layers import (
    Bottleneck,
    ConvBNAct,
    ResNetEncoder,
    adaptive_avg_pool2d,
    load_encoder_weights,
    pad_to_multiple,
    resize_to,
    scale_channels,
    seg_output,
)
from kdseg.models.registry import register_model
from kdseg.models.taps import SegmentationModel, SegOutput, TapInfo


class PyramidPooling(nn.Module):
    """Pyramid pooling module: per bin, adaptive average pool -> 1x1 conv-BN-ReLU -> upsample.

    The branches (``in/len(bins)`` channels each) are concatenated to the input. The pooling
    is the exportable :func:`~kdseg.models.layers.adaptive_avg_pool2d`, identical to
    ``F.adaptive_avg_pool2d`` but correct in ONNX at every input size. The global (1x1) bin
    has a biased conv and no BatchNorm: BatchNorm over a batch of single values fails in
    training with batch size 1 (the original PSPNet has it; this is the one deviation).
    """

    def __init__(self, in_channels: int, bins: tuple[int, ...]) -> None:
        super().__init__()
        self.bins = tuple(bins)
        branch = in_channels // len(self.bins)
        self.branches = nn.ModuleList(
            nn.Sequential(nn.Conv2d(in_channels, branch, 1), nn.ReLU(inplace=False))
            if b == 1
            else ConvBNAct(in_channels, branch, 1)
            for b in self.bins
        )
        self.out_channels = in_channels + branch * len(self.bins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = [
            resize_to(conv(adaptive_avg_pool2d(x, b)), x)
            for conv, b in zip(self.branches, self.bins, strict=True)
        ]
        return torch.cat([x, *pooled], dim=1)


@register_model("pspnet")
class PSPNet(SegmentationModel):
    """Dilated ResNet50 (deep stem 64-64-128, layer3/4 dilated 2/4) + PPM + 8x bilinear.

    Head: PPM with bins ``(1, 2, 3, 6)`` (2048 -> 4 x 512), 3x3 conv-BN-ReLU 4096 -> 512,
    dropout 0.1, 1x1 classifier. No auxiliary head (the paper's 46.7M matches without it):
    46.71M parameters at in_channels=1, num_classes=2, width=1. ``width`` scales every channel
    count: params and mult-adds ~width^2.

    Sizes: input replicate-padded to a multiple of 8, logits upsampled to the padded size and
    cropped to H x W. Taps (stride; size ``ceil(H/s)``): ``stem`` (2, 128 ch), ``layer1`` (4),
    ``layer2`` (8), ``layer3`` (8), ``layer4`` (8), ``ppm`` (8, the 512-ch head feature);
    ``low`` = ``stem``, ``high`` = ``layer4`` (the deepest stride-8 encoder feature).
    ``encoder_weights``: local state_dict for the encoder (torchvision names; the deep stem is
    ``conv1.0/1/3/4/6`` then ``bn1``).
    """

    pad_multiple = 8

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        width: float = 1.0,
        bins: tuple[int, ...] = (1, 2, 3, 6),
        dropout: float = 0.1,
        encoder_weights: str | None = None,
    ) -> None:
        super().__init__()
        self.encoder = ResNetEncoder(
            Bottleneck, (3, 4, 6, 3), in_channels, width, deep_stem=True, output_stride=8
        )
        self.ppm = PyramidPooling(self.encoder.channels["layer4"], tuple(bins))
        mid = scale_channels(512, width)
        self.bottleneck = ConvBNAct(self.ppm.out_channels, mid, 3)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(mid, num_classes, 1)
        enc = self.encoder.tap_info()
        self.tap_info = {**enc, "ppm": TapInfo(mid, 8), "low": enc["stem"], "high": enc["layer4"]}
        if encoder_weights:
            load_encoder_weights(self.encoder, encoder_weights)

    def forward(self, x: torch.Tensor) -> SegOutput:
        xp = pad_to_multiple(x, self.pad_multiple)
        feats = self.encoder(xp)
        head = self.bottleneck(self.ppm(feats["layer4"]))
        logits = self.classifier(self.dropout(head))
        logits = F.interpolate(logits, size=xp.shape[-2:], mode="bilinear", align_corners=False)
        taps = {**feats, "ppm": head, "low": feats["stem"], "high": feats["layer4"]}
        return seg_output(logits, taps, self.tap_info, x.shape[-2:])
