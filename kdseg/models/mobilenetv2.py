"""MobileNetV2 student: output stride 8 by dilation, 1x1 classifier, bilinear upsampling.

The paper's second student (about 2.2M parameters). Inverted residual blocks (1x1 expand,
3x3 depthwise, 1x1 linear projection): the depthwise separable convolution costs
``1/N + 1/k^2`` of a standard one. The encoder is shared with ``mobilenetv2_lraspp``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdseg.models.layers import (
    ConvBNAct,
    load_encoder_weights,
    pad_to_multiple,
    scale_channels,
    seg_output,
)
from kdseg.models.registry import register_model
from kdseg.models.taps import SegmentationModel, SegOutput, TapInfo

# (expansion t, channels c, blocks n, stride s) of the MobileNetV2 paper, one row per stage
_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1))
_STAGES += ((6, 160, 3, 2), (6, 320, 1, 1))


class InvertedResidual(nn.Module):
    """1x1 expand (ReLU6) -> 3x3 depthwise (ReLU6) -> 1x1 linear project, residual if shapes match.

    Submodule names follow torchvision (``conv.0.0.weight`` ...), so its weights load as they are.
    """

    def __init__(self, inp: int, oup: int, stride: int, dilation: int, expand: int) -> None:
        super().__init__()
        hidden = inp * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(ConvBNAct(inp, hidden, 1, act="relu6"))
        layers += [
            ConvBNAct(hidden, hidden, 3, stride, dilation, groups=hidden, act="relu6"),
            nn.Conv2d(hidden, oup, 1, bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and inp == oup

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


class MobileNetV2Encoder(nn.Module):
    """MobileNetV2 feature extractor at output stride 8 (or 16/32), stage outputs by name.

    ``features`` is laid out as torchvision's (index 0 the stem, 1-17 the blocks, 18 the final
    1x1 conv to 1280 when ``head_conv``), so a torchvision state_dict loads into it. Once the
    output stride is reached, later stride-2 stages run at stride 1 with dilation 2, then 4
    (every block of the stage dilated). Stages: ``stem`` (32 ch, stride 2), ``stage1`` (16, 2),
    ``stage2`` (24, 4), ``stage3`` (32, 8), ``stage4`` (64), ``stage5`` (96), ``stage6`` (160),
    ``stage7`` (320) and ``head`` (1280), the last five at stride 8 when ``output_stride=8``.
    ``width`` scales every channel count, the 1280 included (torchvision keeps it at 1280).
    """

    def __init__(
        self,
        in_channels: int = 1,
        width: float = 1.0,
        output_stride: int = 8,
        head_conv: bool = True,
    ) -> None:
        super().__init__()
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        stem = scale_channels(32, width)
        features: list[nn.Module] = [ConvBNAct(in_channels, stem, 3, stride=2, act="relu6")]
        self.channels = {"stem": stem}
        self.strides = {"stem": 2}
        self._ends = {0: "stem"}  # index in ``features`` -> name of the stage it ends
        inp, stride_total, dilation = stem, 2, 1
        for i, (t, c, n, s) in enumerate(_STAGES, 1):
            oup = scale_channels(c, width)
            if s == 2 and stride_total >= output_stride:
                s, dilation = 1, dilation * 2
            stride_total *= s
            for j in range(n):
                features.append(InvertedResidual(inp, oup, s if j == 0 else 1, dilation, t))
                inp = oup
            self._ends[len(features) - 1] = f"stage{i}"
            self.channels[f"stage{i}"] = oup
            self.strides[f"stage{i}"] = stride_total
        if head_conv:
            last = scale_channels(1280, width)
            features.append(ConvBNAct(inp, last, 1, act="relu6"))
            self._ends[len(features) - 1] = "head"
            self.channels["head"] = last
            self.strides["head"] = stride_total
        self.features = nn.Sequential(*features)
        self.last = next(reversed(self.channels))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {}
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self._ends:
                out[self._ends[i]] = x
        return out

    def tap_info(self) -> dict[str, TapInfo]:
        """:class:`TapInfo` of every stage."""
        return {k: TapInfo(self.channels[k], self.strides[k]) for k in self.channels}


@register_model("mobilenetv2")
class MobileNetV2(SegmentationModel):
    """MobileNetV2 (output stride 8, with the 1280 conv) + 1x1 classifier + 8x bilinear.

    2.23M parameters at in_channels=1, num_classes=2, width=1 (paper 2.2M). ``width`` scales
    every channel count: params and mult-adds ~width^2.

    Sizes: input replicate-padded to a multiple of 8, logits upsampled to the padded size and
    cropped to H x W. Taps (stride; size ``ceil(H/s)``): the encoder stages (see
    :class:`MobileNetV2Encoder`); ``low`` = ``stage1`` (16 ch, the last stride-2 feature),
    ``high`` = ``head`` (1280 ch, the deepest stride-8 feature).
    ``encoder_weights``: local torchvision-style MobileNetV2 state_dict (``classifier.*`` is
    ignored; an RGB stem is summed to ``in_channels=1``).
    """

    pad_multiple = 8

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        width: float = 1.0,
        encoder_weights: str | None = None,
    ) -> None:
        super().__init__()
        self.encoder = MobileNetV2Encoder(in_channels, width, output_stride=8)
        self.classifier = nn.Conv2d(self.encoder.channels["head"], num_classes, 1)
        enc = self.encoder.tap_info()
        self.tap_info = {**enc, "low": enc["stage1"], "high": enc["head"]}
        if encoder_weights:
            load_encoder_weights(self.encoder, encoder_weights)

    def forward(self, x: torch.Tensor) -> SegOutput:
        xp = pad_to_multiple(x, self.pad_multiple)
        feats = self.encoder(xp)
        logits = self.classifier(feats["head"])
        logits = F.interpolate(logits, size=xp.shape[-2:], mode="bilinear", align_corners=False)
        taps = {**feats, "low": feats["stage1"], "high": feats["head"]}
        return seg_output(logits, taps, self.tap_info, x.shape[-2:])
