"""UNet++ teacher (T3): nested U-Net with dense skip pathways, no deep supervision.

UNet++ (Zhou et al., 2018) fills the gap between encoder and decoder with nested conv nodes:
node ``X(i, j)`` at depth ``i`` sees every earlier node of its row and the upsampled node
``X(i+1, j-1)`` below, so the semantic gap between the skip and the decoder shrinks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdseg.models.layers import ConvBNAct, pad_to_multiple, resize_to, scale_channels, seg_output
from kdseg.models.registry import register_model
from kdseg.models.taps import SegmentationModel, SegOutput, TapInfo


class VGGBlock(nn.Sequential):
    """Two 3x3 conv-BN-ReLU: the node of UNet++."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            ConvBNAct(in_channels, out_channels), ConvBNAct(out_channels, out_channels)
        )


@register_model("unetpp")
class UNetPlusPlus(SegmentationModel):
    """UNet++ of depth 5 (4 poolings), widths ``base * (1, 2, 4, 8, 16)``, base 48.

    Node ``X(i, j)`` (``i`` depth, ``j`` column) is a :class:`VGGBlock` on the concatenation
    of ``X(i, 0..j-1)`` and ``X(i+1, j-1)`` upsampled 2x (bilinear); the encoder is
    ``X(0..4, 0)`` with 2x2 max-pooling between. A 1x1 classifier on ``X(0, 4)`` (no deep
    supervision). 20.60M parameters at in_channels=1, num_classes=2, width=1 (paper 20.6M);
    ``base`` 32 is the original UNet++ (9.2M). ``width`` scales every channel count: params
    and mult-adds ~width^2.

    Sizes: input replicate-padded to a multiple of 16, logits cropped to H x W. Taps
    (stride; size ``ceil(H/s)``): ``x0_0`` (1), ``x1_0`` (2), ``x2_0`` (4), ``x3_0`` (8),
    ``x4_0`` (16) (the encoder column), ``x0_4`` (1, the last decoder node); ``low`` =
    ``x1_0``, ``high`` = ``x3_0``.
    """

    pad_multiple = 16
    depth = 5

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        width: float = 1.0,
        base: int = 48,
    ) -> None:
        super().__init__()
        ch = [scale_channels(base * 2**i, width) for i in range(self.depth)]
        self.nodes = nn.ModuleDict()
        for j in range(self.depth):  # column
            for i in range(self.depth - j):  # depth
                if j == 0:
                    cin = in_channels if i == 0 else ch[i - 1]
                else:
                    cin = ch[i] * j + ch[i + 1]
                self.nodes[f"x{i}_{j}"] = VGGBlock(cin, ch[i])
        self.classifier = nn.Conv2d(ch[0], num_classes, 1)
        self.tap_info = {f"x{i}_0": TapInfo(ch[i], 2**i) for i in range(self.depth)}
        self.tap_info |= {
            "x0_4": TapInfo(ch[0], 1),
            "low": self.tap_info["x1_0"],
            "high": self.tap_info["x3_0"],
        }

    def forward(self, x: torch.Tensor) -> SegOutput:
        xp = pad_to_multiple(x, self.pad_multiple)
        grid: dict[tuple[int, int], torch.Tensor] = {}
        for i in range(self.depth):
            inp = xp if i == 0 else F.max_pool2d(grid[i - 1, 0], 2)
            grid[i, 0] = self.nodes[f"x{i}_0"](inp)
        for j in range(1, self.depth):
            for i in range(self.depth - j):
                row = [grid[i, k] for k in range(j)]
                below = resize_to(grid[i + 1, j - 1], grid[i, 0])
                grid[i, j] = self.nodes[f"x{i}_{j}"](torch.cat([*row, below], dim=1))
        logits = self.classifier(grid[0, self.depth - 1])
        taps = {f"x{i}_0": grid[i, 0] for i in range(self.depth)}
        taps |= {"x0_4": grid[0, 4], "low": grid[1, 0], "high": grid[3, 0]}
        return seg_output(logits, taps, self.tap_info, x.shape[-2:])
