"""``kdseg-phantom``: write synthetic CT cases in the LiTS or KiTS19 layout."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from kdseg.cli import CONFIG_PATH, guarded, to_dict
from kdseg.data.phantom import PhantomConfig, write_dataset


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="phantom")
@guarded("kdseg-phantom")
def main(cfg: DictConfig) -> None:
    params = to_dict(cfg.params) if cfg.params else {}
    config = PhantomConfig(
        dataset=cfg.dataset,
        **{k: tuple(v) if isinstance(v, list) else v for k, v in params.items()},
    )
    paths = write_dataset(
        cfg.root, config, n_cases=int(cfg.n_cases), seed=int(cfg.seed), workers=int(cfg.workers)
    )
    print(f"{len(paths)} {cfg.dataset} phantom case(s) in {cfg.root}")
