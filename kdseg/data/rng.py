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


def derive_seed(*entropy: int) -> int:
    """A 32-bit seed drawn from ``entropy`` by numpy's ``SeedSequence``: the same numbers give
    the same seed, any other numbers an unrelated one (a batch's seed from the run's key and
    its place in the epoch; a second stream's from the batch's seed)."""
    return int(np.random.SeedSequence(list(entropy)).generate_state(1)[0])


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
    """The process-wide streams: Python's ``random``, numpy's and torch's CPU generator, and
    the CUDA generators where CUDA is in use (dropout on a GPU draws from them: without them a
    resumed GPU run would redraw its masks from the seed). A CPU run stores no CUDA entry."""
    version, keys, gauss = random.getstate()
    states = {
        "python": [version, list(keys), gauss],
        "numpy": numpy_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["torch_cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_global_states(states: dict[str, Any]) -> None:
    """The inverse of :func:`global_states`. CUDA states are restored where the checkpoint has
    them and this process has as many CUDA devices; otherwise the CUDA streams keep the seed's."""
    version, keys, gauss = states["python"]
    random.setstate((version, tuple(keys), gauss))
    set_numpy_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    cuda = states.get("torch_cuda")
    if cuda is not None and torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
        torch.cuda.set_rng_state_all(cuda)
