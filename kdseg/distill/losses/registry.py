"""The name -> loss-class table, with per-name default options (one class, several names)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable
from typing import Any

from kdseg.distill.losses.base import DistillLoss

_LOSSES: dict[str, tuple[type[DistillLoss], dict[str, Any]]] = {}
_NOT_LOSSES = {"base", "registry"}


def register_loss(name: str, **defaults: Any) -> Callable[[type[DistillLoss]], type[DistillLoss]]:
    """Class decorator: register a :class:`DistillLoss` under ``name`` with default options.

    Stacking the decorator registers one formula under several names, e.g. ``imd`` and ``at``
    are one attention-map class with different ``power`` and ``reduction`` defaults.
    """

    def decorate(cls: type[DistillLoss]) -> type[DistillLoss]:
        if not (isinstance(cls, type) and issubclass(cls, DistillLoss)):
            raise TypeError(f"loss {name!r} must be a DistillLoss subclass, got {cls!r}")
        if name in _LOSSES and _LOSSES[name] != (cls, defaults):
            raise ValueError(f"loss {name!r} registered twice")
        _LOSSES[name] = (cls, dict(defaults))
        return cls

    return decorate


def _import_all() -> None:
    package = importlib.import_module(__package__)
    for info in pkgutil.iter_modules(package.__path__):
        if info.name not in _NOT_LOSSES and not info.name.startswith("_"):
            importlib.import_module(f"{__package__}.{info.name}")


def available_losses() -> list[str]:
    """Names of every registered loss, sorted."""
    _import_all()
    return sorted(_LOSSES)


def _lookup(name: str) -> tuple[type[DistillLoss], dict[str, Any]]:
    _import_all()
    if name not in _LOSSES:
        raise ValueError(f"unknown distillation loss {name!r}; valid: {', '.join(sorted(_LOSSES))}")
    return _LOSSES[name]


def loss_class(name: str) -> type[DistillLoss]:
    """The class registered as ``name`` (to read ``needs_labels`` etc. without building it)."""
    return _lookup(name)[0]


def build_loss(name: str, **options: Any) -> DistillLoss:
    """Build loss ``name``; ``options`` override the defaults it was registered with.

    Raises ``ValueError`` naming the accepted options when an option is unknown.
    """
    cls, defaults = _lookup(name)
    accepted = [
        p.name
        for p in inspect.signature(cls).parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"loss {name!r} got unknown option(s) {', '.join(unknown)}; "
            f"valid: {', '.join(accepted) or '(none)'}"
        )
    return cls(**{**defaults, **options})
