"""In-plane resampling of slice stacks in numpy, equal to ``torch.nn.functional.interpolate``.

The prediction path (``kdseg-predict backend=onnx``) must run without torch: importing it costs
more than predicting a volume from a fresh process, and a lean runtime install has no torch at
all. Training and prediction share one :class:`~kdseg.data.preprocess.Preprocessor`, so its
resampling is written once, here, and reproduces torch's kernels (tested against them):

* ``bilinear`` with ``align_corners=False``, optionally with ``antialias=True`` (the triangle
  filter widened by the scale factor when shrinking, as torch and PIL do it);
* ``nearest``: torch's legacy nearest neighbour, ``src = floor(dst * in / out)``.

A resize of one axis is a small table of taps (source indices and weights per output index),
applied separably per axis as a few gathers and multiply-adds, on one thread. (A dense matrix
product per axis was faster on an idle machine, but multi-threaded BLAS on shared, loaded cores
took 3-12 s instead of 0.6 s for a 512 x 512 x 200 volume.)
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np


@lru_cache(maxsize=64)
def bilinear_taps(n_in: int, n_out: int, antialias: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(index, weight)`` arrays of shape ``(n_out, K)``: ``out[i] = sum_k w[i,k] x[idx[i,k]]``.

    Unused taps have weight 0 (and a valid index). Follows ATen's ``upsample_bilinear2d``
    (plain) and ``_upsample_bilinear2d_aa`` (antialias) index and weight computation.
    """
    scale = n_in / n_out
    if not antialias:  # ATen does this arithmetic in float32: so do we, to match it closely
        dst = np.arange(n_out, dtype=np.float32)
        src = np.maximum(np.float32(scale) * (dst + np.float32(0.5)) - np.float32(0.5), 0)
        i0 = src.astype(np.int64)
        i1 = np.minimum(i0 + 1, n_in - 1)
        lam = src - i0.astype(np.float32)
        index = np.stack([i0, i1], axis=1)
        weight = np.stack([np.float32(1.0) - lam, lam], axis=1)
        return index, weight.astype(np.float32)
    support = scale if scale >= 1.0 else 1.0  # interp_size / 2 = 1 for the triangle filter
    invscale = 1.0 / scale if scale >= 1.0 else 1.0
    width = int(math.ceil(support)) * 2 + 1
    index = np.zeros((n_out, width), dtype=np.int64)
    weight = np.zeros((n_out, width), dtype=np.float64)
    for i in range(n_out):
        center = scale * (i + 0.5)
        xmin = max(int(center - support + 0.5), 0)
        xsize = min(int(center + support + 0.5), n_in) - xmin
        j = np.arange(xsize)
        w = np.maximum(1.0 - np.abs((j + xmin - center + 0.5) * invscale), 0.0)
        total = w.sum()
        index[i, :xsize] = xmin + j
        weight[i, :xsize] = w / total if total else w
    return index, weight.astype(np.float32)


@lru_cache(maxsize=64)
def nearest_index(n_in: int, n_out: int, exact: bool = False) -> np.ndarray:
    """Source index per output index of torch's ``mode="nearest"`` (float32 scale, floor of
    ``i * scale``: the output pixel's corner, so about half an output pixel off the bilinear
    image's grid when shrinking) or, ``exact``, of ``mode="nearest-exact"`` (floor of
    ``(i + 0.5) * scale``: the pixel's centre, the grid of ``align_corners=False``)."""
    scale = np.float32(n_in) / np.float32(n_out)
    offset = np.float32(0.5) if exact else np.float32(0.0)
    src = np.floor((np.arange(n_out, dtype=np.float32) + offset) * scale).astype(np.int64)
    return np.minimum(src, n_in - 1)


#: Resampling modes of :func:`resize`: nearest modes keep the dtype (labels).
MODES = ("bilinear", "nearest", "nearest-exact")


def touched(n_in: int, n_out: int, lo: int, hi: int, antialias: bool = False) -> tuple[int, int]:
    """Output indices ``[a, b)`` of a bilinear resize ``n_in -> n_out`` that have a nonzero
    tap in source indices ``[lo, hi)`` (contiguous: taps move forward with the output)."""
    if hi <= lo:
        return 0, 0
    if n_in == n_out:
        return lo, hi
    index, weight = bilinear_taps(n_in, n_out, antialias)
    hit = np.flatnonzero(((index >= lo) & (index < hi) & (weight != 0)).any(axis=1))
    return (int(hit[0]), int(hit[-1]) + 1) if hit.size else (0, 0)


def _resize_axis(
    x: np.ndarray,
    axis: int,
    n_out: int,
    mode: str,
    antialias: bool,
    span: tuple[int, int] | None = None,
) -> np.ndarray:
    """Resize axis ``axis`` (one of the last two) of ``x`` to ``n_out``; only the outputs
    ``span = (a, b)`` of that axis when given (the same values as the full resize there)."""
    n_in = x.shape[axis]
    a, b = span if span is not None else (0, n_out)
    if n_in == n_out:
        return x if span is None else x[(slice(None),) * axis + (slice(a, b),)]
    if mode in ("nearest", "nearest-exact"):
        return np.take(x, nearest_index(n_in, n_out, mode == "nearest-exact")[a:b], axis=axis)
    index, weight = bilinear_taps(n_in, n_out, antialias)
    index, weight = index[a:b], weight[a:b]
    shape = [1] * x.ndim
    shape[axis] = b - a
    # products in place (float32 taps times float32 weights: the same values), so that an
    # output-sized temporary fewer is alive at once
    out = np.take(x, index[:, 0], axis=axis)
    out *= weight[:, 0].reshape(shape)
    for k in range(1, index.shape[1]):
        w = weight[:, k]
        if not w.any():
            continue
        tap = np.take(x, index[:, k], axis=axis)
        tap *= w.reshape(shape)
        out += tap
    return out


def resize(
    x: np.ndarray,
    size: tuple[int, int],
    mode: str = "bilinear",
    antialias: bool = False,
    window: tuple[int, int, int, int] | None = None,
) -> np.ndarray:
    """Resize the last two axes of ``x`` to ``size`` (``mode``: one of :data:`MODES`).

    ``window = (a0, a1, b0, b1)``: only that part of the output, ``[a0:a1, b0:b1]``, computed
    alone (identical values). Bilinear results are float32 (like torch on float32 input);
    nearest keeps the dtype.
    """
    if mode not in MODES:
        raise ValueError(f"unknown resampling mode {mode!r}; use one of {', '.join(MODES)}")
    if mode == "bilinear":
        x = np.asarray(x, dtype=np.float32)
    rows = cols = None
    if window is not None:
        rows, cols = (int(window[0]), int(window[1])), (int(window[2]), int(window[3]))
    out = _resize_axis(x, x.ndim - 2, int(size[0]), mode, antialias, rows)
    return _resize_axis(out, x.ndim - 1, int(size[1]), mode, antialias, cols)
