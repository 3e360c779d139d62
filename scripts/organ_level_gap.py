"""Stage 1's organ level against the ground truth's, per test case (``window_level: organ``).

A stage 2 trained with ``preprocess.window_level=organ`` takes its window's centre from the
ground-truth organ in training and from stage 1's largest organ component in a cascade. This
prints both levels (median HU, :func:`~kdseg.data.boxes.organ_level`) for each test case
of a dataset and each stage-1 checkpoint, and the differences.

    python scripts/organ_level_gap.py --data .study/cascade-v3/data \\
        --ckpt .study/cascade-v3/runs/single-enet-w0.25-s1/checkpoints/best.ckpt
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import nibabel as nib
import numpy as np

from kdseg.data.boxes import organ_level
from kdseg.data.dataset import split_store
from kdseg.data.manifest import FOLDER_SPLIT_NAME
from kdseg.eval.checkpoint import load_bundle
from kdseg.eval.inference import Predictor, largest_component_box


def _split_file(data: Path, cache_root: str | None) -> Path:
    """``<data>/kdseg_split.json`` (the folder's own, read first as kdseg reads it), else the
    persisted split (kdseg-split's, or the seeded one runs persisted); neither: exit with a
    message naming both."""
    store = split_store({"name": "lits", "root": str(data), "cache_root": cache_root})
    for path in (data / FOLDER_SPLIT_NAME, store):
        if path.is_file():
            return path
    raise SystemExit(
        f"organ_level_gap.py: no split: neither {data / FOLDER_SPLIT_NAME} nor the persisted "
        f"{store} exists (run kdseg-prepare, pass --cache-root= the runs' data.cache_root, "
        "or --split-file=)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a LiTS-layout folder")
    parser.add_argument(
        "--split-file",
        help="the split JSON (default: <data>/kdseg_split.json, the folder's own, else the "
        "split kdseg-split, kdseg-prepare or kdseg-train persisted in the cache root: "
        "<cache root>/lits-<folder key>/kdseg_split.json)",
    )
    parser.add_argument(
        "--cache-root",
        help="the runs' data.cache_root (default: $KDSEG_CACHE_DIR, else ~/.cache/kdseg)",
    )
    parser.add_argument("--ckpt", nargs="+", required=True, help="stage-1 checkpoint(s)")
    parser.add_argument("--split", default="test")
    args = parser.parse_args()
    data = Path(args.data)
    split_file = Path(args.split_file) if args.split_file else _split_file(data, args.cache_root)
    cases = json.loads(split_file.read_text())[args.split]
    print("| stage 1 | case | ground-truth level | stage-1 level | difference |")
    print("|---|---|---|---|---|")
    for ckpt in args.ckpt:
        predictor = Predictor.from_bundle(load_bundle(ckpt), threads=1)
        gaps = []
        for case in cases:
            n = case.split("-")[-1]
            image = nib.load(str(data / f"volume-{n}.nii.gz"))
            truth = np.asanyarray(nib.load(str(data / f"segmentation-{n}.nii.gz")).dataobj)
            hu = np.asanyarray(image.dataobj)
            _, info = largest_component_box(predictor.predict(image) > 0, hu)
            want, got = organ_level(hu, truth > 0), info.get("organ_level_hu")
            gap = None if want is None or got is None else got - want
            if gap is not None:
                gaps.append(gap)
            print(f"| {Path(ckpt).parent.parent.name} | {case} | {want} | {got} | {gap} |")
        if gaps:
            print(
                f"| {Path(ckpt).parent.parent.name} | mean (min, max) | | | "
                f"{np.mean(gaps):.1f} ({min(gaps):.0f}, {max(gaps):.0f}) |"
            )


if __name__ == "__main__":
    main()
