"""Distillation: a frozen teacher, a trainable student and a criterion over named taps.

The teacher is rebuilt from its own checkpoint (its saved model config, so the user never
repeats it), frozen (``requires_grad=False``) and kept in eval mode through training. The
student is ``self.net``, exactly as in plain training, so checkpoints, validation, export and
evaluation treat a distilled student like any other model; the criterion's adapters and the
teacher live beside it and are never part of what is exported.

Instead of a live teacher, ``teacher.predictions`` names a folder of a teacher's saved outputs
(an nnU-Net's ``--save_probabilities`` files, label or probability volumes; see
:mod:`kdseg.data.teacher_targets`). Batches then carry the teacher's probabilities
(``batch["teacher"]``) and the teacher output is their logarithm, so the logit terms (KD, PMD,
CWD) work unchanged; feature terms need a network and are refused.

Batches may mix labeled and unlabeled images (``batch["labeled"]``). L_seg uses the labeled
ones only; the distillation terms use all of them, and a term that needs labels (RAD's class
regions) gets the teacher's argmax where an image has no label.

``distill.mix: cutmix`` (beyond the paper; :mod:`kdseg.distill.mix`) computes L_seg on the clean
batch and the distillation terms on a CutMix of it that teacher and student both see.

``teacher.cache: DIR`` (beyond the paper; :mod:`kdseg.lit.teacher_cache`) reads a live
teacher's outputs from a disk cache shared by runs that see the same batches, bit for bit what
the teacher would compute.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from kdseg.data.preprocess_config import PreprocessConfig
from kdseg.data.tasks import DEFAULT_ORGAN
from kdseg.distill.criterion import LOGITS, build_criterion, parse_terms
from kdseg.distill.mix import MixGenerator, check_mix
from kdseg.errors import ConfigError, InputError
from kdseg.eval.checkpoint import load_bundle
from kdseg.lit.segment import SegmentationModule
from kdseg.lit.teacher_cache import TeacherCache, check_cache_dir
from kdseg.models import SegOutput
from kdseg.models.compile import check_compile, compile_network
from kdseg.models.memory_format import check_layout, set_channels_last

log = logging.getLogger(__name__)

MUST_MATCH = ("organ", "task", "context", "in_channels", "num_classes", "preprocess")
#: Floor of stored probabilities before the log (a one-hot hard target becomes log 1e-4 = -9.2).
PROB_FLOOR = 1e-4


#: the keys of a ``distill`` config (conf/distill/emkd.yaml documents them)
DISTILL_KEYS = frozenset({"name", "terms", "warmup", "mix"})


class DistillationModule(SegmentationModule):
    """L = L_seg(student, labeled images) + criterion(student taps, teacher taps, labels)."""

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
        unknown = sorted(set(distill) - DISTILL_KEYS)
        if unknown:  # `+distill.warmpu=0.2` would train without a warm-up and say nothing
            raise ConfigError(
                f"distill.{unknown[0]}: unknown key; valid: {', '.join(sorted(DISTILL_KEYS))}"
            )
        ckpt, predictions = teacher.get("ckpt"), teacher.get("predictions")
        if bool(ckpt) == bool(predictions):
            raise InputError(None, "set exactly one of teacher.ckpt and teacher.predictions")
        if predictions:
            _refuse_feature_terms(distill.get("terms"), predictions)
            for key in ("channels_last", "compile", "cache"):
                if teacher.get(key) is not None:
                    raise InputError(None, f"teacher.{key} is for a live teacher (teacher.ckpt)")
            self.teacher = None
            teacher_taps: dict = {}
            teacher_setting = ""
        else:
            bundle = load_bundle(ckpt)
            details = [d for k in MUST_MATCH for d in _differences(k, bundle.data, data)]
            if details:
                raise InputError(
                    ckpt, f"teacher was trained on other inputs ({'; '.join(details)})"
                )
            self.teacher = bundle.model.requires_grad_(False).eval()
            _note_small_teacher(self.teacher, self.net, ckpt)
            # None: as the teacher's checkpoint says
            layout = check_layout(teacher.get("channels_last"), "teacher.channels_last")
            if layout is not None:
                set_channels_last(self.teacher, layout)
            if check_compile(teacher.get("compile"), "teacher.compile"):
                compile_network(self.teacher)
            teacher_taps = self.teacher.tap_info
            teacher_setting = f"channels_last {layout}|compile {teacher.get('compile')}"
        self.criterion = build_criterion(
            distill.get("terms"),
            self.net.tap_info,
            teacher_taps,
            int(data["num_classes"]),
            warmup=distill.get("warmup"),
        )
        self.teacher_cache: TeacherCache | None = None
        cache_dir = check_cache_dir(teacher.get("cache"))
        if cache_dir is not None and self.teacher is not None:
            taps = [t.teacher_tap for t in self.criterion.terms if t.teacher_tap != LOGITS]
            self.teacher_cache = TeacherCache(cache_dir, self.teacher, taps, teacher_setting)
        kind = check_mix(distill.get("mix"))
        # seeded from the run's seed (set before the module is built), not drawn from it
        self.mix = MixGenerator(kind, torch.initial_seed()) if kind else None

    def train(self, mode: bool = True) -> DistillationModule:
        """Switch the student and adapters; the teacher stays in eval mode (frozen BatchNorm)."""
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def mixes(self) -> list[MixGenerator]:
        """L_seg's CutMix stream, if any, and the distillation terms' one."""
        return [*super().mixes(), *([self.mix] if self.mix is not None else [])]

    def teacher_output(self, batch: dict[str, Any]) -> SegOutput:
        """The live teacher's output, or the stored probabilities as log-probability logits."""
        if self.teacher is None:
            if "teacher" not in batch:
                raise InputError(None, "teacher.predictions is set but batches carry no targets")
            return SegOutput(batch["teacher"].clamp_min(PROB_FLOOR).log())
        if self.teacher_cache is not None:
            return self.teacher_cache(batch["image"])
        with torch.no_grad():
            return self.teacher(batch["image"])

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        images = batch["image"]
        student = self.net(images)
        seg = self.seg_term(student.logits, batch)
        if self.mix is not None:  # the terms on a CutMix that both networks see
            batch = self.mix(batch)
            student = self.net(batch["image"])
        hits = self.teacher_cache.hits if self.teacher_cache is not None else 0
        teacher = self.teacher_output(batch)
        targets = batch["label"][:, 0]
        labeled = batch.get("labeled")
        if labeled is not None and not bool(labeled.all()):
            # label-needing terms (RAD) see the teacher's argmax on unlabeled images
            guess = teacher.logits.detach().max(1).indices  # = argmax(1), faster on CPU
            targets = torch.where(labeled.view(-1, *[1] * (targets.ndim - 1)), targets, guess)
        distill, parts = self.criterion(student, teacher, targets, *self._progress())
        loss = seg + distill
        self._loss_parts = {"seg": seg.detach(), **parts}
        n = images.shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        self.log("train/seg", seg, batch_size=n)
        for name, value in parts.items():
            self.log(f"distill/{name}", value, batch_size=n)
        if self.criterion.warmup and self._trainer is not None:
            self.log("distill/warmup", self.criterion.ramp(*self._progress()), batch_size=n)
        if self.teacher_cache is not None and self._trainer is not None:
            # batches per epoch whose teacher output came from the cache
            self.log(
                "perf/teacher_cache_hits",
                float(self.teacher_cache.hits - hits),
                on_step=False,
                on_epoch=True,
                reduce_fx="sum",
                batch_size=n,
            )
        return loss

    def _progress(self) -> tuple[int | None, float | None]:
        """(optimizer steps done, total steps) for the criterion's warm-up; (None, None) outside
        a Trainer, where the full weights apply."""
        if self._trainer is None or not self.criterion.warmup:
            return None, None
        return self.trainer.global_step, self.trainer.estimated_stepping_batches


def _note_small_teacher(teacher: torch.nn.Module, student: torch.nn.Module, ckpt: str) -> None:
    """One warning line when the teacher has fewer parameters than the student: legitimate
    (self-distillation, a small teacher), and accepted, but more often a swapped pair."""
    n_teacher = sum(p.numel() for p in teacher.parameters())
    n_student = sum(p.numel() for p in student.parameters())
    if n_teacher < n_student:
        log.warning(
            "teacher.ckpt=%s has fewer parameters (%s) than the student (%s); distilling anyway",
            ckpt,
            f"{n_teacher:,}",
            f"{n_student:,}",
        )


def _differences(key: str, teacher: dict[str, Any], student: dict[str, Any]) -> list[str]:
    """How the teacher's data section differs from the run's at ``key``, one entry per
    differing value (``teacher X vs data Y``). Preprocessing is compared as configs, key by
    key, so keys added later with their defaults (a teacher saved by an older kdseg) do not
    count; a teacher saved before checkpoints named their organ, or with no organ named
    (recorded as :data:`~kdseg.data.tasks.DEFAULT_ORGAN`), passes that key."""
    mine, theirs = teacher.get(key), student.get(key)
    if key == "organ" and (mine is None or mine == DEFAULT_ORGAN):
        return []
    if key == "preprocess" and isinstance(mine, dict) and isinstance(theirs, dict):
        mine = PreprocessConfig.from_dict(mine).to_dict()
        theirs = PreprocessConfig.from_dict(theirs).to_dict()
        return [  # how training labels were made and how predicted masks are boxed (not the
            # ground-truth boxes of the slices the teacher sees here) do not count
            f"preprocess.{k}: teacher {mine.get(k)!r} vs data {theirs.get(k)!r}"
            for k in sorted(set(mine) | set(theirs))
            if mine.get(k) != theirs.get(k) and k not in ("label_resize", "roi_components")
        ]
    return [] if mine == theirs else [f"{key}: teacher {mine!r} vs data {theirs!r}"]


def _refuse_feature_terms(terms: Any, predictions: str) -> None:
    """Stored predictions hold class probabilities only: no feature tap to distil from."""
    features = [
        f"{t.name} (teacher tap {t.teacher_tap!r})"
        for t in parse_terms(terms)
        if t.weight > 0 and t.teacher_tap != LOGITS
    ]
    if features:
        raise InputError(
            predictions,
            "stored teacher predictions carry class probabilities only, so feature terms "
            f"{', '.join(features)} cannot run; use logit terms (distill=kd, emkd_pmd, cwd) "
            "or a live teacher.ckpt",
        )
