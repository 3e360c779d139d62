"""Lightning callbacks: validation pictures and the per-class Dice table for wandb."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelSummary
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities.model_summary.model_summary import _format_summary_table

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
            self._batch["pred"] = pl_module.task.to_dataset(logits.argmax(1)).cpu()

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
        for logger in loggers:
            logger.experiment.log(
                {
                    "val/overlay": wandb.Image(picture),
                    "val/dice_table": table,
                    "trainer/global_step": trainer.global_step,
                }
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
        log.info("\n" + table)
