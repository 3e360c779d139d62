"""``kdseg-distill``: distil a teacher checkpoint into a student with a configured method."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from kdseg.cli import CONFIG_PATH, guarded, run_dir, to_dict
from kdseg.data.dataset import resolve_data
from kdseg.errors import write_text_atomic
from kdseg.lit.distill import DistillationModule
from kdseg.lit.train import fit


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="distill")
@guarded("kdseg-distill")
def main(cfg: DictConfig) -> float | None:
    out = run_dir()
    write_text_atomic(out / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    plain = to_dict(cfg)
    setup = resolve_data(plain["data"])
    module = DistillationModule(
        model=plain["student"],
        data=setup.info(),
        optim=plain["optim"],
        loss=plain["loss"],
        teacher=plain["teacher"],
        distill=plain["distill"],
    )
    summary = fit(module, setup.datamodule(seed=int(cfg.seed)), plain, out)
    print(f"best checkpoint: {summary['best_checkpoint']} (val dice {summary['best_score']})")
    return summary["best_score"]
