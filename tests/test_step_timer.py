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
        super().__init__(device=torch.device("cpu"), logged=[])

    def log_dict(self, metrics: dict, **_: object) -> None:
        self.logged.append(metrics)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    fake = _Clock()
    monkeypatch.setattr(callbacks, "time", SimpleNamespace(perf_counter=fake))
    return fake


def _epoch(timer: StepTimer, module: _Module, clock: _Clock, steps: int) -> None:
    timer.on_train_epoch_start(None, module)
    for i in range(steps):
        clock.sleep(0.01)  # the loop waiting for the loader
        batch = {"image": torch.zeros(4, 1, 8, 8)}
        timer.on_train_batch_start(None, module, batch, i)
        clock.sleep(0.03)  # forward, backward, step
        timer.on_train_batch_end(None, module, None, batch, i)
    timer.on_train_epoch_end(None, module)


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
