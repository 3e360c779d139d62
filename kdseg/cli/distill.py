"""``kdseg-distill``: distil a teacher checkpoint into a student with a configured method."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from kdseg.cli import CONFIG_PATH, guarded, save_run_config
from kdseg.lit.distill import DistillationModule
from kdseg.lit.train import fit_from_config


def _module(cfg: dict, data: dict) -> DistillationModule:
    return DistillationModule(
        model=cfg["student"],
        data=data,
        optim=cfg["optim"],
        loss=cfg["loss"],
        teacher=cfg["teacher"],
        distill=cfg["distill"],
    )


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="distill")
@guarded("kdseg-distill")
def main(cfg: DictConfig) -> float | None:
    out, plain = save_run_config(cfg)
    return fit_from_config(plain, _module, out)["best_score"]
