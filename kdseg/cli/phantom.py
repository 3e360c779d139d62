"""``kdseg-phantom``: write synthetic CT cases in the LiTS or KiTS19 layout."""

from __future__ import annotations

from dataclasses import fields

from omegaconf import DictConfig

from kdseg.cli import command, to_dict
from kdseg.data.phantom import PhantomConfig, write_dataset
from kdseg.errors import InputError
from kdseg.guards import check_output


@command("kdseg-phantom", "phantom")
def main(cfg: DictConfig) -> None:
    params = to_dict(cfg.params) if cfg.params else {}
    unknown = sorted(set(params) - {f.name for f in fields(PhantomConfig)})
    if unknown:
        raise InputError(None, f"params: unknown key(s) {', '.join(unknown)}")
    config = PhantomConfig(
        dataset=cfg.dataset,
        **{k: tuple(v) if isinstance(v, list) else v for k, v in params.items()},
    )
    check_output(cfg.root, folder=True, what="root")
    paths = write_dataset(
        cfg.root, config, n_cases=int(cfg.n_cases), seed=int(cfg.seed), workers=int(cfg.workers)
    )
    print(f"{len(paths)} {cfg.dataset} phantom case(s) in {cfg.root}")
