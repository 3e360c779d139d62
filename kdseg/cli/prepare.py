"""``kdseg-prepare``: fill the slice cache for a dataset folder (idempotent, parallel)."""

from __future__ import annotations

import time

import hydra
from omegaconf import DictConfig

from kdseg.cli import CONFIG_PATH, guarded, to_dict
from kdseg.data.dataset import resolve_data


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="prepare")
@guarded("kdseg-prepare")
def main(cfg: DictConfig) -> None:
    setup = resolve_data(to_dict(cfg.data))
    start = time.perf_counter()
    ids = setup.prepare(workers=int(cfg.workers))
    print(f"{len(ids)} case(s) prepared in {setup.cache_dir} ({time.perf_counter() - start:.1f} s)")
