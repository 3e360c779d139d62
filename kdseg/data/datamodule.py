"""Slices from the prepared cache as a LightningDataModule.

Items are ``{"image": (C, h, w) float32, "label": (1, h, w) int64, "labeled": bool, "case": id,
"slice": z}``, where ``C = 2 * context + 1`` neighbouring slices (2.5D context, clamped at the
volume ends). With stored teacher predictions (``teacher_dir``) items also carry ``"teacher"``:
``(num_classes, h, w)`` float32 class probabilities on the same grid, augmented with the image.

Unlabeled scans (an image-only cache) join the training batches when ``unlabeled_fraction`` is
above 0: every batch then holds ``round(unlabeled_fraction * batch_size)`` unlabeled slices
(``labeled`` false, an all-zero ``label`` that no loss may use) and labeled slices drawn by the
sampling policy for the rest.
Sampling policies for training: ``all`` slices, ``target`` slices only (the paper), or
``oversample`` (all slices, target slices drawn with probability ``target_fraction``).
Target slices are those holding the organ, or the tumor (``target_slices``; by default the
tumor for the tumor task and the organ otherwise). ``val_sampling: target`` (the paper's
"validate on target slices") keeps the val and test slices that hold the task's own target
(tumor for the tumor task, else organ) whatever ``target_slices`` says: that knob shapes the
training draws only, and validation scores the task on the slices ``kdseg-eval
protocol=paper`` keeps (those whose reference holds the model's target). Oversampling tumor
slices in the multi-class task is nnU-Net's foreground oversampling of the rare class: tumors
sit in a few slices only.
With ``target_weighting: lesion`` (beyond the paper) the tumor slices are not drawn alike: a
slice weighs the sum, over the 3D tumors (6-connected) it cuts, of 1 / the number of slices that
tumor spans, so each tumor is drawn as often, and a 4 mm metastasis on one slice as often as a
40 mm one on twenty (:func:`~kdseg.data.slices.lesion_slice_weights`).
Augmentation is MONAI dictionary transforms (the paper's flips on both axes and 90-degree
rotations), seeded from the run's seed: without loader workers one stream in the main process
runs through the epochs (in the checkpoints); with workers each training batch is augmented
from its own seed (the run's seed, the process, the epoch, the batch), set in the worker that
reads it, so the draws depend on neither the number of workers nor a resume. The items
themselves (a slice with its context, label and teacher target, augmented) come from
:mod:`kdseg.data.slices`.

With ``patch_size: [h, w]`` (beyond the paper) training sees a random ``h x w`` patch of each
drawn slice instead of the whole slice; validation, test and inference still see whole slices
(every network here is fully convolutional). It is nnU-Net's patch training: at a fine spacing
(0.75-1.0 mm, 216-288 pixels across an organ box) a step costs what the patch costs, and with
``patch_ratios`` (one positive weight per model class, MONAI's ``RandCropByLabelClassesd``) a
patch is centred on a voxel of class k with probability proportional to ratio k among the
classes the slice holds, so a 6-voxel tumor fills a far larger share of its patch than of its
slice. Without ``patch_ratios`` the patch lies anywhere in the slice (``RandSpatialCropd``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import (
    DataLoader,
    Dataset,
    RandomSampler,
    WeightedRandomSampler,
)

from kdseg.data.cache import CachedCase, open_case
from kdseg.data.loader_settings import LoaderConfig, check_loader_settings
from kdseg.data.patches import not_square
from kdseg.data.resumable import Epochs, ResumableLoader, own_rank, with_ranks, worker_signals
from kdseg.data.rng import numpy_state, set_numpy_state
from kdseg.data.samplers import MixedDataset, MixedSampler, RankSampler
from kdseg.data.slices import SliceDataset, build_augment
from kdseg.data.tasks import Task
from kdseg.errors import InputError

log = logging.getLogger(__name__)


def check_training_shape(cfg: LoaderConfig, cases: list[CachedCase]) -> None:
    """Training tensors that batch, on the cached slices (the config alone is checked by
    :func:`~kdseg.data.patches.check_patch`): every slice at least the patch in both axes (a
    smaller one would give a smaller patch), and without a patch square slices when
    ``augment.rot90`` is on (a quarter turn swaps height and width)."""
    rot90 = bool(cfg.augment.get("rot90", False))
    for case in cases:
        if not case.image.shape[0]:  # no slice (an organ ROI of an empty label): never drawn
            continue
        h, w = case.image.shape[1:3]
        if cfg.patch_size is not None and (h < cfg.patch_size[0] or w < cfg.patch_size[1]):
            raise InputError(
                None,
                f"data.patch_size {list(cfg.patch_size)} is larger than the {h} x {w} slices of "
                f"case {case.case_id}: set it at most the slice size (preprocess.in_plane_size)",
            )
        if cfg.patch_size is None and rot90 and h != w:
            raise not_square(f"the slices of case {case.case_id} are {h} x {w}")


def check_one_size(cases: list[CachedCase], batch_size: int, what: str) -> None:
    """Slices that a loader stacks ``batch_size`` at a time share one height and width (a
    native matrix that varies by case failed in the batch collation with a torch error)."""
    if batch_size < 2:
        return
    filled = [case for case in cases if case.image.shape[0]]  # no slice: never in a batch
    for case in filled[1:]:
        (a, b), (h, w) = filled[0].image.shape[1:3], case.image.shape[1:3]
        if (a, b) != (h, w):
            raise InputError(
                None,
                f"{what} slices of case {filled[0].case_id} are {a} x {b} but those of case "
                f"{case.case_id} are {h} x {w}; batches need one size: set "
                "data.preprocess.in_plane_size (or crop_size), or data.patch_size for training",
            )


class SliceDataModule(pl.LightningDataModule):
    """Train / val / test slice loaders over a prepared cache and a case split."""

    def __init__(
        self,
        cache_dir: str | Path,
        split: dict[str, list[str]],
        loader: LoaderConfig,
        prepare: Callable[[], object] | None = None,
        unlabeled: tuple[Path, list[str]] | None = None,
        teacher_dir: Path | None = None,
    ) -> None:
        """``unlabeled``: (image-only cache, case ids) mixed into training batches;
        ``teacher_dir``: the teacher-target cache of stored predictions (training cases)."""
        super().__init__()
        self._prepare = prepare
        self.cache_dir = Path(cache_dir)
        self.split = split
        self.cfg = loader
        self.unlabeled = unlabeled
        self.teacher_dir = teacher_dir
        check_loader_settings(loader, unlabeled=unlabeled is not None)
        self.task = Task(loader.task)
        self.augment = build_augment(loader.augment, loader.patch_size, loader.patch_ratios)
        self._generators: list[torch.Generator] = []
        self._epochs = Epochs()  # the training epochs begun (the key of the batch seeds)
        self._resumed: dict[str, Any] | None = None
        self._noted_uniform = False  # the line that oversampling found no target slice

    def prepare_data(self) -> None:
        """Fill the cache for missing cases (Lightning calls this on rank 0 only)."""
        if self._prepare is not None:
            self._prepare()

    def check_shapes(self) -> None:
        """The batch checks of :meth:`setup` on the prepared cache alone (slices that cannot
        batch, a patch larger than the slices): kdseg's training runs them before the Trainer
        starts its loggers, so such a run is refused before a logger writes anything."""
        cases = {s: [open_case(self.cache_dir, c) for c in ids] for s, ids in self.split.items()}
        self._check_shapes(cases, self._unlabeled_cases())

    def training_sizes(self) -> list[tuple[int, int]]:
        """The ``(h, w)`` a training batch can have, sorted: the patch with ``patch_size``,
        else each slice size among the training cases (and the unlabeled ones mixed in).
        Augmentation keeps the size (flips, quarter turns of square slices)."""
        if self.cfg.patch_size is not None:
            return [(int(self.cfg.patch_size[0]), int(self.cfg.patch_size[1]))]
        cases = [open_case(self.cache_dir, c) for c in self.split["train"]]
        cases += self._unlabeled_cases() or []
        sizes = {(int(c.image.shape[1]), int(c.image.shape[2])) for c in cases if c.image.shape[0]}
        return sorted(sizes)

    def _unlabeled_cases(self) -> list[CachedCase] | None:
        """The unlabeled scans mixed into training batches (None: none are)."""
        if self.unlabeled is None or self.cfg.unlabeled_fraction <= 0:
            return None
        folder, ids = self.unlabeled
        return [open_case(folder, c) for c in ids]

    def _check_shapes(
        self, cases: dict[str, list[CachedCase]], unlabeled: list[CachedCase] | None
    ) -> None:
        training = [*cases["train"], *(unlabeled or [])]
        check_training_shape(self.cfg, training)
        if self.cfg.patch_size is None:
            check_one_size(training, self.cfg.batch_size, "training")
        for part in ("val", "test"):  # whole slices, batch_size at a time
            check_one_size(cases[part], self.cfg.batch_size, part)

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
            self.teacher_dir,
            self.cfg.target_weighting,
        )
        self.unlabeled_set = None
        unlabeled = self._unlabeled_cases()
        if unlabeled is not None:
            self.unlabeled_set = SliceDataset(
                unlabeled,
                self.task,
                self.cfg.context,
                transform=self.augment,
                teacher_dir=self.teacher_dir,
            )
            if len(self.unlabeled_set) == 0:  # e.g. an organ ROI whose masks hold no organ
                raise InputError(
                    self.unlabeled[0], "no slice of the unlabeled scans in the cache (no organ?)"
                )
        self._check_shapes(cases, unlabeled)
        if len(self.train_set) == 0:
            raise InputError(
                self.cache_dir,
                "no training slice to draw (data.sampling=target and no training case holds "
                "the target?)"
                if only_target
                else "no training slice in the cache",
            )
        self._note_uniform_draws()
        # the task's own target slices, not data.target_slices (a training-draw knob only)
        only_val_target = self.cfg.val_sampling == "target"
        self.val_set = SliceDataset(cases["val"], self.task, self.cfg.context, only_val_target)
        self.test_set = SliceDataset(cases["test"], self.task, self.cfg.context, only_val_target)

    def _note_uniform_draws(self) -> None:
        """One warning line (first process, once) when ``sampling=oversample`` has no target
        slice to oversample: the draws are then uniform over the training slices, as
        ``sampling=all`` draws (``sampling=target`` refuses the same split)."""
        if self.cfg.sampling != "oversample" or self.cfg.target_fraction <= 0:
            return
        if any(self.train_set.is_target) or self._noted_uniform:
            return
        self._noted_uniform = True
        trainer = getattr(self, "trainer", None)
        if trainer is not None and trainer.global_rank != 0:
            return
        target = self.train_set.target
        log.warning(
            f"data.sampling=oversample: no training slice holds the {target} "
            f"(data.target_slices={self.cfg.target_slices}), so nothing is oversampled: "
            f"slices are drawn uniformly, as data.sampling=all draws them"
        )

    def _unlabeled_per_batch(self) -> int:
        if self.unlabeled_set is None:
            return 0
        return min(
            max(round(self.cfg.unlabeled_fraction * self.cfg.batch_size), 1),
            self.cfg.batch_size - 1,
        )

    def _generator(self, seed: int) -> torch.Generator:
        """A training sampler's generator, kept for :meth:`state_dict`."""
        generator = torch.Generator().manual_seed(seed)
        self._generators.append(generator)
        return generator

    def _sampler(self, n: int | None = None) -> torch.utils.data.Sampler:
        generator = self._generator(self.cfg.seed)
        n = n or self.cfg.samples_per_epoch or len(self.train_set)
        lesion = self.cfg.target_weighting == "lesion"
        if self.cfg.sampling == "oversample":
            flags = torch.tensor(self.train_set.is_target, dtype=torch.bool)
            n_target = int(flags.sum())
            if 0 < n_target < len(flags):
                p = self.cfg.target_fraction
                if lesion:
                    target = torch.tensor(self.train_set.target_weight, dtype=torch.double)
                    rest = (1 - p) / (len(flags) - n_target)
                    weights = torch.where(flags, p * target / target.sum(), rest)
                else:  # kept as it was: the draws of earlier runs stay bit for bit
                    weights = torch.where(flags, p / n_target, (1 - p) / (len(flags) - n_target))
                return WeightedRandomSampler(
                    weights.double(), n, replacement=True, generator=generator
                )
        if lesion and all(self.train_set.is_target):  # sampling target, or only tumor slices
            weights = torch.tensor(self.train_set.target_weight, dtype=torch.double)
            return WeightedRandomSampler(weights, n, replacement=True, generator=generator)
        return RandomSampler(
            self.train_set,
            replacement=self.cfg.samples_per_epoch is not None,
            num_samples=n,
            generator=generator,
        )

    def _mixed_sampler(self, dataset: Dataset) -> MixedSampler:
        """Every batch: ``k`` unlabeled slices (uniform) after ``batch_size - k`` labeled ones;
        under DDP each process takes every ``world``-th batch of the same sequence."""
        k, b = self._unlabeled_per_batch(), self.cfg.batch_size
        n = self.cfg.samples_per_epoch or len(self.train_set) + len(self.unlabeled_set)
        world, rank = self._world()
        batches = -(-n // (b * world)) * world  # the same number of batches on every process
        return MixedSampler(
            self._sampler(batches * (b - k)),
            dataset,
            offset=len(self.train_set),
            per_batch=(b - k, k),
            batches=batches,
            generator=self._generator(self.cfg.seed + 1),
            world=(world, rank),
        )

    def _world(self) -> tuple[int, int]:
        """``(processes, rank)`` of the run (``(1, 0)`` without a trainer)."""
        trainer = self.trainer
        return (trainer.world_size, trainer.global_rank) if trainer else (1, 0)

    def _ranked(self, sampler: torch.utils.data.Sampler) -> torch.utils.data.Sampler:
        """A training sampler as DDP takes it: ``sampling=all|target``'s ``RandomSampler`` in
        a :class:`RankSampler` (Lightning would put a ``DistributedSampler`` over the dataset
        in its place: one pass of the dataset an epoch, ``samples_per_epoch`` and the run's
        seeded generator dropped); one process, or any other sampler (Lightning wraps a
        ``WeightedRandomSampler`` and keeps its draws), as it is."""
        world = self._world()
        if world[0] < 2 or not isinstance(sampler, RandomSampler):
            return sampler
        return RankSampler(sampler, self.train_set, world)

    def _eval_sampler(self, dataset: Dataset) -> torch.utils.data.Sampler | None:
        """Under DDP, each validation / test slice on one process only: Lightning's own
        ``DistributedSampler`` pads the processes' shares to one length with slices that
        another process also scores, and the gathered Dice counted those twice. The shares
        may then differ by a slice (the Dice gathers per-class counts, of one shape on every
        process); with fewer slices than processes Lightning's padding stays, every process
        needing a batch (DDP's first forward of the epoch syncs the buffers)."""
        processes, rank = self._world()
        if processes < 2 or len(dataset) < processes:  # type: ignore[arg-type]
            return None
        return UnrepeatedDistributedSampler(
            dataset, num_replicas=processes, rank=rank, shuffle=False
        )

    def _loader(
        self,
        dataset: Dataset,
        sampler: torch.utils.data.Sampler | None = None,
        *,
        training: bool = True,
    ) -> DataLoader:
        kwargs: dict[str, Any] = {}
        loader_cls: type[DataLoader] = DataLoader
        if sampler is not None and training:  # a loader Lightning can checkpoint mid-epoch
            loader_cls = ResumableLoader
            kwargs = {
                "generators": self._generators,
                "epoch_batches": self._epoch_batches,
                "epochs": self._epochs,
            }
            if self.cfg.num_workers > 0:
                kwargs["batch_seeds"] = self._batch_seeds
        if self.cfg.num_workers > 0:
            # the workers' base seed from the loader's own generator, not torch's global
            # stream: persistent workers start once in a run, and a resumed run's start anew,
            # so a draw from the global stream would shift every later dropout mask
            kwargs["generator"] = torch.Generator().manual_seed(self.cfg.seed)
        return loader_cls(
            dataset,
            batch_size=self.cfg.batch_size,
            sampler=sampler,
            shuffle=False,
            num_workers=self.cfg.num_workers,
            persistent_workers=self.cfg.num_workers > 0,
            worker_init_fn=self._seed_worker,
            **kwargs,
        )

    def _epoch_batches(self) -> float:
        """The training batches of an epoch as Lightning runs them (``limit_train_batches``
        included); infinite when there is no trainer (the loader then knows its length)."""
        trainer = self.trainer
        batches = getattr(trainer, "num_training_batches", None) if trainer else None
        return float(batches) if batches is not None else math.inf

    def _batch_seeds(self, epoch: int) -> tuple[int, ...]:
        """The key of an epoch's batch seeds with loader workers (batch ``j`` of the epoch is
        augmented from ``(*key, j)``): the run's seed, the process (DDP) and the epoch (the
        training loader's count, which its checkpointed state carries over a resume)."""
        return (self.cfg.seed, self._world()[1], epoch)

    def _seed_worker(self, worker_id: int) -> None:
        worker_signals()
        self.augment.set_random_state(seed=torch.initial_seed() % 2**32)

    def train_dataloader(self) -> DataLoader:
        self._generators = []
        self._epochs = Epochs()
        if self.unlabeled_set is not None:
            mixed = MixedDataset([self.train_set, self.unlabeled_set])
            loader = self._loader(mixed, self._mixed_sampler(mixed))
        else:
            loader = self._loader(self.train_set, self._ranked(self._sampler()))
        if self._resumed is not None:  # a resumed run: continue the checkpoint's draws
            self._continue_draws(self._resumed)
            self._resumed = None
        return loader

    def _continue_draws(self, state: dict[str, Any]) -> None:
        # the generators as the checkpoint left them: the next epoch's draws after an
        # epoch-end checkpoint; after a mid-epoch one the training loader's own state, which
        # Lightning loads next, sets them back to its epoch's start (ResumableLoader)
        state = own_rank(state)
        samplers, augment = state.get("samplers", []), state.get("augment", [])
        randomized = self._randomized()
        if len(samplers) != len(self._generators) or len(augment) != len(randomized):
            # the data settings changed since the checkpoint: its draws do not fit these ones
            log.warning("resumed with other sampling or augmentation: draws start afresh")
            return
        for generator, sampler_state in zip(self._generators, samplers, strict=True):
            generator.set_state(sampler_state)
        for stream, stream_state in zip(randomized, augment, strict=True):
            set_numpy_state(stream_state, stream)
        # a checkpoint from before the key: the epoch Lightning resumes (it set the samplers'
        # epoch then; the training loader now sets it itself, from this count)
        epochs = state.get("epochs")
        self._epochs.begun = int(epochs) if epochs is not None else self._lightning_epoch()

    def _lightning_epoch(self) -> int:
        """The epoch a restored Lightning trainer resumes, the one it gives its samplers'
        ``set_epoch`` first: the epochs its fit loop has processed, and one more for a
        checkpoint written at the end of an epoch's last batch, before its ``training_step``
        counted as completed (a step checkpoint there), which the loop counts processed when
        it resumes. After one written at the epoch's validation Lightning resumes that epoch,
        with no batch left, and makes the loader's iterator again for the next. Lightning's
        ``trainer.current_epoch`` (the epochs completed) is one short after a checkpoint
        written in an epoch's end hooks (kdseg's), between processed and completed
        (``tests/test_loader_workers.py``). Read when the resumed run's training loader is
        made, after Lightning restored its loops; 0 without a trainer."""
        loop = getattr(getattr(self, "trainer", None), "fit_loop", None)
        if loop is None:
            return 0
        current, batches = loop.epoch_progress.current, loop.epoch_loop.batch_progress
        at_last_batch_end = (
            current.started > current.processed
            and bool(batches.is_last_batch)
            and batches.total.completed < batches.total.processed
        )
        return int(current.processed) + int(at_last_batch_end)

    def _randomized(self) -> list[np.random.RandomState]:
        """The augmentation's random streams, in a fixed order: each drawing transform's
        ``RandomState``, and for a MONAI crop the ``RandomState`` of the cropper inside it (a
        different object after seeding, and the one its draws come from)."""
        streams: list[np.random.RandomState] = []
        for transform in self.augment.transforms:
            for holder in (transform, getattr(transform, "cropper", None)):
                stream = getattr(holder, "R", None)
                if stream is not None and not any(stream is s for s in streams):
                    streams.append(stream)
        return streams

    def state_dict(self) -> dict[str, Any]:
        """Where the training draws stand (Lightning stores it in every checkpoint): the
        samplers' generators and the augmentation's random states. With it (and, mid-epoch,
        the training loader's own state: :class:`ResumableLoader`) a resumed run draws the
        batches an uninterrupted run would; with ``num_workers > 0`` the epochs begun (the
        key of the batches' augmentation seeds) stand for the workers' streams. Under DDP it
        holds every process's (``ranks``): they differ (the unlabeled slices a process leaves
        undrawn after its last batch, the label-class patches of its own slices) and only
        process 0 writes the checkpoint."""
        state: dict[str, Any] = {
            "samplers": [g.get_state() for g in self._generators],
            "augment": [numpy_state(stream) for stream in self._randomized()],
            "epochs": self._epochs.begun,
        }
        return with_ranks(state)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Applied when the next training loader is built (Lightning restores before)."""
        self._resumed = state

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, self._eval_sampler(self.val_set), training=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, self._eval_sampler(self.test_set), training=False)
