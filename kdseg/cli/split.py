"""``kdseg-split``: write a case-level train / val / test split for any dataset folder.

Nothing is written into the dataset folder (an input): the split goes where runs with the
same ``data.split_seed`` and ``data.split_fractions`` read a persisted split from, the cache
root (:func:`kdseg.data.dataset.split_store`: one file per seed and fractions), or to
``output=<file>``, which runs read with ``data.split_file=<file>``.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from kdseg.cli import command, to_dict
from kdseg.data.dataset import cache_root_of, check_outside, seeding_of, split_store
from kdseg.data.manifest import (
    FOLDER_SPLIT_NAME,
    make_split,
    seeding_options,
    store_in_use,
    write_split,
)
from kdseg.data.sources import discover_cases
from kdseg.errors import ConfigError, InputError
from kdseg.guards import check_output


def _target(cfg: DictConfig) -> tuple[Path, str]:
    """The file to write and the line's hint on how runs use it; refusals as one line."""
    data = to_dict(cfg.data)
    root = Path(data["root"])
    output = cfg.get("output")
    if data.get("split_file"):  # a split to read, which runs then read instead of this one
        raise ConfigError(
            f"data.split_file={data['split_file']}: kdseg-split writes a split and runs given "
            "data.split_file read that file instead; write to a file of your own with output="
        )
    if output is not None:
        target = check_output(str(output), [root], what="output")
        if target.exists() and not cfg.force:
            raise InputError(target, "split exists; pass force=true to overwrite it")
        return target, f"; use it with data.split_file={target}"
    folder_file = root / FOLDER_SPLIT_NAME
    store = split_store(data)
    if folder_file.exists():  # read before the store: a split written there is never used
        raise InputError(
            folder_file,
            f"this folder's own split is read first, so a split written to {store} would "
            "never be used: write one with output=<file> and run with data.split_file=<file>",
        )
    check_outside(cache_root_of(data), {"data.root": data["root"]})
    check_output(store, [root], what="the split in the cache root")
    seed, fractions = seeding_of(data)
    options = seeding_options(seed, fractions)
    runs = f"runs on {root}" + (f" with {' '.join(options)}" if options else "")
    in_use = store_in_use(store, seed, fractions)  # (a kdseg before 2026-12-07: another name)
    if in_use.exists() and not cfg.force:
        raise InputError(
            in_use,
            f"split exists (the {runs} read it); pass force=true to replace it (its cases may "
            "then move between sets), another data.split_seed for a split of its own, or "
            "output=<file> to write another one",
        )
    return store, f" (read by {runs} that name no data.split_file)"


@command("kdseg-split", "split")
def main(cfg: DictConfig) -> None:
    target, hint = _target(cfg)
    root = Path(cfg.data.root)
    seed, fractions = seeding_of(to_dict(cfg.data))
    ids = [c.case_id for c in discover_cases(cfg.data.layout, cfg.data.root)]
    split = make_split(ids, fractions, seed)
    write_split(split, target, seed=seed, fractions=fractions, root=str(root.resolve()))
    counts = ", ".join(f"{k} {len(v)}" for k, v in split.items())
    print(f"{target}: {counts}{hint}")


if __name__ == "__main__":
    main()
