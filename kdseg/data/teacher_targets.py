"""A teacher's saved predictions as a cache beside the slice cache (``teacher.predictions``).

Distilling from an external teacher (an nnU-Net, another toolkit, an earlier run) needs no live
network: its outputs per case are read from one folder, checked against the case's image,
put through the image's own preprocessing and cached like the slices, so a training item
carries the teacher's class probabilities on exactly its own grid. Files, by case id:

- ``<case>.npz`` (+ ``<case>.pkl``): nnU-Net v2 ``--save_probabilities`` (see
  :mod:`kdseg.data.nnunet`): ``probabilities`` ``(C, z, y, x)``, geometry in the ``.pkl``;
- ``<case>.nii.gz`` / ``.nii``: a 3D label volume (hard targets, one-hot; a singleton fourth
  axis ``(x, y, z, 1)`` is a label too) or a 4D
  ``(x, y, z, C)`` probability volume, on the image's grid (same shape and affine);
- ``<case>.npy``: a ``(C, x, y, z)`` probability volume in the image's (nibabel) voxel order.

Channels and label values are kdseg's 0 background / 1 organ / 2 tumor, or those named by a
``dataset.json`` in the folder (nnU-Net writes one beside its predictions). Probabilities must
be finite, in [0, 1] and sum to 1 over the channels. The cache stores ``(Z, 3, h, w)`` float16
over the dataset labels; :func:`teacher_slice` maps a slice to the task's classes.

Layout: ``<cache>/cases/<case_id>/teacher.npy`` and ``meta.json`` (written last).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np

from kdseg.data.cache import CachedCase, adopt_source, case_folder, is_prepared, source_stamp
from kdseg.data.io import AFFINE_TOLERANCE, load_volume
from kdseg.data.nnunet import (
    label_map_of,
    merge_channels,
    probabilities_on_image,
    remap_labels,
)
from kdseg.data.preprocess import Preprocessor
from kdseg.data.preprocess_config import PreprocessConfig
from kdseg.data.sources import Case, ImageCase
from kdseg.data.tasks import Task
from kdseg.errors import InputError, atomic_path, progress_steps, write_text_atomic

SUFFIXES = (".npz", ".nii.gz", ".nii", ".npy")
SUM_TOLERANCE = 0.02  # nnU-Net stores float16 probabilities


def find_prediction(folder: Path, case_id: str) -> Path:
    """The prediction file of ``case_id`` in ``folder`` (first of .npz, .nii.gz, .nii, .npy)."""
    for suffix in SUFFIXES:
        path = folder / f"{case_id}{suffix}"
        if path.exists():
            return path
    raise InputError(
        folder, f"no teacher prediction for case {case_id!r} ({case_id}.npz / .nii.gz / .npy)"
    )


def _check_probabilities(probs: np.ndarray, path: Path) -> np.ndarray:
    if not np.isfinite(probs).all():
        raise InputError(path, "probabilities contain NaN or Inf")
    if probs.min() < -1e-3 or probs.max() > 1 + 1e-3:
        raise InputError(
            path, f"probabilities outside [0, 1] ({probs.min():.3g}..{probs.max():.3g})"
        )
    worst = float(np.abs(probs.sum(0) - 1.0).max())
    if worst > SUM_TOLERANCE:
        raise InputError(
            path, f"probabilities do not sum to 1 over the channels (off by {worst:.3g})"
        )
    return np.clip(probs, 0.0, 1.0)


def _one_hot(label: np.ndarray, path: Path) -> np.ndarray:
    if label.max(initial=0) > 2:
        raise InputError(path, f"label value {int(label.max())} beyond 2 (0/1/2 after mapping)")
    return (label[None] == np.arange(3).reshape(3, 1, 1, 1)).astype(np.float32)


def load_prediction(
    path: Path, image: nib.Nifti1Image, label_map: tuple[tuple[int, int], ...] | None
) -> tuple[np.ndarray, bool]:
    """``((3, x, y, z) probabilities over kdseg labels on the image's grid, is_hard_label)``.

    Refuses a file whose shape or geometry is not the image's, or whose values are no labels
    or probabilities.
    """
    shape = tuple(image.shape)
    if path.name.endswith(".npz"):
        probs = probabilities_on_image(path, shape, image.affine, AFFINE_TOLERANCE)
    elif path.name.endswith(".npy"):
        try:
            probs = np.load(path, allow_pickle=False).astype(np.float32)
        except (OSError, ValueError) as exc:
            raise InputError(path, f"cannot read .npy ({exc})") from None
        if probs.ndim != 4 or tuple(probs.shape[1:]) != shape:
            raise InputError(path, f"shape {probs.shape}; expected (C, *{shape}) like the image")
    else:
        data, affine = _nifti(path)
        if not np.allclose(affine, image.affine, atol=AFFINE_TOLERANCE):
            raise InputError(path, "affine differs from the image affine (not the same geometry)")
        if tuple(data.shape[:3]) != shape:
            raise InputError(path, f"shape {data.shape[:3]} differs from image shape {shape}")
        if data.ndim == 3:
            if not np.isfinite(data).all() or (data != np.round(data)).any() or data.min() < 0:
                raise InputError(path, "a 3D prediction must hold whole label values")
            allowed = (0, 1, 2) if label_map is None else tuple(s for s, _ in label_map)
            unknown = sorted(set(np.unique(data).astype(np.int64).tolist()) - set(allowed))
            if unknown:  # not silently background, nor an index error
                raise InputError(
                    path, f"label values {unknown[:5]} are not among the labels {list(allowed)}"
                )
            label = remap_labels(data.astype(np.int64), label_map)
            return _one_hot(label, path), True
        probs = np.moveaxis(data, -1, 0).astype(np.float32)
    probs = _check_probabilities(probs, path)
    return merge_channels(probs, label_map, path), False


def _nifti(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A NIfTI's array (3D or 4D: load_volume accepts 3D only) and affine."""
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # noqa: BLE001 - any read failure is bad input here
        raise InputError(path, f"cannot read NIfTI ({type(exc).__name__}: {exc})") from None
    if data.ndim == 5 and data.shape[3] == 1:  # (x, y, z, 1, C): NIfTI's vector intent
        data = data[:, :, :, 0]
    if data.ndim == 4 and data.shape[3] == 1:  # (x, y, z, 1): a label (one channel cannot
        data = data[..., 0]  # sum to 1 as probabilities), read as load_volume reads labels
    if data.ndim not in (3, 4):
        raise InputError(path, f"expected a 3D label or 4D probability volume, got {data.shape}")
    return data, img.affine


def teacher_source(case: Case | ImageCase, prediction: Path) -> dict:
    """What a case's cached teacher targets are made from: the stored prediction (with the
    label mapping of its folder) and the case's own files, whose box and level cut it."""
    from kdseg.data.prepare import case_source

    stamp = case_source(case)
    prediction_map = label_map_of(prediction.parent)
    mine = source_stamp([prediction], prediction_map)
    return {
        "files": mine["files"] + stamp["files"],
        "label_map": [mine["label_map"], stamp["label_map"]],
    }


def prepare_teacher_case(
    case: Case | ImageCase, folder: Path, config: PreprocessConfig, cache_dir: Path
) -> str:
    """Check, preprocess and cache the stored prediction of one case; return its id.

    An organ-ROI config cuts the prediction with the box and level the case's image slices
    were cut with (:func:`kdseg.data.prepare.case_roi`: ground truth or the scan's mask), so
    teacher and image slices align. A case without organ gets none.
    """
    from kdseg.data.prepare import case_roi, cut_box

    case_id = case.case_id
    path = find_prediction(folder, case_id)
    source = teacher_source(case, path)
    image = load_volume(case.image)
    probs, hard = load_prediction(path, image, label_map_of(folder))
    pre = Preprocessor(config)
    roi, level = case_roi(case, pre, image) if config.roi is not None else (None, None)
    box, level, empty = cut_box(config, roi, level)
    _, geom = pre.image(image, box, level=level)
    grid = pre.probabilities(probs, image, geom, mode=pre.label_mode if hard else "bilinear")
    if empty:
        grid = grid[:0]
    out = case_folder(cache_dir, case_id)
    with atomic_path(out / "teacher.npy", suffix=".npy") as tmp:
        np.save(tmp, grid.astype(np.float16))
    _open.cache_clear()  # a map of the replaced file would go on reading it
    meta = {
        "case_id": case_id,
        "prediction": str(path),
        "hard": hard,
        "shape": list(grid.shape),
        "source": source,
    }
    write_text_atomic(out / "meta.json", json.dumps(meta) + "\n")
    return case_id


def prepare_teacher_targets(
    cases: Sequence[Case | ImageCase],
    folder: str | Path,
    config: PreprocessConfig,
    cache_dir: str | Path,
    progress: bool = True,
) -> None:
    """Cache the stored predictions of every case (labeled or an unlabeled scan) not yet
    cached. A prediction must exist for every case each time, cached or not: a case whose
    file has gone (a predictions folder written again without it) is refused as an uncached
    one, so a cache never mixes an earlier teacher's targets with a later one's."""
    folder, cache_dir = Path(folder), Path(cache_dir)
    if not folder.is_dir():
        raise InputError(folder, "teacher.predictions folder not found")
    write_text_atomic(
        cache_dir / "source.json",
        json.dumps({"predictions": str(folder), "preprocess": config.to_dict()}, indent=1),
    )
    todo = []
    for case in cases:
        source = teacher_source(case, find_prediction(folder, case.case_id))
        if is_prepared(cache_dir, case.case_id, source, TEACHER_ARRAYS):
            adopt_source(cache_dir, case.case_id, source)  # a cache of an earlier kdseg
        else:
            todo.append(case)
    description = f"teacher targets: {len(todo)} case(s)"
    with progress_steps(description, len(todo), enabled=progress) as bar:
        for case in todo:
            prepare_teacher_case(case, folder, config, cache_dir)
            bar.advance()


#: the array a teacher cache's case holds
TEACHER_ARRAYS = ("teacher.npy",)


@lru_cache(maxsize=512)
def _open(path: str) -> np.ndarray:
    """The memory map of ``path``, kept open (one per case); :func:`prepare_teacher_case`
    forgets them all when it rewrites a case, whose new file the old map would not see."""
    return np.load(path, mmap_mode="r")


def probabilities_to_task(probs: np.ndarray, task: Task) -> np.ndarray:
    """``(3, ...)`` probabilities over dataset labels -> ``(num_classes, ...)`` over the task's."""
    if task.name == "organ":
        return np.stack([probs[0], probs[1] + probs[2]])
    if task.name == "tumor":
        return np.stack([probs[0] + probs[1], probs[2]])
    return probs


def teacher_slice(cache_dir: Path, case: CachedCase, z: int, task: Task) -> np.ndarray:
    """The cached teacher probabilities of one slice, ``(num_classes, h, w)`` float32."""
    grid = _open(str(case_folder(cache_dir, case.case_id) / "teacher.npy"))
    return probabilities_to_task(np.asarray(grid[z], dtype=np.float32), task)
