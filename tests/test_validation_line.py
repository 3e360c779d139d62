"""A run's logging: one line per validation in its log file (nnU-Net style), the console left to
the progress bar, the best score carried through a checkpoint; the wandb logger's fields."""

from __future__ import annotations

import io
import logging
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from kdseg.lit.callbacks import TrainingProgress, ValidationLine


def _trainer(
    epoch: int, step: int, dice: float, progress_bar: bool = True, every: int = 1
) -> SimpleNamespace:
    return SimpleNamespace(
        sanity_checking=False,
        check_val_every_n_epoch=every,
        is_global_zero=True,
        current_epoch=epoch,
        global_step=step,
        max_epochs=30,
        max_steps=-1,
        callback_metrics={"val/dice_mean": torch.tensor(dice)},
        progress_bar_callback=object() if progress_bar else None,
    )


@pytest.fixture
def handlers(tmp_path: Path):
    """The run's log file (as kdseg.cli.open_run_log adds it) and a console, on the root logger."""
    root = logging.getLogger()
    file = logging.FileHandler(tmp_path / "train.log")
    console = logging.StreamHandler(io.StringIO())
    level = root.level
    root.setLevel(logging.INFO)
    root.addHandler(file)
    root.addHandler(console)
    yield tmp_path / "train.log", console.stream
    root.removeHandler(file)
    root.removeHandler(console)
    root.setLevel(level)
    file.close()


def _validate(callback: ValidationLine, trainer: SimpleNamespace, losses: list[float]) -> None:
    for loss in losses:
        callback.on_train_batch_end(trainer, None, {"loss": torch.tensor(loss)}, None, 0)
    callback.on_validation_end(trainer, None)


def test_one_line_per_validation_in_the_log_file_not_the_console(handlers, capsys) -> None:
    log_file, console = handlers
    callback = ValidationLine()
    callback.on_train_start(None, None)
    _validate(callback, _trainer(0, 32, 0.5), [0.5, 0.3])
    _validate(callback, _trainer(1, 64, 0.4), [0.2])
    lines = log_file.read_text().splitlines()
    assert len(lines) == 2 and console.getvalue() == ""
    assert lines[0].startswith("epoch 1/30 step 32: train loss 0.4, val dice 0.5000 (best 0.5000")
    assert lines[1].startswith("epoch 2/30 step 64: train loss 0.2, val dice 0.4000 (best 0.5000")
    assert "at epoch 1), " in lines[1] and lines[1].endswith(" s")
    assert capsys.readouterr() == ("", "")
    # resumed from a checkpoint: the best score goes on; no progress bar: stderr too, as the
    # bar would be (progress; stdout holds the results), and not through the log's console
    resumed = ValidationLine()
    resumed.load_state_dict(callback.state_dict())
    _validate(resumed, _trainer(2, 96, 0.45, progress_bar=False), [0.1])
    assert "val dice 0.4500 (best 0.5000 at epoch 1)" in log_file.read_text().splitlines()[2]
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("epoch 3/30 step 96: ") and console.getvalue() == ""


def test_no_line_from_the_sanity_check_or_another_rank(handlers) -> None:
    log_file, _ = handlers
    callback = ValidationLine()
    _validate(
        callback, SimpleNamespace(**{**vars(_trainer(0, 0, 0.1)), "sanity_checking": True}), []
    )
    _validate(
        callback, SimpleNamespace(**{**vars(_trainer(0, 8, 0.2)), "is_global_zero": False}), []
    )
    assert log_file.read_text() == ""
    assert callback.best == (
        pytest.approx(0.2),
        1,
    )  # every rank keeps the score its checkpoint saves


def test_wandb_entity_reaches_the_logger(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``logger.wandb.entity`` (a team's project) goes to wandb.init with the other fields;
    offline, and nothing starts until the first log."""
    from omegaconf import OmegaConf
    from pytorch_lightning.loggers import WandbLogger

    from kdseg.cli.options import CONFIG_PATH
    from kdseg.lit.train import build_loggers

    monkeypatch.setenv("WANDB_MODE", "offline")
    default = OmegaConf.load(Path(CONFIG_PATH) / "logger" / "default.yaml")
    assert "entity" in default.wandb and default.wandb.entity is None
    wb = {**OmegaConf.to_container(default.wandb), "entity": "my-lab", "group": "g"}
    (logger,) = [lg for lg in build_loggers({"wandb": wb}, tmp_path) if isinstance(lg, WandbLogger)]
    init = logger._wandb_init
    assert (init["entity"], init["project"], init["group"]) == ("my-lab", "kdseg", "g")
    assert logger._offline
    assert getattr(logger, "_experiment", None) is None  # no run started, no network


def test_a_run_resumed_from_a_checkpoint_without_its_state_takes_the_best_score(
    handlers,
) -> None:
    """A checkpoint saved before ValidationLine existed holds no best score of its own: the
    resumed run's lines said the first validation after it was the best. The best checkpoint's
    score stands in (its epoch unknown), compared in that checkpoint's mode (min or max)."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    log_file, _ = handlers
    best = ModelCheckpoint(monitor="val/dice_mean", mode="max")
    best.best_model_score = torch.tensor(0.8123)
    resumed = ValidationLine()
    trainer = SimpleNamespace(**vars(_trainer(5, 160, 0.5)), checkpoint_callbacks=[best])
    resumed.on_train_start(trainer, None)
    _validate(resumed, trainer, [0.1])
    line = log_file.read_text().splitlines()[-1]
    assert "val dice 0.5000 (best 0.8123), " in line, line
    resumed.load_state_dict(resumed.state_dict())  # the epoch stays unknown through a save
    assert resumed.best == (pytest.approx(0.8123), None)

    lowest = ModelCheckpoint(monitor="val/loss", mode="min")
    lowest.best_model_score = torch.tensor(0.3)
    loss = ValidationLine("val/loss")
    trainer = SimpleNamespace(
        **{**vars(_trainer(2, 96, 0.0)), "callback_metrics": {"val/loss": torch.tensor(0.4)}},
        checkpoint_callbacks=[lowest],
    )
    loss.on_train_start(trainer, None)
    _validate(loss, trainer, [])
    assert "val loss 0.4000 (best 0.3000)" in log_file.read_text().splitlines()[-1]
    trainer.callback_metrics = {"val/loss": torch.tensor(0.2)}
    trainer.current_epoch = 3
    _validate(loss, trainer, [])
    assert "val loss 0.2000 (best 0.2000 at epoch 4)" in log_file.read_text().splitlines()[-1]


def test_a_resumed_line_shows_the_train_loss_of_the_run_that_never_stopped(handlers) -> None:
    """The loss summed since the last validation goes into the checkpoint: a run resumed mid
    epoch showed the mean of the steps after the resume only. A checkpoint without that state
    (saved before it was kept) still loads, and counts from the resume."""
    log_file, _ = handlers
    whole = ValidationLine()
    _validate(whole, _trainer(0, 3, 0.5), [0.5, 0.25, 0.125])
    killed = ValidationLine()
    for loss in (0.5, 0.25):
        killed.on_train_batch_end(_trainer(0, 2, 0.5), None, {"loss": torch.tensor(loss)}, None, 0)
    resumed = ValidationLine()
    resumed.load_state_dict(killed.state_dict())
    resumed.on_train_start(_trainer(0, 2, 0.5), None)  # the same epoch goes on
    _validate(resumed, _trainer(0, 3, 0.5), [0.125])
    older = ValidationLine()
    older.load_state_dict({"best": (0.4, 1)})  # a checkpoint saved before the loss was kept
    _validate(older, _trainer(1, 3, 0.5), [0.125])
    lines = log_file.read_text().splitlines()
    assert [line.split(", val")[0] for line in lines] == [
        "epoch 1/30 step 3: train loss 0.2917",
        "epoch 1/30 step 3: train loss 0.2917",
        "epoch 2/30 step 3: train loss 0.125",
    ]
    empty = {"best": None, "loss_sum": None, "loss_steps": 0, "loss_epoch": None}
    assert ValidationLine().state_dict() == empty


def test_a_run_resumed_from_an_epochs_last_batch_drops_that_epochs_loss(handlers) -> None:
    """A step checkpoint written at an epoch's last batch is saved before that epoch's
    validation, which Lightning skips on resume (it starts the next epoch): the carried sum of
    the skipped epoch went into the next epoch's line (the mean of both epochs, where the run
    that never stopped showed the second's). Where that epoch has no validation of its own
    (``check_val_every_n_epoch=2``), its sum goes on into the next line, as without a kill."""
    log_file, _ = handlers
    whole = ValidationLine()
    _validate(whole, _trainer(0, 2, 0.5), [0.5, 0.25])
    _validate(whole, _trainer(1, 4, 0.5), [0.125, 0.125])
    for every in (1, 2):
        killed = ValidationLine()
        for loss in (0.5, 0.25):  # the first epoch's batches; killed before its validation
            batch = _trainer(0, 2, 0.5, every=every)
            killed.on_train_batch_end(batch, None, {"loss": torch.tensor(loss)}, None, 1)
        resumed = ValidationLine()
        resumed.load_state_dict(killed.state_dict())
        resumed.on_train_start(_trainer(1, 2, 0.5, every=every), None)  # the next epoch
        _validate(resumed, _trainer(1, 4, 0.5, every=every), [0.125, 0.125])
    lines = log_file.read_text().splitlines()
    assert [line.split(", val")[0] for line in lines] == [
        "epoch 1/30 step 2: train loss 0.375",
        "epoch 2/30 step 4: train loss 0.125",
        "epoch 2/30 step 4: train loss 0.125",  # resumed: the same line
        "epoch 2/30 step 4: train loss 0.25",  # validated every 2nd epoch: both epochs' mean
    ]


class _Clock:
    """A monotonic clock the test moves: ``tick(s)`` seconds at a time."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def perf_counter(self) -> float:
        return self.now


def _epoch(
    callback: TrainingProgress,
    trainer: SimpleNamespace,
    clock: _Clock,
    batches: range,
    seconds: float = 1.0,
    start: bool = True,
) -> None:
    """``batches`` of one epoch (their indices), each ``seconds`` long; ``start=False``: as a
    run resumed mid-epoch, where Lightning starts no epoch."""
    if start:
        callback.on_train_epoch_start(trainer, None)
    for i in batches:
        callback.on_train_batch_start(trainer, None, None, i)
        clock.now += seconds
        trainer.global_step += 1
        callback.on_train_batch_end(trainer, None, None, None, i)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    """The clock kdseg's progress lines are timed by, moved by the test alone."""
    from kdseg import errors
    from kdseg.lit import callbacks

    fake = _Clock()
    monkeypatch.setattr(errors, "time", fake)
    monkeypatch.setattr(callbacks, "time", fake)
    return fake


def test_training_off_a_terminal_prints_a_line_every_30_s(handlers, clock, capsys) -> None:
    """An epoch of 100 one-second batches with no progress bar: a line every 30 s on stderr
    and in the log file, worded as the validation line (epoch 1-based), never more often; the
    next epoch's first line comes 30 s after that epoch starts."""
    log_file, console = handlers
    callback = TrainingProgress()
    trainer = _trainer(0, 0, 0.5, progress_bar=False)
    trainer.max_epochs, trainer.num_training_batches = 2, 100
    times = []
    for epoch in range(2):
        trainer.current_epoch = epoch
        callback.on_train_epoch_start(trainer, None)
        for i in range(100):
            callback.on_train_batch_start(trainer, None, None, i)
            clock.now += 1.0
            trainer.global_step += 1
            callback.on_train_batch_end(trainer, None, None, None, i)
            times += [clock.now] * len(capsys.readouterr().err.splitlines())
        clock.now += 7.0  # a validation
    lines = log_file.read_text().splitlines()
    assert lines[:3] == [
        "epoch 1/2 step 30: batch 30/100 (30%), 1.0 batches/s, 30 s",
        "epoch 1/2 step 60: batch 60/100 (60%), 1.0 batches/s, 60 s",
        "epoch 1/2 step 90: batch 90/100 (90%), 1.0 batches/s, 90 s",
    ], lines
    assert lines[3:] == [
        "epoch 2/2 step 130: batch 30/100 (30%), 1.0 batches/s, 30 s",
        "epoch 2/2 step 160: batch 60/100 (60%), 1.0 batches/s, 60 s",
        "epoch 2/2 step 190: batch 90/100 (90%), 1.0 batches/s, 90 s",
    ], lines
    assert len(times) == 6 and all(times[i + 1] - times[i] >= 30 for i in range(5)), times
    assert console.getvalue() == ""  # through the log file's handler alone, as ValidationLine


def test_training_progress_lines_are_paced_and_resumed_runs_count_on(
    handlers, clock, capsys
) -> None:
    """Batches of 7 s: a line at the first batch end 30 s or more after the previous line,
    never sooner. Slow batches show their rate to two digits. A run resumed at batch 250 of
    400 counts on from there; its rate and seconds are its own."""
    log_file, _ = handlers
    trainer = _trainer(0, 0, 0.5, progress_bar=False)
    trainer.max_epochs, trainer.num_training_batches = 1, 400
    _epoch(TrainingProgress(), trainer, clock, range(10), seconds=7.0)
    assert capsys.readouterr().err.splitlines() == [
        "epoch 1/1 step 5: batch 5/400 (1%), 0.14 batches/s, 35 s",
        "epoch 1/1 step 10: batch 10/400 (2%), 0.14 batches/s, 70 s",
    ]
    resumed = TrainingProgress()
    trainer.global_step = 250
    _epoch(resumed, trainer, clock, range(250, 320), seconds=0.5, start=False)
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "epoch 1/1 step 310: batch 310/400 (78%), 2.0 batches/s, 30 s",
    ], err
    assert log_file.read_text().splitlines()[2:] == err
    # a loader of unknown length: the count alone
    trainer.num_training_batches = float("inf")
    _epoch(TrainingProgress(), trainer, clock, range(40))
    assert capsys.readouterr().err.splitlines() == [
        "epoch 1/1 step 350: batch 30, 1.0 batches/s, 30 s"
    ]


def test_no_training_progress_line_under_a_bar_or_on_another_rank(handlers, clock, capsys) -> None:
    """Where the progress bar draws (stderr a terminal) it shows the progress; under DDP only
    rank 0 prints."""
    log_file, _ = handlers
    bar = _trainer(0, 0, 0.5, progress_bar=True)
    other = _trainer(0, 0, 0.5, progress_bar=False)
    other.is_global_zero = False
    for trainer in (bar, other):
        trainer.num_training_batches = 100
        _epoch(TrainingProgress(), trainer, clock, range(100))
    assert capsys.readouterr() == ("", "")
    assert log_file.read_text() == ""


def _offline_run(
    save_dir: Path, run_id: str, rows: list[tuple[int, dict]], held: int, **kwargs
) -> None:
    """One process's wandb run (offline): ``rows`` logged as Lightning logs them; returns
    once its file holds ``held`` rows."""
    from kdseg.lit.resume import ResumableWandbLogger, wandb_history

    logger = ResumableWandbLogger(
        project="kdseg", save_dir=str(save_dir), offline=True, id=run_id, resume="allow", **kwargs
    )
    for step, metrics in rows:
        logger.log_metrics(metrics, step=step)
    run_dir = Path(logger.experiment.dir).parent
    logger.experiment.finish()
    # wandb's service closes the file after finish() returns; a process ends after it is closed
    log, deadline = run_dir / f"run-{run_id}.wandb", time.monotonic() + 60
    while len(list(wandb_history(log))) < held and time.monotonic() < deadline:
        time.sleep(0.1)


def test_a_resumed_wandb_run_holds_the_csv_logs_rows_each_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A SIGKILL stops wandb's writer anywhere: its offline file had lost the rows before the
    checkpoint (a run killed before its file was first written: they were missing from wandb
    for good), and held rows after it that the resumed process logged again (duplicates). The
    resumed process logs the CSV log's rows wandb lacks and none it has, so the run's offline
    files together hold each CSV row once."""
    from kdseg.lit.resume import wandb_history

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    row = {"train/loss": 0.5, "epoch": 0}
    # the killed process: its file got steps 0 and 1 (of 0-5 in the CSV) and 6, after the
    # checkpoint at step 5; the CSV log, flushed at that checkpoint, holds steps 0-4
    _offline_run(tmp_path, "abcd1234", [(0, row), (1, row), (6, row)], held=3)
    csv_path = tmp_path / "csv" / "metrics.csv"
    csv_path.parent.mkdir()
    lines = ["epoch,step,train/loss,val/dice_mean"]
    lines += [f"0,{s},0.5," for s in range(5)] + ["0,4,,0.75", "0,6,0.5,"]  # 6: dropped
    csv_path.write_text("\n".join(lines) + "\n")
    resumed = [(s, row) for s in (5, 6, 7)]
    # wandb names a run's folder by the second it starts: a resume follows a killed process,
    # never within its second, so the resumed run here starts in the next one (one folder each)
    time.sleep(1.01 - time.time() % 1)
    _offline_run(tmp_path, "abcd1234", resumed, 6, keep_before_step=5, csv_path=csv_path)
    files = sorted((tmp_path / "wandb").glob("offline-run-*-abcd1234/run-abcd1234.wandb"))
    assert len(files) == 2
    logged = sorted((s, sorted(k)) for f in files for s, k in wandb_history(f))
    loss = sorted(row)
    expected = [(s, loss) for s in range(8)] + [(4, ["epoch", "val/dice_mean"])]
    assert logged == sorted(expected)
    # the resumed file: the rows the killed one lacked (steps 2-4, 4's validation), then 5 and 7
    assert [s for s, _ in wandb_history(files[1])] == [2, 3, 4, 4, 5, 7]


def test_a_fresh_run_in_a_folder_with_a_wandb_id_takes_a_new_one(tmp_path: Path) -> None:
    """A run killed before its first checkpoint leaves ``wandb_id.txt``: its rerun starts
    afresh (its CSV log too), and logged into the killed run's wandb run, whatever its
    settings. A resume keeps the id."""
    from kdseg.lit.resume import wandb_run_id

    first = wandb_run_id(tmp_path)
    assert wandb_run_id(tmp_path) == first  # a resume
    fresh = wandb_run_id(tmp_path, fresh=True)
    assert fresh != first and (tmp_path / "wandb_id.txt").read_text().strip() == fresh
