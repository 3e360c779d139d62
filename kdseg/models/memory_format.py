"""Channels-last memory format for a network: a speed option, not part of any model.

``channels_last: true`` in a model config (``conf/model/*.yaml``; saved in its checkpoints)
stores the network's 4-D weights as NHWC and turns every 4-D input into NHWC before the
forward pass (5-D: NDHWC). The arithmetic is the same; oneDNN on CPU and cuDNN on GPU may pick
faster kernels for that layout. Outputs may stay channels-last in memory; they are ordinary tensors
to every loss (no code here depends on strides).

On this project's 2-core CPU, idle (torch 2.13, one thread, batch 8 at 144 x 144;
``scripts/bench_speed_options.py``, docs/training.md "Speed options"), a training step of UNet++
w0.5 takes 0.76x the time, RA-UNet 0.89-0.91x, ResNet18 0.94x, PSPNet and MobileNetV2 about
1x, and ENet 1.12x (its forward pass 1.12-1.20x); a teacher's forward pass gains only for
UNet++ (0.83x) and ResNet18 (0.92x). So it is off by default and chosen per network.
Off by default also keeps every recorded run reproducible bit for bit: the other kernels sum in
another order, so a run with it is not bit-identical to one without (same seed, same run still
holds within each setting).

Beyond the paper (an engineering option). Export builds the network contiguous again
(:func:`set_channels_last` ``False``): ONNX and the deploy path have their own layouts.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from kdseg.errors import InputError

#: the attribute that holds a network's input hook while channels-last is on
_HOOK = "_kdseg_channels_last_hook"


def _channels_last(t: torch.Tensor) -> torch.Tensor:
    """``t`` channels-last if it is 4-D (NHWC) or 5-D (NDHWC), else unchanged."""
    if t.ndim == 4:
        return t.contiguous(memory_format=torch.channels_last)
    if t.ndim == 5:
        return t.contiguous(memory_format=torch.channels_last_3d)
    return t


def _to_channels_last(_module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Forward pre-hook: the first argument, if a 4-D or 5-D tensor, in channels-last."""
    if not args or not isinstance(args[0], torch.Tensor):
        return args
    return (_channels_last(args[0]), *args[1:])


def check_layout(value: object, key: str) -> bool | None:
    """A ``channels_last`` setting: true, false or null (None: the default, or "as saved");
    anything else is a config error (:class:`~kdseg.errors.InputError`, exit code 2)."""
    if value is not None and not isinstance(value, bool):
        raise InputError(None, f"{key} must be true, false or null, got {value!r}")
    return value


def set_channels_last(net: nn.Module, on: bool) -> nn.Module:
    """Store ``net``'s weights and feed its inputs channels-last (``on``) or contiguous again.

    Idempotent; returns ``net`` (converted in place). Values are unchanged, so a checksum of
    the weights (``kdseg.lit.train.weights_checksum``) is the same either way.
    """
    handle = getattr(net, _HOOK, None)
    if on:
        net._apply(_channels_last)  # 4-D and 5-D weights and buffers; others untouched
        if handle is None:
            object.__setattr__(net, _HOOK, net.register_forward_pre_hook(_to_channels_last))
    else:
        net._apply(lambda t: t.contiguous())
        if handle is not None:
            handle.remove()
            object.__delattr__(net, _HOOK)
    return net


def is_channels_last(net: nn.Module) -> bool:
    """Whether :func:`set_channels_last` is on for ``net``."""
    return getattr(net, _HOOK, None) is not None
