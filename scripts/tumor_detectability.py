"""How findable is each test tumor? A matched-filter bound on per-case tumor Dice.

Issue 15's per-case target is bound by test cases whose only tumors have 3-17 voxels. This
script asks whether the image itself lets anyone find them. For each tumor component it
plays a strong observer that knows the tumor's exact shape and whether it is darker or
brighter than its organ, but not where it is: the matched filter (the sum of the image over
the tumor's own shape) is computed at every position whose footprint lies inside the organ
and away from every tumor, and the local extrema there are candidate blobs. The tumor's rank
``r`` is one plus the number of candidate blobs whose response is more tumor-like than the
tumor's own. Marking the ``r`` best candidates, each the tumor's size, finds the tumor at a
Dice of at most ``2 / (1 + r)``; with several tumors in a case, the case bound weighs each
tumor's by its voxels. For white noise the matched filter is the best detector of a known
signal; the phantom's parenchyma texture is correlated, so a prewhitening observer could do
somewhat better: the bound is an estimate, not a proof.

    python scripts/tumor_detectability.py --root /work/p17/data/lits \\
        --split docs/study_v4/pilots/p17_split.json --part test
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage, signal


def _correlate(volume: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """The sum of ``volume`` over ``kernel`` placed at each voxel (FFT; same shape)."""
    return signal.fftconvolve(volume, kernel[::-1, ::-1, ::-1], mode="same")


def tumor_ranks(image: np.ndarray, label: np.ndarray) -> list[dict]:
    """Per tumor component (26-connected): voxels, contrast to the organ's median (HU),
    the matched-filter rank among candidate blobs in the organ, and its Dice bound."""
    organ_box = ndimage.find_objects((label >= 1).astype(np.uint8))[0]
    pad = 24  # voxels of margin: more than any kernel's half-size here
    box = tuple(slice(max(s.start - pad, 0), s.stop + pad) for s in organ_box)
    image, label = image[box].astype(np.float64), label[box]
    tumors, n = ndimage.label(label == 2, structure=np.ones((3, 3, 3)))
    parenchyma = (label >= 1) & ~ndimage.binary_dilation(label == 2, iterations=2)
    level = float(np.median(image[parenchyma]))
    noise = float(np.std(image[parenchyma]))
    out = []
    for i, where in enumerate(ndimage.find_objects(tumors), start=1):
        kernel = (tumors[where] == i).astype(np.float64)
        voxels = int(kernel.sum())
        contrast = float(image[tumors == i].mean()) - level
        sign = -1.0 if contrast < 0 else 1.0
        response = _correlate(sign * (image - level), kernel)
        inside = _correlate(parenchyma.astype(np.float64), kernel) >= voxels - 0.5
        on_tumor = _correlate((tumors == i).astype(np.float64), kernel) >= voxels - 0.5
        score = float(response[on_tumor].max())  # the filter exactly on the tumor
        masked = np.where(inside, response, -np.inf)
        size = tuple(max(int(k), 1) for k in kernel.shape)
        peaks = inside & (masked == ndimage.maximum_filter(masked, size=size, mode="constant"))
        rank = 1 + int((masked[peaks] > score).sum())
        out.append(
            {
                "voxels": voxels,
                "contrast_hu": round(contrast, 1),
                "contrast_per_noise_sd": round(abs(contrast) / noise, 2),
                "rank": rank,
            }
        )
    return out


def case_bound(rows: list[dict]) -> float:
    """The best Dice over which tumors to look for: looking for tumor i marks its ``rank``
    best candidates of its size (one of them the tumor), so a chosen set S gives
    ``2 sum_S n / (sum_all n + sum_S rank n)``."""
    total = sum(r["voxels"] for r in rows)
    best = 0.0
    for chosen in itertools.product((False, True), repeat=len(rows)):
        found = sum(r["voxels"] for r, c in zip(rows, chosen, strict=True) if c)
        marked = sum(r["voxels"] * r["rank"] for r, c in zip(rows, chosen, strict=True) if c)
        best = max(best, 2.0 * found / (total + marked))
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, help="a LiTS-layout folder")
    parser.add_argument("--split", required=True, help="a kdseg split file")
    parser.add_argument("--part", default="test")
    args = parser.parse_args(argv)
    root = Path(args.root)
    cases = json.loads(Path(args.split).read_text())[args.part]
    print("| case | tumor voxels | contrast (HU) | contrast / organ sd | rank | Dice bound |")
    print("|---|---|---|---|---|---|")
    bounds = []
    for case in sorted(cases, key=lambda c: int(c.split("-")[1])):
        n = case.split("-")[1]
        image = np.asarray(nib.load(root / f"volume-{n}.nii.gz").dataobj, dtype=np.float32)
        label = np.asarray(nib.load(root / f"segmentation-{n}.nii.gz").dataobj).astype(np.uint8)
        rows = tumor_ranks(image, label)
        if not rows:
            continue
        bound = case_bound(rows)
        bounds.append(bound)
        for r in rows:
            print(
                f"| {case} | {r['voxels']} | {r['contrast_hu']:+.1f} | "
                f"{r['contrast_per_noise_sd']:.2f} | {r['rank']} | {2 / (1 + r['rank']):.3f} |"
            )
        total = sum(r["voxels"] for r in rows)
        print(f"| {case}, case bound | {total} | | | | **{bound:.3f}** |", flush=True)
    print(f"\nmean case bound over {len(bounds)} cases: {np.mean(bounds):.3f}")


if __name__ == "__main__":
    main()
