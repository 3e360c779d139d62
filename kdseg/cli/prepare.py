"""``kdseg-prepare``: fill the slice cache for a dataset folder (idempotent, parallel)."""

from __future__ import annotations

import time

from omegaconf import DictConfig

from kdseg.cli import command, number, to_dict
from kdseg.data.dataset import resolve_data
from kdseg.guards import check_output


@command("kdseg-prepare", "prepare")
def main(cfg: DictConfig) -> None:
    setup = resolve_data(to_dict(cfg.data))
    inputs = [p for case in setup.cases.values() for p in (case.image, case.label)]
    check_output(setup.cache_dir, inputs, folder=True, what="cache folder")
    workers = number(cfg, "workers", int, minimum=1)
    start = time.perf_counter()
    ids = setup.prepare(workers=workers)
    print(f"{len(ids)} case(s) prepared in {setup.cache_dir} ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
