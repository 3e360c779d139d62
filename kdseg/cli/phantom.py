"""``kdseg-phantom``: write synthetic CT cases in the LiTS or KiTS19 layout."""

from __future__ import annotations

from dataclasses import fields

from omegaconf import DictConfig

from kdseg.cli import command, number, to_dict
from kdseg.data.phantom import PhantomConfig, write_dataset
from kdseg.errors import InputError
from kdseg.guards import check_output, check_threads


def _params(cfg: DictConfig) -> dict:
    """``params``: PhantomConfig fields as a mapping (null or empty: none), ``dataset`` aside."""
    if cfg.params is None or cfg.params == "":
        return {}
    if not isinstance(cfg.params, DictConfig):
        raise InputError(
            None,
            f"params={cfg.params}: expected a mapping of PhantomConfig fields, "
            "e.g. params={size_range: [64, 64], slices_range: [16, 16]}",
        )
    params = to_dict(cfg.params)
    if "dataset" in params:
        raise InputError(
            None, "params: dataset is no param; give it as its own option (dataset=kits)"
        )
    unknown = sorted(str(k) for k in set(params) - {f.name for f in fields(PhantomConfig)})
    if unknown:
        raise InputError(None, f"params: unknown key(s) {', '.join(unknown)}")
    return params


def _whole(cfg: DictConfig, key: str, minimum: int) -> int:
    """``cfg[key]`` as a whole number of at least ``minimum``; null too is one line naming it."""
    value = number(cfg, key, int, minimum=minimum)
    if value is None:
        raise InputError(None, f"{key}=null: expected a whole number >= {minimum}")
    return int(value)


@command("kdseg-phantom", "phantom")
def main(cfg: DictConfig) -> None:
    params = _params(cfg)
    n_cases, seed = _whole(cfg, "n_cases", 0), _whole(cfg, "seed", 0)
    workers = _whole(cfg, "workers", 1)
    # as threads= elsewhere: at most the CPUs this process may use (a mistyped workers=1000
    # forked up to one process per case, each holding a whole volume)
    check_threads(workers, "workers=", what="processes")
    if cfg.root is None or str(cfg.root).strip() == "":
        shown = "null" if cfg.root is None else cfg.root
        raise InputError(None, f"root={shown}: expected the folder to write the phantoms into")
    config = PhantomConfig(
        dataset=cfg.dataset,
        **{k: tuple(v) if isinstance(v, list) else v for k, v in params.items()},
    )
    check_output(cfg.root, folder=True, what="root")
    paths = write_dataset(cfg.root, config, n_cases=n_cases, seed=seed, workers=workers)
    print(f"{len(paths)} {cfg.dataset} phantom case(s) in {cfg.root}")


if __name__ == "__main__":
    main()
