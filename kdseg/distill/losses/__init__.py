"""Registry of N-D distillation losses on named taps.

Adding a loss is one file in this package with one class decorated by
:func:`register_loss`, plus one YAML in ``conf/distill/``: the package's modules are
imported on first lookup, so no list needs editing (the pattern of ``kdseg.models.registry``).
"""

from kdseg.distill.losses.base import DistillLoss, cosine_gram, softened_kl
from kdseg.distill.losses.registry import (
    available_losses,
    build_loss,
    loss_class,
    register_loss,
)

__all__ = [
    "DistillLoss",
    "available_losses",
    "build_loss",
    "cosine_gram",
    "loss_class",
    "register_loss",
    "softened_kl",
]
