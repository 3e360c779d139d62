"""``kdseg-split``: write a case-level train / val / test split for any dataset folder."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from kdseg.cli import command
from kdseg.data.dataset import split_store
from kdseg.data.manifest import FOLDER_SPLIT_NAME, make_split, split_fractions, write_split
from kdseg.data.sources import discover_cases
from kdseg.errors import InputError


@command("kdseg-split", "split")
def main(cfg: DictConfig) -> None:
    target = Path(cfg.data.root) / FOLDER_SPLIT_NAME
    if target.exists() and not cfg.force:
        raise InputError(target, "split exists; pass force=true to overwrite it")
    store = split_store(cfg.data)  # the seeded split earlier runs persisted, and used
    if store.exists() and not cfg.force:
        raise InputError(
            target,
            f"the runs so far used the seeded split persisted in {store}; a new split here "
            "would be read first from now on: pass force=true to write it anyway",
        )
    fractions = split_fractions(cfg.data.split_fractions)
    ids = [c.case_id for c in discover_cases(cfg.data.layout, cfg.data.root)]
    split = make_split(ids, fractions, int(cfg.data.split_seed))
    write_split(split, target, seed=int(cfg.data.split_seed), fractions=fractions)
    print(f"{target}: " + ", ".join(f"{k} {len(v)}" for k, v in split.items()))


if __name__ == "__main__":
    main()
