"""Lightning callbacks: validation pictures and the per-class Dice table for wandb, a quiet
model summary, the training throughput (slices per second, data-loader wait, peak memory), one
line per validation in the run's log file, a plain progress line every 30 s of an epoch where
no progress bar draws, and the global random streams carried through a checkpoint."""

from __future__ import annotations

import logging
import math
import sys
import time
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelSummary, RichProgressBar, TQDMProgressBar
from pytorch_lightning.callbacks.progress.tqdm_progress import Tqdm
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities.model_summary.model_summary import _format_summary_table

from kdseg.data.rng import global_states, set_global_states
from kdseg.errors import Progressing, progress_line, redirects_stdout, to_log_files
from kdseg.eval.overlay import overlay_figure_array

log = logging.getLogger(__name__)


class WandbValidationOverlay(pl.Callback):
    """After each validation epoch, log an overlay of the first validation batch's predictions
    (organ and tumor outlined on the model-input slices) and a per-class Dice table to wandb.
    """

    def __init__(self, max_slices: int = 6) -> None:
        self.max_slices = max_slices
        self._batch: dict[str, torch.Tensor] | None = None

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: dict[str, Any],
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if batch_idx == 0:
            self._batch = {"image": batch["image"][: self.max_slices].detach().cpu()}
            with torch.no_grad():
                logits = pl_module.net(batch["image"][: self.max_slices]).logits
            self._batch["pred"] = pl_module.task.to_dataset(logits.max(1).indices).cpu()

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        if not loggers or self._batch is None or not trainer.is_global_zero:
            return
        import wandb

        centre = self._batch["image"].shape[1] // 2
        image = self._batch["image"][:, centre].permute(1, 2, 0).numpy()  # (h, w, slices)
        pred = self._batch["pred"].permute(1, 2, 0).numpy().astype(np.uint8)
        picture = overlay_figure_array(
            image,
            pred,
            n_slices=image.shape[2],
            window=(-1.0, 1.0),
            title=f"validation, epoch {trainer.current_epoch}",
        )
        dice = {
            k.split("val/dice_")[1]: float(v)
            for k, v in trainer.callback_metrics.items()
            if k.startswith("val/dice_")
        }
        table = wandb.Table(columns=["class", "dice"], data=[[k, v] for k, v in dice.items()])
        for logger in loggers:  # through log_metrics: a resumed run's logger skips a repeat
            logger.log_metrics(
                {"val/overlay": wandb.Image(picture), "val/dice_table": table},
                step=trainer.global_step,
            )


class QuietModelSummary(ModelSummary):
    """Lightning's model summary without the FLOPs column and "Total Flops" row when they are
    all zero (Lightning counts FLOPs only under its own profiler, so they always are here)."""

    @staticmethod
    def summarize(
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int,
        **summarize_kwargs: Any,
    ) -> None:
        if not total_flops:
            summary_data = [(name, col) for name, col in summary_data if name != "FLOPs"]
        table = _format_summary_table(
            total_parameters,
            trainable_parameters,
            model_size,
            total_training_modes,
            total_flops,
            *summary_data,
        )
        if not total_flops:
            table = "\n".join(line for line in table.splitlines() if "Total Flops" not in line)
        log.info("model summary:\n" + table)  # no empty first line under the log prefix


class _NoVersion:
    """A progress bar without Lightning's ``v_num`` item (the last 4 characters of the
    loggers' version: the wandb run id), which says nothing the run dir does not."""

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)  # type: ignore[misc]
        items.pop("v_num", None)
        return items


class QuietRichProgressBar(_NoVersion, RichProgressBar):
    """Lightning's rich bar on stderr (Lightning's default console is stdout's). Its live
    display leaves stdout alone where that is a file or pipe (rich would send what is printed
    there while the bar draws, the run's information lines, to the bar's console: stderr)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs["console_kwargs"] = {"stderr": True, **(kwargs.get("console_kwargs") or {})}
        super().__init__(**kwargs)

    def _init_progress(self, trainer: pl.Trainer) -> None:
        # Lightning (2.6) builds and starts its Progress here, with rich's default
        # redirect_stdout=True: the Live's stdout proxy is taken back at once
        super()._init_progress(trainer)
        live = getattr(self.progress, "live", None)
        restore = getattr(live, "_restore_stdout", None)
        if restore is not None and not redirects_stdout(live.console):
            sys.stdout = restore
            live._restore_stdout = None


class QuietTQDMProgressBar(_NoVersion, TQDMProgressBar):
    """Lightning's tqdm bars on stderr: Lightning's ``init_*_tqdm`` (pytorch_lightning 2.6)
    with ``file=sys.stderr`` for their ``file=sys.stdout``."""

    def _tqdm(self, desc: str, position: int, leave: bool, **kwargs: Any) -> Tqdm:
        return Tqdm(
            desc=desc,
            position=position,
            disable=self.is_disabled,
            leave=leave,
            dynamic_ncols=True,
            file=sys.stderr,
            bar_format=self.BAR_FORMAT,
            **kwargs,
        )

    def init_sanity_tqdm(self) -> Tqdm:
        return self._tqdm(self.sanity_check_description, 2 * self.process_position, False)

    def init_train_tqdm(self) -> Tqdm:
        return self._tqdm(self.train_description, 2 * self.process_position, True, smoothing=0)

    def init_predict_tqdm(self) -> Tqdm:
        return self._tqdm(self.predict_description, 2 * self.process_position, True, smoothing=0)

    def init_validation_tqdm(self) -> Tqdm:
        has_main_bar = self.trainer.state.fn != "validate"  # none in trainer.validate()
        position = 2 * self.process_position + has_main_bar
        return self._tqdm(self.validation_description, position, not has_main_bar)

    def init_test_tqdm(self) -> Tqdm:
        return self._tqdm("Testing", 2 * self.process_position, True)


def progress_bar() -> pl.Callback:
    """Lightning's default progress bar (rich where installed, else tqdm), without ``v_num``,
    on stderr: stdout holds the results alone. Training adds it only where stderr is a
    terminal (:func:`kdseg.errors.progress_draws`); elsewhere :class:`TrainingProgress` and
    :class:`ValidationLine` show the progress."""
    from pytorch_lightning.utilities.imports import _RICH_AVAILABLE

    return QuietRichProgressBar() if _RICH_AVAILABLE else QuietTQDMProgressBar()


class StepTimer(pl.Callback):
    """Training throughput, measured where a user asks "is my data loader keeping up?".

    Per training epoch it logs ``perf/slices_per_s`` (slices through forward, backward and
    optimizer step per second of training wall time), ``perf/data_wait_frac`` (the share of that
    time the loop spent waiting for the next batch) and, on a GPU, ``perf/peak_mem_gb`` (peak
    memory torch allocated). :meth:`summary` gives the same over the whole fit (after the first
    ``warmup`` steps, which hold start-up and kernel tuning), for ``summary.json``. Under DDP
    both are the job's (:meth:`_job_metrics`: the rates summed over the processes, the wait
    share their mean), all-reduced on every process, so rank 0's record is the job's.

    Training wall time runs from one batch's end to the next one's end inside an epoch, so
    validation and the epoch-boundary worker start are left out. On CUDA the host runs ahead of
    the device, so a step's own time is not observable without a sync; the epoch's end
    synchronizes, which puts the queued device work inside the measured time. A data-wait share
    near 0 means the loader has the next batch ready whenever the step asks for it.
    """

    def __init__(self, warmup: int = 5) -> None:
        self.warmup = warmup
        self._seen = 0  # training batches started, over the whole fit
        self._epochs = 0  # training epochs started, over the whole fit
        self._last_end: float | None = None
        self._wait = self._wall = 0.0
        self._slices = 0
        self._epoch: list[float] = [0.0, 0.0, 0.0]  # wait, wall, slices in this epoch
        self._device = torch.device("cpu")  # where training ran (Lightning moves it back after)
        self._job: dict[str, float] | None = None  # the job's figures over the fit, under DDP

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last_end = None
        self._epoch = [0.0, 0.0, 0.0]
        self._epochs += 1

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        now = time.perf_counter()
        self._seen += 1
        if self._last_end is not None and self._seen > self.warmup:
            self._epoch[0] += now - self._last_end

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        now = time.perf_counter()
        if self._last_end is not None and self._seen > self.warmup:
            self._epoch[1] += now - self._last_end
            self._epoch[2] += len(batch["image"])
        self._last_end = now

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._device = pl_module.device
        if torch.cuda.is_available() and pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
            if self._last_end is not None and self._seen > self.warmup:
                self._epoch[1] += time.perf_counter() - self._last_end
        wait, wall, slices = self._epoch
        self._wait, self._wall, self._slices = (
            self._wait + wait,
            self._wall + wall,
            self._slices + int(slices),
        )
        metrics = self._job_metrics(trainer, wait, wall, int(slices), pl_module.device)
        if metrics:
            # under DDP the values are the job's already (every process logs the same): sync_dist
            # with rank_zero_only reduces nothing again, and Lightning asks for no sync_dist
            pl_module.log_dict(
                {f"perf/{k}": v for k, v in metrics.items() if k in self.LOGGED},
                on_epoch=True,
                sync_dist=True,
                rank_zero_only=True,
                batch_size=1,
            )

    #: what :meth:`on_train_epoch_end` logs, as ``perf/<key>``
    LOGGED = ("slices_per_s", "data_wait_frac", "peak_mem_gb")

    def _job_metrics(
        self, trainer: pl.Trainer, wait: float, wall: float, slices: int, device: torch.device
    ) -> dict[str, float]:
        """:meth:`_metrics` of this process or, under DDP, of the job (every process calls it:
        the processes' figures are all-reduced, collectively): ``slices_per_s`` the sum of the
        processes' rates, ``data_wait_frac`` their mean, ``peak_mem_gb`` their maximum, and,
        for :meth:`summary`, ``slices`` summed and ``seconds`` the longest process's."""
        own = self._metrics(wait, wall, slices, device)
        if trainer.world_size <= 1:
            return own
        timed = 1.0 if own else 0.0
        sums = torch.tensor(
            [own.get("slices_per_s", 0.0), own.get("data_wait_frac", 0.0), timed, float(slices)],
            dtype=torch.float64,
            device=device,
        )
        highs = torch.tensor(
            [wall, own.get("peak_mem_gb", 0.0)], dtype=torch.float64, device=device
        )
        sums = trainer.strategy.reduce(sums, reduce_op="sum").cpu().tolist()
        highs = trainer.strategy.reduce(highs, reduce_op="max").cpu().tolist()
        if sums[2] < 1:  # no process timed a step
            return {}
        out = {
            "slices_per_s": sums[0],
            "data_wait_frac": sums[1] / sums[2],
            "slices": sums[3],
            "seconds": highs[0],
        }
        if "peak_mem_gb" in own:
            out["peak_mem_gb"] = highs[1]
        return out

    @staticmethod
    def _metrics(wait: float, wall: float, slices: int, device: torch.device) -> dict[str, float]:
        if wall <= 0 or slices == 0:
            return {}
        out = {"slices_per_s": slices / wall, "data_wait_frac": wait / wall}
        if device.type == "cuda":
            out["peak_mem_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
        return out

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # under DDP the fit's figures are the job's: reduced here, on every process, while the
        # processes are all still there (summary() is read after the fit, on rank 0)
        if trainer.world_size > 1:
            self._job = self._job_metrics(
                trainer, self._wait, self._wall, self._slices, pl_module.device
            )

    def summary(self) -> dict[str, float | int]:
        """Throughput over the fit, after the warm-up steps; empty before any measured step.
        Under DDP the job's (:meth:`_job_metrics`: ``slices_per_s`` summed over the processes,
        ``data_wait_frac`` their mean). Peak memory is read on the device training ran on
        (after ``fit`` the module is back on the CPU, so it cannot be asked)."""
        if self._job is not None:
            figures = dict(self._job)
            slices, seconds = int(figures.pop("slices", 0)), figures.pop("seconds", 0.0)
        else:
            figures = self._metrics(self._wait, self._wall, self._slices, self._device)
            slices, seconds = self._slices, self._wall
        out: dict[str, float | int] = {k: round(v, 4) for k, v in figures.items()}
        if out:
            out.update(slices=slices, seconds=round(seconds, 2))
        return out

    def record(self) -> dict[str, Any]:
        """``summary.json``'s ``throughput``: :meth:`summary`; or, when no step was timed (a
        very short run), ``null`` and ``throughput_reason`` saying why, with the steps and
        epochs this process trained."""
        summary = self.summary()
        if summary:
            return {"throughput": summary}
        reason = (
            f"no training step was timed: {self._seen} step(s) in {self._epochs} epoch(s), "
            f"and the timer leaves out the first {self.warmup} (warm-up) and each epoch's "
            "first (no previous step end to time it from)"
        )
        return {"throughput": None, "throughput_reason": reason}


class ValidationLine(pl.Callback):
    """One line per validation in the run's log file (``train.log`` / ``distill.log``), as
    nnU-Net writes one per epoch::

        epoch 3/30 step 96: train loss 0.412, val dice 0.8123 (best 0.8123 at epoch 3), 12.3 s

    The train loss is the mean over the training steps since the previous validation (this
    process's, under DDP); the seconds are the wall time since then (training and
    validation). Where the progress bar draws (stderr is a terminal) the line goes to the log
    file only; where it is off (stderr a batch job's log or a pipe, or
    ``enable_progress_bar=false``) to stderr too, as the bar would be. Rank 0 only; the best
    score and the train loss summed since the last validation are kept in the checkpoint, so
    a resumed run's lines go on from them in the same, appended, log file (a run resumed
    mid-epoch shows the train loss of the run that never stopped; one resumed from an epoch's
    last batch, whose validation Lightning then skips, drops that epoch's sum). A checkpoint
    saved before this callback existed holds no such state: the best checkpoint's score stands
    in, its epoch unknown (``best 0.8123``, without ``at epoch``). Better is as that checkpoint
    callback (the ``ModelCheckpoint`` of the same monitor) says: ``mode`` max or min.
    """

    def __init__(self, monitor: str = "val/dice_mean") -> None:
        self.monitor = monitor
        self.best: tuple[float, int | None] | None = None  # (score, epoch as shown, if known)
        self.mode = "max"
        self._loss: torch.Tensor | None = None
        self._steps = 0
        self._epoch: int | None = None  # the epoch of the sum's last step (0-based)
        self._since: float | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._since = time.perf_counter()
        # after a checkpoint's states are restored, at the epoch the run goes on in. One
        # written at an epoch's last batch holds that epoch's sum from before its validation,
        # which the resumed run skips (Lightning goes on in the next epoch, and calls no
        # on_train_epoch_start for it): no line of the run that never stopped showed that sum
        # after its validation, so it is dropped, unless that epoch validated not at all
        epoch, every = self._epoch, getattr(trainer, "check_val_every_n_epoch", 1)
        if self._loss is not None and epoch is not None and epoch != trainer.current_epoch:
            if every is not None and (epoch + 1) % every == 0:
                self._loss, self._steps, self._epoch = None, 0, None
        # after a checkpoint's states are restored: the best checkpoint's mode and, where the
        # checkpoint held no state of this callback, its score
        for callback in getattr(trainer, "checkpoint_callbacks", None) or []:
            if getattr(callback, "monitor", None) == self.monitor:
                self.mode = callback.mode
                score = callback.best_model_score
                if self.best is None and score is not None and math.isfinite(float(score)):
                    self.best = (float(score), None)
                break

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor):  # summed on its device: no sync per step
            loss = loss.detach().float()
            if self._loss is None:
                self._loss = loss.clone()
            elif self._loss.device != loss.device:  # a checkpoint's sum (CPU), on a GPU run
                self._loss = loss + self._loss.to(loss.device)
            else:
                self._loss.add_(loss)
            self._steps += 1
            self._epoch = trainer.current_epoch

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        line = self.line(trainer)
        self._loss, self._steps, self._epoch = None, 0, None
        self._since = time.perf_counter()
        if line is not None and trainer.is_global_zero:
            _to_run_log(line, console=trainer.progress_bar_callback is None)

    def line(self, trainer: pl.Trainer) -> str | None:
        """This validation's line; updates the best score (None: the monitor was not logged)."""
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return None
        score, epoch = float(value), trainer.current_epoch + 1
        if self.best is None or (
            score < self.best[0] if self.mode == "min" else score > self.best[0]
        ):
            self.best = (score, epoch)
        where = _where(trainer)
        parts = []
        if self._steps:
            parts.append(f"train loss {float(self._loss) / self._steps:.4g}")
        name = self.monitor.removeprefix("val/").replace("_mean", "").replace("_", " ")
        best, best_epoch = self.best
        when = f" at epoch {best_epoch}" if best_epoch is not None else ""
        parts.append(f"val {name} {score:.4f} (best {best:.4f}{when})")
        if self._since is not None:
            parts.append(f"{time.perf_counter() - self._since:.1f} s")
        return f"{where}: {', '.join(parts)}"

    def state_dict(self) -> dict[str, Any]:
        # the loss summed since the last validation goes in too, with the epoch it belongs
        # to: a run resumed mid-epoch then shows the train loss of the run that never stopped
        # (one device sync per save)
        loss = None if self._loss is None else float(self._loss)
        state = {"best": self.best, "loss_sum": loss, "loss_steps": self._steps}
        return {**state, "loss_epoch": self._epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        best = state_dict.get("best")
        epoch = None if best is None or best[1] is None else int(best[1])
        self.best = None if best is None else (float(best[0]), epoch)
        # absent from checkpoints saved before 2026-12-07: the resumed line counts from there
        loss, steps = state_dict.get("loss_sum"), int(state_dict.get("loss_steps") or 0)
        self._loss = torch.tensor(float(loss)) if loss is not None and steps else None
        self._steps = steps if self._loss is not None else 0
        epoch = state_dict.get("loss_epoch")  # absent before: the sum is taken as it is
        self._epoch = int(epoch) if epoch is not None and self._loss is not None else None


def _where(trainer: pl.Trainer) -> str:
    """``epoch 3/30 step 96``: the epoch (1-based) and the optimizer step, each of its maximum
    where the trainer has one; the start of :class:`ValidationLine`'s and
    :class:`TrainingProgress`'s lines."""
    max_epochs, max_steps = trainer.max_epochs, trainer.max_steps
    where = f"epoch {trainer.current_epoch + 1}"
    where += f"/{max_epochs}" if max_epochs and max_epochs > 0 else ""
    where += f" step {trainer.global_step}" + (f"/{max_steps}" if max_steps > 0 else "")
    return where


class _EpochSteps(Progressing):
    """:class:`~kdseg.errors.Progressing`'s plain lines (its interval and timing) for one
    training epoch, worded as :class:`ValidationLine`'s and put where it puts them::

        epoch 1/2 step 120: batch 120/400 (30%), 1.9 batches/s, 150 s

    ``done`` starts at the batches the epoch had run before this process took it over (a
    resumed run); the rate counts this process's batches alone."""

    def __init__(self, trainer: pl.Trainer, total: float, done: int, start: float | None) -> None:
        super().__init__("training", 0, plain=True, start=start)
        self.done = self._first = done
        self._trainer, self._of = trainer, total

    def text(self, elapsed: float) -> str:
        of = self._of
        batch = f"batch {self.done}"
        if isinstance(of, int) or (isinstance(of, float) and math.isfinite(of) and of > 0):
            batch += f"/{int(of)} ({100 * self.done / of:.0f}%)"
        parts = [batch]
        if elapsed > 0:
            rate = (self.done - self._first) / elapsed
            parts.append(f"{rate:.1f} batches/s" if rate >= 1 else f"{rate:.2g} batches/s")
        parts.append(f"{elapsed:.0f} s")
        return f"{_where(self._trainer)}: {', '.join(parts)}"

    def show(self, text: str) -> None:
        _to_run_log(text, console=True)


class TrainingProgress(pl.Callback):
    """Where no progress bar draws (stderr a batch job's log or a pipe, or
    ``enable_progress_bar=false``), a plain line on stderr and in the run's log file at most
    every :data:`kdseg.errors.PROGRESS_EVERY_S` seconds of a training epoch, so that an hour's
    epoch is not an hour of silence (:class:`_EpochSteps` has the wording). Rank 0 only. A run
    resumed mid-epoch counts the epoch's batches from where it resumed; its rate and seconds
    are this process's. No line at the epoch's end: :class:`ValidationLine`'s follows."""

    def __init__(self) -> None:
        self._steps: _EpochSteps | None = None  # this epoch's (reset at each epoch's start)
        self._started: float | None = None  # when this process began the epoch (monotonic)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._steps, self._started = None, time.monotonic()

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if not trainer.is_global_zero or trainer.progress_bar_callback is not None:
            return
        if self._steps is None:
            # batch_idx: the epoch's batches before this one, a resumed run's included
            total = trainer.num_training_batches
            self._steps = _EpochSteps(trainer, total, batch_idx, self._started)

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        steps = self._steps
        if steps is not None:
            steps.advance(batch_idx + 1 - steps.done)


def _to_run_log(line: str, console: bool) -> None:
    """``line`` into the run's log file (the root logger's file handlers, where
    :func:`kdseg.cli.open_run_log` put it), and on stderr too when ``console``: progress, which
    stdout (the results) is not for."""
    to_log_files(log.makeRecord(log.name, logging.INFO, __file__, 0, line, None, None))
    if console:
        progress_line(line)


class RandomStreams(pl.Callback):
    """Stores the global random streams (Python, numpy, torch: dropout, the loader's base seed)
    in each checkpoint, and a resumed run sets them back before its first training loader is
    built, as the uninterrupted run had them. With the data module's own generators
    (``SliceDataModule.state_dict``, and mid-epoch the training loader's: ``ResumableLoader``)
    a run resumed from a checkpoint ends with the weights of the run that never stopped
    (tests/test_pipeline.py)."""

    KEY = "kdseg_random_streams"

    def __init__(self) -> None:
        self._resumed: dict[str, Any] | None = None

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint[self.KEY] = global_states()

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self._resumed = checkpoint.get(self.KEY)  # None: a checkpoint from before this

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._resumed is not None:
            set_global_states(self._resumed)
            self._resumed = None
