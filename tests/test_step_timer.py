"""The training-throughput timer: slices per second and the data-loader wait share, measured
over training batches only (warm-up steps and the gaps between epochs left out)."""

from __future__ import annotations

import time
from types import SimpleNamespace

import torch

from kdseg.lit.callbacks import StepTimer


class _Module(SimpleNamespace):
    def __init__(self) -> None:
        super().__init__(device=torch.device("cpu"), logged=[])

    def log_dict(self, metrics: dict, **_: object) -> None:
        self.logged.append(metrics)


def _epoch(timer: StepTimer, module: _Module, steps: int, wait: float, work: float) -> None:
    timer.on_train_epoch_start(None, module)
    for i in range(steps):
        time.sleep(wait)  # the loop waiting for the loader
        batch = {"image": torch.zeros(4, 1, 8, 8)}
        timer.on_train_batch_start(None, module, batch, i)
        time.sleep(work)  # forward, backward, step
        timer.on_train_batch_end(None, module, None, batch, i)
    timer.on_train_epoch_end(None, module)


def test_step_timer_measures_slices_per_second_and_the_data_wait_share() -> None:
    timer, module = StepTimer(warmup=2), _Module()
    _epoch(timer, module, steps=6, wait=0.01, work=0.03)
    time.sleep(0.2)  # validation between epochs: not training time
    _epoch(timer, module, steps=6, wait=0.01, work=0.03)
    summary = timer.summary()
    # epoch 1 measures batches 3..6 from the previous batch's end (4 intervals after warm-up,
    # the 3rd batch's interval included); epoch 2 measures batches 2..6 (its first has no
    # previous end inside the epoch): 4 + 5 intervals of 4 slices each
    assert summary["slices"] == 9 * 4
    assert 0.15 < summary["data_wait_frac"] < 0.4, summary  # 0.01 of every 0.04 s
    assert 50 < summary["slices_per_s"] < 110, summary  # 4 slices per 0.04 s = 100
    assert summary["seconds"] < 0.5  # the 0.2 s pause between epochs is not counted
    assert len(module.logged) == 2 and "perf/slices_per_s" in module.logged[0]
    assert "perf/peak_mem_gb" not in module.logged[0]  # CPU: no accelerator memory to report


def test_step_timer_reports_nothing_before_a_measured_step() -> None:
    timer, module = StepTimer(warmup=5), _Module()
    _epoch(timer, module, steps=3, wait=0.0, work=0.0)
    assert timer.summary() == {} and module.logged == []
