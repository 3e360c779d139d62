"""RA-UNet teacher (T1): ResNet34 encoder and a decoder whose skips pass attention gates.

The paper's best teacher (about 22.1M parameters). The reference architecture is a residual
attention U-Net: a ResNet34 encoder, LinkNet-style decoder blocks, and skip connections
re-weighted channel-wise by a gate that looks at both the decoder and the encoder feature
(an "augmented attention module"). Written here from that description.
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


class DecoderBlock(nn.Module):
    """LinkNet decoder block: 1x1 reduce to in/4, 2x upsample, 3x3 conv, 1x1 expand to ``out``.

    The upsampling is bilinear to the size of the skip it is fused with, followed by the 3x3
    conv (instead of a transposed conv: no checkerboard, exact sizes, plain ONNX Resize).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        mid = max(in_channels // 4, 8)
        self.reduce = ConvBNAct(in_channels, mid, 1)
        self.conv = ConvBNAct(mid, mid, 3)
        self.expand = ConvBNAct(mid, out_channels, 1)

    def forward(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        return self.expand(self.conv(resize_to(self.reduce(x), ref)))


class AttentionGate(nn.Module):
    """Channel attention over a skip, driven by the decoder and the skip's global context.

    ``a = sigmoid(W_a relu(W_d gap(d) + W_s gap(s)))`` and the output is ``d + a * s``: the
    decoder decides which encoder channels to let through. No BatchNorm on the pooled 1x1
    vectors (it would fail with batch size 1 in training).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.from_decoder = nn.Conv2d(channels, channels, 1)
        self.from_skip = nn.Conv2d(channels, channels, 1, bias=False)
        self.relu = nn.ReLU(inplace=False)
        self.attend = nn.Conv2d(channels, channels, 1)

    def forward(self, d: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        context = self.from_decoder(d.mean((2, 3), keepdim=True))
        context = context + self.from_skip(s.mean((2, 3), keepdim=True))
        gate = torch.sigmoid(self.attend(self.relu(context)))
        return d + gate * s


@register_model("raunet")
class RAUNet(SegmentationModel):
    """ResNet34 encoder (BasicBlock 3,4,6,3) + attention-gated LinkNet decoder.

    Decoder (channels at width 1): ``layer4`` (512) -> block to 256 at stride 16, gated with
    ``layer3``; -> 128 at stride 8 gated with ``layer2``; -> 64 at stride 4 gated with
    ``layer1``; -> 64 at stride 2 gated with ``stem``; head: 2x bilinear, 3x3 conv-BN-ReLU to
    32, 1x1 classifier. Chosen so the decoder is light (0.62M) like the reference's:
    21.90M parameters at in_channels=1, num_classes=2 (paper 22.1M, -0.9%). ``width`` scales
    every channel count: params and mult-adds ~width^2.

    Sizes: input replicate-padded to a multiple of 32, logits cropped back to H x W. Taps
    (stride; size ``ceil(H/s)``): ``stem`` (2), ``layer1`` (4), ``layer2`` (8), ``layer3``
    (16), ``layer4`` (32), ``decoder`` (2, last gated decoder feature); ``low`` = ``stem``,
    ``high`` = ``layer2``. ``encoder_weights``: local torchvision-style ResNet34 state_dict.

    ``full_res_skip`` (kdseg, beyond the paper; off by default): the encoder's first feature
    sits at stride 2, so nothing the head sees was computed at full resolution. With it, two
    3x3 conv-BN-ReLU on the (padded) input, ``32 * width`` channels at stride 1, are
    concatenated with the upsampled decoder before the head: the top level of the original
    U-Net (Ronneberger et al., MICCAI 2015), which a stride-2 stem drops. It is aimed at
    lesions of a few pixels. Its output is the ``full`` tap (stride 1). ``None`` is off.
    """

    pad_multiple = 32

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        width: float = 1.0,
        encoder_weights: str | None = None,
        full_res_skip: bool | None = None,
    ) -> None:
        super().__init__()
        if full_res_skip is not None and not isinstance(full_res_skip, bool):
            raise ValueError(
                f"model.full_res_skip must be true, false or null, not {full_res_skip!r}"
            )
        self.encoder = ResNetEncoder(BasicBlock, (3, 4, 6, 3), in_channels, width)
        ch = self.encoder.channels
        self.skips = ("layer3", "layer2", "layer1", "stem")
        ins = (ch["layer4"], ch["layer3"], ch["layer2"], ch["layer1"])
        self.blocks = nn.ModuleList(
            DecoderBlock(i, ch[s]) for i, s in zip(ins, self.skips, strict=True)
        )
        self.gates = nn.ModuleList(AttentionGate(ch[s]) for s in self.skips)
        head = scale_channels(32, width)
        self.full: nn.Module | None = None
        full = 0
        if full_res_skip:
            full = head
            self.full = nn.Sequential(ConvBNAct(in_channels, full, 3), ConvBNAct(full, full, 3))
        self.head = ConvBNAct(ch["stem"] + full, head, 3)
        self.classifier = nn.Conv2d(head, num_classes, 1)
        enc = self.encoder.tap_info()
        self.tap_info = {
            **enc,
            "decoder": TapInfo(ch["stem"], 2),
            "low": enc["stem"],
            "high": enc["layer2"],
            **({"full": TapInfo(full, 1)} if full else {}),
        }
        if encoder_weights:
            load_encoder_weights(self.encoder, encoder_weights)

    def forward(self, x: torch.Tensor) -> SegOutput:
        xp = pad_to_multiple(x, self.pad_multiple)
        feats = self.encoder(xp)
        d = feats["layer4"]
        for block, gate, name in zip(self.blocks, self.gates, self.skips, strict=True):
            skip = feats[name]
            d = gate(block(d, skip), skip)
        up = F.interpolate(d, size=xp.shape[-2:], mode="bilinear", align_corners=False)
        taps = {**feats, "decoder": d, "low": feats["stem"], "high": feats["layer2"]}
        if self.full is not None:
            taps["full"] = self.full(xp)
            up = torch.cat([up, taps["full"]], dim=1)
        logits = self.classifier(self.head(up))
        return seg_output(logits, taps, self.tap_info, x.shape[-2:])
