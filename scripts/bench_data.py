"""Data pipeline benchmark: phantom generation, ``prepare`` of one full-size volume, and the
slices per second the DataModule delivers. Prints a Markdown table.

    .venv/bin/python scripts/bench_data.py [--slices 200] [--size 512] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import torch

from kdseg.data.dataset import resolve_data
from kdseg.data.phantom import PhantomConfig, write_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument("--workdir", default="/tmp/kdseg-bench-data")
    parser.add_argument("--batches", type=int, default=30)
    args = parser.parse_args()
    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    torch.set_num_threads(2)
    rows = []

    start = time.perf_counter()
    config = PhantomConfig(
        dataset="lits",
        size_range=(args.size, args.size),
        slices_range=(args.slices, args.slices),
        nonsquare_prob=0.0,
    )
    write_dataset(work / "lits", config, n_cases=3, seed=0, progress=False)
    rows.append(
        (
            f"phantom: 3 cases {args.size}x{args.size}x{args.slices} (generate + write)",
            f"{time.perf_counter() - start:.1f} s",
        )
    )

    data = {
        "name": "lits",
        "layout": "lits",
        "root": str(work / "lits"),
        "cache_root": str(work / "cache"),  # in --workdir, not ./cache
        "task": "multiclass",
        "context": 0,
        "in_channels": 1,
        "num_classes": 3,
        "preprocess": {"window": [-60, 140]},
        "batch_size": 16,
        "num_workers": 0,
        "sampling": "all",
        "split_fractions": [0.34, 0.33, 0.33],
    }
    for label, preprocess in (
        ("native 512", {}),
        ("body crop + 256", {"body_crop": True, "in_plane_size": [256, 256]}),
    ):
        setup = resolve_data({**data, "preprocess": {"window": [-60, 140], **preprocess}})
        one = setup.split["train"][:1]
        start = time.perf_counter()
        setup.prepare(ids=one, progress=False)
        rows.append((f"prepare one volume ({label})", f"{time.perf_counter() - start:.2f} s"))
        setup.prepare(progress=False)
        for workers in (0, 2):
            setup.cfg["num_workers"] = workers
            dm = setup.datamodule()
            dm.setup("fit")
            loader = dm.train_dataloader()
            it = iter(loader)
            next(it)  # start-up (workers, memory maps) not counted
            start = time.perf_counter()
            n = 0
            for _, batch in zip(range(args.batches), it, strict=False):
                n += batch["image"].shape[0]
            rate = n / (time.perf_counter() - start)
            rows.append(
                (
                    f"DataModule slices/s ({label}, batch 16, {workers} workers, augmented)",
                    f"{rate:.0f}",
                )
            )
    print("| step | result |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
