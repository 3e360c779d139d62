"""The training-patch settings (``data.patch_size``, ``data.patch_ratios``), checked from the
config alone, so that a bad one is refused before the dataset is prepared (minutes to hours
on real data) and not when the loader first opens the cached slices.

The patches themselves are MONAI crops built in :mod:`kdseg.data.slices`; this module is
torch-free, like the rest of the data config checks.
"""

from __future__ import annotations

import math
from typing import Any

from kdseg.errors import InputError


def not_square(what: str) -> InputError:
    """The refusal of non-square training tensors under ``data.augment.rot90`` (``what``:
    which size, e.g. ``"data.patch_size are 32 x 16"``)."""
    return InputError(
        None,
        "data.augment.rot90 turns training slices by quarter turns, so they must be square; "
        f"{what}: set a square size or data.augment.rot90=false",
    )


def check_patch(
    patch_size: Any,
    patch_ratios: Any,
    num_classes: int,
    rot90: bool = False,
    slice_size: tuple[int, int] | None = None,
) -> None:
    """``patch_size``: [h, w] whole numbers >= 1, or null; square when ``rot90`` turns the
    training slices (a quarter turn swaps height and width), and so must the slices be
    without a patch; at most ``slice_size`` (the slices' size where the preprocessing fixes
    it; otherwise both are checked on the cached slices when the loader opens them).
    ``patch_ratios``: null, or one finite weight > 0 per model class (it needs a patch)."""
    if patch_size is not None:
        if (
            not isinstance(patch_size, (list, tuple))
            or len(patch_size) != 2
            or not all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in patch_size
            )
        ):
            raise InputError(
                None,
                f"data.patch_size must be [h, w] whole numbers >= 1 or null, got {patch_size!r}",
            )
        h, w = patch_size
        if rot90 and h != w:
            raise not_square(f"data.patch_size are {h} x {w}")
        if slice_size is not None and (h > slice_size[0] or w > slice_size[1]):
            raise InputError(
                None,
                f"data.patch_size {[h, w]} is larger than the {slice_size[0]} x {slice_size[1]} "
                "slices the preprocessing makes: set it at most the slice size",
            )
    elif rot90 and slice_size is not None and slice_size[0] != slice_size[1]:
        raise not_square(f"the preprocessing makes {slice_size[0]} x {slice_size[1]} slices")
    if patch_ratios is None:
        return
    if patch_size is None:
        raise InputError(None, "data.patch_ratios needs data.patch_size")
    if (
        not isinstance(patch_ratios, (list, tuple))
        or len(patch_ratios) != num_classes
        or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < math.inf
            for v in patch_ratios
        )
    ):
        raise InputError(
            None,
            f"data.patch_ratios must be {num_classes} finite numbers > 0 (one per class of the "
            f"task), got {patch_ratios!r}",
        )
