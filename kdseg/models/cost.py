"""What each network costs: parameters, multiply-adds per slice, and its feature taps.

Multiply-adds are counted with ``torch.utils.flop_counter.FlopCounterMode`` (FLOPs / 2) on a
copy of the model whose weights live on the ``meta`` device, so no arithmetic is done and a
512 x 512 slice through PSPNet costs milliseconds. The counter sees convolutions (transposed
included) and matrix products; BatchNorm, activations, pooling, interpolation and additions
are not counted (a few percent at most for these networks), as is usual for "MACs" tables.

``main_table`` renders the Markdown table the ``kdseg-models`` command prints; ``model_rows``
gives the same numbers as dicts. With ``time_threads`` set, each model is also built with real
(random) weights and its CPU forward pass timed on one slice (``forward_ms``): the median of a
few runs after a warm-up, and the multiply-add rate that implies. Parameters and multiply-adds do
not predict CPU time (memory-bound layers, depthwise convolutions, PReLU), so the table shows both.
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode

from kdseg.models.registry import available_models, build_model
from kdseg.models.taps import SegOutput

#: Parameter counts (millions) reported in the EMKD paper, at in_channels=1, num_classes=2.
PAPER_PARAMS_M: dict[str, float] = {
    "raunet": 22.1,
    "pspnet": 46.7,
    "unetpp": 20.6,
    "enet": 0.353,
    "mobilenetv2": 2.2,
    "resnet18": 11.2,
}

#: Role of each network in the paper's experiments (networks beyond the paper are "extra").
ROLES: dict[str, str] = {
    "raunet": "teacher",
    "pspnet": "teacher",
    "unetpp": "teacher",
    "enet": "student",
    "mobilenetv2": "student",
    "resnet18": "student",
    "mobilenetv2_lraspp": "student (extra)",
    "resnet18_fpn": "student (extra)",
}


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not; BatchNorm running statistics excluded)."""
    return sum(p.numel() for p in model.parameters())


def _meta_forward(
    model: nn.Module, size: int | tuple[int, int], in_channels: int
) -> tuple[SegOutput, FlopCounterMode]:
    """Run ``model`` once in eval mode on a meta-device slice; return (output, flop counter)."""
    h, w = (size, size) if isinstance(size, int) else size
    state = {
        name: t.to("meta")
        for name, t in itertools.chain(model.named_parameters(), model.named_buffers())
    }
    x = torch.zeros(1, in_channels, h, w, device="meta")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            out = functional_call(model, state, (x,))
    finally:
        model.train(was_training)
    return out, counter


def count_mult_adds(
    model: nn.Module, size: int | tuple[int, int] = 512, in_channels: int = 1
) -> int:
    """Multiply-adds of one forward pass on one ``size`` x ``size`` slice (FLOPs / 2)."""
    _, counter = _meta_forward(model, size, in_channels)
    return counter.get_total_flops() // 2


def list_taps(
    model: nn.Module, size: int | tuple[int, int] = 512, in_channels: int = 1
) -> list[dict[str, Any]]:
    """Every tap of ``model`` for one slice: name, channels, stride and shape ``(C, h, w)``."""
    return _model_cost(model, size, in_channels)["taps"]


def _model_cost(model: nn.Module, size: int | tuple[int, int], in_channels: int) -> dict[str, Any]:
    out, counter = _meta_forward(model, size, in_channels)
    info = getattr(model, "tap_info", {})
    taps = [
        {
            "name": name,
            "channels": info[name].channels if name in info else tap.shape[1],
            "stride": info[name].stride if name in info else None,
            "shape": tuple(tap.shape[1:]),
        }
        for name, tap in out.taps.items()
    ]
    return {
        "params": count_params(model),
        "mult_adds": counter.get_total_flops() // 2,
        "logits_shape": tuple(out.logits.shape[1:]),
        "taps": taps,
    }


def model_cost(
    model: nn.Module, size: int | tuple[int, int] = 512, in_channels: int = 1
) -> dict[str, Any]:
    """Parameters, multiply-adds and taps of a model instance for one slice, in one pass.

    Returns ``{"params", "mult_adds", "logits_shape", "taps"}`` where ``taps`` is the list of
    :func:`list_taps`. The model's own weights are not touched (a meta-device copy of the
    state runs the forward pass).
    """
    return _model_cost(model, size, in_channels)


def forward_ms(
    model: nn.Module,
    size: int = 512,
    in_channels: int = 1,
    threads: int = 2,
    repeats: int = 5,
    warmup: int = 2,
) -> float:
    """Median wall time in ms of one eval-mode forward pass on one ``size`` x ``size`` slice
    (batch 1, ``torch.no_grad``), with ``threads`` intra-op threads, after ``warmup`` runs."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    x = torch.randn(1, in_channels, size, size)
    model.eval()
    seconds = []
    try:
        with torch.no_grad():
            for i in range(warmup + repeats):
                start = time.perf_counter()
                model(x)
                if i >= warmup:
                    seconds.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous)
    return 1e3 * statistics.median(seconds)


def model_rows(
    size: int = 512,
    in_channels: int = 1,
    num_classes: int = 2,
    width: float = 1.0,
    names: Iterable[str] | None = None,
    time_threads: int | None = None,
) -> list[dict[str, Any]]:
    """One dict per registered model (or per name in ``names``), built on the meta device.

    Keys: ``name``, ``role``, ``params``, ``paper_params`` (or None), ``mult_adds``
    (for one ``size`` x ``size`` slice), ``low`` / ``high`` (the two EMKD taps, as tap dicts)
    and ``taps`` (every tap: name, channels, stride, shape). With ``time_threads``, also
    ``forward_ms``: :func:`forward_ms` of the model with random weights on that many threads.
    """
    if names is None:  # the paper's order first, then anything registered later
        registered = available_models()
        names = [n for n in ROLES if n in registered] + [n for n in registered if n not in ROLES]
    rows = []
    for name in names:
        with torch.device("meta"):
            model = build_model(name, in_channels=in_channels, num_classes=num_classes, width=width)
        cost = _model_cost(model, size, in_channels)
        by_name = {t["name"]: t for t in cost["taps"]}
        paper = PAPER_PARAMS_M.get(name)
        timing = {}
        if time_threads:
            real = build_model(name, in_channels=in_channels, num_classes=num_classes, width=width)
            timing["forward_ms"] = forward_ms(real, size, in_channels, time_threads)
        rows.append(
            {
                **timing,
                "name": name,
                "role": ROLES.get(name, "extra"),
                "params": cost["params"],
                "paper_params": None if paper is None else int(paper * 1e6),
                "mult_adds": cost["mult_adds"],
                "low": by_name.get("low"),
                "high": by_name.get("high"),
                "taps": cost["taps"],
            }
        )
    return rows


def _time_text(row: dict[str, Any]) -> str:
    rate = row["mult_adds"] / (row["forward_ms"] * 1e-3) / 1e9
    return f" {row['forward_ms']:.0f} | {rate:.1f} |"


def _tap_text(tap: dict[str, Any] | None) -> str:
    return "-" if tap is None else f"{tap['channels']} ch /{tap['stride']}"


def main_table(
    size: int = 512,
    in_channels: int = 1,
    num_classes: int = 2,
    width: float = 1.0,
    names: Iterable[str] | None = None,
    time_threads: int | None = None,
) -> str:
    """Markdown table of every registered model: params (vs the paper), mult-adds, taps, and
    with ``time_threads`` the CPU forward time per slice and the multiply-add rate it implies.

    Mult-adds are per ``size`` x ``size`` slice with ``in_channels`` channels; taps are listed
    as ``name channels/stride`` (their spatial size is ``ceil(size / stride)``).
    """
    rows = model_rows(size, in_channels, num_classes, width, names, time_threads)
    timed = bool(time_threads)
    time_head = f" CPU ms/slice ({time_threads} thr) | GMAC/s |" if timed else ""
    header = (
        f"| Model | Role | Params (M) | Paper (M) | Mult-adds (G) @{size}x{size} |{time_head}"
        " low tap | high tap | Stage taps (channels/stride) |"
    )
    lines = [header, "|---|---|---:|---:|---:|" + ("---:|---:|" if timed else "") + "---|---|---|"]
    # the paper's counts are at in_channels=1, num_classes=2, width=1: no deviation otherwise
    paper_settings = (in_channels, num_classes, width) == (1, 2, 1.0)
    for r in rows:
        paper = "-"
        if r["paper_params"]:
            paper = f"{r['paper_params'] / 1e6:.3g}"
            if paper_settings:
                paper += f" ({100 * (r['params'] / r['paper_params'] - 1):+.1f}%)"
        stages = ", ".join(
            f"{t['name']} {t['channels']}/{t['stride']}"
            for t in r["taps"]
            if t["name"] not in ("low", "high")
        )
        lines.append(
            f"| {r['name']} | {r['role']} | {r['params'] / 1e6:.3f} | {paper} "
            f"| {r['mult_adds'] / 1e9:.2f} |{_time_text(r) if timed else ''}"
            f" {_tap_text(r['low'])} | {_tap_text(r['high'])} "
            f"| {stages} |"
        )
    note = (
        f"\nin_channels={in_channels}, num_classes={num_classes}, width={width}; "
        "mult-adds = FLOPs/2 of convolutions and matrix products (torch FlopCounterMode)."
    )
    if timed:
        note += (
            f" CPU time: eval-mode PyTorch forward of one slice (batch 1, random weights, "
            f"{time_threads} thread(s)), median of 5 runs after 2 warm-up runs."
        )
    return "\n".join(lines) + "\n" + note + "\n"
