"""Preprocessing as one object: the forward mapping used by ``prepare`` and ``predict``, and its
inverse back to the input's geometry, side by side.

Forward, per volume: reorient to a canonical orientation (RAS by default) -> optional crop to
the body's in-plane bounding box -> optional in-plane resize -> optional centre crop / pad ->
HU window scaled to [-1, 1] -> rounded to the storage dtype. Slices are axial and come out as
``(Z, X, Y)`` arrays. Because training reads exactly what :meth:`Preprocessor.image` returns
(through the cache) and prediction calls the same method, a model sees at prediction time what
it saw in training. :meth:`Preprocessor.restore` maps class probabilities of a batch of slices
back to the body box of the canonical grid (outside it is background), and
:meth:`Preprocessor.to_input_orientation` undoes the reorientation, so a predicted label volume
has exactly the input's shape and affine.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

import nibabel as nib
import numpy as np
from nibabel import orientations as ornt

from kdseg.data.resample import resize

BODY_HU = -500.0


@dataclass(frozen=True)
class PreprocessConfig:
    """What turns a CT volume into model input; hashed to name the slice cache.

    window: HU range mapped linearly to [-1, 1] (clipped). axcodes: canonical orientation.
    body_crop: crop each volume in-plane to the bounding box of voxels above -500 HU plus
    ``body_margin`` voxels (less air, faster inference). in_plane_size: resize slices to this
    (None keeps the native matrix). crop_size: centre crop / pad to this (the paper's 384).
    store_dtype: precision of the cache, applied on the prediction path too.
    """

    window: tuple[float, float] = (-60.0, 140.0)
    axcodes: str = "RAS"
    body_crop: bool = False
    body_margin: int = 4
    in_plane_size: tuple[int, int] | None = None
    crop_size: tuple[int, int] | None = None
    store_dtype: str = "float16"

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
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (lists, not tuples) for checkpoints and cache metadata."""
        return json.loads(json.dumps(asdict(self)))

    def digest(self) -> str:
        """Short stable hash of the config: the name of its slice cache."""
        return hashlib.sha1(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:10]


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

    def scale(self, hu: np.ndarray) -> np.ndarray:
        """HU window -> [-1, 1], clipped (a linear map; numpy keeps the tools' start-up fast)."""
        lo, hi = self.config.window
        return (np.clip(hu, lo, hi, dtype=np.float32) - lo) * (2.0 / (hi - lo)) - 1.0

    # -- geometry ---------------------------------------------------------------------------
    def geometry(self, img: nib.Nifti1Image, canonical_hu: np.ndarray) -> Geometry:
        """Work out the mapping for ``img`` whose canonical HU array is ``canonical_hu``."""
        cfg = self.config
        x, y, z = canonical_hu.shape
        box = (0, x, 0, y)
        if cfg.body_crop:
            body = (canonical_hu > BODY_HU).any(axis=2)
            if body.any():
                xs, ys = np.nonzero(body.any(axis=1))[0], np.nonzero(body.any(axis=0))[0]
                m = cfg.body_margin
                box = (
                    max(int(xs[0]) - m, 0),
                    min(int(xs[-1]) + 1 + m, x),
                    max(int(ys[0]) - m, 0),
                    min(int(ys[-1]) + 1 + m, y),
                )
        resized = cfg.in_plane_size or (box[1] - box[0], box[3] - box[2])
        offset = _centre_offsets(resized, cfg.crop_size) if cfg.crop_size else (0, 0)
        return Geometry(
            tuple(img.shape),
            img.affine.copy(),
            self._transform(img),
            (x, y, z),
            self.spacing(img),
            box,
            tuple(resized),
            offset,
            cfg.crop_size,
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
        zooms = img.header.get_zooms()[:3]
        return tuple(float(zooms[axis]) for axis in transform_inverse_axes(self._transform(img)))

    # -- forward ----------------------------------------------------------------------------
    @staticmethod
    def _box_slices(canonical: np.ndarray, geom: Geometry) -> np.ndarray:
        """The body box of a canonical ``(X, Y, Z)`` array as contiguous ``(Z, x, y)`` slices.

        Cropping comes first, in the array's own dtype (int16 for CT), so casting, scaling and
        copying touch only the voxels that are used.
        """
        x0, x1, y0, y1 = geom.box
        return np.ascontiguousarray(canonical[x0:x1, y0:y1].transpose(2, 0, 1))

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

    def image(self, img: nib.Nifti1Image) -> tuple[np.ndarray, Geometry]:
        """Model-input slices ``(Z, h, w)`` float32 in [-1, 1] and the geometry to undo them."""
        canonical = self.reorient(img)
        geom = self.geometry(img, canonical)
        scaled = self.scale(self._box_slices(canonical, geom))
        slices = self._to_model_grid(scaled, geom, "bilinear", fill=-1.0)
        stored = slices.astype(self.config.store_dtype).astype(np.float32)
        return stored, geom

    def label(self, label: np.ndarray, img: nib.Nifti1Image, geom: Geometry) -> np.ndarray:
        """Label slices ``(Z, h, w)`` uint8 on the model grid (nearest neighbour)."""
        boxed = self._box_slices(self.reorient(img, label), geom).astype(np.uint8, copy=False)
        return self._to_model_grid(boxed, geom, "nearest", fill=0)

    # -- inverse ----------------------------------------------------------------------------
    def restore(self, probs: np.ndarray, geom: Geometry) -> np.ndarray:
        """Class probabilities ``(B, C, h, w)`` on the model grid -> ``(B, C, x, y)`` on the box.

        Regions cropped away by the centre crop become background with probability 1; resizing
        is bilinear on probabilities, before any decision. Everything outside ``geom.box`` is
        background, so callers decide on the box and leave the rest of the canonical grid 0
        (padding every batch's probabilities to the full 512 x 512 matrix would cost more than
        the model on a small input).
        """
        probs = np.asarray(probs, dtype=np.float32)
        c = probs.shape[1]
        if geom.crop_size is not None:
            background = np.zeros(c, dtype=probs.dtype)
            background[0] = 1.0
            inverse_offset = (-geom.crop_offset[0], -geom.crop_offset[1])
            probs = _window(probs, inverse_offset, geom.resized, background.reshape(1, -1, 1, 1))
        x0, x1, y0, y1 = geom.box
        if tuple(probs.shape[-2:]) != (x1 - x0, y1 - y0):
            probs = resize(probs, (x1 - x0, y1 - y0), "bilinear")
        return probs

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


def transform_inverse_axes(transform: np.ndarray) -> list[int]:
    """For each canonical axis, the input axis it came from (from a nibabel ornt transform)."""
    source = [0, 0, 0]
    for in_axis, (out_axis, _flip) in enumerate(transform):
        source[int(out_axis)] = in_axis
    return source
