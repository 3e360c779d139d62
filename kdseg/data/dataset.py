"""From a ``data`` config to what training and evaluation need: cases, split, cache, loaders.

This is the one place that reads the ``data`` config group, so ``train``, ``distill``,
``prepare`` and ``eval`` agree on which cases, which split and which cache a config means.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdseg.data.manifest import resolve_split
from kdseg.data.prepare import cache_dir_for, prepare_cases
from kdseg.data.preprocess import PreprocessConfig
from kdseg.data.sources import Case, discover_cases
from kdseg.data.tasks import Task

if TYPE_CHECKING:
    from kdseg.data.datamodule import SliceDataModule


@dataclass
class DataSetup:
    """Resolved data config: the cases, their split, the preprocessing and its cache."""

    cfg: dict[str, Any]
    cases: dict[str, Case]
    split: dict[str, list[str]]
    preprocess: PreprocessConfig
    cache_dir: Path

    @property
    def task(self) -> Task:
        return Task(self.cfg["task"])

    def info(self) -> dict[str, Any]:
        """What a checkpoint must carry about its data to be self-describing."""
        return {
            "name": self.cfg["name"],
            "layout": self.cfg["layout"],
            "task": self.cfg["task"],
            "context": int(self.cfg.get("context", 0)),
            "in_channels": int(self.cfg["in_channels"]),
            "num_classes": int(self.cfg["num_classes"]),
            "organ": self.cfg.get("organ", "organ"),
            "preprocess": self.preprocess.to_dict(),
        }

    def prepare(
        self, workers: int = 1, progress: bool = True, ids: list[str] | None = None
    ) -> list[str]:
        """Prepare the named cases (default: all in the split) into the cache; idempotent."""
        ids = ids or [c for s in ("train", "val", "test") for c in self.split[s]]
        return prepare_cases(
            [self.cases[c] for c in ids],
            self.preprocess,
            self.cache_dir,
            workers=workers,
            progress=progress,
            source=str(self.cfg["root"]),
        )

    def datamodule(self, seed: int = 123) -> SliceDataModule:
        """Slice loaders over the prepared cache; its ``prepare_data`` (rank 0) fills the cache.

        Lightning is imported here, not at module level, so ``kdseg-prepare`` starts fast.
        """
        from kdseg.data.datamodule import LoaderConfig, SliceDataModule

        keys = set(LoaderConfig.__dataclass_fields__) - {"seed"}
        loader = LoaderConfig(**{k: v for k, v in self.cfg.items() if k in keys}, seed=seed)
        workers = int(self.cfg.get("prepare_workers", 1))
        return SliceDataModule(
            self.cache_dir,
            self.split,
            loader,
            prepare=lambda: self.prepare(workers=workers, progress=False),
        )


def resolve_data(cfg: dict[str, Any]) -> DataSetup:
    """Discover the cases of ``cfg['root']`` and resolve split and cache folder."""
    cases = {c.case_id: c for c in discover_cases(cfg["layout"], cfg["root"])}
    split = resolve_split(
        cfg["root"],
        list(cases),
        split_file=cfg.get("split_file"),
        manifest=cfg.get("manifest"),
        seed=int(cfg.get("split_seed", 123)),
        fractions=cfg.get("split_fractions", (0.7, 0.1, 0.2)),
    )
    pre = PreprocessConfig.from_dict(cfg.get("preprocess", {}))
    cache_dir = cache_dir_for(
        cfg.get("cache_root") or Path(cfg["root"]) / ".kdseg_cache", cfg["name"], pre
    )
    return DataSetup(cfg, cases, split, pre, cache_dir)
