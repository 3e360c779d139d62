"""Preprocessing as one object: the forward mapping used by ``prepare`` and ``predict``, and its
inverse back to the input's geometry, side by side.

Forward, per volume: reorient to a canonical orientation (RAS by default) -> optional crop to a
box (the organ's 3D box plus a margin in mm when an ROI is given, else the body's in-plane
bounding box, else nothing) -> optional in-plane resampling (to ``spacing_mm``, or to a fixed
``in_plane_size``) -> optional centre crop / pad -> HU window scaled to [-1, 1] -> rounded to
the storage dtype. Slices are axial and come out as ``(Z, X, Y)`` arrays. The settings are a
:class:`~kdseg.data.preprocess_config.PreprocessConfig` (how ``spacing_mm``,
``in_plane_size`` and ``crop_size`` combine is told there).

Organ ROI (``roi: organ``): the box is the organ's 3D bounding box (in-plane and along z) plus
``roi_margin_mm`` on every side, clipped to the volume (:mod:`kdseg.data.boxes`). ``prepare``
takes it from the ground truth, each face moved by up to ``roi_jitter_mm`` (drawn once per
case, seeded by the case id) so a stage-2 model learns boxes as imprecise as a stage-1 model's;
at inference a stage-1 model gives it (:class:`~kdseg.eval.inference.CascadePredictor`). Only
the ROI's slices are returned, so the slice cache holds organ slices only.

Organ-relative HU window (``window_level: organ``, needs ``roi: organ``; beyond the paper):
``window`` is then taken relative to the organ's level L, the median HU of its voxels
(:func:`~kdseg.data.boxes.organ_level`), and ``[L + window[0], L + window[1]]`` is mapped to
[-1, 1]. A liver spans 50-180 HU with the contrast phase: a fixed window either flattens the
bright ones (the paper's [-60, 140]) or halves every tumor's contrast (a wide one); a window
centred on the organ keeps both. ``prepare`` takes L from the ground truth, a cascade from
stage 1's mask.

Because training reads exactly what :meth:`Preprocessor.image` returns
(through the cache) and prediction calls the same method, a model sees at prediction time what
it saw in training. :meth:`Preprocessor.restore` maps class probabilities of a batch of slices
back to the body box of the canonical grid (outside it is background), and
:meth:`Preprocessor.to_input_orientation` undoes the reorientation, so a predicted label volume
has exactly the input's shape and affine.

The config and the box helpers used to live here; their names are still importable from this
module (older scripts and notebooks import them from ``kdseg.data.preprocess``), but code in
the repository imports them from :mod:`kdseg.data.preprocess_config` and
:mod:`kdseg.data.boxes`.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import nibabel as nib
import numpy as np
from nibabel import orientations as ornt

from kdseg.data.boxes import Box3D, expand_box, jitter_box, organ_box, organ_level
from kdseg.data.io import voxel_sizes
from kdseg.data.preprocess_config import (
    LABEL_RESIZES,
    ROI_KINDS,
    WINDOW_LEVELS,
    PreprocessConfig,
)
from kdseg.data.resample import resize, touched
from kdseg.errors import InputError

__all__ = [
    "BODY_HU",
    "CHUNK_SLICES",
    "Geometry",
    "Preprocessor",
    "transform_inverse_axes",
    # re-exported from their new homes, for imports (and pickles) that name this module
    "LABEL_RESIZES",
    "ROI_KINDS",
    "WINDOW_LEVELS",
    "PreprocessConfig",
    "Box3D",
    "organ_box",
    "organ_level",
    "expand_box",
    "jitter_box",
]

BODY_HU = -500.0
CHUNK_SLICES = 16  # slices preprocessed together (Preprocessor.image): cache-sized blocks


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


def _extent(mask: np.ndarray, axis: int) -> tuple[int, int]:
    """Half-open range of the indices along ``axis`` where ``mask`` holds a True; (0, 0) if
    none."""
    held = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
    return (int(held[0]), int(held[-1]) + 1) if held.size else (0, 0)


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

    def input_indices(self, img: nib.Nifti1Image, axis: int) -> tuple[int, np.ndarray]:
        """``(input axis, index)``: the axis of ``img``'s array that canonical ``axis`` comes
        from, and for each canonical index along it the input's array index (reversed where
        reorienting flips that axis). What a canonical slice or box is called in the frame of
        the input's own voxels, the frame of the label written and the report's centroids."""
        transform = self._transform(img)
        source = transform_inverse_axes(transform)[axis]
        n = int(img.shape[source])
        index = np.arange(n)
        return source, index[::-1].copy() if transform[source][1] < 0 else index

    def input_box(self, img: nib.Nifti1Image, box: Box3D) -> tuple[int, ...]:
        """A non-empty half-open box ``(x0, x1, y0, y1, z0, z1)`` on the canonical grid as
        the same voxels' box in ``img``'s array indices (input axis order, half-open)."""
        out = [0] * 6
        for axis in range(3):
            source, index = self.input_indices(img, axis)
            ends = index[int(box[2 * axis])], index[int(box[2 * axis + 1]) - 1]
            out[2 * source : 2 * source + 2] = int(min(ends)), int(max(ends)) + 1
        return tuple(out)

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

    def lesions_kept(
        self, label: np.ndarray, img: nib.Nifti1Image, geom: Geometry, value: int = 2
    ) -> tuple[int, int]:
        """``(lesions, kept)``: the tumor lesions (26-connected components of ``value``) of
        ``label`` on the image grid, and how many keep a voxel on the model grid.

        A lesion smaller than the model grid's pixels (or outside its box or crop) is in no
        slice the network sees: the components are numbered and taken to the model grid as
        the label is (:meth:`label`), and the numbers left are the lesions kept. Only the
        lesions' bounding box is numbered, and only the slices that hold tumor are resized.
        """
        from scipy import ndimage  # here: ~0.14 s of every fresh kdseg-predict otherwise

        canonical = self.reorient(img, label == value)  # a view
        (x0, x1), (y0, y1), (z0, z1) = (_extent(canonical, axis) for axis in range(3))
        if z1 == 0:
            return 0, 0
        # the lesions' bounding box, 26-connected as the evaluation counts lesions
        block, n = ndimage.label(canonical[x0:x1, y0:y1, z0:z1], np.ones((3, 3, 3), bool))
        a, b = max(z0, geom.slices[0]), min(z1, geom.slices[1])
        if a >= b:
            return n, 0
        ids = np.zeros((*canonical.shape[:2], z1 - z0), np.uint8 if n < 256 else np.int32)
        ids[x0:x1, y0:y1] = block
        boxed = self._box_slices(ids, geom, zs=(a - z0, b - z0))  # ids start at slice z0
        grid = self._to_model_grid(boxed, geom, self.label_mode, 0)
        return n, int(np.unique(grid[grid > 0]).size)

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


def transform_inverse_axes(transform: np.ndarray) -> list[int]:
    """For each canonical axis, the input axis it came from (from a nibabel ornt transform)."""
    source = [0, 0, 0]
    for in_axis, (out_axis, _flip) in enumerate(transform):
        source[int(out_axis)] = in_axis
    return source
