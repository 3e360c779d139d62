"""Alignment helpers between a student tap and a teacher tap: channels and spatial size.

The 1x1 channel adapters are owned by :class:`~kdseg.distill.criterion.DistillationCriterion`,
never by the student, so the exported student carries none of them (the "connector" of
MMRazor, the "regressor" of FitNets). Everything here is N-D: the same code serves 2D
(B, C, H, W) and 3D (B, C, D, H, W) tensors, choosing the operator from the tensor's rank.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_LINEAR_MODE = {1: "linear", 2: "bilinear", 3: "trilinear"}
_ADAPTIVE_AVG_POOL = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}


def spatial_dims(x: torch.Tensor) -> int:
    """Number of spatial dimensions of a (B, C, *spatial) tensor (1, 2 or 3)."""
    dims = x.ndim - 2
    if dims not in _CONV:
        raise ValueError(f"expected a (B, C, *spatial) tensor with 1-3 spatial dims, got {x.shape}")
    return dims


def resize_to(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Resize a (B, C, *spatial) tensor to ``size`` by (bi/tri)linear interpolation.

    Returns ``x`` itself when it already has that size, so aligned taps cost nothing.
    """
    size = tuple(int(s) for s in size)
    if tuple(x.shape[2:]) == size:
        return x
    mode = _LINEAR_MODE[spatial_dims(x)]
    return F.interpolate(x, size=size, mode=mode, align_corners=False)


def resize_labels(
    labels: torch.Tensor, size: Sequence[int], stride: int | None = None
) -> torch.Tensor:
    """Labels resized to a tap's ``size`` without new values; returns (B, *size) int64.

    ``labels`` is (B, *spatial) or (B, 1, *spatial), at the input size. Kept integral (no new
    class values appear at region borders), as the EMKD paper does for its region masks.
    ``stride``: the tap's stride ``s`` (:class:`~kdseg.models.taps.TapInfo`). A tap of a kdseg
    network is ``ceil(n / s)`` long on an axis of ``n`` (:func:`kdseg.models.layers.seg_output`)
    and its pixel ``i`` covers input pixels ``[s * i, s * i + s)``: where ``size`` is that,
    pixel ``i`` takes the label of input pixel ``s * i``, the first of its cell. Nearest
    interpolation (without a stride, or at a size no stride gives) samples ``floor(i * n /
    size)`` instead: the same pixel where ``n`` is a multiple of ``s``, but drifting up to a
    whole cell against the tap where it is not (n = 97, s = 8: rows 0, 7, ..., 89 for cells
    starting at 0, 8, ..., 96).
    """
    size = tuple(int(s) for s in size)
    if labels.ndim == len(size) + 2:
        if labels.shape[1] != 1:
            raise ValueError(
                f"labels must be (B, *spatial) or (B, 1, *spatial), got {labels.shape}"
            )
        labels = labels[:, 0]
    if labels.ndim != len(size) + 1:
        raise ValueError(
            f"labels of shape {tuple(labels.shape)} do not match {len(size)}-D features"
        )
    full = tuple(labels.shape[1:])
    if full == size:
        return labels.long()
    if stride is not None and all(-(-n // stride) == m for n, m in zip(full, size, strict=True)):
        return labels[(slice(None),) + (slice(None, None, stride),) * len(size)].long()
    return F.interpolate(labels[:, None].float(), size=size, mode="nearest")[:, 0].long()


def adaptive_avg_pool(x: torch.Tensor, size: int | Sequence[int]) -> torch.Tensor:
    """Adaptive average pooling of a (B, C, *spatial) tensor to a fixed grid ``size``.

    An int is repeated over every spatial dimension (8 -> 8x8 in 2D, 8x8x8 in 3D).
    """
    dims = spatial_dims(x)
    grid = (int(size),) * dims if isinstance(size, int) else tuple(int(s) for s in size)
    if len(grid) != dims:
        raise ValueError(f"pooling grid {grid} does not match {dims}-D features")
    return _ADAPTIVE_AVG_POOL[dims](x, grid)


class ChannelAdapter(nn.Module):
    """Learned 1x1 convolution mapping ``in_channels`` to ``out_channels`` (student -> teacher).

    One weight matrix (out, in) serves 1D, 2D and 3D inputs: the convolution (``conv2d`` or
    ``conv3d``) is chosen from the input's rank at call time, so the adapter can be built from
    :class:`~kdseg.models.taps.TapInfo` alone, before any tensor is seen. Initialised like
    ``nn.Conv2d`` with a 1x1 kernel.
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1.0 / math.sqrt(in_channels)
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = spatial_dims(x)
        if x.shape[1] != self.in_channels:
            raise ValueError(f"adapter expects {self.in_channels} channels, got {x.shape[1]}")
        kernel = self.weight.view(self.out_channels, self.in_channels, *(1,) * dims)
        return _CONV[dims](x, kernel, self.bias)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, bias={self.bias is not None}"
