"""OmegaConf resolvers the configs use to derive values instead of repeating them, and the
values of ``loss.focal`` (read by L_seg and by the rerun check, which imports no torch)."""

from __future__ import annotations

from typing import Any

from omegaconf import ListConfig, OmegaConf

from kdseg.data.tasks import Task, organ_components, organ_window
from kdseg.errors import ConfigError


def _dataset_organ(root: object) -> str | None:
    from kdseg.data.nnunet import dataset_organ  # numpy: not for --help

    return dataset_organ(str(root))


def _organ_components(organ: object) -> int | None:
    """How many components a predicted mask of ``organ`` is boxed by (a paired organ: 2);
    None (one) for any other."""
    count = organ_components(organ)
    return count if count and count > 1 else None


def _organ_window(organ: object, default: object) -> ListConfig:
    """``organ``'s HU window where kdseg has one (kidney: KiTS19's), else ``default``; a
    ``ListConfig``, as ``OmegaConf.resolve`` (Hydra's ``--cfg job --resolve``) refuses a list."""
    window = organ_window(organ)
    values = list(window) if window is not None else list(default)  # type: ignore[call-overload]
    return OmegaConf.create(values)


def register_resolvers() -> None:
    """Register ``kdseg.num_classes`` (from the task), ``kdseg.in_channels`` (from context),
    ``kdseg.dataset_organ`` (the organ an nnU-Net folder's ``dataset.json`` names) and
    ``kdseg.organ_components`` (2 for a paired organ, else None) and ``kdseg.organ_window``
    (an organ's HU window, else the default given)."""
    for name, resolver in (
        ("kdseg.dataset_organ", _dataset_organ),
        ("kdseg.organ_components", _organ_components),
        ("kdseg.organ_window", _organ_window),
        ("kdseg.num_classes", lambda task: Task(str(task)).num_classes),
        ("kdseg.in_channels", lambda context: 2 * int(context) + 1),
    ):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)


register_resolvers()


#: ``loss.focal``: how L_seg's focal term turns logits into probabilities. ``null`` (or
#: ``sigmoid``) is MONAI's ``DiceFocalLoss``, every recorded run's: a sigmoid of each foreground
#: channel on its own, the background logit left out (its gradient is zero, and a constant
#: added to every logit changes the term though the softmax prediction does not). ``softmax``
#: (opt-in) is the multi-class focal loss of Lin et al. over the softmax of all classes.
FOCAL_KINDS = ("sigmoid", "softmax")


def check_focal(kind: Any, key: str = "loss.focal") -> str:
    """``sigmoid`` (``null``, the default) or ``softmax``; anything else a config error."""
    if kind is None or (isinstance(kind, str) and kind.lower() in {"", "none"}):
        return "sigmoid"
    if not isinstance(kind, str) or kind.lower() not in FOCAL_KINDS:
        raise ConfigError(f"{key} must be null or one of {list(FOCAL_KINDS)}, got {kind!r}")
    return kind.lower()
