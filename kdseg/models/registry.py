"""Registry of segmentation networks: one file per network registers itself by name.

Adding a model is one file in ``kdseg/models/`` plus one YAML in ``conf/model/``: every
module of this package is imported on first lookup, so no list needs editing (timm's idea).
"""

from __future__ import annotations

import importlib
import math
import pkgutil
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from kdseg.errors import ConfigError, InputError
from kdseg.models.compile import check_compile
from kdseg.models.memory_format import check_layout, set_channels_last

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_NOT_NETWORKS = {"registry", "taps", "layers", "cost", "memory_format", "compile"}

#: the largest width multiplier a network is built at: 64 times the paper's channel counts is
#: already far beyond any GPU's memory, and a larger one (``1e308``) overflowed into an
#: internal error while counting channels
MAX_WIDTH = 64.0
#: options that count channels (or classes) in any network that takes them: whole numbers >= 1
_COUNTS = ("in_channels", "num_classes", "base", "fpn_channels", "head_channels")


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
    """The registered model ``name``'s class or factory; a :class:`ConfigError` naming
    ``model.name`` and those registered for any other name (one line, exit 2, where it was a
    ``KeyError`` traceback)."""
    _import_all()
    if not isinstance(name, str) or name not in _MODELS:
        raise ConfigError(
            f"model.name {name!r}: unknown model; registered: {', '.join(sorted(_MODELS))}"
        )
    return _MODELS[name]


def model_options(name: str) -> list[str]:
    """The keyword options the registered model ``name`` takes (its constructor's)."""
    import inspect

    return list(inspect.signature(_factory(name)).parameters)


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name`` with keyword arguments from its config.

    The values every network shares are checked here, once for all of them
    (:func:`check_model_values`), so a bad one is a :class:`ConfigError` naming the option
    rather than an error from deep inside a constructor, or a network with zero channels."""
    factory = _factory(name)
    check_model_values(kwargs)
    return factory(**kwargs)


def check_model_values(kwargs: dict[str, Any]) -> None:
    """Refuse, as a :class:`ConfigError` naming ``model.<option>``, a value no network can be
    built with: a channel or class count (``in_channels``, ``num_classes``, ``base``,
    ``fpn_channels``, ``head_channels``) that is not a whole number >= 1, a ``width`` that is
    not a finite number in (0, :data:`MAX_WIDTH`], a ``dropout`` outside [0, 1]. Options
    absent from ``kwargs`` keep the network's default; booleans are not numbers here."""
    for key in _COUNTS:
        if key not in kwargs:
            continue
        value = kwargs[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"model.{key} {value!r}: must be a whole number >= 1")
    if "width" in kwargs:
        width = kwargs["width"]
        if (
            isinstance(width, bool)
            or not isinstance(width, int | float)
            or not math.isfinite(width)
            or not 0 < width <= MAX_WIDTH
        ):
            raise ConfigError(
                f"model.width {width!r}: must be a number above 0 and at most {MAX_WIDTH:g}"
            )
    if "dropout" in kwargs:
        p = kwargs["dropout"]
        if isinstance(p, bool) or not isinstance(p, int | float) or not 0 <= p <= 1:
            raise ConfigError(f"model.dropout {p!r}: must be a number from 0 to 1")


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
    constructor. An unknown ``name`` (a list or a mapping included) is :func:`_factory`'s
    :class:`ConfigError`."""
    import difflib
    import inspect

    parameters = inspect.signature(_factory(name)).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    for key in kwargs:
        if key not in parameters:
            close = difflib.get_close_matches(key, list(parameters), n=1, cutoff=0.75)
            hint = f"did you mean {close[0]}?" if close else f"its options: {', '.join(parameters)}"
            raise InputError(None, f"model {name} has no option {key!r} ({hint})")


def batch_norm_refusal(cfg: dict[str, Any], shape: tuple[int, ...]) -> str | None:
    """torch's refusal of a training step of the network of model config ``cfg`` on an input
    of ``shape`` when a BatchNorm layer would see one value per channel (a batch of 1 whose
    map there is 1 x 1: ``Expected more than 1 value per channel when training``), else None.

    The network is built and run on the meta device (no weights, no arithmetic: a fraction of
    a second), in training mode, so the check needs no data and changes no weights or random
    stream. Failures other than that refusal are not this check's: they return None and are
    left to the run itself."""
    try:
        with torch.device("meta"):
            net = build_from_config(cfg, encoder_weights=False).train()
            with torch.no_grad():
                net(torch.empty(shape))
    except ValueError as exc:
        if "Expected more than 1 value per channel" in str(exc):
            return str(exc).splitlines()[0]
        return None
    except (RuntimeError, NotImplementedError, TypeError):  # an op without a meta kernel
        return None
    return None
