"""Registry of segmentation networks: one file per network registers itself by name.

Adding a model is one file in ``kdseg/models/`` plus one YAML in ``conf/model/``: every
module of this package is imported on first lookup, so no list needs editing (timm's idea).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Any

from torch import nn

from kdseg.errors import InputError
from kdseg.models.compile import check_compile
from kdseg.models.memory_format import check_layout, set_channels_last

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_NOT_NETWORKS = {"registry", "taps", "layers", "cost", "memory_format", "compile"}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register a model class or factory under ``name``."""

    def decorate(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _MODELS and _MODELS[name] is not factory:
            raise ValueError(f"model {name!r} registered twice")
        _MODELS[name] = factory
        return factory

    return decorate


def _import_all() -> None:
    package = importlib.import_module(__package__)
    for info in pkgutil.iter_modules(package.__path__):
        if info.name not in _NOT_NETWORKS and not info.name.startswith("_"):
            importlib.import_module(f"{__package__}.{info.name}")


def available_models() -> list[str]:
    """Names of every registered model, sorted."""
    _import_all()
    return sorted(_MODELS)


def _factory(name: str) -> Callable[..., nn.Module]:
    """The registered model ``name``'s class or factory; KeyError naming those registered."""
    _import_all()
    if name not in _MODELS:
        raise KeyError(f"unknown model {name!r}; registered: {', '.join(sorted(_MODELS))}")
    return _MODELS[name]


def model_options(name: str) -> list[str]:
    """The keyword options the registered model ``name`` takes (its constructor's)."""
    import inspect

    return list(inspect.signature(_factory(name)).parameters)


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name`` with keyword arguments from its config."""
    return _factory(name)(**kwargs)


def build_from_config(cfg: dict[str, Any], encoder_weights: bool = True) -> nn.Module:
    """Build a model from a config mapping ``{"name": ..., **kwargs}`` (as in ``conf/model``).

    ``encoder_weights=False`` ignores the config's ``encoder_weights`` file (the random init
    stays): for a network whose weights come next from a checkpoint, or that is only counted.
    The file initialises training only, so a checkpoint must load without it (on another
    machine, or after the file moved), and its own weights replace the file's anyway.

    ``channels_last`` (optional; null or false: off) is not a network argument but how it runs
    (:mod:`kdseg.models.memory_format`); it is applied after the weights are drawn, so it does
    not change them. ``compile`` (:mod:`kdseg.models.compile`) is checked and left to the
    training modules, which apply it; inference and export never compile."""
    kwargs = dict(cfg)
    name = kwargs.pop("name")
    if not encoder_weights:
        kwargs.pop("encoder_weights", None)
    channels_last = check_layout(kwargs.pop("channels_last", None), "model.channels_last")
    check_compile(kwargs.pop("compile", None), "model.compile")
    _check_options(name, kwargs)
    net = build_model(name, **kwargs)
    return set_channels_last(net, True) if channels_last else net


def _check_options(name: str, kwargs: dict[str, Any]) -> None:
    """Refuse a config key the network ``name`` does not take (an experiment file that sets
    ``model.base`` for a network without it) as one line, not a TypeError from its
    constructor; an unknown ``name`` is left to :func:`build_model`."""
    import difflib
    import inspect

    _import_all()
    factory = _MODELS.get(name)
    if factory is None:
        return
    parameters = inspect.signature(factory).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    for key in kwargs:
        if key not in parameters:
            close = difflib.get_close_matches(key, list(parameters), n=1, cutoff=0.75)
            hint = f"did you mean {close[0]}?" if close else f"its options: {', '.join(parameters)}"
            raise InputError(None, f"model {name} has no option {key!r} ({hint})")
