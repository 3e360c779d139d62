"""``kdseg-phantom``: write synthetic CT cases in the LiTS or KiTS19 layout."""

from __future__ import annotations

from omegaconf import DictConfig

from kdseg.cli import command, to_dict
from kdseg.data.phantom import PhantomConfig, write_dataset
from kdseg.guards import check_output


@command("kdseg-phantom", "phantom")
def main(cfg: DictConfig) -> None:
    params = to_dict(cfg.params) if cfg.params else {}
    config = PhantomConfig(
        dataset=cfg.dataset,
        **{k: tuple(v) if isinstance(v, list) else v for k, v in params.items()},
    )
    check_output(cfg.root, folder=True, what="root")
    paths = write_dataset(
        cfg.root, config, n_cases=int(cfg.n_cases), seed=int(cfg.seed), workers=int(cfg.workers)
    )
    print(f"{len(paths)} {cfg.dataset} phantom case(s) in {cfg.root}")
