"""Synthetic abdominal CT phantoms, written in the real LiTS17 and KiTS19 file layouts.

No real scan can be downloaded where kdseg is developed, so the tests, the demo and the
benchmarks run on these phantoms, through the very code path real data take: NIfTI files with
int16 Hounsfield units, uint8 labels (0 background, 1 organ, 2 tumor) and an affine that may
flip or permute the stored axes, as real datasets do.

Coordinates are nibabel's RAS+ world (https://nipy.org/nibabel/coordinate_systems.html): +x
points towards the subject's Right, +y Anterior, +z Superior. The body midline is world x = 0,
so the liver (on the patient's right) has x > 0 and the spleen x < 0. Each case is drawn on a
grid stored in RAS order (array axes x, y, z, positive spacing) and only then stored in its
drawn orientation; ``nibabel.as_closest_canonical`` gives back the RAS array exactly.

The anatomy is a trunk outline with subcutaneous fat and a muscle wall, spine and ribs,
liver, gallbladder, spleen, kidneys (cortex, medulla, sinus), aorta, inferior vena cava, bowel
and stomach with gas-fluid levels, lung bases above the diaphragm and the scanner table.
Organs are stacks of axial ellipses whose size follows a dome profile along z and whose outline
is bent by low-frequency harmonics, evaluated only on each organ's bounding box. Craniocaudal
positions are fractions of the scan length, so every case has slices above and below the
target organ, as real scans do.

The modules, each importing only from those listed before it:

* ``config``: constants, :class:`Tissue` codes and :class:`PhantomConfig`;
* ``geometry``: the grid, boxes, the volume being drawn and the shape primitives;
* ``sampling``: the random streams and the case-level draws (grid, body, HU, layout, spine);
* ``trunk``, ``organs``, ``musculoskeletal``: the painters of the anatomy;
* ``tumors``: the tumors and their truth;
* ``acquisition``: blur, noise, stored orientation and NIfTI images;
* ``case``: :func:`generate_case`, every painter in drawing order;
* ``dataset``: :func:`write_dataset` and the on-disk names of the cases.

This package re-exports the public API; the private helpers live in their modules (patch them
there, e.g. ``kdseg.data.phantom.acquisition._acquire``, not here).
"""

from kdseg.data.phantom.case import generate_case
from kdseg.data.phantom.config import (
    BLUR_TRUNCATE,
    DATASETS,
    HU_AIR,
    HU_MAX,
    HU_MIN,
    TARGET_TISSUE,
    TRUTH_FILE,
    PhantomConfig,
    Tissue,
)
from kdseg.data.phantom.dataset import case_files, case_id, case_seed, write_dataset

__all__ = [
    "BLUR_TRUNCATE",
    "DATASETS",
    "HU_AIR",
    "HU_MAX",
    "HU_MIN",
    "TARGET_TISSUE",
    "TRUTH_FILE",
    "PhantomConfig",
    "Tissue",
    "case_files",
    "case_id",
    "case_seed",
    "generate_case",
    "write_dataset",
]
