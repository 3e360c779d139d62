"""Random-number states in a form a checkpoint can hold and ``torch.load(weights_only=True)``
can read back (tensors, lists, numbers; no numpy arrays, no pickled objects).

A resumed run draws what an uninterrupted run would only if every stream it draws from
continues where the checkpoint left it: the global ``random``, numpy and torch streams (dropout,
the data loader's base seed), the samplers' generators and the augmentation's ``RandomState``.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def numpy_state(rs: np.random.RandomState | None = None) -> list[Any]:
    """``rs``'s state (numpy's global state when None) as ``[name, keys, pos, has_gauss,
    cached_gaussian]`` with the keys as an int64 tensor."""
    name, keys, pos, has_gauss, cached = rs.get_state() if rs is not None else np.random.get_state()
    return [name, torch.from_numpy(np.asarray(keys, dtype=np.int64)), pos, has_gauss, cached]


def set_numpy_state(state: list[Any], rs: np.random.RandomState | None = None) -> None:
    """The inverse of :func:`numpy_state`."""
    name, keys, pos, has_gauss, cached = state
    value = (name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached))
    if rs is None:
        np.random.set_state(value)
    else:
        rs.set_state(value)


def global_states() -> dict[str, Any]:
    """The process-wide streams: Python's ``random``, numpy's and torch's CPU generator."""
    version, keys, gauss = random.getstate()
    return {
        "python": [version, list(keys), gauss],
        "numpy": numpy_state(),
        "torch": torch.get_rng_state(),
    }


def set_global_states(states: dict[str, Any]) -> None:
    """The inverse of :func:`global_states`."""
    version, keys, gauss = states["python"]
    random.setstate((version, tuple(keys), gauss))
    set_numpy_state(states["numpy"])
    torch.set_rng_state(states["torch"])
