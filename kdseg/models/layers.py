"""Building blocks shared by the networks of the model zoo.

Everything here follows three rules every network relies on:

* activations are never in-place (torch-pruning cannot trace in-place ops);
* nothing branches on tensor values, so ``torch.export`` (the ONNX exporter) sees one graph
  for every spatial size;
* sizes are exact for any input: a network pads its input at the bottom/right to a multiple of
  its total stride (:func:`pad_to_multiple`), and :func:`seg_output` crops the logits back to
  the input size and every tap of stride ``s`` to ``ceil(H / s) x ceil(W / s)``. Cropping the
  taps too means two networks with different padding multiples (a stride-32 teacher and a
  stride-8 student) give taps of the same size and the same geometry for any input: tap pixel
  ``i`` always covers input rows ``[s*i, s*i + s)``.

The ResNet encoder lives here because four networks use it (RA-UNet, PSPNet, ResNet18 and
ResNet18-FPN); its parameter names follow torchvision's ``resnet`` (``conv1``, ``bn1``,
``layer1.0.conv1`` ...) so a local torchvision-style state_dict loads into it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from kdseg.errors import InputError
from kdseg.models.taps import SegOutput, TapInfo

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------
# width multiplier, padding and cropping


def scale_channels(channels: int, width: float, divisor: int = 8, minimum: int = 8) -> int:
    """``channels * width`` rounded to the nearest multiple of ``divisor``, at least ``minimum``.

    Every channel count of a network goes through this, so parameters scale with about
    ``width**2`` and multiply-adds too; at ``width=1.0`` the counts are the paper's (all
    multiples of 8).
    """
    if width <= 0:
        raise ValueError(f"width must be positive, got {width}")
    return max(minimum, int(channels * width / divisor + 0.5) * divisor)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Replicate-pad the last two dims at the bottom/right up to a multiple of ``multiple``.

    The padding amount is computed from the (possibly symbolic) shape, never from values, and
    is always applied (zero amounts included), so the exported graph is the same for all sizes.
    Replicate rather than zero padding: it continues the image edge (air in CT) instead of
    drawing an artificial mid-grey band next to it.
    """
    h, w = x.shape[-2:]
    # written as ceil(h / m) * m - h (not (-h) % m) so the exporter's symbolic sizes downstream
    # are m * k, which it can halve exactly
    pad_h = (h + multiple - 1) // multiple * multiple - h
    pad_w = (w + multiple - 1) // multiple * multiple - w
    return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")


def resize_to(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Bilinearly resize ``x`` to the spatial size of ``ref`` (align_corners=False).

    Decoders upsample to the size of the tensor they are fused with rather than by a scale
    factor, so the exporter sees one symbolic size for both operands.
    """
    return F.interpolate(x, size=ref.shape[-2:], mode="bilinear", align_corners=False)


def seg_output(
    logits: torch.Tensor,
    taps: Mapping[str, torch.Tensor],
    tap_info: Mapping[str, TapInfo],
    size: Sequence[int],
) -> SegOutput:
    """Crop logits to ``size`` (the unpadded input size) and each tap to ``ceil(size / stride)``.

    ``logits`` and the taps come from the padded input; the padding sits at the bottom/right,
    so cropping keeps exactly the part that covers the input.
    """
    h, w = size
    cropped = {}
    for name, tap in taps.items():
        s = tap_info[name].stride
        cropped[name] = tap[..., : (h + s - 1) // s, : (w + s - 1) // s]
    return SegOutput(logits=logits[..., :h, :w], taps=cropped)


# ----------------------------------------------------------------------------------------------
# generic layers


def make_act(kind: str | None, channels: int) -> nn.Module:
    """An activation module by name (never in-place): relu, relu6, prelu (per channel) or None."""
    if kind is None:
        return nn.Identity()
    if kind == "relu":
        return nn.ReLU(inplace=False)
    if kind == "relu6":
        return nn.ReLU6(inplace=False)
    if kind == "prelu":
        return nn.PReLU(channels)
    raise ValueError(f"unknown activation {kind!r}")


class ConvBNAct(nn.Sequential):
    """Conv2d (no bias) -> BatchNorm2d -> activation; ``padding`` defaults to "same" for odd k.

    A ``Sequential`` so its parameters are named ``0.weight`` / ``1.*`` like torchvision's
    ``Conv2dNormActivation`` (MobileNetV2 state_dicts load as they are).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        act: str | None = "relu",
    ) -> None:
        padding = dilation * (kernel_size - 1) // 2
        super().__init__(
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride=stride,
                padding=padding,
                dilation=dilation,
                groups=groups,
                bias=False,
            ),
            nn.BatchNorm2d(out_channels),
            make_act(act, out_channels),
        )


def _pool_matrix(n: torch.SymInt | int, bins: int, like: torch.Tensor) -> torch.Tensor:
    """(bins, n) averaging matrix with PyTorch's adaptive-pooling windows.

    Bin ``i`` averages positions ``[floor(i*n/bins), ceil((i+1)*n/bins))``, as
    ``F.adaptive_avg_pool2d`` does. Built from the (symbolic) size with tensor ops only.
    """
    pos = torch.arange(n, device=like.device)
    i = torch.arange(bins, device=like.device)
    start = (i * n) // bins
    end = ((i + 1) * n + bins - 1) // bins
    mask = (pos[None, :] >= start[:, None]) & (pos[None, :] < end[:, None])
    weights = mask.to(like.dtype)
    return weights / weights.sum(dim=1, keepdim=True)


def adaptive_avg_pool2d(x: torch.Tensor, bins: int) -> torch.Tensor:
    """``F.adaptive_avg_pool2d(x, bins)``, exportable to ONNX with dynamic spatial sizes.

    The exporter decomposes ``adaptive_avg_pool2d`` with the window indices of the trace-time
    size baked in, so the ONNX graph is wrong (or fails) at any other size. Adaptive average
    pooling is linear: ``P_h @ x @ P_w^T`` with the averaging matrices of
    :func:`_pool_matrix`, which are rebuilt from the runtime shape. Costs ``bins*H*W*C`` extra
    mult-adds, negligible next to the convolutions.
    """
    h, w = x.shape[-2:]
    return _pool_matrix(h, bins, x) @ x @ _pool_matrix(w, bins, x).transpose(0, 1)


# ----------------------------------------------------------------------------------------------
# ResNet encoder (torchvision parameter names)


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(
        in_ch, out_ch, 3, stride=stride, padding=dilation, dilation=dilation, bias=False
    )


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs and an identity (or 1x1 projection) shortcut."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride, dilation)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=False)
        self.conv2 = _conv3x3(planes, planes, 1, dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = _shortcut(inplanes, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """ResNet bottleneck (v1.5: stride on the 3x3 conv): 1x1 reduce, 3x3, 1x1 expand by 4."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride, dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=False)
        self.downsample = _shortcut(inplanes, out, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


def _shortcut(in_ch: int, out_ch: int, stride: int) -> nn.Sequential | None:
    if stride == 1 and in_ch == out_ch:
        return None
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
    )


class ResNetEncoder(nn.Module):
    """ResNet trunk without pooling/fc; ``forward`` returns the five stage outputs by name.

    Stages: ``stem`` (conv1+bn+relu, stride 2), ``layer1`` (stride 4, after the max-pool),
    ``layer2`` (8), ``layer3`` (16), ``layer4`` (32). ``output_stride`` 16 or 8 replaces the
    strides of ``layer4`` (and ``layer3``) by dilation 2 (and 4), every block of the stage
    dilated as in PSPNet/DeepLab. ``deep_stem`` replaces the 7x7 stem by three 3x3 convs
    (widths 64, 64, 128; ``layer1`` then takes 128 channels), the "ResNet-C" stem of PSPNet.
    ``channels`` and ``strides`` give each stage's channel count and stride.
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: Sequence[int],
        in_channels: int = 1,
        width: float = 1.0,
        deep_stem: bool = False,
        output_stride: int = 32,
    ) -> None:
        super().__init__()
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        stem = scale_channels(64, width)
        if deep_stem:
            self.conv1 = nn.Sequential(
                _conv3x3(in_channels, stem, stride=2),
                nn.BatchNorm2d(stem),
                nn.ReLU(inplace=False),
                _conv3x3(stem, stem),
                nn.BatchNorm2d(stem),
                nn.ReLU(inplace=False),
                _conv3x3(stem, 2 * stem),
            )
            stem *= 2
        else:
            self.conv1 = nn.Conv2d(in_channels, stem, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=False)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)

        dil3 = {32: 1, 16: 1, 8: 2}[output_stride]
        dil4 = {32: 1, 16: 2, 8: 4}[output_stride]
        plan = [  # (planes, stride, dilation)
            (64, 1, 1),
            (128, 2, 1),
            (256, 2 if dil3 == 1 else 1, dil3),
            (512, 2 if dil4 == 1 else 1, dil4),
        ]
        self.channels = {"stem": stem}
        self.strides = {"stem": 2}
        inplanes, stride_total = stem, 4
        for i, ((planes, stride, dilation), n) in enumerate(zip(plan, layers, strict=True), 1):
            planes = scale_channels(planes, width)
            blocks = [block(inplanes, planes, stride, dilation)]
            inplanes = planes * block.expansion
            blocks += [block(inplanes, planes, 1, dilation) for _ in range(n - 1)]
            self.add_module(f"layer{i}", nn.Sequential(*blocks))
            stride_total *= stride
            self.channels[f"layer{i}"] = inplanes
            self.strides[f"layer{i}"] = stride_total

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        stem = self.relu(self.bn1(self.conv1(x)))
        l1 = self.layer1(self.maxpool(stem))
        l2 = self.layer2(l1)
        l3 = self.layer3(l2)
        l4 = self.layer4(l3)
        return {"stem": stem, "layer1": l1, "layer2": l2, "layer3": l3, "layer4": l4}

    def tap_info(self) -> dict[str, TapInfo]:
        """:class:`TapInfo` of every stage."""
        return {k: TapInfo(self.channels[k], self.strides[k]) for k in self.channels}


# ----------------------------------------------------------------------------------------------
# encoder weights from a local file


def _adapt_input_conv(stored: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
    """Fit a first-conv weight stored for ``C`` input channels to ``target``'s channel count.

    An ImageNet (RGB) stem into a 1-channel CT model: the RGB kernels are summed (a grey image
    repeated 3 times gives the same response). Other counts: channels are tiled cyclically and
    rescaled by ``C / target_C``. Returns None when the shapes differ in more than dim 1.
    """
    if (
        stored.dim() != 4
        or stored.shape[0] != target.shape[0]
        or stored.shape[2:] != target.shape[2:]
    ):
        return None
    c_in, c_out = stored.shape[1], target.shape[1]
    if c_out == 1:
        return stored.sum(dim=1, keepdim=True)
    reps = -(-c_out // c_in)
    return stored.repeat(1, reps, 1, 1)[:, :c_out] * (c_in / c_out)


def _check_encoder_tensor(
    path: str | os.PathLike, key: str, value: torch.Tensor, own: torch.Tensor
) -> None:
    """Refuse (:class:`InputError` naming the file and ``key``) a tensor that would load into
    the encoder as garbage: an integer, bool or complex tensor where the encoder's is floating
    point (``load_state_dict`` casts it silently: a bool weight becomes 0/1), or a floating one
    holding NaN or Inf (every prediction of the network would be NaN from the first step)."""
    if own.is_floating_point() and not value.is_floating_point():
        raise InputError(
            path,
            f"encoder weights: {key} is a {str(value.dtype).removeprefix('torch.')} tensor, "
            "where the encoder's is floating point",
        )
    if value.is_floating_point():
        bad = int((~torch.isfinite(value)).sum())
        if bad:
            raise InputError(
                path, f"encoder weights: {key} holds {bad} NaN or Inf value(s); a damaged file"
            )


def load_encoder_weights(encoder: nn.Module, path: str | os.PathLike) -> dict[str, int]:
    """Load a local state_dict file into ``encoder`` (non-strict) and report what matched.

    The file is read with ``torch.load(weights_only=True)``; nothing is ever downloaded. A
    ``{"state_dict": ...}`` / ``{"model": ...}`` wrapper is unwrapped. Keys are matched by
    name; a first-conv weight with another number of input channels is adapted
    (:func:`_adapt_input_conv`); other tensors whose shape differs are skipped. Returns the
    counts ``loaded``, ``missing`` (encoder keys not in the file), ``unexpected`` (file keys
    not in the encoder, e.g. a classifier ``fc.*``) and ``mismatched``, and logs them.

    Raises :class:`~kdseg.errors.InputError` if the file is missing or unreadable, if not a
    single tensor of it fits the encoder (wrong architecture or wrong key prefix), or if a
    tensor under one of the encoder's keys is not floating point where the encoder's is, or
    holds NaN or Inf (:func:`_check_encoder_tensor`).
    """
    if not os.path.isfile(path):
        raise InputError(path, "encoder weights file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any unpickling failure means a bad input file
        raise InputError(path, f"cannot read encoder weights: {err}") from err
    for key in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not isinstance(state, Mapping):
        raise InputError(path, "encoder weights file does not hold a state_dict")

    own = encoder.state_dict()
    first_conv = next(n for n, m in encoder.named_modules() if isinstance(m, nn.Conv2d))
    usable: dict[str, torch.Tensor] = {}
    mismatched = []
    for key, value in state.items():
        if key not in own or not isinstance(value, torch.Tensor):
            continue
        _check_encoder_tensor(path, key, value, own[key])
        if value.shape == own[key].shape:
            usable[key] = value
            continue
        adapted = _adapt_input_conv(value, own[key]) if key == f"{first_conv}.weight" else None
        if adapted is None:
            mismatched.append(key)
        else:
            usable[key] = adapted
    result = encoder.load_state_dict(usable, strict=False)
    report = {
        "loaded": len(usable),
        "missing": len(result.missing_keys),
        "unexpected": sum(1 for k in state if k not in own),
        "mismatched": len(mismatched),
    }
    if not usable:
        example = ", ".join(list(state)[:3])
        raise InputError(
            path,
            "no tensor of this file fits the encoder "
            f"({report['missing']} encoder keys missing, {report['unexpected']} unexpected, "
            f"{report['mismatched']} with another shape; file keys start {example!r}, "
            f"encoder keys start {', '.join(list(own)[:3])!r})",
        )
    log.info("encoder weights from %s: %s", path, report)
    return report
