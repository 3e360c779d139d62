"""A training ``DataLoader`` that resumes mid-epoch with the draws of the run that never
stopped (:class:`ResumableLoader`), and the per-process draw state DDP needs for it
(:func:`with_ranks`, :func:`own_rank`; also used by ``SliceDataModule.state_dict``), and how
a loader worker takes signals (:func:`worker_signals`)."""

from __future__ import annotations

import logging
import math
import os
import signal
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader

from kdseg.data.rng import derive_seed

log = logging.getLogger(__name__)


def with_ranks(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` and, under DDP, every process's own in rank order (``ranks``). Every process
    makes its checkpoint together (Lightning's ``save_checkpoint``), so the one collective here
    is met; process 0's ``state`` stays at the top for a run resumed with another world."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return state
    ranks: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(ranks, state)
    return {**state, "ranks": ranks}


def own_rank(state: dict[str, Any]) -> dict[str, Any]:
    """This process's part of a :func:`with_ranks` state: its own under DDP of the same
    world size, else the state as saved (process 0's; a checkpoint from before, or one
    process)."""
    ranks, dist = state.get("ranks"), torch.distributed
    if not ranks or not (dist.is_available() and dist.is_initialized()):
        return state
    return ranks[dist.get_rank()] if len(ranks) == dist.get_world_size() else state


class ResumableLoader(DataLoader):
    """The training ``DataLoader``, resumable mid-epoch through Lightning's own interface: a
    loader with ``state_dict`` / ``load_state_dict`` has its state stored in every checkpoint
    (the fit loop's ``combined_loader``) and loaded before the resumed epoch's iterator is made.

    A plain loader resumed from a checkpoint written during an epoch (``checkpoint.
    every_n_train_steps``) trains the epoch's remaining batches, but draws them as the first
    batches of a new pass of the sampler, from generators that had already drawn that epoch:
    slices the epoch had already seen, and every later epoch's draws shifted. Here the state
    is the samplers' generators as they stood when the epoch's iterator was made, and the
    number of batches the epoch has delivered; a resumed loader sets the generators back and
    skips that many batches of indices (no slice is read or augmented for them), so the rest
    of the epoch holds the batches the uninterrupted run drew. Making the iterator again draws
    nothing from torch's global stream (the loader's base seed): the uninterrupted run drew
    it before the checkpoint, and the dropout masks after the checkpoint come from that stream.

    ``generators``: the samplers' generators (the data module's list); ``epoch_batches``: the
    batches Lightning runs an epoch (with ``limit_train_batches`` fewer than the loader holds);
    a state saved once the epoch has delivered them is an epoch-end one and skips nothing.
    ``batch_seeds`` (with workers): the key of an epoch's batch seeds, from the epoch's number
    (``epochs``, shared with the data module, whose state carries it over an epoch-end
    checkpoint; the loader's state holds the epoch a mid-epoch one interrupted): batch ``j``
    is a :class:`SeededBatch` seeded from ``(*key, j)``, skipped or not, whichever worker
    reads it, so a resumed run's workers augment as the uninterrupted run's did.
    Under DDP the state holds every process's generators (:func:`with_ranks`).
    """

    def __init__(
        self,
        *args: Any,
        generators: list[torch.Generator] | None = None,
        epoch_batches: Callable[[], float] | None = None,
        batch_seeds: Callable[[int], tuple[int, ...]] | None = None,
        epochs: Epochs | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.generators = generators if generators is not None else []
        self.epoch_batches = epoch_batches
        self.batch_seeds = batch_seeds
        self.epochs = epochs if epochs is not None else Epochs()
        self._epoch_start: list[torch.Tensor] = []  # the generators when the epoch began
        self._delivered = 0  # batches this epoch's iterator has handed out
        self._resume_at = 0  # batches the next iterator skips (a mid-epoch resume)
        self._epoch = 0  # the number of the epoch this loader is drawing (from 0)
        # the key of this epoch's batch seeds, in a holder the batch sampler reads: a sampler
        # holding the loader itself closed a cycle (loader -> its persistent iterator -> the
        # sampler -> loader), and a loader freed by the garbage collector instead of when
        # its last reference went waited 5 s on each worker (torch's join timeout)
        self._key: list[tuple[int, ...]] = [()]
        self._batches: Iterable[list[int]] | None = None

    @property
    def _index_sampler(self) -> Any:
        # what torch's iterators draw the batches' indices from: while an iterator is being
        # made, the batch sampler with seeded batches and, resumed mid-epoch, the epoch's
        # delivered batches skipped
        sampler = super()._index_sampler
        return self._batches if self._batches is not None else sampler

    def __iter__(self) -> Iterator[Any]:
        skip, self._resume_at = self._resume_at, 0
        if not skip:
            self._epoch_start = [g.get_state() for g in self.generators]
        self._epoch = self.epochs.begun
        samplers = {id(s): s for s in (self.sampler, getattr(self.batch_sampler, "sampler", None))}
        for sampler in samplers.values():  # each once (a batch sampler wraps self.sampler)
            # Lightning sets a sampler's epoch (DDP's shuffle) only after a resumed run's
            # first iterator is made, and workers draw their first batches' indices then
            if callable(getattr(sampler, "set_epoch", None)):
                sampler.set_epoch(self._epoch)
        batches = super()._index_sampler
        if self.batch_seeds is not None:
            self._key[0] = self.batch_seeds(self._epoch)
            batches = _SeededBatches(batches, self._key)
        if skip:
            batches = _SkipFirst(batches, skip)
        torch_state = torch.get_rng_state() if skip else None
        self._batches = batches
        try:
            iterator = super().__iter__()
        finally:
            self._batches = None
            if torch_state is not None:
                torch.set_rng_state(torch_state)
        self.epochs.begun = self._epoch + 1
        self._delivered = skip
        return self._count(iterator)

    def _count(self, iterator: Iterable[Any]) -> Iterator[Any]:
        for batch in iterator:
            self._delivered += 1
            yield batch

    def state_dict(self) -> dict[str, Any]:
        epoch = self.epoch_batches() if self.epoch_batches is not None else math.inf
        finished = self._delivered >= min(epoch, len(self))
        state = {
            "generators": list(self._epoch_start),
            "batches": 0 if finished else self._delivered,
            "epoch": self._epoch,
        }
        return with_ranks(state)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = own_rank(state)
        batches, generators = int(state.get("batches", 0)), state.get("generators", [])
        if batches <= 0:  # an epoch-end checkpoint: the data module's state is the one
            return
        if len(generators) != len(self.generators) or batches >= len(self):
            log.warning("resumed with other sampling: the rest of the epoch is drawn afresh")
            return
        for generator, generator_state in zip(self.generators, generators, strict=True):
            generator.set_state(generator_state)
        if "epoch" in state:  # the epoch the checkpoint interrupted, drawn again
            self.epochs.begun = int(state["epoch"])
        self._epoch_start = [g.get_state() for g in self.generators]
        self._resume_at = batches


@dataclass
class Epochs:
    """The training epochs a run's loader has begun: the data module's state carries it over
    an epoch-end checkpoint, the loader's own over a mid-epoch one (shared: under DDP
    Lightning remakes the loader)."""

    begun: int = 0


class SeededBatch(list):
    """A batch's indices and the seed of its augmentation (``seed``): what a loader worker
    receives, so that the batch's flips and patch come from the batch's own stream and not
    from the stream of whichever worker reads it (:meth:`SliceDataset.__getitems__
    <kdseg.data.slices.SliceDataset.__getitems__>`)."""

    seed: int

    def __init__(self, indices: Iterable[int], seed: int) -> None:
        super().__init__(indices)
        self.seed = seed


class _SeededBatches:
    """A batch sampler whose batches are :class:`SeededBatch`: batch ``j`` of a pass seeded
    from ``(*key[0], j)`` (the key: the run's seed, the process, the epoch), whichever worker
    reads it, skipped or not. The key is read when a pass begins: a loader with persistent
    workers keeps the batch sampler of its first epoch for all of them."""

    def __init__(self, batches: Iterable[list[int]], key: list[tuple[int, ...]]) -> None:
        self.batches, self.key = batches, key

    def __len__(self) -> int:
        return len(self.batches)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[list[int]]:
        key = self.key[0]
        for j, indices in enumerate(self.batches):
            yield SeededBatch(indices, derive_seed(*key, j))


class _SkipFirst:
    """A batch sampler whose first pass read skips its first ``skip`` batches (drawn, not
    used); later passes are whole. Its length is the whole pass: the epoch keeps its length."""

    def __init__(self, batches: Iterable[list[int]], skip: int) -> None:
        self.batches, self.skip = batches, skip

    def __len__(self) -> int:
        return len(self.batches)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[list[int]]:
        # lazy, as torch's batch sampler: a loader with workers makes one pass it never reads
        skip, self.skip = self.skip, 0
        iterator = iter(self.batches)
        for _ in range(skip):
            next(iterator, None)
        yield from iterator


def worker_signals() -> None:
    """A loader worker leaves stopping to the main process. Forked workers inherit the
    commands' handlers (SIGTERM and SIGHUP -> an exception); a hang-up or ``kill -- -pgid``
    signals the whole process group, each worker then died with exit 1, and torch's check of
    its workers raised ``DataLoader worker exited unexpectedly`` over the main process's
    orderly stop. A worker ignores SIGHUP (it exits on its own once the main process is gone)
    and ends quietly, exit 0, on SIGTERM: that is also how multiprocessing stops workers left
    running when the main process exits, so ignoring SIGTERM would leave it waiting on them
    for ever. SIGINT is taken as torch's worker loop expects (``KeyboardInterrupt``, a quiet
    exit)."""
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _quiet_exit)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _quiet_exit(signum: int, frame: Any) -> None:
    os._exit(0)  # no cleanup to run: the main process owns every output
