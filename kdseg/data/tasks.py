"""Segmentation tasks: how dataset labels map to model classes and back.

Datasets label 0 background, 1 organ, 2 tumor. The clinical default trains one ``multiclass``
model (background / organ / tumor); the paper trains binary models per target: ``organ``
(label > 0, organ including tumor) or ``tumor`` (label == 2). Evaluation always happens in the
dataset's label space, on the classes ``organ`` (labels 1 and 2) and ``tumor`` (label 2).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # the deploy path imports this module and must not import torch
    import torch

EVAL_CLASSES: dict[str, tuple[int, ...]] = {"organ": (1, 2), "tumor": (2,)}


@dataclass(frozen=True)
class Task:
    """One of ``multiclass``, ``organ`` or ``tumor``."""

    name: str

    def __post_init__(self) -> None:
        if self.name not in ("multiclass", "organ", "tumor"):
            raise ValueError(f"unknown task {self.name!r}; use multiclass, organ or tumor")

    @property
    def num_classes(self) -> int:
        """Output channels of a model for this task."""
        return 3 if self.name == "multiclass" else 2

    @property
    def eval_classes(self) -> dict[str, tuple[int, ...]]:
        """Classes (in dataset labels) this task's predictions can be scored on."""
        if self.name == "multiclass":
            return dict(EVAL_CLASSES)
        return {self.name: EVAL_CLASSES[self.name]}

    @property
    def output_labels(self) -> tuple[int, ...]:
        """Dataset labels a model of this task predicts, background aside."""
        return {"multiclass": (1, 2), "organ": (1,), "tumor": (2,)}[self.name]

    @property
    def target_labels(self) -> tuple[int, ...]:
        """Dataset labels that make a slice 'contain the target' (for sampling, paper protocol)."""
        return EVAL_CLASSES["tumor"] if self.name == "tumor" else EVAL_CLASSES["organ"]

    def to_model(self, label: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Dataset labels -> model class indices (uint8 for arrays, int64 for tensors)."""
        if self.name == "multiclass":
            return label
        mask = label > 0 if self.name == "organ" else label == 2
        return mask.astype(np.uint8) if isinstance(mask, np.ndarray) else mask.long()

    def to_dataset(self, pred: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Model class indices -> dataset labels (a tumor model's class 1 is label 2)."""
        return pred * 2 if self.name == "tumor" else pred


#: how many components an organ kdseg's datasets name (``data.organ``) is made of
ORGAN_COMPONENTS = {"liver": 1, "kidney": 2}


#: the HU window of an organ's configs (``conf/data``: LiTS liver, KiTS19 kidney), for a
#: dataset that names its organ (``data=nnunet``: its ``dataset.json``)
ORGAN_WINDOWS = {"liver": (-60.0, 140.0), "kidney": (-200.0, 300.0)}


def organ_window(organ: object) -> tuple[float, float] | None:
    """The HU window of ``organ`` (a ``data.organ``, any case) from :data:`ORGAN_WINDOWS`;
    None for an organ kdseg has no window for, or none."""
    return _by_organ(ORGAN_WINDOWS, organ)


def organ_components(organ: object) -> int | None:
    """How many components ``organ`` (a ``data.organ``, any case) is made of, from
    :data:`ORGAN_COMPONENTS`; None for an organ kdseg does not know, or none."""
    return _by_organ(ORGAN_COMPONENTS, organ)


def _by_organ(table: Mapping[str, Any], organ: object) -> Any:
    """``table``'s entry for ``organ`` (a ``data.organ``, any case and spacing); None for none."""
    return None if organ is None else table.get(str(organ).strip().lower())


#: what a model's organ is called where its data section names none
DEFAULT_ORGAN = "organ"


def organ_name(data: Mapping[str, Any] | None) -> str:
    """The organ a data section (a run's ``data``, a checkpoint's data info) names, for
    labels: report headers, a dataset.json's label, a DICOM SEG segment. ``data.organ`` is
    None where an nnU-Net dataset.json names no single organ, or where a user sets
    ``data.organ=null``; it and an empty or missing one all read ``"organ"``."""
    organ = (data or {}).get("organ")
    name = "" if organ is None else str(organ).strip()
    return name or DEFAULT_ORGAN
