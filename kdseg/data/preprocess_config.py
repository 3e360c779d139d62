"""What turns a CT volume into model input: :class:`PreprocessConfig`, validated and hashed.

The config is what a checkpoint, an exported artefact and a slice cache carry to say how their
slices were made (as a plain dict, :meth:`PreprocessConfig.to_dict`; its
:meth:`~PreprocessConfig.digest` names the cache). It lives apart from the
:class:`~kdseg.data.preprocess.Preprocessor` that applies it because most of its readers (the
checkpoint and artefact checks, the dataset, distillation's teacher / data comparison) need
the settings only, not the preprocessing machinery; it imports numpy alone.

``spacing_mm`` and ``in_plane_size`` together: the box is resampled to ``spacing_mm`` (its pixel
count is the box extent in mm over the spacing, rounded, so the actual spacing is within half a
pixel of it) and then centre padded / cropped to ``in_plane_size``, which fixes the size of
the model grid (training batches need one size) without changing the spacing. Alone,
``in_plane_size`` resizes the box to that size whatever its extent (the old behaviour), and
``spacing_mm`` alone gives a grid whose size follows the box. ``crop_size`` is that same
centre crop / pad after resizing; with ``spacing_mm`` give it or ``in_plane_size``, not both.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from kdseg.errors import InputError

ROI_KINDS = (None, "organ")
WINDOW_LEVELS = (None, "organ")
LABEL_RESIZES = (None, "nearest-exact")
SPACING_MM = (0.05, 20.0)
"""Voxel sizes a CT can have (mm): the pixel spacings ``spacing_mm`` may resample to, and
those a scan's header may give (:func:`kdseg.data.io.voxel_sizes`' check); below them a slice
of a few hundred mm is millions of pixels on a side (no memory holds it)."""
GRID_SIZE = (8, 4096)
"""Pixels ``in_plane_size`` / ``crop_size`` may give each side of the model grid: below 8 no
network of kdseg downsamples it, above 4096 a batch of slices outgrows any memory."""


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
        low, high = GRID_SIZE
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
            if size is not None and not all(low <= v <= high for v in size):
                raise InputError(  # [200000, 200000]: a MemoryError deep in the first case
                    None,
                    f"preprocess.{key} must be [h, w] whole numbers from {low} to {high}, got "
                    f"{list(size)}",
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
            low, high = SPACING_MM
            if len(self.spacing_mm) != 2 or not all(
                np.isfinite(s) and low <= s <= high for s in self.spacing_mm
            ):  # 1e-9: "array is too big" deep in the first case
                raise InputError(
                    None,
                    f"preprocess.spacing_mm must be two mm values from {low:g} to {high:g}, "
                    f"got {list(self.spacing_mm)}",
                )
            if self.in_plane_size is not None and self.crop_size is not None:
                raise InputError(
                    None,
                    "with preprocess.spacing_mm, in_plane_size is the pad / crop size of the "
                    "model grid: give it or crop_size, not both",
                )
        if not (self.roi_margin_mm >= 0 and self.roi_jitter_mm >= 0) or not all(
            math.isfinite(v) for v in (self.roi_margin_mm, self.roi_jitter_mm)
        ):
            raise InputError(
                None, "preprocess.roi_margin_mm and roi_jitter_mm must be finite and >= 0"
            )
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
    def from_dict(cls, cfg: Mapping[str, Any]) -> PreprocessConfig:
        """Build from a (Hydra) mapping; lists become tuples. A value of the wrong kind
        (``in_plane_size=64.5``, ``spacing_mm=abc``, ``window=[a,b]``, NaN) is an
        :class:`InputError` naming its key, not a ``TypeError`` deep inside."""
        window = cfg.get("window", cls.window)
        if not _is_list(window):
            raise InputError(
                None, f"preprocess.window must be two finite HU values, low < high, got {window!r}"
            )
        margin = cfg.get("body_margin", cls.body_margin)
        if not _whole(margin):
            raise InputError(None, f"preprocess.body_margin must be a whole number, got {margin!r}")
        body_crop = cfg.get("body_crop", cls.body_crop)
        if not isinstance(body_crop, (bool, np.bool_)):
            raise InputError(None, f"preprocess.body_crop must be true or false, got {body_crop!r}")
        spacing = cfg.get("spacing_mm")
        return cls(
            window=tuple(_number("window", v) for v in window),
            axcodes=str(cfg.get("axcodes", cls.axcodes)),
            body_crop=bool(body_crop),
            body_margin=int(margin),
            in_plane_size=_size("in_plane_size", cfg.get("in_plane_size")),
            crop_size=_size("crop_size", cfg.get("crop_size")),
            store_dtype=str(cfg.get("store_dtype", cls.store_dtype)),
            spacing_mm=None
            if spacing is None
            else tuple(_number("spacing_mm", v) for v in _pair("spacing_mm", spacing)),
            roi=cfg.get("roi") or None,
            roi_margin_mm=_number("roi_margin_mm", cfg.get("roi_margin_mm", cls.roi_margin_mm)),
            roi_jitter_mm=_number("roi_jitter_mm", cfg.get("roi_jitter_mm", cls.roi_jitter_mm)),
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


def _is_list(v: Any) -> bool:
    """A list of values (a YAML / JSON list or Hydra's ListConfig, a tuple), not text."""
    return isinstance(v, Sequence) and not isinstance(v, (str, bytes))


def _whole(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _number(key: str, v: Any) -> float:
    """``v`` as a float: a finite int or float (not a bool, not text), else an InputError."""
    number = not isinstance(v, (bool, np.bool_)) and isinstance(
        v, (int, float, np.integer, np.floating)
    )
    if not number or not math.isfinite(v):
        raise InputError(None, f"preprocess.{key} must hold finite numbers, got {v!r}")
    return float(v)


def _pair(key: str, v: Any) -> tuple:
    """One value for both axes, or the list of them (checked by the caller)."""
    if _is_list(v):
        return tuple(v)
    if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
        return (v, v)
    raise InputError(None, f"preprocess.{key} must be a number or [x, y] numbers, got {v!r}")


def _size(key: str, v: Any) -> tuple | None:
    """``in_plane_size`` / ``crop_size`` as ``(h, w)``: one whole number for both or a list of
    two (their count and range checked by ``__post_init__``)."""
    if v is None:
        return None
    if _whole(v):
        return (int(v), int(v))
    if _is_list(v) and all(_whole(x) for x in v):
        return tuple(int(x) for x in v)
    raise InputError(None, f"preprocess.{key} must be [h, w] whole numbers, got {_shown(v)}")


def _shown(v: Any) -> str:
    return repr(list(v)) if _is_list(v) else repr(v)
