"""A speed option against the default: seconds per training step and per forward pass of every
network, on this machine, one thread.

``--option channels_last`` (``model.channels_last``, :mod:`kdseg.models.memory_format`) or
``--option compile`` (``model.compile`` / ``teacher.compile``, :mod:`kdseg.models.compile`).
A training step is what kdseg-train pays per batch (forward, a loss, backward, Adam); a forward
pass under ``torch.inference_mode`` is what a frozen teacher pays inside every distillation step
and what torch inference pays per batch. Each (network, setting) is built from the same seed;
the two settings alternate, ``--repeats`` times after two warm-up steps (which hold the
compilation; its seconds are reported as ``first_s``), and the table gives medians and the
ratio (option / default: below 1 is faster). Prints a Markdown table; ``--json`` writes the
numbers. The load average is printed with it: run it on idle cores.

    python scripts/bench_speed_options.py                       # channels-last, the studies' shapes
    python scripts/bench_speed_options.py --option compile --models enet:0.25,raunet:0.5
    python scripts/bench_speed_options.py --models enet:0.25,raunet:0.5 --size 96
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from kdseg.errors import write_text_atomic
from kdseg.models import build_from_config
from kdseg.models.compile import compile_network

#: the networks at the widths the studies use (teacher w0.5, students w0.25) and the paper's
MODELS = (
    "raunet:0.5,unetpp:0.5,pspnet:0.5,enet:0.25,mobilenetv2:0.25,resnet18:0.25,raunet:1.0,enet:1.0"
)


OPTIONS = ("channels_last", "compile")


def _step(net: torch.nn.Module, opt: torch.optim.Optimizer | None, x: torch.Tensor) -> float:
    start = time.perf_counter()
    if opt is None:
        with torch.inference_mode():
            net(x)
    else:
        logits = net(x).logits
        loss = logits.float().logsumexp(1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - start


def _build(name: str, width: float, option: str, on: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    config = {"name": name, "in_channels": 1, "num_classes": 3, "width": width}
    if option == "channels_last":
        return build_from_config({**config, "channels_last": on})
    net = build_from_config(config)
    return compile_network(net) if on else net


def measure(
    name: str, width: float, batch: int, size: int, repeats: int, option: str = "channels_last"
) -> dict:
    """Median seconds per training step and per forward pass, default and ``option``,
    alternating; ``first_s``: the option's first step of each kind (a compilation)."""
    nets = {on: _build(name, width, option, on) for on in (False, True)}
    opts = {on: torch.optim.Adam(nets[on].parameters(), lr=1e-3) for on in (False, True)}
    x = torch.randn(batch, 1, size, size, generator=torch.Generator().manual_seed(0))
    out: dict = {"model": name, "width": width}
    for what in ("train", "forward"):
        times: dict[bool, list[float]] = {False: [], True: []}
        first = 0.0
        for on in (False, True):
            nets[on].train(what == "train")
            for i in range(2):  # warm-up: oneDNN picks its kernels; Inductor compiles
                spent = _step(nets[on], opts[on] if what == "train" else None, x)
                first = spent if on and i == 0 else first
        for _ in range(repeats):
            for on in (False, True):
                opt = opts[on] if what == "train" else None
                times[on].append(_step(nets[on], opt, x))
        plain, fast = statistics.median(times[False]), statistics.median(times[True])
        out[what] = {"default_s": plain, f"{option}_s": fast, "ratio": fast / plain,
                     "first_s": first}  # fmt: skip
    return out


def table(rows: list[dict], batch: int, size: int, option: str = "channels_last") -> str:
    label = option.replace("_", "-")
    lines = [
        f"batch {batch} x 1 x {size} x {size}, {torch.get_num_threads()} thread(s), median "
        f"seconds; ratio = {label} / default (below 1: faster); first: the {label} network's "
        "first step (with compile: the compilation)",
        "",
        f"| network | width | train step | {label} | ratio | first | forward | {label} | ratio "
        "| first |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        t, f = r["train"], r["forward"]
        lines.append(
            f"| {r['model']} | {r['width']:g} | {t['default_s']:.3f} | {t[f'{option}_s']:.3f}"
            f" | {t['ratio']:.2f} | {t.get('first_s', float('nan')):.1f} | {f['default_s']:.3f}"
            f" | {f[f'{option}_s']:.3f} | {f['ratio']:.2f} | {f.get('first_s', float('nan')):.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--option", choices=OPTIONS, default="channels_last")
    parser.add_argument("--models", default=MODELS, help="name:width,... (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=144)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for item in args.models.split(","):
        name, width = item.split(":")
        rows.append(measure(name, float(width), args.batch, args.size, args.repeats, args.option))
        print(f"[bench] {name} w{width} done (load {os.getloadavg()[0]:.2f})", flush=True)
    text = table(rows, args.batch, args.size, args.option)
    print(f"\nload average (1 min) at the end: {os.getloadavg()[0]:.2f}\n\n{text}")
    if args.json:
        record = {
            "option": args.option,
            "batch": args.batch,
            "size": args.size,
            "threads": args.threads,
            "rows": rows,
        }
        write_text_atomic(args.json, json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
