"""``kdseg-train``: supervised training of any registered model on a prepared dataset."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from kdseg.cli import CONFIG_PATH, guarded, run_dir, to_dict
from kdseg.data.dataset import resolve_data
from kdseg.errors import write_text_atomic
from kdseg.lit.segment import SegmentationModule
from kdseg.lit.train import fit


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
@guarded("kdseg-train")
def main(cfg: DictConfig) -> float | None:
    out = run_dir()
    write_text_atomic(out / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    plain = to_dict(cfg)
    setup = resolve_data(plain["data"])
    module = SegmentationModule(
        model=plain["model"], data=setup.info(), optim=plain["optim"], loss=plain["loss"]
    )
    summary = fit(module, setup.datamodule(seed=int(cfg.seed)), plain, out)
    print(f"best checkpoint: {summary['best_checkpoint']} (val dice {summary['best_score']})")
    return summary["best_score"]
