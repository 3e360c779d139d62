"""Volume in -> label volume out, on the input's own grid, with a pluggable backend.

:class:`Predictor` runs the :class:`~kdseg.data.preprocess.Preprocessor` forward, feeds
batches of (2.5D) slices to a backend that maps ``(B, C, h, w)`` float32 arrays to logits,
maps class probabilities back to the canonical grid *before* deciding (argmax, or a foreground
threshold for binary tasks), and undoes the reorientation: the result has exactly the input's
shape and is meant to be written with its affine. Backends are registered by name, so the
deployment layer adds compiled and exported ones without touching this loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nibabel as nib
import numpy as np
from rich.progress import Progress

from kdseg.data.preprocess import PreprocessConfig, Preprocessor
from kdseg.data.tasks import Task

if TYPE_CHECKING:  # only the torch backend needs torch; the ONNX path never imports it
    import torch

Backend = Callable[[np.ndarray], np.ndarray]
BACKENDS: dict[str, Callable[..., Backend]] = {}


def register_backend(name: str) -> Callable:
    """Decorator: register a backend factory ``(artifact, threads) -> Backend``."""

    def decorate(factory: Callable[..., Backend]) -> Callable[..., Backend]:
        BACKENDS[name] = factory
        return factory

    return decorate


@register_backend("torch")
def torch_backend(model: torch.nn.Module, threads: int | None = None) -> Backend:
    """Eager PyTorch on the CPU."""
    import torch

    from kdseg.models import LogitsOnly

    if threads:
        torch.set_num_threads(int(threads))
    net = LogitsOnly(model).eval()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return net(torch.from_numpy(x)).numpy()

    return run


@register_backend("onnx")
def onnx_backend(path: str | Path, threads: int | None = None) -> Backend:
    """ONNX Runtime on the CPU (fp32 or quantized model file)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def context_stack(slices: np.ndarray, zs: np.ndarray, context: int) -> np.ndarray:
    """(B, 2*context+1, h, w) inputs for slice indices ``zs``, clamped at the volume ends."""
    offsets = np.arange(-context, context + 1)
    idx = np.clip(zs[:, None] + offsets[None, :], 0, slices.shape[0] - 1)
    return np.ascontiguousarray(slices[idx], dtype=np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the channel axis 1 of ``(B, C, h, w)`` logits, float32."""
    z = np.asarray(logits, dtype=np.float32)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    e /= e.sum(axis=1, keepdims=True)
    return e


def channel_argmax(probs: np.ndarray) -> np.ndarray:
    """``probs.argmax(1)`` as uint8 (the first maximum wins), by elementwise comparisons.

    An argmax over the channel axis of a ``(B, C, X, Y)`` array with few channels is a slow
    strided reduction on CPU; C - 1 comparisons take a few milliseconds.
    """
    best = probs[:, 0]
    labels = np.zeros(best.shape, dtype=np.uint8)
    for c in range(1, probs.shape[1]):
        better = probs[:, c] > best
        labels[better] = c
        best = np.maximum(best, probs[:, c])
    return labels


class Predictor:
    """Predict label volumes with one backend, preprocessing config and task."""

    def __init__(
        self,
        backend: Backend,
        preprocess: PreprocessConfig,
        task: Task,
        context: int = 0,
        batch_size: int = 8,
        threshold: float | None = None,
        progress: bool = False,
    ) -> None:
        self.backend = backend
        self.pre = Preprocessor(preprocess)
        self.task = task
        self.context = context
        self.batch_size = max(int(batch_size), 1)
        self.threshold = threshold
        self.progress = progress
        self.timings: dict[str, float] = {}

    @classmethod
    def from_bundle(
        cls,
        bundle: Any,
        backend: str = "torch",
        artifact: Any = None,
        threads: int | None = None,
        **kwargs: Any,
    ) -> Predictor:
        """Predictor for a loaded checkpoint bundle; ``artifact`` replaces its model (ONNX...)."""
        run = BACKENDS[backend](artifact if artifact is not None else bundle.model, threads=threads)
        return cls(run, bundle.preprocess, bundle.task, bundle.context, **kwargs)

    def _binary(self, probs: np.ndarray) -> bool:
        return self.threshold is not None and probs.shape[1] == 2

    def _decide(self, probs: np.ndarray) -> np.ndarray:
        if self._binary(probs):
            return (probs[:, 1] > self.threshold).astype(np.uint8)
        return channel_argmax(probs)

    def _any_foreground(self, probs: np.ndarray) -> np.ndarray:
        """``(B,)``: which model-grid slices have a pixel the decision would call foreground.

        Bilinear resampling mixes neighbouring pixels convexly, so a slice where background
        wins at every model-grid pixel stays background everywhere after :meth:`restore` (up to
        rounding at exact ties): such slices skip the resampling, the bulk of the work outside
        the network on small inputs, and keep their zero labels.
        """
        if self._binary(probs):
            hit = probs[:, 1] > self.threshold
        else:
            hit = (probs[:, 1:] > probs[:, :1]).any(1)
        return hit.reshape(len(hit), -1).any(1)

    def predict(self, img: nib.Nifti1Image) -> np.ndarray:
        """Dataset-label volume (uint8) on ``img``'s voxel grid (Fortran-ordered, like NIfTI).

        The seconds spent in each step of the last call are kept in :attr:`timings`
        (``preprocess``, ``network``, ``restore``).
        """
        clock = time.perf_counter()
        slices, geom = self.pre.image(img)
        timings = {"preprocess": time.perf_counter() - clock, "network": 0.0, "restore": 0.0}
        x, y, z = geom.canonical_shape
        x0, x1, y0, y1 = geom.box
        # C-ordered (Z, Y, X) is Fortran-ordered (X, Y, Z): the order the label is written in
        labels = np.zeros((z, y, x), dtype=np.uint8)
        with Progress(disable=not self.progress, transient=True) as bar:
            task = bar.add_task("predict slices", total=z)
            for start in range(0, z, self.batch_size):
                zs = np.arange(start, min(start + self.batch_size, z))
                clock = time.perf_counter()
                logits = self.backend(context_stack(slices, zs, self.context))
                timings["network"] += time.perf_counter() - clock
                clock = time.perf_counter()
                probs = softmax(logits)
                hit = self._any_foreground(probs)
                if hit.any():
                    restored = self.pre.restore(probs[hit], geom)
                    labels[zs[hit], y0:y1, x0:x1] = self._decide(restored).transpose(0, 2, 1)
                timings["restore"] += time.perf_counter() - clock
                bar.advance(task, len(zs))
        clock = time.perf_counter()
        canonical = np.asarray(self.task.to_dataset(labels.transpose(2, 1, 0)), dtype=np.uint8)
        out = self.pre.to_input_orientation(canonical, geom)
        timings["restore"] += time.perf_counter() - clock
        self.timings = timings
        return out
