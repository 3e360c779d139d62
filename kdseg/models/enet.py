"""ENet student: the paper's smallest network (about 0.35M parameters), native decoder.

ENet (Paszke et al., 2016) downsamples early and hard (stride 2 in the initial block, 8 after
two stages) and then works at stride 8 with factorised, dilated and asymmetric bottlenecks;
its small decoder upsamples with the max-pooling indices of the encoder (max-unpooling).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdseg.errors import ConfigError
from kdseg.models.layers import ConvBNAct, pad_to_multiple, scale_channels, seg_output
from kdseg.models.registry import register_model
from kdseg.models.taps import SegmentationModel, SegOutput, TapInfo


class InitialBlock(nn.Module):
    """3x3 stride-2 conv (``out - in`` filters) concatenated with a 2x2 max-pool of the input.

    With 3 input channels this is the paper's 13 conv + 3 pooled = 16 channels; with 1 input
    channel, 15 + 1. BatchNorm and PReLU follow the concatenation.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        conv_out = max(out_channels - in_channels, out_channels // 2)
        self.conv = nn.Conv2d(in_channels, conv_out, 3, stride=2, padding=1, bias=False)
        self.pool = nn.MaxPool2d(2, stride=2)
        self.out_channels = conv_out + in_channels
        self.bn = nn.BatchNorm2d(self.out_channels)
        self.act = nn.PReLU(self.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(torch.cat([self.conv(x), self.pool(x)], dim=1)))


class RegularBottleneck(nn.Module):
    """Residual bottleneck: 1x1 project to C/4, a 3x3 (dilated) or 5x1+1x5 conv, 1x1 expand.

    ``kind`` is ``"regular"``, ``"dilated"`` (with ``dilation``) or ``"asymmetric"``. Spatial
    dropout on the branch, PReLU after the sum, as in the paper.
    """

    def __init__(
        self, channels: int, kind: str = "regular", dilation: int = 1, dropout: float = 0.1
    ) -> None:
        super().__init__()
        internal = max(channels // 4, 1)
        self.project = ConvBNAct(channels, internal, 1, act="prelu")
        if kind == "asymmetric":
            self.conv = nn.Sequential(
                nn.Conv2d(internal, internal, (5, 1), padding=(2, 0), bias=False),
                nn.Conv2d(internal, internal, (1, 5), padding=(0, 2), bias=False),
                nn.BatchNorm2d(internal),
                nn.PReLU(internal),
            )
        elif kind in ("regular", "dilated"):
            self.conv = ConvBNAct(internal, internal, 3, dilation=dilation, act="prelu")
        else:
            raise ValueError(f"unknown bottleneck kind {kind!r}")
        self.expand = ConvBNAct(internal, channels, 1, act=None)
        self.dropout = nn.Dropout2d(dropout)
        self.act = nn.PReLU(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch = self.dropout(self.expand(self.conv(self.project(x))))
        return self.act(x + branch)


class DownsamplingBottleneck(nn.Module):
    """Stride-2 bottleneck: max-pool (indices kept) + zero channel padding on the main path.

    The branch opens with a 2x2 stride-2 conv to ``in/4``. Returns the output and the pooling
    indices for the matching :class:`UpsamplingBottleneck`.
    """

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.1) -> None:
        super().__init__()
        internal = max(in_channels // 4, 1)
        self.extra_channels = out_channels - in_channels
        self.project = ConvBNAct(in_channels, internal, 2, stride=2, act="prelu")
        self.conv = ConvBNAct(internal, internal, 3, act="prelu")
        self.expand = ConvBNAct(internal, out_channels, 1, act=None)
        self.dropout = nn.Dropout2d(dropout)
        self.act = nn.PReLU(out_channels)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        main, indices = F.max_pool2d(x, 2, stride=2, return_indices=True)
        main = F.pad(main, (0, 0, 0, 0, 0, self.extra_channels))  # zero channels at the end
        branch = self.dropout(self.expand(self.conv(self.project(x))))
        return self.act(main + branch), indices


class UpsamplingBottleneck(nn.Module):
    """2x upsampling bottleneck: 1x1 conv + max-unpooling on the main path, a transposed
    3x3 stride-2 conv in the branch.

    The unpooling output size is the default ``2 * input`` (inputs are padded to a multiple of
    8, so it equals the pre-pooling size): passing ``output_size`` breaks ``torch.export``.
    """

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.1) -> None:
        super().__init__()
        internal = max(in_channels // 4, 1)
        self.main = ConvBNAct(in_channels, out_channels, 1, act=None)
        self.project = ConvBNAct(in_channels, internal, 1, act="prelu")
        self.upconv = nn.Sequential(
            nn.ConvTranspose2d(
                internal, internal, 3, stride=2, padding=1, output_padding=1, bias=False
            ),
            nn.BatchNorm2d(internal),
            nn.PReLU(internal),
        )
        self.expand = ConvBNAct(internal, out_channels, 1, act=None)
        self.dropout = nn.Dropout2d(dropout)
        self.act = nn.PReLU(out_channels)

    def forward(self, x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        main = F.max_unpool2d(self.main(x), indices, 2, stride=2)
        branch = self.dropout(self.expand(self.upconv(self.project(x))))
        return self.act(main + branch)


def _stage(channels: int, dropout: float) -> nn.Sequential:
    """Stages 2 and 3 of ENet (after the downsampling bottleneck of stage 2)."""
    plan = [
        ("regular", 1),
        ("dilated", 2),
        ("asymmetric", 1),
        ("dilated", 4),
        ("regular", 1),
        ("dilated", 8),
        ("asymmetric", 1),
        ("dilated", 16),
    ]
    return nn.Sequential(*(RegularBottleneck(channels, k, d, dropout) for k, d in plan))


@register_model("enet")
class ENet(SegmentationModel):
    """ENet as in the paper: initial block, stages 1-3 (encoder), stages 4-5 (decoder).

    Channels (width 1): initial 16 (stride 2); stage 1: downsampling 16->64 + 4 regular
    (stride 4); stage 2: downsampling 64->128 + 8 (regular, dilated 2/4/8/16, asymmetric 5)
    (stride 8); stage 3: the same 8 without downsampling; stage 4: upsampling 128->64 + 2
    regular; stage 5: upsampling 64->16 + 1 regular; a 2x2 stride-2 transposed conv to the
    classes. The internal (projected) width of every bottleneck is 1/4 of its input width;
    PReLU everywhere with one slope per channel (the paper's "additional parameter per feature
    map"), spatial dropout 0.01 in stage 1 and ``dropout`` (0.1) later. 0.359M parameters at
    in_channels=1, num_classes=2, width=1 (paper 0.353M, +1.7%; one PReLU slope per layer would
    give 0.355M, projecting to 1/4 of the output width 0.363M). ``width`` scales every channel
    count: params and mult-adds ~width^2.

    Sizes: input replicate-padded to a multiple of 8 (the max-unpooling needs even sizes at
    every level), logits cropped to H x W. Taps (stride; size ``ceil(H/s)``): ``stem`` (2, the
    initial block), ``stage1`` (4), ``stage2`` (8), ``stage3`` (8), ``decoder`` (2, the output
    of stage 5); ``low`` = ``stem``, ``high`` = ``stage3``.
    """

    pad_multiple = 8

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        width: float = 1.0,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        c16, c64, c128 = (scale_channels(c, width) for c in (16, 64, 128))
        self.initial = InitialBlock(in_channels, c16)
        c0 = self.initial.out_channels
        if c0 > c64:  # the main path would drop stem channels (a negative zero-padding)
            raise ConfigError(
                f"enet: width {width} gives stage 1 {c64} channels, fewer than the initial "
                f"block's {c0} with in_channels={in_channels}; use a larger width"
            )
        self.down1 = DownsamplingBottleneck(c0, c64, dropout=0.01)
        self.stage1 = nn.Sequential(*(RegularBottleneck(c64, dropout=0.01) for _ in range(4)))
        self.down2 = DownsamplingBottleneck(c64, c128, dropout=dropout)
        self.stage2 = _stage(c128, dropout)
        self.stage3 = _stage(c128, dropout)
        self.up4 = UpsamplingBottleneck(c128, c64, dropout=dropout)
        self.stage4 = nn.Sequential(*(RegularBottleneck(c64, dropout=dropout) for _ in range(2)))
        self.up5 = UpsamplingBottleneck(c64, c0, dropout=dropout)
        self.stage5 = RegularBottleneck(c0, dropout=dropout)
        self.fullconv = nn.ConvTranspose2d(c0, num_classes, 2, stride=2)
        self.tap_info = {
            "stem": TapInfo(c0, 2),
            "stage1": TapInfo(c64, 4),
            "stage2": TapInfo(c128, 8),
            "stage3": TapInfo(c128, 8),
            "decoder": TapInfo(c0, 2),
        }
        self.tap_info |= {"low": self.tap_info["stem"], "high": self.tap_info["stage3"]}

    def forward(self, x: torch.Tensor) -> SegOutput:
        xp = pad_to_multiple(x, self.pad_multiple)
        stem = self.initial(xp)
        d1, idx1 = self.down1(stem)
        s1 = self.stage1(d1)
        d2, idx2 = self.down2(s1)
        s2 = self.stage2(d2)
        s3 = self.stage3(s2)
        u4 = self.stage4(self.up4(s3, idx2))
        u5 = self.stage5(self.up5(u4, idx1))
        logits = self.fullconv(u5)
        taps = {"stem": stem, "stage1": s1, "stage2": s2, "stage3": s3, "decoder": u5}
        taps |= {"low": stem, "high": s3}
        return seg_output(logits, taps, self.tap_info, x.shape[-2:])
