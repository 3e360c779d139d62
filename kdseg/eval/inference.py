"""Volume in -> label volume out, on the input's own grid, with a pluggable backend.

:class:`Predictor` runs the :class:`~kdseg.data.preprocess.Preprocessor` forward, feeds
batches of (2.5D) slices to a backend that maps ``(B, C, h, w)`` float32 arrays to logits,
maps class probabilities back to the canonical grid *before* deciding (argmax, or a foreground
threshold for binary tasks), and undoes the reorientation: the result has exactly the input's
shape and is meant to be written with its affine. :class:`CascadePredictor` composes two
predictors, an organ stage and a fine stage run inside the organ's box. Backends are
registered by name, so the deployment layer adds compiled and exported ones without touching
this loop.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nibabel as nib
import numpy as np

from kdseg.data.boxes import Box3D
from kdseg.data.preprocess import Geometry, Preprocessor
from kdseg.data.preprocess_config import PreprocessConfig
from kdseg.data.roi import largest_component_box
from kdseg.data.tasks import Task
from kdseg.errors import InputError, progress_steps
from kdseg.guards import usable_cpus

if TYPE_CHECKING:  # only the torch backend needs torch; the ONNX path never imports it
    import torch

Backend = Callable[[np.ndarray], np.ndarray]
BACKENDS: dict[str, Callable[..., Backend]] = {}

#: test-time augmentation: the in-plane axes each pass mirrors (``flip``: none, rows, columns,
#: both, as nnU-Net's 2D mirroring); the class probabilities of the passes are averaged
TTA_MIRRORS: dict[str, tuple[tuple[int, ...], ...]] = {
    "none": ((),),
    "flip": ((), (-2,), (-1,), (-2, -1)),
}


def check_tta(value: object) -> str:
    """A ``tta`` setting (:data:`TTA_MIRRORS`); anything else is a config error (exit code 2)."""
    mode = "none" if value is None else value
    if mode not in TTA_MIRRORS:
        raise InputError(None, f"tta must be one of {', '.join(TTA_MIRRORS)}, got {value!r}")
    return str(mode)


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


def onnx_session(path: str | Path, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session for ``path``, built once per file version and thread count.

    The one-scan path reads the artefact's metadata from this session
    (:func:`kdseg.deploy.artifact.resolve_bundle`) and then runs it, so the model file is
    parsed once and the ``onnx`` package (an eighth of a second to import) is not needed.
    A file that ONNX Runtime cannot load is one :class:`InputError` naming it.
    """
    stat = Path(path).stat()
    stamp = (stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, stat.st_dev)
    try:
        return _onnx_session(str(Path(path).resolve()), int(threads) if threads else None, stamp)
    except Exception as exc:  # onnxruntime raises its own InvalidProtobuf, Fail, ...
        raise _runtime_error(path, exc, "load") from None


@functools.lru_cache(maxsize=4)
def _onnx_session(path: str, threads: int | None, stamp: tuple[int, ...]) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


#: how ONNX Runtime's messages begin: ``[ONNXRuntimeError] : 7 : INVALID_PROTOBUF : `` (its
#: status code and name), then, when loading, ``Load model from /resolved/path failed:``
_RUNTIME_PREFIX = re.compile(r"^\[ONNXRuntimeError\] : \d+ : (\w+) : (Load model from .* failed:)?")


def _runtime_error(path: str | Path, exc: Exception, verb: str) -> Exception:
    """One plain :class:`InputError` naming ``path`` as given for ONNX Runtime's own
    exceptions, without the runtime's status code and its repetition of the path; anything
    else is returned as it is (a bug, not a bad file)."""
    if not type(exc).__module__.startswith("onnxruntime"):
        return exc
    text = " ".join(str(exc).split())
    match = _RUNTIME_PREFIX.match(text)
    status = match[1] if match else ""
    detail = (text[match.end() :] if match else text).strip().rstrip(".")[:300]
    if verb == "run":
        return InputError(path, f"ONNX Runtime cannot run this model: {detail}")
    try:
        size = Path(path).stat().st_size
    except OSError:  # gone meanwhile: the runtime's own words
        return InputError(path, f"ONNX Runtime cannot load it: {detail}")
    if size == 0:
        return InputError(path, "empty file (0 bytes), not an ONNX model; copy or export it again")
    if status == "INVALID_PROTOBUF":
        return InputError(
            path,
            f"not an ONNX model, or a damaged or cut-short copy of one ({size:,} bytes that do "
            "not parse as ONNX); copy or export it again",
        )
    return InputError(path, f"an ONNX model that ONNX Runtime cannot load: {detail}")


@register_backend("onnx")
def onnx_backend(path: str | Path, threads: int | None = None) -> Backend:
    """ONNX Runtime on the CPU (fp32 or quantized model file).

    Its logits are returned as they come: :meth:`Predictor.probabilities` refuses NaN or Inf
    ones, naming the file, on every backend (and ``kdseg-export``'s check runner,
    :func:`kdseg.deploy.onnx_export.onnx_runner`, with :func:`check_logits`).
    """
    session = onnx_session(path, threads)
    name = session.get_inputs()[0].name

    def run(x: np.ndarray) -> np.ndarray:
        try:
            return session.run(None, {name: x})[0]
        except Exception as exc:  # onnxruntime's own InvalidArgument, Fail, ...
            raise _runtime_error(path, exc, "run") from None

    return run


def check_logits(logits: np.ndarray, source: str | Path | None) -> np.ndarray:
    """``logits``, unless some are NaN or Inf: then one :class:`InputError` naming ``source``.
    Finite weights can still give NaN (a negative BatchNorm variance of a damaged checkpoint),
    and a NaN loses every comparison, so it would become an all-background label without a
    word."""
    if not np.isfinite(logits).all():
        raise InputError(
            source,
            "the network gives NaN or Inf logits (NaN / Inf weights or normalisation "
            "statistics? a damaged checkpoint or export)",
        )
    return logits


def default_threads(threads: int | None = None, cap: int = 4) -> int:
    """``threads`` when given; else ``OMP_NUM_THREADS`` when set (runs that share cores set
    it), else the CPUs this process may use, at most ``cap``."""
    if threads:
        return int(threads)
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, min(usable_cpus(), cap))


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


@contextlib.contextmanager
def slice_progress(enabled: bool, total: int) -> Iterator[Callable[[int], None]]:
    """A transient "predict slices" bar on stderr where stderr is a terminal, plain lines
    elsewhere (:func:`kdseg.errors.progress_steps`); ``advance(n)`` moves it (stdout keeps the
    results alone). Off a terminal rich is not even imported: a tenth of a second of a fresh
    process's start-up."""
    with progress_steps("predict slices", total, enabled=enabled, transient=True) as bar:
        yield bar.advance


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
        threads: int | None = None,
        tta: str = "none",
        source: str | Path | None = None,
    ) -> None:
        self.backend = backend
        self.source = source  # the checkpoint or artefact, named when its network fails
        self.tta = check_tta(tta)
        self.threads = default_threads(threads)  # for preprocessing; the backend has its own
        self.pre = Preprocessor(preprocess)
        self.task = task
        self.context = context
        self.batch_size = max(int(batch_size), 1)
        self.threshold = threshold
        self.progress = progress
        self.timings: dict[str, float] = {}  # seconds per step of the last prediction
        self.notes: list[str] = []  # what the report must say about the last prediction
        self.last: dict[str, Any] = {}

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
        source = artifact if isinstance(artifact, (str, os.PathLike)) else bundle.path
        return cls(
            run,
            bundle.preprocess,
            bundle.task,
            bundle.context,
            threads=threads,
            source=source,
            **kwargs,
        )

    def probabilities(
        self, batch: np.ndarray, timings: dict[str, float] | None = None
    ) -> np.ndarray:
        """Class probabilities ``(B, K, h, w)`` of a ``(B, C, h, w)`` batch: the softmax of the
        backend's logits, averaged over the mirrored passes of ``tta`` (each mirrored back).
        ``timings["network"]``, when given, receives the seconds spent in the backend.

        Logits that are not finite are refused, naming :attr:`source`
        (:func:`check_logits`), once: no backend checks them itself."""
        total: np.ndarray | None = None
        mirrors = TTA_MIRRORS[self.tta]
        for axes in mirrors:
            x = np.ascontiguousarray(np.flip(batch, axes)) if axes else batch
            clock = time.perf_counter()
            logits = self.backend(x)
            if timings is not None:
                timings["network"] += time.perf_counter() - clock
            probs = softmax(check_logits(logits, self.source))
            probs = np.flip(probs, axes) if axes else probs
            total = probs if total is None else total + probs
        assert total is not None
        return total if len(mirrors) == 1 else np.ascontiguousarray(total / len(mirrors))

    def _binary(self, probs: np.ndarray) -> bool:
        return self.threshold is not None and probs.shape[1] == 2

    def _decide(self, probs: np.ndarray) -> np.ndarray:
        if self._binary(probs):
            return (probs[:, 1] > self.threshold).astype(np.uint8)
        return channel_argmax(probs)

    def _foreground_pixels(self, probs: np.ndarray) -> np.ndarray:
        """``(B, h, w)``: the model-grid pixels the decision would call foreground.

        Bilinear resampling mixes neighbouring pixels with non-negative weights, and rounded
        products and sums are monotone, so where background wins at every model-grid pixel a
        restored pixel draws from, it wins there too (argmax keeps the first of equals; for a
        threshold, up to rounding of weights that sum to one). Slices without such pixels skip
        :meth:`restore` and keep their zero labels; in the others only the box window these
        pixels reach is restored: the bulk of the work outside the network.
        """
        if self._binary(probs):
            return probs[:, 1] > self.threshold
        return (probs[:, 1:] > probs[:, :1]).any(1)

    def predict(
        self,
        img: nib.Nifti1Image,
        roi: Box3D | None = None,
        stats: dict[str, float] | None = None,
        level: float | None = None,
    ) -> np.ndarray:
        """Dataset-label volume (uint8) on ``img``'s voxel grid (Fortran-ordered, like NIfTI).

        ``roi``: an organ box on the canonical grid; only its slices and box (plus the config's
        margin) are predicted, everything else is background. ``level``: the organ's median HU
        for a ``window_level: organ`` config (see
        :meth:`~kdseg.data.preprocess.Preprocessor.hu_window`). The seconds spent in each step
        are kept in :attr:`timings` (``preprocess``, ``network``, ``restore``). ``stats``, when
        given, receives ``foreground_voxels`` and ``max_prob_sum``: the count of voxels decided
        foreground and the sum of their winning class probability (on the input's grid), from
        which a pseudo-label's confidence is computed.
        """
        # Batches are written straight into the output, through its canonical view: no copy
        # of the whole volume into the input's orientation afterwards (0.1-0.2 s at 512^2 x 200)
        out = np.zeros(img.shape, dtype=np.uint8, order="F")
        view = self.pre.reorient(img, out)
        assert np.shares_memory(view, out), "the canonical view must not be a copy"
        self.predict_canonical(img, roi, stats, out=view, level=level)
        return out

    def predict_canonical(
        self,
        img: nib.Nifti1Image,
        roi: Box3D | None = None,
        stats: dict[str, float] | None = None,
        out: np.ndarray | None = None,
        level: float | None = None,
    ) -> tuple[np.ndarray, Geometry]:
        """Dataset labels ``(X, Y, Z)`` on the canonical grid, and the geometry of the mapping.

        ``out``: a zeroed canonical ``(X, Y, Z)`` uint8 array (or view) to write them into.
        ``roi`` and ``level``: as in :meth:`predict`.
        """
        clock = time.perf_counter()
        slices, geom = self.pre.image(img, roi, threads=self.threads, level=level)
        timings = {"preprocess": time.perf_counter() - clock, "network": 0.0, "restore": 0.0}
        x, y, z = geom.canonical_shape
        x0, _, y0, _ = geom.box
        z0, z1 = geom.slices
        if out is None:  # C-ordered (Z, Y, X) is Fortran-ordered (X, Y, Z), as NIfTI stores it
            out = np.zeros((x, y, z), dtype=np.uint8, order="F")
        if out.shape != (x, y, z) or out.dtype != np.uint8:
            raise ValueError(f"out must be uint8 of shape {(x, y, z)}, got {out.dtype} {out.shape}")
        labels = out.transpose(2, 1, 0)  # (Z, Y, X) view: one batch is labels[zs]

        # (Restoring batch k in a worker thread while the network ran batch k + 1 was tried on
        # 2026-12-01: on two cores it slowed ONNX Runtime's threads by more than it hid.)
        with slice_progress(self.progress, z1 - z0) as advance:
            for start in range(0, z1 - z0, self.batch_size):
                zs = np.arange(start, min(start + self.batch_size, z1 - z0))
                batch = context_stack(slices, zs, self.context)
                clock, network = time.perf_counter(), timings["network"]
                probs = self.probabilities(batch, timings)  # backend time into "network"
                clock += timings["network"] - network  # the rest (softmax, mirrors): "restore"
                pixels = self._foreground_pixels(probs)
                hit = pixels.reshape(len(pixels), -1).any(1)
                if hit.any():
                    rows = np.flatnonzero(pixels[hit].any(axis=(0, 2)))
                    cols = np.flatnonzero(pixels[hit].any(axis=(0, 1)))
                    restored, (a0, a1, b0, b1) = self.pre.restore_window(
                        probs[hit], geom, (rows[0], rows[-1] + 1), (cols[0], cols[-1] + 1)
                    )
                    if not restored.size:  # its foreground lies only in a padding
                        hit[:] = False
                if hit.any():
                    decided = self._decide(restored)
                    if stats is not None:
                        _accumulate(stats, restored, decided)
                    window = (z0 + zs[hit], slice(y0 + b0, y0 + b1), slice(x0 + a0, x0 + a1))
                    labels[window] = self.task.to_dataset(decided).transpose(0, 2, 1)
                timings["restore"] += time.perf_counter() - clock
                advance(len(zs))
        self.timings = timings
        return out, geom


class CascadePredictor:
    """Organ-to-tumor cascade: stage 1 finds the organ, stage 2 segments inside its box.

    Stage 1 (a coarse organ model) predicts the whole volume; the bounding box of the largest
    connected organ component (of the two largest for paired kidneys: stage 2's
    ``roi_components``) is handed to stage 2 (a fine organ-and-tumor model), which sees
    only that box plus its own ``roi_margin_mm``, at its own preprocessing (each stage keeps the
    self-describing preprocessing of its checkpoint or artefact). Stage 2's labels are pasted
    back onto the input grid; outside the box everything is background. When stage 1 finds no
    organ the result is all background and :attr:`last` says so (the lesion report shows it).
    :attr:`last`'s ``box_voxel`` is stage 1's organ box (before stage 2's margin) in the
    input's array indices, half-open, ``[i0, i1, j0, j1, k0, k1]``: the frame of the label
    written and of the lesions' ``centroid_voxel``.
    A stage 2 with ``window_level: organ`` also gets the organ level, the median input HU
    under stage 1's largest organ component; :attr:`last` records it as ``organ_level_hu``.
    """

    def __init__(self, stage1: Predictor, stage2: Predictor) -> None:
        self.stages = (stage1, stage2)
        self.task = stage2.task
        self.pre = stage2.pre
        self.last: dict[str, Any] = {}

    @property
    def tta(self) -> str:
        """Stage 2's test-time augmentation (both stages get the same setting)."""
        return self.stages[1].tta

    @property
    def timings(self) -> dict[str, float]:
        """Seconds per step of the last prediction, both stages added up."""
        total: dict[str, float] = {}
        for stage in self.stages:
            for name, seconds in stage.timings.items():
                total[name] = total.get(name, 0.0) + seconds
        return total

    @property
    def notes(self) -> list[str]:
        """What the report must say about the last prediction (e.g. no organ found)."""
        if self.last and not self.last.get("organ_found", True):
            return ["stage 1 found no organ: labels left empty"]
        if self.last.get("box_cropped_mm"):
            return [
                f"the organ box is larger than stage 2's model grid; "
                f"{self.last['box_cropped_mm']} mm (x, y) outside it left background"
            ]
        return []

    def organ_roi(self, img: nib.Nifti1Image) -> tuple[Box3D | None, dict[str, Any]]:
        """Stage 1 on ``img``: the organ box on stage 2's canonical grid, and what was found
        (with ``organ_level_hu`` when stage 2's window is relative to the organ level)."""
        stage1, stage2 = self.stages
        organ, geom = stage1.predict_canonical(img)
        if stage1.pre.config.axcodes != stage2.pre.config.axcodes:
            organ = stage2.pre.reorient(img, stage1.pre.to_input_orientation(organ, geom))
        hu = stage2.pre.reorient(img) if stage2.pre.config.window_level == "organ" else None
        return largest_component_box(organ > 0, hu, keep=stage2.pre.config.roi_components or 1)

    def predict(self, img: nib.Nifti1Image, stats: dict[str, float] | None = None) -> np.ndarray:
        """Dataset-label volume (uint8) on ``img``'s voxel grid, like :meth:`Predictor.predict`."""
        box, self.last = self.organ_roi(img)
        if box is not None:  # reported in the input's voxel indices, as the label and lesions
            self.last["box_voxel"] = list(self.pre.input_box(img, box))
            del self.last["box"]
        out = np.zeros(img.shape, dtype=np.uint8, order="F")
        if box is None:  # stage 2 does not run: none of its timings are this case's
            self.stages[1].timings = {}
            return out
        stage2 = self.stages[1]
        view = stage2.pre.reorient(img, out)
        assert np.shares_memory(view, out), "the canonical view must not be a copy"
        level = self.last.get("organ_level_hu")
        _, geom = stage2.predict_canonical(img, roi=box, stats=stats, out=view, level=level)

        if geom.crop_size is not None:  # a fixed model grid can be smaller than the box
            lost = [max(r - c, 0) for r, c in zip(geom.resized, geom.crop_size, strict=True)]
            pixel = [
                (b1 - b0) * s / r
                for b0, b1, s, r in zip(
                    geom.box[::2], geom.box[1::2], geom.spacing[:2], geom.resized, strict=True
                )
            ]
            if any(lost):
                self.last["box_cropped_mm"] = [
                    round(n * p, 1) for n, p in zip(lost, pixel, strict=True)
                ]
        return out


def _accumulate(stats: dict[str, float], probs: np.ndarray, decided: np.ndarray) -> None:
    """Add the foreground voxels of one batch and their winning probability to ``stats``:
    the probability of the class each was given (the largest one for argmax; for a binary
    ``threshold`` below 0.5 the foreground's, which may be the smaller of the two)."""
    foreground = decided > 0
    winning = np.take_along_axis(probs, decided[:, None].astype(np.intp), axis=1)[:, 0]
    stats["foreground_voxels"] = stats.get("foreground_voxels", 0.0) + float(foreground.sum())
    stats["max_prob_sum"] = stats.get("max_prob_sum", 0.0) + float(winning[foreground].sum())
