"""One training or evaluation item: a (case, slice) of the prepared cache, augmented.

:class:`SliceDataset` reads one slice (with its ``2 * context`` neighbours, clamped at the
volume ends), its label on the task's classes and, with a teacher-target cache, the stored
teacher probabilities; :func:`build_augment` is the MONAI transform that moves them together
(the training patch, flips, quarter turns), run under :func:`plain_tensors`. The dataset also
marks each slice as a target slice or not, with its draw weight
(:func:`lesion_slice_weights`), for the samplers of :mod:`kdseg.data.datamodule`.

Apart from the data module (loaders, samplers, resumable draws) since reading and augmenting
one item is a task of its own, and is checked alone: a slice's context channels against the
ones prediction stacks, the augmentation's draws with and without MONAI's metadata.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import get_track_meta, set_track_meta
from monai.transforms import (
    Compose,
    RandCropByLabelClassesd,
    RandFlipd,
    RandRotate90d,
    RandSpatialCropd,
)
from monai.utils import convert_to_tensor
from torch.utils.data import Dataset

from kdseg.data.cache import CachedCase
from kdseg.data.loader_settings import check_lesion_targets, uses_tumor_targets
from kdseg.data.rng import derive_seed
from kdseg.data.tasks import Task
from kdseg.data.teacher_targets import teacher_slice

TUMOR = 2  # the tumor label of the cached (LiTS / KiTS) labels


def build_augment(
    augment: dict[str, bool],
    patch_size: list[int] | None = None,
    patch_ratios: list[float] | None = None,
) -> Compose:
    """MONAI dictionary transforms that move image and label together (N-D spatial axes):
    the training patch (when ``patch_size`` is set) first, then the flips and rotations."""
    keys = ["image", "label", "teacher"]  # teacher: stored teacher probabilities, when present
    transforms: list[Any] = []
    if patch_size is not None and patch_ratios is not None:
        transforms.append(
            RandCropByLabelClassesd(
                keys,
                label_key="label",
                spatial_size=list(patch_size),
                ratios=list(patch_ratios),
                num_classes=len(patch_ratios),
                num_samples=1,
                warn=False,  # a class the slice lacks is skipped: expected, not news
                allow_missing_keys=True,
            )
        )
    elif patch_size is not None:
        transforms.append(
            RandSpatialCropd(
                keys, roi_size=list(patch_size), random_size=False, allow_missing_keys=True
            )
        )
    if augment.get("flip", False):
        transforms += [
            RandFlipd(keys, prob=0.5, spatial_axis=0, allow_missing_keys=True),
            RandFlipd(keys, prob=0.5, spatial_axis=1, allow_missing_keys=True),
        ]
    if augment.get("rot90", False):
        transforms.append(
            RandRotate90d(keys, prob=0.5, max_k=3, spatial_axes=(0, 1), allow_missing_keys=True)
        )
    return Compose(transforms)


@contextmanager
def plain_tensors() -> Iterator[None]:
    """MONAI transforms on plain tensors: no MetaTensor, no transform history (restored after).
    The pixels and the random draws are the same, bit for bit; the metadata bookkeeping was
    three quarters of the augmentation's time (2.1 ms against 0.5 ms a 96 x 96 slice), and
    training never reads it. The flag is per process, so each loader worker sets its own."""
    old = get_track_meta()
    set_track_meta(False)
    try:
        yield
    finally:
        set_track_meta(old)


class SliceDataset(Dataset):
    """(case, slice) items from memory-mapped cached cases."""

    def __init__(
        self,
        cases: list[CachedCase],
        task: Task,
        context: int = 0,
        only_target: bool = False,
        transform: Compose | None = None,
        target_slices: str = "auto",
        teacher_dir: Path | None = None,
        target_weighting: str | None = None,
    ) -> None:
        self.cases = cases
        self.task = task
        self.context = context
        self.transform = transform
        self.teacher_dir = teacher_dir
        self.index: list[tuple[int, int]] = []
        self.is_target: list[bool] = []
        #: per item: its draw weight among the target slices (1 each unless weighted by lesion)
        self.target_weight: list[float] = []
        use_tumor = uses_tumor_targets(target_slices, task)
        #: what a target slice holds (the tumor or the organ), for the lines that name it
        self.target = "tumor" if use_tumor else "organ"
        check_lesion_targets(target_weighting, use_tumor)
        for ci, case in enumerate(cases):
            targets = set(case.tumor_slices if use_tumor else case.organ_slices)
            weights = (
                lesion_slice_weights(np.asarray(case.label))
                if target_weighting == "lesion" and case.labeled and targets
                else {}
            )
            for z in range(case.n_slices):
                if only_target and z not in targets:
                    continue
                self.index.append((ci, z))
                self.is_target.append(z in targets)
                self.target_weight.append(weights.get(z, 1.0) if z in targets else 0.0)

    def __len__(self) -> int:
        return len(self.index)

    def __getitems__(self, indices: list[int]) -> list[dict[str, Any]]:
        """A batch's items, as torch's loaders read them (``[self[i] for i in indices]``);
        ``indices`` with a ``seed`` (a :class:`~kdseg.data.resumable.SeededBatch`) reseeds
        the augmentation first, so the batch's draws are its own."""
        seed_batch(self.transform, indices)
        return [self[i] for i in indices]

    def __getitem__(self, i: int) -> dict[str, Any]:
        ci, z = self.index[i]
        case = self.cases[ci]
        zs = np.clip(np.arange(z - self.context, z + self.context + 1), 0, case.n_slices - 1)
        image = torch.from_numpy(np.asarray(case.image[zs], dtype=np.float32))
        if case.labeled:
            label = self.task.to_model(np.asarray(case.label[z : z + 1])).astype(np.int64)
        else:
            label = np.zeros((1, *image.shape[1:]), dtype=np.int64)
        item = {"image": image, "label": torch.from_numpy(label)}
        if self.teacher_dir is not None:
            item["teacher"] = torch.from_numpy(teacher_slice(self.teacher_dir, case, z, self.task))
        if self.transform is not None:
            with plain_tensors():
                item = self.transform(item)
                if isinstance(item, list):  # a label-class crop returns its one sample in a list
                    (item,) = item
                item = convert_to_tensor(item, track_meta=False)
        out = {k: v.contiguous() for k, v in item.items()}
        return {**out, "labeled": case.labeled, "case": case.case_id, "slice": z}


def seed_batch(transform: Compose | None, indices: list[int], stream: int = 0) -> None:
    """Seed ``transform``'s random streams from ``indices.seed`` where the batch has one.
    ``stream``: which of a batch's transforms this is (a dataset of several sets, each with
    its own): the first takes the batch's seed itself, the others seeds of their own from it."""
    seed = getattr(indices, "seed", None)
    if transform is None or seed is None:
        return
    if stream:
        seed = derive_seed(seed, stream)
    transform.set_random_state(seed=seed)


def lesion_slice_weights(label: np.ndarray) -> dict[int, float]:
    """``{z: weight}`` over the slices (axis 0) of a label volume that hold tumor: the sum,
    over the 3D connected tumors (6-connectivity) that slice z cuts, of 1 / the number of
    slices the tumor spans. Drawn by these weights, every tumor is drawn equally often.

    The tumors are 6-connected (``ndimage.label``'s default: voxels touching by a face),
    whereas evaluation and preparation count lesions 26-connected (touching by a corner
    too): two tumors meeting only at an edge or corner are two tumors here and one lesion
    there. Kept as it is: the recorded studies and pilots drew by these weights."""
    from scipy import ndimage

    components, _ = ndimage.label(label == TUMOR)
    weights: dict[int, float] = {}
    for box in ndimage.find_objects(components):
        if box is None:
            continue
        start, stop = box[0].start, box[0].stop  # a 3D-connected tumor spans every z between
        for z in range(start, stop):
            weights[z] = weights.get(z, 0.0) + 1.0 / (stop - start)
    return weights
