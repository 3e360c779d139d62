"""P21 diagnostic (2026-12-05, written after P21 was scored; descriptive only).

What does P17's seed-1 model see and predict on a missed large tumor of P21's fresh cases?
Writes one PNG per case (input HU, truth, prediction on the slice with the most tumor) and
prints what the model called the tumor's voxels (background / liver / tumor).

    PYTHONPATH=. python docs/study_v4/pilots/P21-fresh48/look.py 196 175 154
"""

import sys

import matplotlib
import nibabel as nib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from kdseg.data.io import load_volume
from kdseg.eval.checkpoint import load_bundle
from kdseg.eval.evaluate import _predict
from kdseg.eval.inference import Predictor

ck = "/work/p17/runs/T17-raunet-w0.5-8192-default152-ctx2/checkpoints/best.ckpt"
b = load_bundle(ck)
p = Predictor.from_bundle(b, threads=1)
for case in sys.argv[1:]:
    img = load_volume(f"/work/p21/data/lits/volume-{case}.nii.gz")
    seg = np.asarray(nib.load(f"/work/p21/data/lits/segmentation-{case}.nii.gz").dataobj).astype(
        np.uint8
    )
    pred = _predict(p, img, seg)
    im, gt, pr = (
        p.pre.reorient(img, a) for a in (np.asarray(img.dataobj, dtype=np.float32), seg, pred)
    )
    z = int(np.argmax((gt == 2).sum((0, 1))))
    fig, ax = plt.subplots(1, 3, figsize=(15, 5))
    ys, xs = np.nonzero(gt[:, :, z] >= 1)
    sl = (slice(max(ys.min() - 10, 0), ys.max() + 10), slice(max(xs.min() - 10, 0), xs.max() + 10))
    ax[0].imshow(im[:, :, z][sl].T, cmap="gray", vmin=-50, vmax=200)
    ax[0].set_title(f"{case} z={z} HU")
    ax[1].imshow(gt[:, :, z][sl].T, vmin=0, vmax=2)
    ax[1].set_title("truth")
    ax[2].imshow(pr[:, :, z][sl].T, vmin=0, vmax=2)
    ax[2].set_title("pred")
    fig.savefig(f"/work/p21/diag/{case}.png", dpi=70)
    plt.close(fig)
    t = gt == 2
    print(
        case,
        "tumor HU median",
        float(np.median(im[t])),
        "liver HU median",
        float(np.median(im[gt == 1])),
        "pred on tumor",
        np.bincount(pr[t], minlength=3),
    )
