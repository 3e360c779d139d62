"""OmegaConf resolvers the configs use to derive values instead of repeating them."""

from __future__ import annotations

from omegaconf import OmegaConf

from kdseg.data.tasks import Task


def register_resolvers() -> None:
    """Register ``kdseg.num_classes`` (from the task) and ``kdseg.in_channels`` (from context)."""
    if not OmegaConf.has_resolver("kdseg.num_classes"):
        OmegaConf.register_new_resolver(
            "kdseg.num_classes", lambda task: Task(str(task)).num_classes
        )
    if not OmegaConf.has_resolver("kdseg.in_channels"):
        OmegaConf.register_new_resolver("kdseg.in_channels", lambda context: 2 * int(context) + 1)


register_resolvers()
