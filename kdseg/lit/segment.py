"""Supervised training of any registered network, and the validation shared by distillation.

The deployable network lives in ``self.net`` (checkpoint keys ``net.*``), so every checkpoint
(plain or distilled) holds a student that loads and runs alone. Hyperparameters are saved as
plain containers (no OmegaConf, no paths) so checkpoints load with ``weights_only=True``;
they carry the model config and the data/preprocessing config, which makes a checkpoint
self-describing for ``eval``, ``predict``, ``distill`` and ``export``.
"""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl
import torch
from monai.losses import DiceFocalLoss, DiceLoss, FocalLoss
from monai.networks.utils import one_hot

from kdseg.config import check_focal
from kdseg.data.tasks import Task
from kdseg.distill.mix import MixGenerator, check_mix
from kdseg.errors import ConfigError, TrainingDiverged
from kdseg.lit.blob_loss import SegLossWithBlobs
from kdseg.models import SegOutput, build_from_config
from kdseg.models.compile import check_compile, compile_network


class SoftmaxDiceFocalLoss(torch.nn.Module):
    """``lambda_dice * Dice + lambda_focal * focal`` with a softmax focal term (``loss.focal:
    softmax``). The Dice is the one of the default's ``DiceFocalLoss`` (softmax, foreground
    channels, batch Dice, same smoothing). The focal term is ``-(1 - p_t) ** gamma * log p_t``
    with ``p_t`` the softmax probability of the voxel's true class (all classes, background
    included: MONAI's ``FocalLoss(use_softmax=True, include_background=False)`` drops channel 0
    before its softmax, which makes a two-class task's term a constant 0), averaged over the
    voxels; ``gamma = 0`` gives the cross-entropy. ``label``: ``(B, 1, *spatial)`` indices."""

    def __init__(self, gamma: float, lambda_dice: float, lambda_focal: float) -> None:
        super().__init__()
        self.dice = DiceLoss(include_background=False, softmax=True, batch=True)
        self.focal = FocalLoss(
            include_background=True, gamma=gamma, use_softmax=True, reduction="none"
        )
        self.lambda_dice, self.lambda_focal = lambda_dice, lambda_focal

    def forward(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        target = one_hot(label, num_classes=logits.shape[1])
        focal = self.focal(logits, target).sum(1).mean()  # per voxel: its true class's term
        return self.lambda_dice * self.dice(logits, target) + self.lambda_focal * focal


def build_seg_loss(cfg: dict[str, Any]) -> torch.nn.Module:
    """L_seg of METHOD.md §2: weighted focal (gamma 2) + soft Dice on the foreground, batch Dice;
    the focal term per ``focal`` (:data:`FOCAL_KINDS`); with ``blob_weight`` (beyond the paper,
    off by default) plus that times the blob loss."""
    gamma = float(cfg.get("gamma", 2.0))
    dice, focal = float(cfg.get("dice_weight", 0.5)), float(cfg.get("focal_weight", 0.5))
    seg: torch.nn.Module
    if check_focal(cfg.get("focal")) == "softmax":
        seg = SoftmaxDiceFocalLoss(gamma, lambda_dice=dice, lambda_focal=focal)
    else:
        seg = DiceFocalLoss(
            include_background=False,
            to_onehot_y=True,
            softmax=True,
            batch=True,
            gamma=gamma,
            lambda_dice=dice,
            lambda_focal=focal,
        )
    blob = cfg.get("blob_weight")
    return seg if not blob else SegLossWithBlobs(seg, float(blob))


class SegmentationModule(pl.LightningModule):
    """Trains ``net`` with L_seg; logs per-class validation Dice (``val/dice_<class>``)."""

    def __init__(
        self,
        model: dict[str, Any],
        data: dict[str, Any],
        optim: dict[str, Any],
        loss: dict[str, Any],
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = build_from_config(model)
        if check_compile(model.get("compile"), "model.compile"):  # a speed option, training only
            compile_network(self.net)
        self.task = Task(data["task"])
        self.seg_loss = build_seg_loss(loss)
        kind = check_mix(loss.get("mix"), "loss.mix")
        # beyond the paper: L_seg also on a CutMix of the batch with its mixed labels, from a
        # stream of its own (seeded from the run's seed, not drawn from it)
        self.label_mix = MixGenerator(kind, torch.initial_seed(), stream=1) if kind else None
        self._val_counts: dict[str, torch.Tensor] = {}
        #: the current step's loss terms, named (for the message of a diverged step)
        self._loss_parts: dict[str, torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> SegOutput:
        return self.net(x)

    def on_before_backward(self, loss: torch.Tensor) -> None:
        """Stop at a NaN or Inf loss, before the update spreads it into every weight (and the
        next checkpoint saves them): the last checkpoint stays the last good state."""
        if not bool(torch.isfinite(loss.detach())):
            parts = ", ".join(
                f"{name} {float(value):g}" for name, value in self._loss_parts.items()
            )
            raise TrainingDiverged(
                f"training loss is {float(loss.detach()):g} at step {self.global_step} (epoch "
                f"{self.current_epoch}; {parts}): the run stopped before the update; its last "
                "checkpoint resumes it (a lower optim.lr may keep it finite)"
            )

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        out = self.net(batch["image"])
        loss = self.seg_term(out.logits, batch)
        self._loss_parts = {"seg": loss.detach()}
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["image"].shape[0])
        return loss

    def seg_term(self, logits: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        """L_seg of the clean batch's ``logits``; with ``loss.mix`` plus L_seg of the student on a
        CutMix of the batch against the mixed labels (one more student pass)."""
        seg = self.labeled_seg_loss(logits, batch)
        if self.label_mix is None:
            return seg
        mixed = self.label_mix(batch)
        return seg + self.labeled_seg_loss(self.net(mixed["image"]).logits, mixed)

    def on_fit_start(self) -> None:
        for mix in self.mixes():
            mix.rank, mix.world_size = self.global_rank, self.trainer.world_size

    def mixes(self) -> list[MixGenerator]:
        """The module's CutMix streams (set to the rank, saved in checkpoints)."""
        return [self.label_mix] if self.label_mix is not None else []

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        for mix in self.mixes():
            checkpoint[mix.key] = mix.state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        for mix in self.mixes():
            if mix.key in checkpoint:
                mix.load(checkpoint[mix.key])

    def labeled_seg_loss(self, logits: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        """L_seg over the batch's labeled images only (``batch["labeled"]``; all by default).

        Unlabeled images carry an all-zero placeholder label that must never be learnt; a batch
        without labeled images gives 0 (attached to the graph).
        """
        labeled = batch.get("labeled")
        if labeled is None or bool(labeled.all()):
            return self.seg_loss(logits, batch["label"])
        if not bool(labeled.any()):
            return logits.sum() * 0.0
        return self.seg_loss(logits[labeled], batch["label"][labeled])

    # -- validation: global Dice per class over all validation slices ----------------------
    def on_validation_epoch_start(self) -> None:
        self._val_counts = {c: torch.zeros(3, device=self.device) for c in self.task.eval_classes}

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        logits = self.net(batch["image"]).logits
        # max(1).indices: argmax(1)'s classes, ties included, about 8x faster on CPU
        pred = self.task.to_dataset(logits.max(1).indices)
        truth = self.task.to_dataset(batch["label"][:, 0])
        for name, labels in self.task.eval_classes.items():
            p, g = _member(pred, labels), _member(truth, labels)
            self._val_counts[name] += torch.stack([(p & g).sum(), p.sum(), g.sum()]).float()

    def on_validation_epoch_end(self) -> None:
        dices = {}
        for name, counts in self._val_counts.items():
            counts = (
                self.all_gather(counts).reshape(-1, 3).sum(0)
                if self.trainer.world_size > 1
                else counts
            )
            dices[name] = dice_of_counts(counts)
            self.log(f"val/dice_{name}", dices[name], prog_bar=True, sync_dist=False)
        self.log("val/dice_mean", torch.stack(list(dices.values())).mean(), prog_bar=False)

    def schedule_epochs(self) -> int:
        """The epochs this run trains, the cosine's length: ``trainer.max_epochs``, or fewer
        where ``trainer.max_steps`` ends the run first (``max_epochs=-1`` with a step budget:
        Lightning's idiom). Counted in optimizer steps, so gradient accumulation is in it."""
        trainer = self.trainer
        total = trainer.estimated_stepping_batches  # max_steps and max_epochs, whichever first
        if not math.isfinite(total):
            raise ConfigError(
                "the cosine learning-rate schedule needs an end: set trainer.max_epochs or "
                "trainer.max_steps"
            )
        per_epoch = math.ceil(trainer.num_training_batches / trainer.accumulate_grad_batches)
        return max(math.ceil(total / max(per_epoch, 1)), 1)

    def on_train_start(self) -> None:
        """The cosine's length, set once the training loader is built (and a resume's state
        restored). A resumed run keeps the scheduler it saved, length included: a resume with
        more (or fewer) epochs would restart the cosine after its old end. Its remaining steps
        are stretched to the new end instead (continuous from the saved learning rate; not
        the schedule a run started with that length would follow)."""
        for config in self.trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            if isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR):
                scheduler.T_max = self.schedule_epochs()

    def configure_optimizers(self) -> dict[str, Any]:
        optim = self.hparams.optim
        params = [p for p in self.parameters() if p.requires_grad]
        # foreach: one call over all parameters instead of a Python loop over them; on CPU its
        # results equal the loop's bit for bit (tests/test_seeding.py); it is faster for
        # networks of many small tensors (ENet w0.25: 340)
        optimizer = torch.optim.Adam(
            params, lr=optim["lr"], weight_decay=optim.get("weight_decay", 0.0), foreach=True
        )
        # max_epochs for now; on_train_start sets the length once the batches are counted (not
        # here: counting them builds the training loader before a resume restores its draws)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer,
            T_max=max(int(self.trainer.max_epochs or 1), 1),
            eta_min=optim.get("min_lr", 1e-6),
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"},
        }


def _member(labels: torch.Tensor, values: tuple[int, ...]) -> torch.Tensor:
    mask = torch.zeros_like(labels, dtype=torch.bool)
    for v in values:
        mask |= labels == v
    return mask


def dice_of_counts(counts: torch.Tensor) -> torch.Tensor:
    """Dice from summed ``[intersection, predicted, true]`` voxel counts; 1 when the class is
    absent from both. Computed on the counts' device without a Python branch: on a GPU a CPU
    ``1`` here would fail the ``torch.stack`` of the epoch's Dice values, and a branch on a
    CUDA value waits for the device. The counts are whole numbers, so ``clamp_min(1)`` leaves
    every non-zero denominator as it is (the same bits as ``2 * inter / (pred + truth)``)."""
    inter, pred, truth = counts
    denom = pred + truth
    return torch.where(denom > 0, 2 * inter / denom.clamp_min(1), counts.new_ones(()))
