"""Organ boxes from predicted masks: the box of the largest connected component(s).

A predicted organ mask (a cascade's stage 1 at inference, or the masks that give unlabeled
scans their box in training, ``data.unlabeled_roi_labels``) can hold stray blobs; the organ is
its largest 26-connected component, and the box and organ level are read from that alone, the
same way on both paths. A paired organ (``preprocess.roi_components: 2``, the kidneys) is its
two largest components, the second counted only at :data:`MIN_COMPONENT_FRACTION` of the
largest's size or more: one kidney's box would hand stage 2 half the organ it trained on.
Ground-truth boxes (:func:`kdseg.data.prepare.training_roi`) take all of the organ.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kdseg.data.boxes import Box3D, organ_box, organ_level

#: A component after the largest makes the box only at this share of the largest's voxels.
MIN_COMPONENT_FRACTION = 0.1


def largest_components(
    mask: np.ndarray, keep: int = 1
) -> tuple[tuple[slice, slice, slice] | None, np.ndarray | None, dict[str, Any]]:
    """The largest 26-connected component of ``mask`` ``(X, Y, Z)`` (up to ``keep`` largest,
    each further one at least :data:`MIN_COMPONENT_FRACTION` of the largest's voxels).

    Returns ``(where, kept, info)``: ``where`` the slices of the bounding box of all of
    ``mask``, ``kept`` the chosen components as a boolean array of that box's shape (outside
    it ``mask`` holds nothing), ``info`` the counts found; ``(None, None, info)`` for an empty
    mask. Components are labelled inside that box only: labelling a whole 512 x 512 x 200
    volume takes seconds, the organ's box a fraction of that.
    """
    import cc3d  # components (cc3d imports in milliseconds, scipy.ndimage in half a second)

    outer = organ_box(mask)
    if outer is None:
        return None, None, {"organ_found": False, "components": 0, "organ_voxels": 0}
    where = np.s_[outer[0] : outer[1], outer[2] : outer[3], outer[4] : outer[5]]
    window = np.ascontiguousarray(mask[where], dtype=bool)
    components = cc3d.connected_components(window, connectivity=26)
    n = int(components.max())
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    order = np.argsort(-sizes[1:], kind="stable")[:keep] + 1  # ties: the first one
    best = int(order[0])
    chosen = [int(c) for c in order if sizes[c] >= MIN_COMPONENT_FRACTION * sizes[best]]
    info = {
        "organ_found": True,
        "components": n,
        "organ_voxels": int(sizes.sum()),
        "largest_component_voxels": int(sizes[best]),
        **({"kept_components": len(chosen)} if keep > 1 else {}),
    }
    return where, np.isin(components, chosen), info


def largest_component_box(
    mask: np.ndarray, hu: np.ndarray | None = None, keep: int = 1
) -> tuple[Box3D | None, dict[str, Any]]:
    """Box of the largest 26-connected component of ``mask`` ``(X, Y, Z)``, and what was found;
    ``keep``: the box of up to that many largest components (:func:`largest_components`).

    ``hu``: the image on ``mask``'s grid; when given, ``organ_level_hu`` in what was found is
    the component's level (:func:`~kdseg.data.boxes.organ_level`), read inside the same box.
    """
    where, largest, info = largest_components(mask, keep)
    if where is None or largest is None:
        return None, info
    inner = organ_box(largest)
    assert inner is not None
    x0, y0, z0 = (s.start for s in where)
    box = tuple(int(v + o) for v, o in zip(inner, (x0, x0, y0, y0, z0, z0), strict=True))
    info["box"] = list(box)
    if hu is not None:
        info["organ_level_hu"] = organ_level(hu[where], largest)
    return box, info  # type: ignore[return-value]
