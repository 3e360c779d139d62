"""The training loader with workers, without training: each batch is augmented from its own
seed (:class:`~kdseg.data.resumable.SeededBatch`), so 2 and 3 workers give the same batches,
bit for bit, over the labeled slices and over batches mixed with unlabeled ones."""

from __future__ import annotations

import copy
import gc
import pickle
import weakref
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from test_unlabeled import compose, mixed_setup
from torch.utils.data import DataLoader, TensorDataset

import kdseg.data.samplers as samplers
import kdseg.data.slices as slices
from kdseg.data.datamodule import SliceDataModule
from kdseg.data.dataset import resolve_data
from kdseg.data.resumable import SeededBatch, _SeededBatches, _SkipFirst
from kdseg.data.slices import build_augment, seed_batch

#: label-class patches, flips and quarter turns: every random stream the augmentation has
PATCHES = ["data.patch_size=[32,32]", "data.patch_ratios=[1,1,2]"]

#: torch's note that 3 workers are more than this machine's 2 cores
pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")


def _epochs(dm: Any, workers: int, epochs: int = 2) -> list[dict[str, torch.Tensor]]:
    """The batches of ``epochs`` epochs of a fresh training loader with ``workers``."""
    dm.cfg.num_workers = workers
    loader = dm.train_dataloader()
    batches = [batch for _ in range(epochs) for batch in loader]
    del loader  # its persistent workers end
    return batches


def _same(a: list[dict[str, torch.Tensor]], b: list[dict[str, torch.Tensor]]) -> bool:
    keys = ("image", "label")
    return len(a) == len(b) and all(
        torch.equal(x[k], y[k]) for x, y in zip(a, b, strict=True) for k in keys
    )


def _no_batch_seeds(monkeypatch: pytest.MonkeyPatch) -> None:
    """The loader as it was before batch seeds: the workers' own streams augment."""
    monkeypatch.setattr(slices, "seed_batch", lambda *args: None)
    monkeypatch.setattr(samplers, "seed_batch", lambda *args: None)


@pytest.fixture
def labeled(phantom_lits: Path, tmp_path: Path) -> Any:
    overrides = [f"data.root={phantom_lits}", f"data.cache_root={tmp_path / 'cache'}", *PATCHES]
    setup = resolve_data(compose("train", overrides)["data"])  # the tiny data settings first
    dm = setup.datamodule(seed=5)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_two_and_three_workers_give_the_same_batches(
    labeled: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two epochs (the persistent workers' second pass with the second epoch's seeds) of 2
    and 3 workers are the same tensors; without the batch seeds they differ (a batch's
    augmentation then depends on the worker that reads it and what it read before)."""
    two, three = _epochs(labeled, 2), _epochs(labeled, 3)
    assert len(two) == 8 and _same(two, three)
    assert not _same(two[:4], two[4:])  # the second epoch draws its own
    _no_batch_seeds(monkeypatch)
    assert not _same(_epochs(labeled, 2), _epochs(labeled, 3))


def test_a_training_loader_and_its_workers_end_with_its_last_reference(labeled: Any) -> None:
    """No reference cycle holds the loader: with the garbage collector off, dropping it
    stops its persistent workers at once. Its seeded batch sampler once held the loader
    (loader -> iterator -> sampler -> loader), and the collector freed it later, each
    worker then waiting out torch's 5 s join timeout (a test file took 45 s longer)."""
    labeled.cfg.num_workers = 2
    loader = labeled.train_dataloader()
    assert len(list(loader)) == 4
    workers, ref = loader._iterator._workers, weakref.ref(loader)
    gc.disable()
    try:
        del loader
        assert ref() is None
    finally:
        gc.enable()
    assert not any(worker.is_alive() for worker in workers)


def test_mixed_batches_with_two_and_three_workers_are_the_same(
    phantom_lits: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same over batches that mix unlabeled slices in (``MixedDataset``), also when the
    unlabeled set has a transform of its own (seeded too, from a seed of its own)."""
    dm = mixed_setup(phantom_lits, tmp_path, *PATCHES).datamodule(seed=5)
    dm.prepare_data()
    dm.setup("fit")
    two = _epochs(dm, 2)
    assert len(two) == 8 and all(int((~b["labeled"]).sum()) == 2 for b in two)
    assert _same(two, _epochs(dm, 3))

    dm.unlabeled_set.transform = copy.deepcopy(dm.augment)  # a transform of its own
    own = _epochs(dm, 2)
    assert _same(own, _epochs(dm, 3))
    labeled = [{k: b[k][b["labeled"]] for k in ("image", "label")} for b in own]
    assert _same(labeled, [{k: b[k][b["labeled"]] for k in ("image", "label")} for b in two])

    _no_batch_seeds(monkeypatch)
    assert not _same(_epochs(dm, 2), _epochs(dm, 3))


def test_a_seeded_batch_keeps_its_seed_through_pickling() -> None:
    """What a loader worker receives is pickled: the indices and the seed both arrive."""
    batch = SeededBatch([3, 1, 4], seed=2**32 - 1)
    again = pickle.loads(pickle.dumps(batch))
    assert type(again) is SeededBatch and again == [3, 1, 4] and again.seed == 2**32 - 1


def test_seed_batch_sets_the_transforms_stream_from_the_batch_alone() -> None:
    """A seeded batch sets the transform's streams whatever they drew before; a plain list of
    indices leaves them as they are; a second transform of a batch draws from another seed."""
    augment = build_augment({"flip": True, "rot90": True})
    item = {"image": torch.arange(36.0).reshape(1, 6, 6)}

    def draws(transform: Any, n: int = 8) -> list[torch.Tensor]:
        return [transform(dict(item))["image"] for _ in range(n)]

    seed_batch(augment, SeededBatch([0], seed=11))
    first = draws(augment)
    seed_batch(augment, SeededBatch([0], seed=11))
    assert all(torch.equal(a, b) for a, b in zip(first, draws(augment), strict=True))
    seed_batch(augment, [0])  # no seed: the stream goes on
    assert not all(torch.equal(a, b) for a, b in zip(first, draws(augment), strict=True))
    seed_batch(augment, SeededBatch([0], seed=11), stream=1)
    assert not all(torch.equal(a, b) for a, b in zip(first, draws(augment), strict=True))
    seed_batch(None, SeededBatch([0], seed=11))  # no transform: nothing to seed


def test_seeded_batches_take_their_seed_from_their_place_in_the_epoch() -> None:
    """Batch ``j`` of a pass is seeded from ``(*key, j)``: a resumed pass that skips its first
    batches gives the rest the seeds of the whole pass; another key, other seeds."""
    batches = [[0, 1], [2, 3], [4, 5], [6, 7]]
    whole = list(_SeededBatches(batches, [(1, 0, 2)]))
    rest = list(_SkipFirst(_SeededBatches(batches, [(1, 0, 2)]), 1))
    assert [b.seed for b in rest] == [b.seed for b in whole[1:]] and rest == batches[1:]
    assert len({b.seed for b in whole}) == 4
    other = list(_SeededBatches(batches, [(1, 0, 3)]))
    assert not {b.seed for b in other} & {b.seed for b in whole}


class _EpochSampler(torch.utils.data.Sampler):
    """Indices in order, and the epochs Lightning sets."""

    def __init__(self, n: int) -> None:
        self.n, self.epochs = n, []

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Any:
        return iter(range(self.n))

    def set_epoch(self, epoch: int) -> None:
        self.epochs.append(epoch)


class _Toy(pl.LightningModule):
    """4 batches an epoch; notes the epoch the data module would resume from a checkpoint
    without ``epochs``, where the data module reads it (when the training loader is made)."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)
        self.sampler = _EpochSampler(4)
        self.resumed_at: int | None = None

    def train_dataloader(self) -> DataLoader:
        holder = SimpleNamespace(trainer=self.trainer)
        self.resumed_at = SliceDataModule._lightning_epoch(holder)  # type: ignore[arg-type]
        return DataLoader(TensorDataset(torch.ones(4, 1)), batch_size=1, sampler=self.sampler)

    def training_step(self, batch: Any, i: int) -> torch.Tensor:
        return self.layer(batch[0]).sum()

    def val_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(torch.ones(2, 1)), batch_size=1)

    def validation_step(self, batch: Any, i: int) -> None:
        pass

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.filterwarnings("ignore::UserWarning")  # Lightning's notes on the toy run
@pytest.mark.parametrize(
    ("checkpoint", "step", "epoch"),
    [
        ({"save_on_train_epoch_end": True}, 4, 1),  # kdseg's: in the epoch's end hooks
        ({"save_on_train_epoch_end": False}, 4, 0),  # at its validation: resumes it, empty
        ({"every_n_train_steps": 4, "save_on_train_epoch_end": False}, 4, 1),  # its last batch
        ({"every_n_train_steps": 3}, 3, 0),  # mid-epoch
        ({"every_n_train_steps": 3}, 6, 1),
    ],
    ids=["epoch_end", "validation", "last_batch", "mid_epoch", "mid_second_epoch"],
)
def test_a_checkpoint_without_epochs_resumes_at_the_epoch_lightning_runs_next(
    tmp_path: Path, checkpoint: dict[str, Any], step: int, epoch: int
) -> None:
    """What ``SliceDataModule`` takes for the epoch of a checkpoint from before it kept one,
    read when the resumed run's training loader is made (its first iterator counts from it,
    each later one from one more), is the epoch Lightning then resumes and gives its sampler
    first (``set_epoch``, then one more for each later epoch), for checkpoints written in an
    epoch's end hooks (kdseg's), at its validation (Lightning resumes that epoch, with no
    batch left), at its last batch and during it. ``trainer.current_epoch`` (epochs
    completed) is one short after the first and third, the fit loop's processed epochs after
    the third (Lightning counts that epoch processed when it resumes)."""
    callback = ModelCheckpoint(tmp_path / "ckpt", "{step}", save_top_k=-1, **checkpoint)
    trainer_args: dict[str, Any] = {
        "max_epochs": 3,
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "default_root_dir": tmp_path,
    }
    pl.Trainer(callbacks=[callback], **trainer_args).fit(_Toy())
    resumed = _Toy()
    pl.Trainer(**trainer_args).fit(resumed, ckpt_path=tmp_path / "ckpt" / f"step={step}.ckpt")
    assert resumed.resumed_at == epoch == resumed.sampler.epochs[0]
