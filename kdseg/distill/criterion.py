"""One weighted distillation loss over pairs of named taps, built from config.

A distillation method is a list of terms ``{name, loss, weight, student_tap, teacher_tap,
options}`` (MMRazor's "loss mapping", torchdistill's weighted sum of named terms). The
criterion knows no network by name: it reads the taps' channels from the two models'
``tap_info`` (:class:`~kdseg.models.taps.TapInfo`) and the tap tensors from their
:class:`~kdseg.models.taps.SegOutput`. The tap name ``"logits"`` means the logit maps
(``num_classes`` channels, stride 1).

It owns the 1x1 channel adapters (only where a loss needs equal channels and they differ),
so they are trained with the student but never exported with it.

Beyond the paper (an option of kdseg, off by default): ``warmup`` ramps the weight of every
term linearly from 0 to its configured value over the first steps of training (see
:func:`warmup_factor`), so that the logit terms do not push the rare class down before the
student has learned to see it.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from kdseg.distill.adapters import ChannelAdapter
from kdseg.distill.losses import available_losses, build_loss, loss_class
from kdseg.errors import ConfigError
from kdseg.models.taps import SegOutput, TapInfo

LOGITS = "logits"
_TERM_KEYS = {"name", "loss", "weight", "student_tap", "teacher_tap", "options"}


@dataclass(frozen=True)
class DistillTerm:
    """One weighted loss between a student tap and a teacher tap."""

    name: str
    loss: str
    weight: float
    student_tap: str
    teacher_tap: str
    options: dict[str, Any] = field(default_factory=dict)


def _default_name(loss: str, student_tap: str, teacher_tap: str) -> str:
    if student_tap == teacher_tap:
        return loss if student_tap == LOGITS else f"{loss}_{student_tap}"
    return f"{loss}_{student_tap}_{teacher_tap}"


def _parse_term(raw: Any, key: str | None) -> DistillTerm:
    where = f"distillation term {key!r}" if key is not None else "distillation term"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a mapping, got {type(raw).__name__}")
    unknown = sorted(set(raw) - _TERM_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid: {sorted(_TERM_KEYS)}")
    missing = sorted({"loss", "weight", "student_tap"} - set(raw))
    if missing:
        raise ConfigError(f"{where}: missing key(s) {missing}")
    weight = raw["weight"]
    if (
        isinstance(weight, bool)
        or not isinstance(weight, numbers.Real)
        or not 0 <= weight < math.inf
    ):
        raise ConfigError(f"{where}: weight must be a finite number >= 0, got {weight!r}")
    options = raw.get("options") or {}
    if not isinstance(options, Mapping):
        raise ConfigError(f"{where}: options must be a mapping, got {type(options).__name__}")
    loss, student_tap = str(raw["loss"]), str(raw["student_tap"])
    teacher_tap = str(raw.get("teacher_tap", student_tap))
    name = raw.get("name", key) or _default_name(loss, student_tap, teacher_tap)
    if key is not None and name != key:
        raise ConfigError(f"{where}: name {name!r} differs from its key")
    return DistillTerm(str(name), loss, float(weight), student_tap, teacher_tap, dict(options))


def parse_terms(
    cfg_terms: Sequence[Mapping[str, Any]] | Mapping[str, Any] | None,
) -> list[DistillTerm]:
    """Read terms from config: a list of term mappings, or a mapping ``name -> term``.

    A term needs ``loss``, ``weight`` and ``student_tap``; ``teacher_tap`` defaults to the
    student's tap, ``options`` to none, and ``name`` to the mapping key or to
    ``<loss>_<tap>`` (``<loss>`` on logits). Names must be unique. Plain containers are
    expected (``OmegaConf.to_container(cfg, resolve=True)``).
    """
    if cfg_terms is None:
        return []
    if isinstance(cfg_terms, Mapping):
        terms = [_parse_term(raw, str(key)) for key, raw in cfg_terms.items()]
    elif isinstance(cfg_terms, Iterable) and not isinstance(cfg_terms, (str, bytes)):
        terms = [_parse_term(raw, None) for raw in cfg_terms]
    else:
        raise ConfigError(f"distillation terms must be a list or a mapping, got {cfg_terms!r}")
    names = [term.name for term in terms]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"duplicate distillation term name(s) {duplicates}; set a unique 'name'")
    bad = [n for n in names if not n or "." in n]
    if bad:
        raise ConfigError(f"distillation term names must be non-empty and without '.', got {bad}")
    return terms


def check_warmup(warmup: Any) -> float:
    """Validate ``distill.warmup``: 0 (off), a fraction in (0, 1) of the total steps, or a
    whole number >= 1 of steps; null is off. Returns it as a float."""
    if warmup is None:
        return 0.0
    if isinstance(warmup, bool) or not isinstance(warmup, numbers.Real) or not warmup >= 0:
        raise ConfigError(f"distill.warmup must be a number >= 0, got {warmup!r}")
    if warmup >= 1 and (not math.isfinite(warmup) or warmup != int(warmup)):
        raise ConfigError(
            f"distill.warmup must be a fraction of the steps in [0, 1) or a whole number of "
            f"steps, got {warmup!r}"
        )
    return float(warmup)


def warmup_factor(warmup: float, step: int, total_steps: float | None = None) -> float:
    """Multiplier in [0, 1] of every distillation weight at optimizer step ``step`` (0-based).

    ``min(1, step / N)``: 0 at step 0, linear in between, 1 from step N on, where
    ``N = warmup * total_steps`` for a fraction ``warmup < 1`` and ``N = warmup`` for a whole
    number of steps. ``warmup = 0`` gives 1 at every step. A fraction needs a finite
    ``total_steps``.
    """
    if warmup == 0:
        return 1.0
    if warmup < 1:
        if total_steps is None or not math.isfinite(total_steps) or total_steps <= 0:
            raise ConfigError(
                f"distill.warmup={warmup} is a fraction of the training steps, but their "
                f"total is unknown ({total_steps!r}); give a number of steps instead"
            )
        ramp_steps = warmup * float(total_steps)
    else:
        ramp_steps = warmup
    return min(1.0, max(0, step) / ramp_steps)


def _tap_table(tap_info: Mapping[str, TapInfo], num_classes: int) -> dict[str, TapInfo]:
    return {**tap_info, LOGITS: TapInfo(channels=num_classes, stride=1)}


def _check_tap(term: DistillTerm, side: str, tap: str, table: Mapping[str, TapInfo]) -> TapInfo:
    if tap not in table:
        raise ConfigError(
            f"distillation term {term.name!r}: unknown {side} tap {tap!r}; "
            f"valid: {', '.join(sorted(table))}"
        )
    return table[tap]


class DistillationCriterion(nn.Module):
    """Weighted sum of distillation losses on (student tap, teacher tap) pairs.

    ``forward(student_out, teacher_out, labels)`` returns ``(total, parts)``: ``total`` is
    ``sum_k weight_k * loss_k`` (a scalar with gradients to the student and the adapters),
    ``parts`` maps each term name to its unweighted, detached value, for logging. Terms of
    weight 0 are validated but not built (so ablations can switch terms off from the command
    line). Every tap name, loss name and option is checked at construction.

    ``warmup`` (beyond the paper; 0 = off) scales ``total`` by :func:`warmup_factor` of the
    ``step`` and ``total_steps`` given to :meth:`forward`; ``parts`` stay unweighted. Without
    a ``step`` (outside training) the full weights apply.
    """

    def __init__(
        self,
        terms: Sequence[DistillTerm],
        student_tap_info: Mapping[str, TapInfo],
        teacher_tap_info: Mapping[str, TapInfo],
        num_classes: int,
        warmup: float | None = 0.0,
    ) -> None:
        super().__init__()
        self.warmup = check_warmup(warmup)
        student_taps = _tap_table(student_tap_info, num_classes)
        teacher_taps = _tap_table(teacher_tap_info, num_classes)
        valid_losses = available_losses()
        self.terms: list[DistillTerm] = []
        self.losses = nn.ModuleDict()
        self.adapters = nn.ModuleDict()
        for term in terms:
            if term.loss not in valid_losses:
                raise ConfigError(
                    f"distillation term {term.name!r}: unknown loss {term.loss!r}; "
                    f"valid: {', '.join(valid_losses)}"
                )
            s_info = _check_tap(term, "student", term.student_tap, student_taps)
            t_info = _check_tap(term, "teacher", term.teacher_tap, teacher_taps)
            cls = loss_class(term.loss)
            options = dict(term.options)
            if cls.needs_labels:
                options.setdefault("num_classes", num_classes)
            try:
                loss = build_loss(term.loss, **options)
            except (ValueError, TypeError) as err:  # TypeError: an option the loss lacks
                raise ConfigError(f"distillation term {term.name!r}: {err}") from err
            if term.weight == 0:
                continue
            loss.tap_strides = (s_info.stride, t_info.stride)  # labels sampled on the taps' cells
            self.terms.append(term)
            self.losses[term.name] = loss
            if cls.needs_equal_channels and s_info.channels != t_info.channels:
                self.adapters[term.name] = ChannelAdapter(s_info.channels, t_info.channels)

    @property
    def needs_labels(self) -> bool:
        """Whether any active term needs the ground-truth labels in :meth:`forward`."""
        return any(type(loss).needs_labels for loss in self.losses.values())

    def forward(
        self,
        student_out: SegOutput,
        teacher_out: SegOutput,
        labels: torch.Tensor | None = None,
        step: int | None = None,
        total_steps: float | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Weighted total and per-term values; ``labels`` is (B, *spatial) or (B, 1, *spatial).

        ``step`` (optimizer steps done) and ``total_steps`` drive the warm-up, if any.
        """
        total = student_out.logits.new_zeros((), dtype=torch.float32)
        parts: dict[str, torch.Tensor] = {}
        for term in self.terms:
            student = _tap(student_out, term.student_tap, "student")
            teacher = _tap(teacher_out, term.teacher_tap, "teacher")
            if term.name in self.adapters:
                student = self.adapters[term.name](student)
            value = self.losses[term.name](student, teacher, labels)
            parts[term.name] = value.detach()
            total = total + term.weight * value
        if step is not None:
            total = total * self.ramp(step, total_steps)
        return total, parts

    def ramp(self, step: int, total_steps: float | None = None) -> float:
        """The warm-up multiplier of every weight at ``step`` (see :func:`warmup_factor`)."""
        return warmup_factor(self.warmup, step, total_steps)

    def extra_repr(self) -> str:
        terms = ", ".join(
            f"{t.name}: {t.weight} * {t.loss}({t.student_tap} -> {t.teacher_tap})"
            for t in self.terms
        )
        return f"{terms}, warmup={self.warmup}" if self.warmup else terms


def _tap(output: SegOutput, tap: str, side: str) -> torch.Tensor:
    if tap == LOGITS:
        return output.logits
    if tap not in output.taps:
        raise KeyError(
            f"{side} output has no tap {tap!r}; it has: {', '.join(sorted(output.taps))}"
        )
    return output.taps[tap]


def build_criterion(
    cfg_terms: Sequence[Mapping[str, Any]] | Mapping[str, Any] | None,
    student_tap_info: Mapping[str, TapInfo],
    teacher_tap_info: Mapping[str, TapInfo],
    num_classes: int,
    warmup: float | None = 0.0,
) -> DistillationCriterion:
    """Build a :class:`DistillationCriterion` from config terms (see :func:`parse_terms`)."""
    return DistillationCriterion(
        parse_terms(cfg_terms), student_tap_info, teacher_tap_info, num_classes, warmup
    )
