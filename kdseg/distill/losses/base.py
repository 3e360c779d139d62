"""Base class of every distillation loss, and the formulas several losses share."""

from __future__ import annotations

import math
import numbers
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from kdseg.distill.adapters import resize_labels


class DistillLoss(nn.Module):
    """A loss between one student tensor and one teacher tensor of shape (B, C, *spatial).

    Subclasses implement :meth:`compute`; :meth:`forward` checks the shapes, treats the teacher
    as a constant (detached, whatever the caller did) and computes in float32 with autocast
    off, because softmax-KL and cosine terms are fragile in half precision.

    Class attributes tell :class:`~kdseg.distill.criterion.DistillationCriterion` what a loss
    needs: ``needs_equal_channels`` (the criterion then inserts a 1x1 adapter on the student
    side where channel counts differ) and ``needs_labels`` (the integer ground truth is passed
    in; such losses take a ``num_classes`` constructor argument, filled in by the criterion).
    Spatial sizes may always differ: each loss aligns them as its formula requires.
    """

    needs_equal_channels: ClassVar[bool] = False
    needs_labels: ClassVar[bool] = False
    #: the strides of the (student, teacher) taps the loss is given, where known: labels are
    #: sampled on the tap's cells (:func:`~kdseg.distill.adapters.resize_labels`); set by the
    #: criterion from the networks' :class:`~kdseg.models.taps.TapInfo`
    tap_strides: tuple[int | None, int | None] = (None, None)

    def forward(
        self, student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Scalar loss of ``student`` against the constant ``teacher`` (and ``labels``)."""
        self._check(student, teacher, labels)
        with torch.autocast(device_type=student.device.type, enabled=False):
            return self.compute(_full_precision(student), _full_precision(teacher.detach()), labels)

    def compute(
        self, student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor | None
    ) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check(
        self, student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor | None
    ) -> None:
        name = type(self).__name__
        if student.ndim != teacher.ndim or student.ndim < 3:
            raise ValueError(
                f"{name}: student {tuple(student.shape)} and teacher {tuple(teacher.shape)} must "
                "both be (B, C, *spatial) with the same number of spatial dims"
            )
        if student.shape[0] != teacher.shape[0]:
            raise ValueError(
                f"{name}: batch sizes differ ({student.shape[0]} vs {teacher.shape[0]})"
            )
        if self.needs_equal_channels and student.shape[1] != teacher.shape[1]:
            raise ValueError(
                f"{name}: needs equal channels, got student {student.shape[1]} and teacher "
                f"{teacher.shape[1]} (the criterion adds a 1x1 adapter for this)"
            )
        if self.needs_labels and labels is None:
            raise ValueError(f"{name}: needs the ground-truth labels, got None")
        if labels is not None and (
            labels.shape[0] != student.shape[0]
            or labels.ndim not in (student.ndim - 1, student.ndim)
        ):  # broadcasting would give every image the first one's labels
            raise ValueError(
                f"{name}: labels {tuple(labels.shape)} do not fit student {tuple(student.shape)}: "
                "they must be (B, *spatial) or (B, 1, *spatial)"
            )


def check_number(name: str, value: object, low: float = 0.0, inclusive: bool = False) -> float:
    """A loss option as a finite float ``> low`` (``>= low`` when ``inclusive``); bool, NaN,
    Inf and non-numbers are refused (NaN passes every comparison check written with ``<``)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    ok = ok and math.isfinite(value) and (value >= low if inclusive else value > low)
    if not ok:
        bound = f">= {low:g}" if inclusive else f"> {low:g}"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    return float(value)


def _full_precision(x: torch.Tensor) -> torch.Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def softened_kl(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float, dim: int
) -> torch.Tensor:
    """KL(softmax(teacher / T) || softmax(student / T)) along ``dim``, summed over ``dim``.

    Hinton et al. 2015 soften both distributions with temperature T; the result keeps every
    other dimension (one KL per pixel for class distributions, one per channel for CWD).
    Exactly zero when student equals teacher.
    """
    log_p_student = F.log_softmax(student / temperature, dim=dim)
    log_p_teacher = F.log_softmax(teacher / temperature, dim=dim)
    return (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(dim)


def cosine_gram(vectors: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Cosine-similarity matrix of the rows of ``vectors`` (B, M, K) -> (B, M, M).

    Shared by the region affinity of EMKD (rows = class regions) and the pairwise affinity of
    structured KD (rows = pooled pixels). A row of norm ``<= eps`` (an absent region, or a
    student region whose features are all zero) has no direction: zero similarity, and zero
    gradient (``F.normalize`` divides it by ``eps``, which scales its gradient by ``1 / eps``:
    1e8). Every other row is ``F.normalize``'s, to the bit (the same operations).
    """
    norm = vectors.norm(2.0, -1, keepdim=True)
    unit = vectors / norm.clamp_min(eps)  # F.normalize(vectors, p=2.0, dim=-1, eps=eps)
    unit = torch.where(norm > eps, unit, torch.zeros_like(unit))  # backward: 0 there, not NaN
    return unit @ unit.transpose(-1, -2)


def pixel_classes(
    labels: torch.Tensor | None, teacher: torch.Tensor, stride: int | None = None
) -> torch.Tensor:
    """Class of every pixel of a (B, C, *spatial) logit map: its label, else the teacher's.

    ``labels`` (B, *spatial) or (B, 1, *spatial), at any size, are resized to the teacher's
    map (:func:`~kdseg.distill.adapters.resize_labels`, ``stride``: the map's). A pixel whose
    label is outside [0, C) (e.g. -1 for an unlabeled image) and every pixel when ``labels`` is
    None get the teacher's argmax class. Returns (B, *spatial) int64.
    """
    guess = teacher.max(dim=1).indices  # on CPU 10x faster than argmax(dim=1); same ties
    if labels is None:
        return guess
    labels = resize_labels(labels, teacher.shape[2:], stride)
    known = (labels >= 0) & (labels < teacher.shape[1])
    return torch.where(known, labels, guess)
