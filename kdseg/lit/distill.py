"""Distillation: a frozen teacher, a trainable student and a criterion over named taps.

The teacher is rebuilt from its own checkpoint (its saved model config, so the user never
repeats it), frozen (``requires_grad=False``) and kept in eval mode through training. The
student is ``self.net``, exactly as in plain training, so checkpoints, validation, export and
evaluation treat a distilled student like any other model; the criterion's adapters and the
teacher live beside it and are never part of what is exported.
"""

from __future__ import annotations

from typing import Any

import torch

from kdseg.distill.criterion import build_criterion
from kdseg.errors import InputError
from kdseg.eval.checkpoint import load_bundle
from kdseg.lit.segment import SegmentationModule

MUST_MATCH = ("task", "context", "in_channels", "num_classes", "preprocess")


class DistillationModule(SegmentationModule):
    """L = L_seg(student) + criterion(student taps, teacher taps, labels)."""

    def __init__(
        self,
        model: dict[str, Any],
        data: dict[str, Any],
        optim: dict[str, Any],
        loss: dict[str, Any],
        teacher: dict[str, Any],
        distill: dict[str, Any],
    ) -> None:
        super().__init__(model, data, optim, loss)
        self.save_hyperparameters()
        bundle = load_bundle(teacher["ckpt"])
        mismatched = [k for k in MUST_MATCH if bundle.data.get(k) != data.get(k)]
        if mismatched:
            details = ", ".join(
                f"{k}: teacher {bundle.data.get(k)!r} vs data {data.get(k)!r}" for k in mismatched
            )
            raise InputError(teacher["ckpt"], f"teacher was trained on other inputs ({details})")
        self.teacher = bundle.model.requires_grad_(False).eval()
        self.criterion = build_criterion(
            distill.get("terms"),
            self.net.tap_info,
            self.teacher.tap_info,
            int(data["num_classes"]),
            warmup=distill.get("warmup", 0.0),
        )

    def train(self, mode: bool = True) -> DistillationModule:
        """Switch the student and adapters; the teacher stays in eval mode (frozen BatchNorm)."""
        super().train(mode)
        self.teacher.eval()
        return self

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        images, labels = batch["image"], batch["label"]
        student = self.net(images)
        with torch.no_grad():
            teacher = self.teacher(images)
        seg = self.seg_loss(student.logits, labels)
        distill, parts = self.criterion(student, teacher, labels[:, 0], *self._progress())
        loss = seg + distill
        n = images.shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        self.log("train/seg", seg, batch_size=n)
        for name, value in parts.items():
            self.log(f"distill/{name}", value, batch_size=n)
        if self.criterion.warmup and self._trainer is not None:
            self.log("distill/warmup", self.criterion.ramp(*self._progress()), batch_size=n)
        return loss

    def _progress(self) -> tuple[int | None, float | None]:
        """(optimizer steps done, total steps) for the criterion's warm-up; (None, None) outside
        a Trainer, where the full weights apply."""
        if self._trainer is None or not self.criterion.warmup:
            return None, None
        return self.trainer.global_step, self.trainer.estimated_stepping_batches
