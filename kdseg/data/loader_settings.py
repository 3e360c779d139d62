"""The slice loaders' settings (the ``data`` config's loader keys) and their checks, from the
config alone.

Torch-free, like :mod:`kdseg.data.patches`: :func:`~kdseg.data.dataset.resolve_data` runs
:func:`check_loader_settings` before a training run prepares its cache (minutes to hours on
real data), so a typo in ``data.sampling`` is refused in seconds, and
:class:`~kdseg.data.datamodule.SliceDataModule` runs the same checks on the loader it is given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kdseg.data.patches import check_patch
from kdseg.data.tasks import Task
from kdseg.errors import InputError

TARGET_SLICES = ("auto", "organ", "tumor")
SAMPLING = ("oversample", "target", "all")
VAL_SAMPLING = ("all", "target")
TARGET_WEIGHTING = (None, "slice", "lesion")  # null and slice: every target slice alike


@dataclass
class LoaderConfig:
    """How slices are drawn and batched (the ``data`` config's loader keys)."""

    task: str = "multiclass"
    context: int = 0
    batch_size: int = 16
    num_workers: int = 0
    sampling: str = "oversample"
    target_fraction: float = 0.5
    target_slices: str = "auto"
    target_weighting: str | None = None
    samples_per_epoch: int | None = None
    val_sampling: str = "all"
    augment: dict[str, bool] = field(default_factory=lambda: {"flip": True, "rot90": True})
    unlabeled_fraction: float = 0.0
    patch_size: list[int] | None = None
    patch_ratios: list[float] | None = None
    seed: int = 123


def loader_config(cfg: dict[str, Any], seed: int = 123) -> LoaderConfig:
    """The loader keys of a ``data`` config (the others left out), with the run's ``seed``."""
    keys = set(LoaderConfig.__dataclass_fields__) - {"seed"}
    return LoaderConfig(**{k: v for k, v in cfg.items() if k in keys}, seed=seed)


def uses_tumor_targets(target_slices: str, task: Task) -> bool:
    """Whether the target slices are those holding the tumor (``target_slices: tumor``, or
    ``auto`` for the tumor task) rather than the organ."""
    return target_slices == "tumor" or (target_slices == "auto" and task.name == "tumor")


def check_lesion_targets(target_weighting: str | None, use_tumor: bool) -> None:
    """``target_weighting: lesion`` weighs tumor slices by the tumors they cut: it needs the
    tumor slices as the target slices."""
    if target_weighting == "lesion" and not use_tumor:
        raise InputError(
            None,
            "data.target_weighting=lesion needs tumor target slices: set data.target_slices=tumor",
        )


def _whole(value: Any, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def check_loader_settings(
    cfg: LoaderConfig, unlabeled: bool = False, slice_size: tuple[int, int] | None = None
) -> None:
    """Refuse loader settings no loader can run, in one line each: an unknown ``sampling``,
    ``val_sampling``, ``target_slices`` or ``target_weighting``; ``lesion`` weighting without
    tumor target slices or with ``sampling: all``; ``context`` below 0, ``batch_size`` or
    ``samples_per_epoch`` below 1, ``num_workers`` below 0; ``unlabeled_fraction`` outside
    [0, 1), or above 0 with ``batch_size`` 1 when ``unlabeled`` scans are given (every batch
    keeps a labeled slice, so none would hold an unlabeled one); and the patch settings
    (:func:`~kdseg.data.patches.check_patch`, ``slice_size`` where the preprocessing fixes
    the slices' size)."""
    task = Task(cfg.task)
    if not _whole(cfg.context, 0):
        raise InputError(None, f"data.context must be a whole number >= 0, got {cfg.context!r}")
    fraction = cfg.unlabeled_fraction
    if (
        isinstance(fraction, bool)
        or not isinstance(fraction, (int, float))
        or not 0 <= fraction < 1
    ):
        raise InputError(None, f"data.unlabeled_fraction must be in [0, 1), got {fraction}")
    rot90 = bool((cfg.augment or {}).get("rot90", False))
    check_patch(cfg.patch_size, cfg.patch_ratios, task.num_classes, rot90, slice_size)
    if cfg.target_weighting not in TARGET_WEIGHTING:
        raise InputError(
            None,
            f"data.target_weighting must be null, slice or lesion, got {cfg.target_weighting!r}",
        )
    if cfg.target_weighting == "lesion" and cfg.sampling == "all":
        raise InputError(
            None, "data.target_weighting=lesion needs data.sampling=oversample or target"
        )
    if cfg.target_slices not in TARGET_SLICES:
        raise InputError(
            None, f"data.target_slices must be one of {TARGET_SLICES}, got {cfg.target_slices!r}"
        )
    check_lesion_targets(cfg.target_weighting, uses_tumor_targets(cfg.target_slices, task))
    for key, allowed in (("sampling", SAMPLING), ("val_sampling", VAL_SAMPLING)):
        if getattr(cfg, key) not in allowed:
            raise InputError(
                None, f"data.{key} must be one of {allowed}, got {getattr(cfg, key)!r}"
            )
    for key in ("batch_size", "samples_per_epoch"):
        value = getattr(cfg, key)
        if value is not None and not _whole(value, 1):
            raise InputError(None, f"data.{key} must be a whole number >= 1, got {value!r}")
    workers = cfg.num_workers  # -1: a ValueError of the DataLoader once training starts
    if not _whole(workers, 0):
        raise InputError(None, f"data.num_workers must be a whole number >= 0, got {workers!r}")
    if unlabeled and fraction > 0 and cfg.batch_size < 2:
        raise InputError(
            None,
            f"data.unlabeled_fraction={fraction} with data.batch_size=1: every batch keeps a "
            "labeled slice, so no unlabeled scan would ever be drawn; set data.batch_size >= 2 "
            "(or data.unlabeled_fraction=0)",
        )
