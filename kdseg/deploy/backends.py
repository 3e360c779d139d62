"""The deployment backends of :class:`~kdseg.eval.inference.Predictor`: ``compile`` and ``aoti``.

Importing this module registers them next to the built-in ``torch`` and ``onnx`` backends
(the CLI modules import it; :mod:`kdseg.eval` itself never imports the deployment layer).
A backend factory takes ``(artifact, threads)`` and returns a function from a float32
``(B, C, h, w)`` array to logits.

* ``compile``: ``torch.compile`` (inductor) of the checkpoint's eager network. The first call
  per input shape compiles (tens of seconds on two cores); to avoid one compilation per batch
  size, smaller batches are zero-padded to the largest batch seen and the padding dropped.
* ``aoti``: an AOTInductor ``.pt2`` package (see :mod:`kdseg.deploy.aoti`), compiled at export
  time, so nothing compiles at prediction time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from kdseg.deploy.aoti import load_aoti
from kdseg.errors import InputError
from kdseg.eval.inference import Backend, register_backend
from kdseg.models import LogitsOnly


def _pad_batch(x: np.ndarray, size: int) -> np.ndarray:
    """``x`` with zero slices appended up to ``size`` along the batch axis."""
    if len(x) >= size:
        return x
    pad = np.zeros((size - len(x), *x.shape[1:]), dtype=x.dtype)
    return np.concatenate([x, pad])


@register_backend("compile")
def compile_backend(model: nn.Module, threads: int | None = None) -> Backend:
    """``torch.compile`` of the eager network (needs the checkpoint, not an exported file)."""
    if not isinstance(model, nn.Module):
        raise InputError(
            model if isinstance(model, (str, Path)) else None,
            "backend=compile compiles the checkpoint's network; give ckpt=PATH, not an artefact",
        )
    if threads:
        torch.set_num_threads(int(threads))
    compiled = torch.compile(LogitsOnly(model).eval())
    largest = 0

    def run(x: np.ndarray) -> np.ndarray:
        nonlocal largest
        largest = max(largest, len(x))
        with torch.no_grad():
            out = compiled(torch.from_numpy(_pad_batch(x, largest)))
        return out[: len(x)].numpy()

    return run


@register_backend("aoti")
def aoti_backend(path: str | Path, threads: int | None = None) -> Backend:
    """An AOTInductor ``.pt2`` package, loaded without compiling."""
    if threads:
        torch.set_num_threads(int(threads))
    runner = load_aoti(path)

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = runner(torch.from_numpy(np.ascontiguousarray(x)))
        return (out[0] if isinstance(out, (list, tuple)) else out).numpy()

    return run
