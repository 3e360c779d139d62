"""The resolution ceiling of a stage 2: the ground truth itself, pushed through the organ-ROI
model grid and restored to the input, scored like a model (per-case Dice).

A perfect stage-2 model's probabilities are the one-hot ground truth on its grid; this maps it
there (bilinear, :meth:`Preprocessor.probabilities`, as stored teacher predictions go) and back
(:meth:`Preprocessor.restore`, as predictions go), in the reference organ box, and reports the
Dice of what comes back. What it does not reach, no model at that grid can.

    python scripts/roi_ceiling.py DATA_ROOT CASES [SPACING_MM] [SIZE]
    python scripts/roi_ceiling.py /tmp/def40 volume-14,volume-32 1.5 144
"""

from __future__ import annotations

import argparse
import statistics

import nibabel as nib
import numpy as np

from kdseg.data.boxes import organ_box
from kdseg.data.preprocess import Preprocessor
from kdseg.data.preprocess_config import PreprocessConfig


def dice(a: np.ndarray, b: np.ndarray) -> float | None:
    total = int(a.sum()) + int(b.sum())
    return None if not a.any() else 2.0 * float((a & b).sum()) / total


def ceiling(root: str, case: str, pre: Preprocessor) -> tuple[int, float | None, float | None]:
    """Tumor voxels, tumor and organ Dice of the ground truth through the grid and back."""
    img = nib.load(f"{root}/{case}.nii.gz")
    seg_path = f"{root}/{case.replace('volume', 'segmentation')}.nii.gz"
    seg = np.asarray(nib.load(seg_path).dataobj).astype(np.uint8)
    _, geom = pre.image(img, organ_box(pre.reorient(img, seg) > 0))
    onehot = (seg[None] == np.arange(3).reshape(3, 1, 1, 1)).astype(np.float32)
    back = pre.restore(pre.probabilities(onehot, img, geom), geom).argmax(1)  # (Z, x, y)
    canonical = np.zeros(geom.canonical_shape, dtype=np.uint8)
    (x0, x1, y0, y1), (z0, z1) = geom.box, geom.slices
    canonical[x0:x1, y0:y1, z0:z1] = back.transpose(1, 2, 0)
    pred = pre.to_input_orientation(canonical, geom)
    return int((seg == 2).sum()), dice(seg == 2, pred == 2), dice(seg > 0, pred > 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", help="a LiTS-layout folder (volume-N / segmentation-N)")
    parser.add_argument("cases", help="comma-separated case ids, e.g. volume-14,volume-32")
    parser.add_argument("spacing_mm", nargs="?", type=float, default=1.5)
    parser.add_argument("size", nargs="?", type=int, default=144)
    args = parser.parse_args()
    config = {
        "body_crop": False,
        "roi": "organ",
        "roi_margin_mm": 10,
        "roi_jitter_mm": 0,
        "spacing_mm": [args.spacing_mm, args.spacing_mm],
        "in_plane_size": [args.size, args.size],
    }
    pre = Preprocessor(PreprocessConfig.from_dict(config))
    tumors = []
    print(f"| case | tumor voxels | tumor Dice ceiling | organ Dice ceiling |  ({config})")
    print("|---|---|---|---|")
    for case in args.cases.split(","):
        voxels, tumor, organ = ceiling(args.root, case, pre)
        tumors += [] if tumor is None else [tumor]
        shown = "-" if tumor is None else f"{tumor:.3f}"
        print(f"| {case} | {voxels} | {shown} | {organ:.3f} |")
    print(f"per-case tumor Dice ceiling, {len(tumors)} cases: {statistics.mean(tumors):.3f}")


if __name__ == "__main__":
    main()
