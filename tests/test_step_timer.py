"""The training-throughput timer: slices per second and the data-loader wait share, measured
over training batches only (warm-up steps and the gaps between epochs left out). A fake clock
makes the arithmetic exact."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

import kdseg.lit.callbacks as callbacks
from kdseg.lit.callbacks import StepTimer


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class _Module(SimpleNamespace):
    def __init__(self) -> None:
        super().__init__(device=torch.device("cpu"), logged=[], options=[])

    def log_dict(self, metrics: dict, **options: object) -> None:
        self.logged.append(metrics)
        self.options.append(options)


#: the trainer of a run of one process
ONE = SimpleNamespace(world_size=1)


class _OtherProcess:
    """A DDP strategy's ``reduce`` as this process sees it, with one other process in the job
    whose figures are ``rate`` slices/s, ``wait`` data-wait share, ``slices`` timed slices over
    ``wall`` seconds (an all-reduce: this process's tensor combined with the other's)."""

    def __init__(self, rate: float, wait: float, slices: int, wall: float) -> None:
        self.other = {
            "sum": torch.tensor([rate, wait, 1.0, float(slices)], dtype=torch.float64),
            "max": torch.tensor([wall, 0.0], dtype=torch.float64),
        }
        self.calls: list[str] = []

    def reduce(self, tensor: torch.Tensor, reduce_op: str = "mean") -> torch.Tensor:
        self.calls.append(reduce_op)
        other = self.other[reduce_op]
        return tensor + other if reduce_op == "sum" else torch.maximum(tensor, other)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    fake = _Clock()
    monkeypatch.setattr(callbacks, "time", SimpleNamespace(perf_counter=fake))
    return fake


def _epoch(
    timer: StepTimer, module: _Module, clock: _Clock, steps: int, trainer: object = ONE
) -> None:
    timer.on_train_epoch_start(trainer, module)
    for i in range(steps):
        clock.sleep(0.01)  # the loop waiting for the loader
        batch = {"image": torch.zeros(4, 1, 8, 8)}
        timer.on_train_batch_start(trainer, module, batch, i)
        clock.sleep(0.03)  # forward, backward, step
        timer.on_train_batch_end(trainer, module, None, batch, i)
    timer.on_train_epoch_end(trainer, module)


def test_step_timer_measures_slices_per_second_and_the_data_wait_share(clock: _Clock) -> None:
    timer, module = StepTimer(warmup=2), _Module()
    _epoch(timer, module, clock, steps=6)
    clock.sleep(5.0)  # validation between epochs: not training time
    _epoch(timer, module, clock, steps=6)
    summary = timer.summary()
    # epoch 1 measures batches 3..6 from the previous batch's end (4 intervals after warm-up);
    # epoch 2 measures batches 2..6 (its first has no previous end inside the epoch)
    assert summary["slices"] == 9 * 4
    assert summary["seconds"] == pytest.approx(9 * 0.04)  # the 5 s pause is not counted
    assert summary["data_wait_frac"] == pytest.approx(0.25)  # 0.01 of every 0.04 s
    assert summary["slices_per_s"] == pytest.approx(100.0)  # 4 slices per 0.04 s
    assert len(module.logged) == 2 and module.logged[1]["perf/slices_per_s"] == pytest.approx(100)
    assert "perf/peak_mem_gb" not in module.logged[0]  # CPU: no accelerator memory to report
    timer.on_train_end(ONE, module)
    assert timer.summary() == summary  # one process: nothing to reduce


def test_under_ddp_the_figures_are_the_jobs(clock: _Clock) -> None:
    """Under DDP each process logged its own ``perf/*`` without ``sync_dist`` (Lightning warned
    once a run passed the warm-up) and ``summary.json`` held rank 0's rate alone. Now the job's:
    slices per second summed over the processes, the data-wait share their mean, logged as
    already reduced (``sync_dist`` with ``rank_zero_only``: no second all-reduce, no warning)."""
    timer, module = StepTimer(warmup=2), _Module()
    # this process: 100 slices/s, waits 0.25; the other: 60 slices/s, waits 0.5
    strategy = _OtherProcess(rate=60.0, wait=0.5, slices=24, wall=0.5)
    trainer = SimpleNamespace(world_size=2, strategy=strategy)
    _epoch(timer, module, clock, steps=6, trainer=trainer)
    (logged,) = module.logged
    assert logged == pytest.approx({"perf/slices_per_s": 160.0, "perf/data_wait_frac": 0.375})
    assert module.options[0]["sync_dist"] and module.options[0]["rank_zero_only"]
    assert strategy.calls == ["sum", "max"]  # every process reduces, every epoch
    strategy.other["sum"] = torch.tensor([60.0, 0.5, 1.0, 24.0], dtype=torch.float64)
    timer.on_train_end(trainer, module)
    summary = timer.summary()
    assert summary["slices_per_s"] == pytest.approx(160.0)
    assert summary["data_wait_frac"] == pytest.approx(0.375)
    assert summary["slices"] == 16 + 24  # both processes' timed slices
    assert summary["seconds"] == pytest.approx(0.5)  # the longer process's timed time
    assert timer.record() == {"throughput": summary}


def test_under_ddp_nothing_is_logged_before_a_timed_step(clock: _Clock) -> None:
    """The processes reduce even when none timed a step (the all-reduce is collective: a
    process that skipped it would leave the others waiting), and log nothing."""
    timer, module = StepTimer(warmup=5), _Module()
    strategy = _OtherProcess(rate=0.0, wait=0.0, slices=0, wall=0.0)
    strategy.other["sum"][2] = 0.0  # the other process timed nothing either
    trainer = SimpleNamespace(world_size=2, strategy=strategy)
    _epoch(timer, module, clock, steps=3, trainer=trainer)
    timer.on_train_end(trainer, module)
    assert module.logged == [] and strategy.calls == ["sum", "max"] * 2
    assert timer.record()["throughput"] is None


def test_step_timer_reports_nothing_before_a_measured_step(clock: _Clock) -> None:
    timer, module = StepTimer(warmup=5), _Module()
    _epoch(timer, module, clock, steps=3)
    assert timer.summary() == {} and module.logged == []


def test_summary_json_says_why_a_short_run_has_no_throughput(clock: _Clock) -> None:
    """A run too short for a timed step (warm-up, or one step per epoch) wrote
    ``"throughput": {}``; now ``null`` with ``throughput_reason``. A timed run's record is
    its summary, as before."""
    timer, module = StepTimer(warmup=5), _Module()
    for _ in range(8):  # one step per epoch: none ever has a previous step's end
        _epoch(timer, module, clock, steps=1)
    record = timer.record()
    assert record["throughput"] is None
    assert record["throughput_reason"] == (
        "no training step was timed: 8 step(s) in 8 epoch(s), and the timer leaves out the "
        "first 5 (warm-up) and each epoch's first (no previous step end to time it from)"
    )
    _epoch(timer, module, clock, steps=3)  # steps 2 and 3 of this epoch are timed
    assert timer.record() == {"throughput": timer.summary()} and timer.summary()["slices"] == 8
