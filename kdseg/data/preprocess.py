"""Preprocessing as one object: the forward mapping used by ``prepare`` and ``predict``, and its
inverse back to the input's geometry, side by side.

Forward, per volume: reorient to a canonical orientation (RAS by default) -> optional crop to a
box (the organ's 3D box plus a margin in mm when an ROI is given, else the body's in-plane
bounding box, else nothing) -> optional in-plane resampling (to ``spacing_mm``, or to a fixed
``in_plane_size``) -> optional centre crop / pad -> HU window scaled to [-1, 1] -> rounded to
the storage dtype. Slices are axial and come out as ``(Z, X, Y)`` arrays.

``spacing_mm`` and ``in_plane_size`` together: the box is resampled to ``spacing_mm`` (its pixel
count is the box extent in mm over the spacing, rounded, so the actual spacing is within half a
pixel of it) and then centre padded / cropped to ``in_plane_size``, which fixes the size of
the model grid (training batches need one size) without changing the spacing. Alone,
``in_plane_size`` resizes the box to that size whatever its extent (the old behaviour), and
``spacing_mm`` alone gives a grid whose size follows the box. ``crop_size`` is that same
centre crop / pad after resizing; with ``spacing_mm`` give it or ``in_plane_size``, not both.

Organ ROI (``roi: organ``): the box is the organ's 3D bounding box (in-plane and along z) plus
``roi_margin_mm`` on every side, clipped to the volume. ``prepare`` takes it from the ground
truth, each face moved by up to ``roi_jitter_mm`` (drawn once per case, seeded by the case id)
so a stage-2 model learns boxes as imprecise as a stage-1 model's; at inference a stage-1 model
gives it (:class:`~kdseg.eval.inference.CascadePredictor`). Only the ROI's slices are
returned, so the slice cache holds organ slices only.

Organ-relative HU window (``window_level: organ``, needs ``roi: organ``; beyond the paper):
``window`` is then taken relative to the organ's level L, the median HU of its voxels
(:func:`organ_level`), and ``[L + window[0], L + window[1]]`` is mapped to [-1, 1]. A liver
spans 50-180 HU with the contrast phase: a fixed window either flattens the bright ones
(the paper's [-60, 140]) or halves every tumor's contrast (a wide one); a window centred on
the organ keeps both. ``prepare`` takes L from the ground truth, a cascade from stage 1's mask.

Because training reads exactly what :meth:`Preprocessor.image` returns
(through the cache) and prediction calls the same method, a model sees at prediction time what
it saw in training. :meth:`Preprocessor.restore` maps class probabilities of a batch of slices
back to the body box of the canonical grid (outside it is background), and
:meth:`Preprocessor.to_input_orientation` undoes the reorientation, so a predicted label volume
has exactly the input's shape and affine.
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import nibabel as nib
import numpy as np
from nibabel import orientations as ornt

from kdseg.data.io import voxel_sizes
from kdseg.data.resample import resize, touched
from kdseg.errors import InputError

BODY_HU = -500.0
ROI_KINDS = (None, "organ")
WINDOW_LEVELS = (None, "organ")
LABEL_RESIZES = (None, "nearest-exact")
CHUNK_SLICES = 16  # slices preprocessed together (Preprocessor.image): cache-sized blocks
Box3D = tuple[int, int, int, int, int, int]
"""A canonical-grid box ``(x0, x1, y0, y1, z0, z1)``, half-open."""


@dataclass(frozen=True)
class PreprocessConfig:
    """What turns a CT volume into model input; hashed to name the slice cache.

    window: HU range mapped linearly to [-1, 1] (clipped). axcodes: canonical orientation.
    body_crop: crop each volume in-plane to the bounding box of voxels above -500 HU plus
    ``body_margin`` voxels (less air, faster inference). in_plane_size: resize slices to this
    (None keeps the native matrix). crop_size: centre crop / pad to this (the paper's 384).
    store_dtype: precision of the cache, applied on the prediction path too.
    spacing_mm: in-plane pixel spacing ``(sx, sy)`` in mm along the canonical x and y axes to
    resample to (None keeps the native spacing); see the module docstring for how it combines
    with in_plane_size. roi: ``None`` or ``"organ"`` (crop to the organ's 3D box, given by the
    ground truth in training and by a stage-1 model at inference). roi_margin_mm: margin around
    the organ box. roi_jitter_mm: largest random shift of each box face in training.
    roi_components: how many of a predicted organ mask's largest connected components make the
    box (a cascade's stage 1, unlabeled scans' masks): ``None`` (1) for one organ, 2 for paired
    kidneys; a further component counts only at a tenth of the largest's size or more (a
    stray blob does not widen the box). Ground-truth boxes take all of the organ anyway.
    window_level: ``None`` (``window`` is absolute HU) or ``"organ"`` (``window`` is relative
    to the organ's median HU, given with the box; needs ``roi: organ``; beyond the paper).
    label_resize: how training labels (and hard teacher labels) are resized to the model grid.
    ``None`` (or ``"nearest"``): torch's ``nearest``, which takes each output pixel's corner, so
    a shrunk label sits about half an output pixel off the bilinear image (toward larger
    indices); kept as the default because every recorded run trained on it. ``"nearest-exact"``:
    the pixel's centre, aligned with the image. Images and predictions are not affected.
    """

    window: tuple[float, float] = (-60.0, 140.0)
    axcodes: str = "RAS"
    body_crop: bool = False
    body_margin: int = 4
    in_plane_size: tuple[int, int] | None = None
    crop_size: tuple[int, int] | None = None
    store_dtype: str = "float16"
    spacing_mm: tuple[float, float] | None = None
    roi: str | None = None
    roi_margin_mm: float = 10.0
    roi_jitter_mm: float = 5.0
    roi_components: int | None = None
    window_level: str | None = None
    label_resize: str | None = None

    def __post_init__(self) -> None:
        window = list(self.window)
        if len(window) != 2 or not all(np.isfinite(v) for v in window) or window[0] >= window[1]:
            raise InputError(  # [100, 100] divided by zero; [140, -60] made every voxel 1.0
                None, f"preprocess.window must be two finite HU values, low < high, got {window}"
            )
        try:
            floating = np.issubdtype(np.dtype(self.store_dtype), np.floating)
        except TypeError:
            floating = False
        if not floating:  # uint8 / int16 turned the [-1, 1] slices into 0, 1 (and 255) silently
            raise InputError(
                None,
                f"preprocess.store_dtype must be a float type (float16, float32), got "
                f"{self.store_dtype!r}",
            )
        for key in ("in_plane_size", "crop_size"):
            size = getattr(self, key)
            if size is not None and (
                len(size) != 2
                or not all(
                    isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1
                    for v in size
                )
            ):  # [0, 64] divided by zero, [64] failed to unpack, deep in the first case
                raise InputError(
                    None, f"preprocess.{key} must be [h, w] whole numbers >= 1, got {list(size)}"
                )
        axes = {c: i for i, pair in enumerate(("LR", "PA", "IS")) for c in pair}
        codes = str(self.axcodes)
        if len(codes) != 3 or sorted(axes.get(c, -1) for c in codes) != [0, 1, 2]:
            raise InputError(  # "RRS" failed deep in nibabel, in the first case
                None,
                f"preprocess.axcodes must name each axis once, one of L/R, P/A and I/S "
                f"(e.g. RAS, LPS), got {self.axcodes!r}",
            )
        if self.body_margin < 0:  # a negative margin cut the body box into the body
            raise InputError(None, f"preprocess.body_margin must be >= 0, got {self.body_margin}")
        if self.label_resize == "nearest":  # the default, spelled out: one digest for both
            object.__setattr__(self, "label_resize", None)
        if self.label_resize not in LABEL_RESIZES:
            raise InputError(
                None,
                "preprocess.label_resize must be null, 'nearest' or 'nearest-exact', got "
                f"{self.label_resize!r}",
            )
        if self.roi not in ROI_KINDS:
            raise InputError(None, f"preprocess.roi must be null or 'organ', got {self.roi!r}")
        if self.window_level not in WINDOW_LEVELS:
            raise InputError(
                None,
                f"preprocess.window_level must be null or 'organ', got {self.window_level!r}",
            )
        if self.window_level == "organ" and self.roi != "organ":
            raise InputError(
                None,
                "preprocess.window_level=organ needs preprocess.roi=organ (the organ whose "
                "median HU sets the window is the ROI's)",
            )
        if self.spacing_mm is not None:
            if len(self.spacing_mm) != 2 or not all(
                np.isfinite(s) and s > 0 for s in self.spacing_mm
            ):
                raise InputError(
                    None,
                    f"preprocess.spacing_mm must be two positive mm values, got "
                    f"{list(self.spacing_mm)}",
                )
            if self.in_plane_size is not None and self.crop_size is not None:
                raise InputError(
                    None,
                    "with preprocess.spacing_mm, in_plane_size is the pad / crop size of the "
                    "model grid: give it or crop_size, not both",
                )
        if self.roi_margin_mm < 0 or self.roi_jitter_mm < 0:
            raise InputError(None, "preprocess.roi_margin_mm and roi_jitter_mm must be >= 0")
        if self.roi_components == 1:  # the default, spelled out: one digest for both
            object.__setattr__(self, "roi_components", None)
        if self.roi_components is not None and (
            not isinstance(self.roi_components, (int, np.integer))
            or isinstance(self.roi_components, bool)
            or self.roi_components < 1
        ):
            raise InputError(
                None,
                "preprocess.roi_components must be null or a whole number >= 1 (2 for paired "
                f"kidneys), got {self.roi_components!r}",
            )

    @property
    def window_size(self) -> tuple[int, int] | None:
        """Size of the centre crop / pad after resampling (None: none)."""
        if self.spacing_mm is not None:
            return self.in_plane_size or self.crop_size
        return self.crop_size

    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> PreprocessConfig:
        """Build from a (Hydra) mapping; lists become tuples."""

        def tup(v: Any) -> tuple | None:
            if v is None:
                return None
            return (int(v), int(v)) if isinstance(v, int) else tuple(v)

        return cls(
            window=tuple(float(x) for x in cfg.get("window", cls.window)),
            axcodes=str(cfg.get("axcodes", cls.axcodes)),
            body_crop=bool(cfg.get("body_crop", cls.body_crop)),
            body_margin=int(cfg.get("body_margin", cls.body_margin)),
            in_plane_size=tup(cfg.get("in_plane_size")),
            crop_size=tup(cfg.get("crop_size")),
            store_dtype=str(cfg.get("store_dtype", cls.store_dtype)),
            spacing_mm=None
            if cfg.get("spacing_mm") is None
            else tuple(float(v) for v in _pair(cfg["spacing_mm"])),
            roi=cfg.get("roi") or None,
            roi_margin_mm=float(cfg.get("roi_margin_mm", cls.roi_margin_mm)),
            roi_jitter_mm=float(cfg.get("roi_jitter_mm", cls.roi_jitter_mm)),
            roi_components=cfg.get("roi_components"),
            window_level=cfg.get("window_level") or None,
            label_resize=cfg.get("label_resize") or None,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (lists, not tuples) for checkpoints and cache metadata."""
        return json.loads(json.dumps(asdict(self)))

    def digest(self) -> str:
        """Short stable hash of the config: the name of its slice cache.

        Keys added after the first caches were made (spacing, ROI, window level, label
        resize, ROI components) count only when they are in use, so every older config keeps
        its digest and its cache.
        """
        plain = self.to_dict()
        for key in ("spacing_mm", "window_level", "label_resize", "roi_components"):
            if plain[key] is None:
                del plain[key]
        if self.roi is None:
            for key in ("roi", "roi_margin_mm", "roi_jitter_mm", "roi_components"):
                plain.pop(key, None)
        return hashlib.sha1(json.dumps(plain, sort_keys=True).encode()).hexdigest()[:10]


def _pair(v: Any) -> tuple:
    return (v, v) if isinstance(v, (int, float)) else tuple(v)


@dataclass
class Geometry:
    """Everything needed to map model-grid slices back onto the input volume."""

    input_shape: tuple[int, int, int]
    affine: np.ndarray
    to_canonical: np.ndarray  # nibabel orientation transform input -> canonical
    canonical_shape: tuple[int, int, int]  # (X, Y, Z) after reorientation
    spacing: tuple[float, float, float]  # canonical voxel size in mm (X, Y, Z)
    box: tuple[int, int, int, int]  # in-plane (x0, x1, y0, y1) kept by the body crop
    resized: tuple[int, int]  # in-plane size after resize (before crop / pad)
    crop_offset: tuple[int, int]  # start of the centre crop (negative: padding)
    crop_size: tuple[int, int] | None = None
    z_range: tuple[int, int] | None = None  # canonical slices kept (an ROI's); None: all

    @property
    def slices(self) -> tuple[int, int]:
        """Half-open range of canonical slices the model sees."""
        return self.z_range or (0, self.canonical_shape[2])

    @property
    def model_size(self) -> tuple[int, int]:
        """In-plane size of the slices the model sees."""
        return self.resized if self.crop_size is None else self.crop_size


def _centre_offsets(size: tuple[int, int], target: tuple[int, int]) -> tuple[int, int]:
    return ((size[0] - target[0]) // 2, (size[1] - target[1]) // 2)


def _window(
    x: np.ndarray, offset: tuple[int, int], target: tuple[int, int], fill: np.ndarray | float
) -> np.ndarray:
    """Window ``[offset, offset + target)`` of the last two dims of ``x``; outside is ``fill``.

    ``out[..., i, j] = x[..., i + offset[0], j + offset[1]]``: a positive offset crops, a
    negative one pads, so the inverse of a window at ``o`` is the window at ``-o``. ``fill`` is
    a scalar or an array broadcastable to the output (a per-class fill for probabilities).
    """
    fill = np.asarray(fill, dtype=x.dtype)
    out = np.broadcast_to(fill, (*x.shape[:-2], *target)).copy()
    src, dst, count = [], [], []
    for size, off, tgt in zip(x.shape[-2:], offset, target, strict=True):
        s0, d0 = max(off, 0), max(-off, 0)
        src.append(s0)
        dst.append(d0)
        count.append(max(min(size - s0, tgt - d0), 0))
    out[..., dst[0] : dst[0] + count[0], dst[1] : dst[1] + count[1]] = x[
        ..., src[0] : src[0] + count[0], src[1] : src[1] + count[1]
    ]
    return out


class Preprocessor:
    """Forward preprocessing and its inverse for one :class:`PreprocessConfig`."""

    def __init__(self, config: PreprocessConfig) -> None:
        self.config = config

    def hu_window(self, level: float | None = None) -> tuple[float, float]:
        """The absolute HU window ``(lo, hi)``: ``window`` itself, or with ``window_level:
        organ`` ``window`` shifted by the organ level ``level`` rounded to a whole HU (so
        integer CT keeps :meth:`scale`'s fast path and the result does not hang on the last
        bits of a median).

        An organ-level config without ``level`` is refused (like an ROI config without a box);
        a ``level`` for an absolute window is a caller's mistake (ValueError).
        """
        lo, hi = (float(v) for v in self.config.window)
        if self.config.window_level is None:
            if level is not None:
                raise ValueError("an organ level was given for an absolute HU window")
            return lo, hi
        if level is None:
            raise InputError(
                None,
                "this model's HU window is relative to the organ's median HU "
                "(preprocess.window_level=organ): run it as stage 2 of a cascade, "
                "ckpt=[stage1.ckpt,stage2.ckpt]",
            )
        if not np.isfinite(level):
            raise InputError(None, f"organ level {level} HU is not a finite number")
        shift = float(round(level))
        return lo + shift, hi + shift

    def scale(self, hu: np.ndarray, level: float | None = None) -> np.ndarray:
        """HU window (:meth:`hu_window`, shifted by the organ ``level`` for an organ-level
        config) -> [-1, 1], clipped (a linear map; numpy keeps the tools' start-up fast).

        Integer CT is clipped in its own dtype when the window's ends are whole numbers it can
        hold (exact: the cast to float32 is exact), then mapped in place: the same float32
        values as ``(clip(hu) - lo) * (2 / (hi - lo)) - 1``, five times faster than clipping
        with a dtype cast and three temporaries.
        """
        lo, hi = self.hu_window(level)
        hu = np.asarray(hu)
        if np.issubdtype(hu.dtype, np.integer) and _holds(hu.dtype, lo, hi):
            out = np.clip(hu, int(lo), int(hi)).astype(np.float32)
        else:
            out = np.array(hu, dtype=np.float32)  # a copy: the input is never changed
            np.clip(out, lo, hi, out=out)
        out -= lo
        out *= 2.0 / (hi - lo)
        out -= 1.0
        return out

    # -- geometry ---------------------------------------------------------------------------
    def geometry(
        self, img: nib.Nifti1Image, canonical_hu: np.ndarray, roi: Box3D | None = None
    ) -> Geometry:
        """Work out the mapping for ``img`` whose canonical HU array is ``canonical_hu``.

        ``roi``: the organ's canonical box (before the margin), or None for no ROI.
        """
        cfg = self.config
        x, y, z = canonical_hu.shape
        spacing = self.spacing(img)
        box, z_range = (0, x, 0, y), (0, z)
        if roi is not None:
            grown = expand_box(roi, cfg.roi_margin_mm, spacing, (x, y, z))
            box, z_range = grown[:4], grown[4:]
        elif cfg.body_crop:
            body = canonical_hu.max(axis=2) > BODY_HU  # = (hu > t).any(2), no 52 M bool temp
            if body.any():
                xs, ys = np.nonzero(body.any(axis=1))[0], np.nonzero(body.any(axis=0))[0]
                m = cfg.body_margin
                box = (
                    max(int(xs[0]) - m, 0),
                    min(int(xs[-1]) + 1 + m, x),
                    max(int(ys[0]) - m, 0),
                    min(int(ys[-1]) + 1 + m, y),
                )
        extent = (box[1] - box[0], box[3] - box[2])
        if cfg.spacing_mm is not None:
            resized = tuple(
                max(int(round(n * s_in / s_out)), 1)
                for n, s_in, s_out in zip(extent, spacing[:2], cfg.spacing_mm, strict=True)
            )
        else:
            resized = cfg.in_plane_size or extent
        window = cfg.window_size
        offset = _centre_offsets(resized, window) if window else (0, 0)
        return Geometry(
            tuple(img.shape),
            img.affine.copy(),
            self._transform(img),
            (x, y, z),
            spacing,
            box,
            tuple(resized),
            offset,
            window,
            z_range,
        )

    def _transform(self, img: nib.Nifti1Image) -> np.ndarray:
        """nibabel orientation transform from ``img``'s voxel axes to the canonical ones."""
        return ornt.ornt_transform(
            ornt.io_orientation(img.affine), ornt.axcodes2ornt(self.config.axcodes)
        )

    def reorient(self, img: nib.Nifti1Image, data: np.ndarray | None = None) -> np.ndarray:
        """Array of ``img`` (or ``data`` on its grid) in the canonical orientation.

        A strided view, not a copy: copying a whole 512 x 512 x 200 volume costs more than
        preprocessing the body box that is actually used.
        """
        arr = np.asanyarray(img.dataobj) if data is None else data
        return ornt.apply_orientation(arr, self._transform(img))

    def spacing(self, img: nib.Nifti1Image) -> tuple[float, float, float]:
        """Voxel size in mm along the canonical axes."""
        zooms = voxel_sizes(img)
        return tuple(zooms[axis] for axis in transform_inverse_axes(self._transform(img)))

    # -- forward ----------------------------------------------------------------------------
    @staticmethod
    def _box_slices(
        canonical: np.ndarray, geom: Geometry, zs: tuple[int, int] | None = None
    ) -> np.ndarray:
        """The body box of a canonical ``(X, Y, Z)`` array as contiguous ``(Z, x, y)`` slices
        (canonical slices ``zs = (a, b)`` only when given, else all of ``geom.slices``).

        Cropping comes first, in the array's own dtype (int16 for CT), so casting, scaling and
        copying touch only the voxels that are used.
        """
        x0, x1, y0, y1 = geom.box
        z0, z1 = zs if zs is not None else geom.slices
        return np.ascontiguousarray(canonical[x0:x1, y0:y1, z0:z1].transpose(2, 0, 1))

    def _to_model_grid(
        self, boxed: np.ndarray, geom: Geometry, mode: str, fill: float
    ) -> np.ndarray:
        """(Z, x, y) body-box slices -> (Z, h, w) model-grid slices."""
        out = boxed
        if tuple(out.shape[-2:]) != geom.resized:
            out = resize(out, geom.resized, mode, antialias=mode == "bilinear")
        if geom.crop_size is not None:
            out = _window(out, geom.crop_offset, geom.crop_size, fill)
        return out

    def image(
        self,
        img: nib.Nifti1Image,
        roi: Box3D | None = None,
        threads: int = 1,
        level: float | None = None,
    ) -> tuple[np.ndarray, Geometry]:
        """Model-input slices ``(Z, h, w)`` float32 in [-1, 1] and the geometry to undo them.

        ``roi``: the organ's canonical box (from the ground truth or a stage-1 model); the
        margin is added here. A config with ``roi: organ`` needs one. ``level``: the organ's
        median HU (:func:`organ_level`), needed by and only given to a ``window_level: organ``
        config (see :meth:`hu_window`).

        Every step is per slice, so the slices are processed in blocks of
        :data:`CHUNK_SLICES`: a block's temporaries stay in the CPU cache (a fifth faster on
        one thread than the whole stack at once), and ``threads > 1`` spreads the blocks over
        threads (numpy releases the GIL in these loops: twice as fast on two cores, which a
        one-scan prediction has to itself). The values are the same either way.
        """
        if roi is None and self.config.roi == "organ":
            raise InputError(
                None,
                "this model was trained on organ ROIs (preprocess.roi=organ): run it as stage 2 "
                "of a cascade, ckpt=[stage1.ckpt,stage2.ckpt]",
            )
        self.hu_window(level)  # refuses a missing level before any work
        canonical = self.reorient(img)
        geom = self.geometry(img, canonical, roi)
        z0, z1 = geom.slices
        starts = range(z0, z1, CHUNK_SLICES)
        h, w = geom.crop_size or geom.resized
        out = np.empty((z1 - z0, h, w), dtype=np.float32)

        def block(a: int) -> None:
            b = min(a + CHUNK_SLICES, z1)
            scaled = self.scale(self._box_slices(canonical, geom, (a, b)), level)
            slices = self._to_model_grid(scaled, geom, "bilinear", fill=-1.0)
            out[a - z0 : b - z0] = slices.astype(self.config.store_dtype)

        if threads > 1 and len(starts) > 1:
            with ThreadPoolExecutor(min(threads, len(starts))) as pool:
                list(pool.map(block, starts))  # list(): re-raises a block's exception here
        else:
            for a in starts:
                block(a)
        return out, geom

    def label(self, label: np.ndarray, img: nib.Nifti1Image, geom: Geometry) -> np.ndarray:
        """Label slices ``(Z, h, w)`` uint8 on the model grid (nearest neighbour, as
        ``label_resize`` says)."""
        boxed = self._box_slices(self.reorient(img, label), geom).astype(np.uint8, copy=False)
        return self._to_model_grid(boxed, geom, self.label_mode, fill=0)

    @property
    def label_mode(self) -> str:
        """The :func:`~kdseg.data.resample.resize` mode of labels (``label_resize``)."""
        return self.config.label_resize or "nearest"

    def probabilities(
        self, probs: np.ndarray, img: nib.Nifti1Image, geom: Geometry, mode: str = "bilinear"
    ) -> np.ndarray:
        """Class probabilities ``(C, *img.shape)`` -> ``(Z, C, h, w)`` float32 on the model grid.

        The image's own steps, channel by channel (stored teacher predictions go where the
        slices go): bilinear like the image, or ``nearest`` for one-hot hard labels; what the
        centre crop pads is background.
        """
        grids = []
        for c, channel in enumerate(probs):
            boxed = self._box_slices(self.reorient(img, channel), geom).astype(np.float32)
            grids.append(self._to_model_grid(boxed, geom, mode, fill=float(c == 0)))
        return np.stack(grids, 1).astype(np.float32, copy=False)

    # -- inverse ----------------------------------------------------------------------------
    def restore(self, probs: np.ndarray, geom: Geometry) -> np.ndarray:
        """Class probabilities ``(B, C, h, w)`` on the model grid -> ``(B, C, x, y)`` on the box.

        Regions cropped away by the centre crop become background with probability 1; resizing
        is bilinear on probabilities, before any decision. Everything outside ``geom.box`` is
        background, so callers decide on the box and leave the rest of the canonical grid 0
        (padding every batch's probabilities to the full 512 x 512 matrix would cost more than
        the model on a small input).
        """
        return self.restore_window(probs, geom)[0]

    def restore_window(
        self,
        probs: np.ndarray,
        geom: Geometry,
        rows: tuple[int, int] | None = None,
        cols: tuple[int, int] | None = None,
    ) -> tuple[np.ndarray, tuple[int, int, int, int]]:
        """:meth:`restore` of only the box pixels that model-grid ``rows`` x ``cols`` reach.

        Returns the probabilities there and their window ``(a0, a1, b0, b1)`` on the box (all
        of it when ``rows`` and ``cols`` are None). Every
        other box pixel interpolates model-grid pixels outside ``rows`` x ``cols`` alone, so a
        caller who knows that background wins there (as :class:`~kdseg.eval.inference.Predictor`
        does) can leave them background without computing them: the same labels, faster.
        """
        probs = np.asarray(probs, dtype=np.float32)
        c = probs.shape[1]
        if geom.crop_size is not None:
            background = np.zeros(c, dtype=probs.dtype)
            background[0] = 1.0
            inverse_offset = (-geom.crop_offset[0], -geom.crop_offset[1])
            probs = _window(probs, inverse_offset, geom.resized, background.reshape(1, -1, 1, 1))
        x0, x1, y0, y1 = geom.box
        size = (x1 - x0, y1 - y0)
        src = probs.shape[-2:]
        window = (0, size[0], 0, size[1])
        if rows is not None and cols is not None:
            offset = geom.crop_offset if geom.crop_size is not None else (0, 0)
            # model-grid index i is index i + offset of the (padded) resized grid
            # (clamped to the grid: foreground only in the padding reaches no box pixel)
            spans = [
                touched(n, m, min(max(lo + o, 0), n), max(min(hi + o, n), 0))
                for (lo, hi), o, n, m in zip((rows, cols), offset, src, size, strict=True)
            ]
            window = (*spans[0], *spans[1])
            if window[0] >= window[1] or window[2] >= window[3]:
                return probs[..., :0, :0], (0, 0, 0, 0)
        if tuple(src) != size:
            return resize(probs, size, "bilinear", window=window), window
        return probs[..., window[0] : window[1], window[2] : window[3]], window

    def to_input_orientation(self, canonical: np.ndarray, geom: Geometry) -> np.ndarray:
        """Map a canonical ``(X, Y, Z)`` array back onto the input's voxel grid.

        The result is Fortran-ordered, the order NIfTI stores voxels in, so writing it is one
        contiguous copy (nibabel writes a C-ordered array in many small strided chunks).
        """
        back = ornt.ornt_transform(
            ornt.axcodes2ornt(self.config.axcodes), ornt.io_orientation(geom.affine)
        )
        out = np.asfortranarray(ornt.apply_orientation(canonical, back))
        assert out.shape == geom.input_shape, (out.shape, geom.input_shape)
        return out


def _holds(dtype: np.dtype, lo: float, hi: float) -> bool:
    """Whether ``lo`` and ``hi`` are whole numbers within the range of integer ``dtype``."""
    info = np.iinfo(dtype)
    return all(v.is_integer() and info.min <= v <= info.max for v in (lo, hi))


def organ_box(mask: np.ndarray) -> Box3D | None:
    """Box ``(x0, x1, y0, y1, z0, z1)`` of the nonzero voxels of ``mask`` (None if none)."""
    lo_hi = []
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        hits = np.nonzero(np.asarray(mask).any(axis=others))[0]
        if hits.size == 0:
            return None
        lo_hi += [int(hits[0]), int(hits[-1]) + 1]
    return tuple(lo_hi)  # type: ignore[return-value]


def organ_level(hu: np.ndarray, mask: np.ndarray, box: Box3D | None = None) -> float | None:
    """The organ's level: median HU of ``hu`` where ``mask`` is true, rounded to a whole HU.

    ``box`` (canonical, half-open) restricts both arrays to it first, so a caller holding the
    organ's box pays for its voxels only, not the whole volume. None when the mask is empty.
    The level of a ``window_level: organ`` config (:meth:`Preprocessor.hu_window`): from the
    ground truth in ``prepare``, from stage 1's organ in a cascade.
    """
    if box is not None:
        x0, x1, y0, y1, z0, z1 = box
        hu, mask = hu[x0:x1, y0:y1, z0:z1], mask[x0:x1, y0:y1, z0:z1]
    values = np.asarray(hu)[np.asarray(mask, dtype=bool)]
    if values.size == 0:
        return None
    return float(np.round(np.median(values)))


def _margin_voxels(margin_mm: float, spacing: float) -> int:
    """``margin_mm`` in whole voxels of size ``spacing``, rounded up."""
    return int(np.ceil(margin_mm / spacing - 1e-6))


def expand_box(
    box: Box3D,
    margin_mm: float,
    spacing: tuple[float, float, float],
    shape: tuple[int, int, int],
) -> Box3D:
    """``box`` grown by ``margin_mm`` on every side (rounded up to whole voxels), clipped to
    ``shape``; always at least one voxel wide."""
    out = []
    for axis in range(3):
        m = _margin_voxels(margin_mm, spacing[axis])
        lo = min(max(box[2 * axis] - m, 0), shape[axis] - 1)
        hi = max(min(box[2 * axis + 1] + m, shape[axis]), lo + 1)
        out += [lo, hi]
    return tuple(out)  # type: ignore[return-value]


def jitter_box(
    box: Box3D,
    jitter_mm: float,
    spacing: tuple[float, float, float],
    rng: np.random.Generator,
    margin_mm: float | None = None,
) -> Box3D:
    """Each face of ``box`` moved by a uniform draw in ``[-jitter_mm, jitter_mm]`` (whole
    voxels); a face never crosses its opposite one. Training boxes imitate stage-1 boxes.

    ``margin_mm``: the margin :func:`expand_box` adds afterwards; a face then moves inwards by
    at most that margin's voxels, so the grown box still holds all of ``box`` (a jitter above
    the margin cut the organ out of its own training crop). With ``jitter_mm <= margin_mm``
    the limit never binds: the same boxes as without it.
    """
    out = list(box)
    for axis in range(3):
        shift = np.round(rng.uniform(-jitter_mm, jitter_mm, size=2) / spacing[axis]).astype(int)
        if margin_mm is not None:
            m = _margin_voxels(margin_mm, spacing[axis])
            shift = [min(int(shift[0]), m), max(int(shift[1]), -m)]
        lo, hi = box[2 * axis] + int(shift[0]), box[2 * axis + 1] + int(shift[1])
        if hi <= lo:
            lo, hi = box[2 * axis], box[2 * axis + 1]
        out[2 * axis], out[2 * axis + 1] = lo, hi
    return tuple(out)  # type: ignore[return-value]


def transform_inverse_axes(transform: np.ndarray) -> list[int]:
    """For each canonical axis, the input axis it came from (from a nibabel ornt transform)."""
    source = [0, 0, 0]
    for in_axis, (out_axis, _flip) in enumerate(transform):
        source[int(out_axis)] = in_axis
    return source
