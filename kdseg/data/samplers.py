"""The training samplers Lightning leaves alone under DDP, and the dataset of mixed batches.

Lightning replaces a plain ``RandomSampler`` with a ``DistributedSampler`` over the dataset
under DDP (one pass over it, its own shuffle), which would drop ``data.samples_per_epoch``,
the run's seeded draws and the labeled / unlabeled mix of a batch. The samplers here are
``DistributedSampler`` subclasses that split the run's own draws across processes
themselves: :class:`RankSampler` for uniform sampling, :class:`MixedSampler` for batches that
mix unlabeled slices in (:class:`MixedDataset`). Split out of :mod:`kdseg.data.datamodule`,
which builds them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch.utils.data import ConcatDataset, Dataset, DistributedSampler

from kdseg.data.slices import seed_batch


class MixedDataset(ConcatDataset):
    """The labeled and unlabeled slices of the mixed batches (:class:`MixedSampler`); their
    augmentation is seeded from the batch as :class:`SliceDataset` seeds it: every distinct
    transform of the sets (the data module gives both one), each from a seed of its own."""

    def __init__(self, datasets: Iterable[Dataset]) -> None:
        super().__init__(datasets)
        self.transforms: list[Any] = []  # the sets' distinct transforms, in order
        for dataset in self.datasets:
            transform = getattr(dataset, "transform", None)
            if transform is not None and not any(transform is t for t in self.transforms):
                self.transforms.append(transform)

    def __getitems__(self, indices: list[int]) -> list[dict[str, Any]]:
        for stream, transform in enumerate(self.transforms):
            seed_batch(transform, indices, stream)
        return [self[i] for i in indices]


class MixedSampler(DistributedSampler):
    """Indices into ``ConcatDataset([labeled, unlabeled])`` in blocks of one batch each.

    Each block is ``per_batch[0]`` indices from ``labeled`` (any sampler over the labeled set)
    followed by ``per_batch[1]`` unlabeled ones drawn uniformly with replacement, so with
    ``batch_size = sum(per_batch)`` every batch has the same labeled / unlabeled mix.

    Under DDP (``world = (processes, rank)``) every process draws the same sequence and keeps
    the blocks ``rank, rank + processes, ...``, so each of its batches keeps the mix. It is a
    ``DistributedSampler`` only so that Lightning leaves it as it is: Lightning would otherwise
    wrap it in a shuffling sampler that splits the blocks across processes.
    """

    def __init__(
        self,
        labeled: torch.utils.data.Sampler,
        dataset: Dataset,
        offset: int,
        per_batch: tuple[int, int],
        batches: int,
        generator: torch.Generator,
        world: tuple[int, int] = (1, 0),
    ) -> None:
        super().__init__(dataset, num_replicas=world[0], rank=world[1], shuffle=False)
        self.labeled, self.offset = labeled, offset
        self.pool = len(dataset) - offset  # type: ignore[arg-type]
        self.per_batch, self.batches = per_batch, batches
        self.generator = generator

    def __len__(self) -> int:
        return self.batches // self.num_replicas * sum(self.per_batch)

    def __iter__(self) -> Iterator[int]:
        labeled = iter(self.labeled)
        n_labeled, n_unlabeled = self.per_batch
        for block in range(self.batches):
            indices = [next(labeled) for _ in range(n_labeled)]
            draws = torch.randint(self.pool, (n_unlabeled,), generator=self.generator)
            if block % self.num_replicas == self.rank:
                yield from indices
                yield from (self.offset + int(i) for i in draws)


class RankSampler(DistributedSampler):
    """A training sampler's draws split across DDP processes (``world = (processes, rank)``):
    every process draws the whole sequence of ``sampler`` (its seeded generator starts alike
    on every process) and keeps the positions ``rank, rank + processes, ...``, the sequence
    padded with its own start to a multiple of ``processes`` (the same number of batches on
    every process, as ``DistributedSampler`` pads). So ``samples_per_epoch`` stays the
    epoch's draws over all processes, and the draws are the run's, resumable through the
    generator the data module keeps. It is a ``DistributedSampler`` only so that Lightning
    leaves it as it is (as :class:`MixedSampler`).
    """

    def __init__(
        self, sampler: torch.utils.data.Sampler, dataset: Dataset, world: tuple[int, int]
    ) -> None:
        super().__init__(dataset, num_replicas=world[0], rank=world[1], shuffle=False)
        self.sampler = sampler

    def __len__(self) -> int:
        return -(-len(self.sampler) // self.num_replicas)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[int]:
        # the whole sequence drawn at once, on every process alike: drawn lazily, a process
        # whose share needs no padding stopped after its last index (the loader stops at its
        # length), one that pads drew to the end, and the processes' generators parted ways
        # for every later epoch (no longer one split sequence)
        draws = list(self.sampler)
        total = len(self) * self.num_replicas
        padded = draws + [draws[i % len(draws)] for i in range(total - len(draws))]
        return iter(padded[self.rank :: self.num_replicas])
