"""``kdseg-bench``: cost, CPU time per volume, memory and Dice of models and artefacts."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from kdseg.cli import CONFIG_PATH, guarded, to_dict
from kdseg.deploy.bench import BenchConfig, run_bench


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="bench")
@guarded("kdseg-bench")
def main(cfg: DictConfig) -> None:
    plain = to_dict(cfg)
    if not plain.pop("dice", True):
        plain["data"] = None
    results = run_bench(BenchConfig.from_dict(plain))
    print(results["markdown"])
    print(f"written: {cfg.output_dir}/{cfg.name}.md, .png, .json")
