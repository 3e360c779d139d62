"""``model.channels_last`` against the default layout: seconds per training step and per forward
pass of every network, on this machine, one thread.

A training step is what kdseg-train pays per batch (forward, a loss, backward, Adam); a forward
pass under ``torch.inference_mode`` is what a frozen teacher pays inside every distillation step
and what torch inference pays per batch. Each (network, layout) is built from the same seed; the
two layouts alternate, ``--repeats`` times after two warm-up steps, and the table gives medians
and the ratio (channels-last / default: below 1 is faster). Prints a Markdown table; ``--json``
writes the numbers. The load average is printed with it: run it on idle cores.

    python scripts/bench_memory_format.py                       # the studies' shapes (8 x 144^2)
    python scripts/bench_memory_format.py --models enet:0.25,raunet:0.5 --size 96
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from kdseg.models import build_from_config

#: the networks at the widths the studies use (teacher w0.5, students w0.25) and the paper's
MODELS = (
    "raunet:0.5,unetpp:0.5,pspnet:0.5,enet:0.25,mobilenetv2:0.25,resnet18:0.25,raunet:1.0,enet:1.0"
)


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


def measure(name: str, width: float, batch: int, size: int, repeats: int) -> dict:
    """Median seconds per training step and per forward pass, both layouts, alternating."""
    nets, opts = {}, {}
    for layout in (False, True):
        torch.manual_seed(0)
        config = {"name": name, "in_channels": 1, "num_classes": 3, "width": width}
        nets[layout] = build_from_config({**config, "channels_last": layout})
        opts[layout] = torch.optim.Adam(nets[layout].parameters(), lr=1e-3)
    x = torch.randn(batch, 1, size, size, generator=torch.Generator().manual_seed(0))
    out: dict = {"model": name, "width": width}
    for what in ("train", "forward"):
        times: dict[bool, list[float]] = {False: [], True: []}
        for layout in (False, True):
            nets[layout].train(what == "train")
            for _ in range(2):  # warm-up: oneDNN picks and caches its kernels
                _step(nets[layout], opts[layout] if what == "train" else None, x)
        for _ in range(repeats):
            for layout in (False, True):
                opt = opts[layout] if what == "train" else None
                times[layout].append(_step(nets[layout], opt, x))
        plain, fast = statistics.median(times[False]), statistics.median(times[True])
        out[what] = {"default_s": plain, "channels_last_s": fast, "ratio": fast / plain}
    return out


def table(rows: list[dict], batch: int, size: int) -> str:
    lines = [
        f"batch {batch} x 1 x {size} x {size}, {torch.get_num_threads()} thread(s), median "
        "seconds; ratio = channels-last / default (below 1: faster)",
        "",
        "| network | width | train step | channels-last | ratio | forward | channels-last "
        "| ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        t, f = r["train"], r["forward"]
        lines.append(
            f"| {r['model']} | {r['width']:g} | {t['default_s']:.3f} | {t['channels_last_s']:.3f}"
            f" | {t['ratio']:.2f} | {f['default_s']:.3f} | {f['channels_last_s']:.3f} | "
            f"{f['ratio']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
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
        rows.append(measure(name, float(width), args.batch, args.size, args.repeats))
        print(f"[bench] {name} w{width} done (load {os.getloadavg()[0]:.2f})", flush=True)
    text = table(rows, args.batch, args.size)
    print(f"\nload average (1 min) at the end: {os.getloadavg()[0]:.2f}\n\n{text}")
    if args.json:
        record = {"batch": args.batch, "size": args.size, "threads": args.threads, "rows": rows}
        args.json.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
