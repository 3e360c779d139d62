"""The training samplers that split a run's draws across DDP processes themselves
(:mod:`kdseg.data.samplers`), without a process group: each process is a sampler of its own
over the same seeded generator, as every DDP process holds one."""

from __future__ import annotations

from itertools import islice

import torch
from torch.utils.data import RandomSampler

from kdseg.data.samplers import RankSampler


def _ranks(n: int, processes: int, draws: int | None) -> list[RankSampler]:
    data = list(range(n))
    return [
        RankSampler(
            RandomSampler(
                data,
                replacement=draws is not None,
                num_samples=draws,
                generator=torch.Generator().manual_seed(5),
            ),
            data,
            (processes, rank),
        )
        for rank in range(processes)
    ]


def test_ranks_split_every_epochs_one_sequence_when_the_loader_stops_at_its_length() -> None:
    """Lightning takes a loader's length in batches and asks no further, so a process's
    sampler is read only up to its length. Drawn lazily, the processes whose share needed no
    padding stopped short of the sequence's end and those that padded drew on: their
    generators parted, and the second epoch's shares were no longer one sequence split (37
    slices on 4 processes: 30 of them seen, 10 of those twice or more)."""
    n, processes = 37, 4
    ranks = _ranks(n, processes, None)
    one = RandomSampler(list(range(n)), generator=torch.Generator().manual_seed(5))
    for _ in range(3):
        expected = list(one)  # the epoch one process draws: a pass over the slices
        shares = [list(islice(iter(rank), len(rank))) for rank in ranks]
        assert {len(share) for share in shares} == {-(-n // processes)}
        seen = [index for share in shares for index in share]
        assert sorted(set(seen)) == list(range(n))  # every slice, the padding aside
        padded = expected + expected[: len(seen) - n]
        assert all(share == padded[r::processes] for r, share in enumerate(shares))


def test_ranks_draw_samples_per_epoch_over_all_processes() -> None:
    """With ``samples_per_epoch`` (draws with replacement) the draws are the epoch's over all
    processes, padded from their own start to the same length on each."""
    ranks = _ranks(20, 3, draws=32)
    one = RandomSampler(
        list(range(20)),
        replacement=True,
        num_samples=32,
        generator=torch.Generator().manual_seed(5),
    )
    expected = list(one)
    shares = [list(rank) for rank in ranks]
    assert [len(share) for share in shares] == [11, 11, 11]
    padded = expected + expected[:1]
    assert all(share == padded[r::3] for r, share in enumerate(shares))
