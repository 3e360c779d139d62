"""OmegaConf resolvers the configs use to derive values instead of repeating them."""

from __future__ import annotations

from omegaconf import OmegaConf

from kdseg.data.tasks import Task, organ_components, organ_window


def _dataset_organ(root: object) -> str | None:
    from kdseg.data.nnunet import dataset_organ  # numpy: not for --help

    return dataset_organ(str(root))


def _organ_components(organ: object) -> int | None:
    """How many components a predicted mask of ``organ`` is boxed by (a paired organ: 2);
    None (one) for any other."""
    count = organ_components(organ)
    return count if count and count > 1 else None


def _organ_window(organ: object, default: object) -> list[float]:
    """``organ``'s HU window where kdseg has one (kidney: KiTS19's), else ``default``."""
    window = organ_window(organ)
    return list(window) if window is not None else list(default)  # type: ignore[call-overload]


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
