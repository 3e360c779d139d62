"""Slices from the prepared cache as a LightningDataModule.

Items are ``{"image": (C, h, w) float32, "label": (1, h, w) int64, "case": id, "slice": z}``,
where ``C = 2 * context + 1`` neighbouring slices (2.5D context, clamped at the volume ends).
Sampling policies for training: ``all`` slices, ``target`` slices only (the paper), or
``oversample`` (all slices, target slices drawn with probability ``target_fraction``).
Target slices are those holding the organ, or the tumor (``target_slices``; by default the
tumor for the tumor task and the organ otherwise). Oversampling tumor slices in the multi-class
task is nnU-Net's foreground oversampling of the rare class: tumors sit in a few slices only.
Augmentation is MONAI dictionary transforms (the paper's flips on both axes and 90-degree
rotations), seeded in the main process and per worker.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from monai.transforms import Compose, RandFlipd, RandRotate90d
from monai.utils import convert_to_tensor
from torch.utils.data import DataLoader, Dataset, RandomSampler, WeightedRandomSampler

from kdseg.data.cache import CachedCase, open_case
from kdseg.data.tasks import Task
from kdseg.errors import InputError

TARGET_SLICES = ("auto", "organ", "tumor")


@dataclass
class LoaderConfig:
    """How slices are drawn and batched (the ``data`` config's loader keys)."""

    task: str = "multiclass"
    context: int = 0
    batch_size: int = 16
    num_workers: int = 0
    sampling: str = "oversample"
    target_fraction: float = 0.5
    target_slices: str = "auto"
    samples_per_epoch: int | None = None
    val_sampling: str = "all"
    augment: dict[str, bool] = field(default_factory=lambda: {"flip": True, "rot90": True})
    seed: int = 123


def build_augment(augment: dict[str, bool]) -> Compose:
    """MONAI dictionary transforms that move image and label together (N-D spatial axes)."""
    keys = ["image", "label"]
    transforms = []
    if augment.get("flip", False):
        transforms += [
            RandFlipd(keys, prob=0.5, spatial_axis=0),
            RandFlipd(keys, prob=0.5, spatial_axis=1),
        ]
    if augment.get("rot90", False):
        transforms.append(RandRotate90d(keys, prob=0.5, max_k=3, spatial_axes=(0, 1)))
    return Compose(transforms)


class SliceDataset(Dataset):
    """(case, slice) items from memory-mapped cached cases."""

    def __init__(
        self,
        cases: list[CachedCase],
        task: Task,
        context: int = 0,
        only_target: bool = False,
        transform: Compose | None = None,
        target_slices: str = "auto",
    ) -> None:
        self.cases = cases
        self.task = task
        self.context = context
        self.transform = transform
        self.index: list[tuple[int, int]] = []
        self.is_target: list[bool] = []
        use_tumor = target_slices == "tumor" or (target_slices == "auto" and task.name == "tumor")
        for ci, case in enumerate(cases):
            targets = set(case.tumor_slices if use_tumor else case.organ_slices)
            for z in range(case.n_slices):
                if only_target and z not in targets:
                    continue
                self.index.append((ci, z))
                self.is_target.append(z in targets)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, Any]:
        ci, z = self.index[i]
        case = self.cases[ci]
        zs = np.clip(np.arange(z - self.context, z + self.context + 1), 0, case.n_slices - 1)
        image = torch.from_numpy(np.asarray(case.image[zs], dtype=np.float32))
        label = torch.from_numpy(
            self.task.to_model(np.asarray(case.label[z : z + 1])).astype(np.int64)
        )
        item = {"image": image, "label": label}
        if self.transform is not None:  # MONAI returns MetaTensors: back to plain tensors
            item = convert_to_tensor(self.transform(item), track_meta=False)
        return {
            "image": item["image"].contiguous(),
            "label": item["label"].contiguous(),
            "case": case.case_id,
            "slice": z,
        }


class SliceDataModule(pl.LightningDataModule):
    """Train / val / test slice loaders over a prepared cache and a case split."""

    def __init__(
        self,
        cache_dir: str | Path,
        split: dict[str, list[str]],
        loader: LoaderConfig,
        prepare: Callable[[], object] | None = None,
    ) -> None:
        super().__init__()
        self._prepare = prepare
        self.cache_dir = Path(cache_dir)
        self.split = split
        self.cfg = loader
        self.task = Task(loader.task)
        self.augment = build_augment(loader.augment)
        if loader.target_slices not in TARGET_SLICES:
            raise InputError(
                None,
                f"data.target_slices must be one of {TARGET_SLICES}, got {loader.target_slices!r}",
            )

    def prepare_data(self) -> None:
        """Fill the cache for missing cases (Lightning calls this on rank 0 only)."""
        if self._prepare is not None:
            self._prepare()

    def setup(self, stage: str | None = None) -> None:
        self.augment.set_random_state(seed=self.cfg.seed)
        cases = {s: [open_case(self.cache_dir, c) for c in ids] for s, ids in self.split.items()}
        only_target = self.cfg.sampling == "target"
        self.train_set = SliceDataset(
            cases["train"],
            self.task,
            self.cfg.context,
            only_target,
            self.augment,
            self.cfg.target_slices,
        )
        only_val_target = self.cfg.val_sampling == "target"
        self.val_set = SliceDataset(cases["val"], self.task, self.cfg.context, only_val_target)
        self.test_set = SliceDataset(cases["test"], self.task, self.cfg.context, only_val_target)

    def _sampler(self) -> torch.utils.data.Sampler:
        generator = torch.Generator().manual_seed(self.cfg.seed)
        n = self.cfg.samples_per_epoch or len(self.train_set)
        if self.cfg.sampling == "oversample":
            flags = torch.tensor(self.train_set.is_target, dtype=torch.bool)
            n_target = int(flags.sum())
            if 0 < n_target < len(flags):
                p = self.cfg.target_fraction
                weights = torch.where(flags, p / n_target, (1 - p) / (len(flags) - n_target))
                return WeightedRandomSampler(
                    weights.double(), n, replacement=True, generator=generator
                )
        return RandomSampler(
            self.train_set,
            replacement=self.cfg.samples_per_epoch is not None,
            num_samples=n,
            generator=generator,
        )

    def _loader(
        self, dataset: Dataset, sampler: torch.utils.data.Sampler | None = None
    ) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.cfg.batch_size,
            sampler=sampler,
            shuffle=False,
            num_workers=self.cfg.num_workers,
            persistent_workers=self.cfg.num_workers > 0,
            worker_init_fn=self._seed_worker,
        )

    def _seed_worker(self, worker_id: int) -> None:
        self.augment.set_random_state(seed=torch.initial_seed() % 2**32)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self._sampler())

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set)
