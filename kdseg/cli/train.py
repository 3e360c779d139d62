"""``kdseg-train``: supervised training of any registered model on a prepared dataset."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from kdseg.cli import CONFIG_PATH, guarded, save_run_config
from kdseg.lit.segment import SegmentationModule
from kdseg.lit.train import fit_from_config


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
@guarded("kdseg-train")
def main(cfg: DictConfig) -> float | None:
    out, plain = save_run_config(cfg)
    summary = fit_from_config(
        plain,
        lambda c, data: SegmentationModule(
            model=c["model"], data=data, optim=c["optim"], loss=c["loss"]
        ),
        out,
    )
    return summary["best_score"]
