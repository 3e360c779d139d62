"""What a phantom case is made of and how it is drawn: constants, tissues and the config.

The bottom of the package: every other module imports from here, and this one imports no
other phantom module. It holds the dataset names, the HU limits of the stored int16 images, the
names of the independent random streams, the :class:`Tissue` codes the painters write (the label
map is read off them, through :data:`TARGET_TISSUE`) and :class:`PhantomConfig`, the user-facing
knobs, checked on construction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from enum import IntEnum

from kdseg.data.io import SPACING_MM
from kdseg.errors import InputError

DATASETS = ("lits", "kits")
TRUTH_FILE = "phantom_truth.json"
PENDING_FILE = "phantom_pending.json"  # cases being written; gone once they are done
HU_MIN, HU_MAX = -1024, 3071
HU_AIR = -1000.0
BLUR_TRUNCATE = 3.0  # Gaussian kernel radius in sigmas
_STREAMS = ("geometry", "anatomy", "tumors", "noise", "orientation")


class Tissue(IntEnum):
    """What each voxel is made of while a phantom is drawn; the label map is read off it."""

    AIR = 0
    TABLE = 1
    FAT = 2  # subcutaneous fat
    VISCERAL_FAT = 3  # fat filling the abdominal cavity between the organs
    MUSCLE = 4
    BOWEL = 5  # bowel and stomach: wall, fluid, gas
    LUNG = 6
    LIVER = 7  # parenchyma and intrahepatic vessels
    GALLBLADDER = 8
    SPLEEN = 9
    KIDNEY = 10  # cortex, medulla and renal sinus
    VESSEL = 11  # aorta, inferior vena cava, heart
    SPINE = 12  # vertebrae, discs, spinal canal
    RIB = 13
    TUMOR = 14


TARGET_TISSUE = {"lits": Tissue.LIVER, "kits": Tissue.KIDNEY}


#: (field, lowest, highest) of the ranges; the highest keep a volume in memory and time
RANGE_LIMITS = (
    ("size_range", 32, 2048),
    ("slices_range", 8, 2048),
    # a field of view under ~25 mm failed the drawing (it is shifted by up to 12 mm); 100 mm
    # draws every dataset's anatomy (checked over 160 cases of 32-64 pixels)
    ("fov_mm_range", 100.0, 2000.0),
    ("slice_mm_range", 1e-3, 50.0),
    ("tumor_mm_range", 1e-3, 500.0),
)
#: (field, lowest, highest) of the single values
VALUE_LIMITS = (
    ("nonsquare_prob", 0.0, 1.0),
    ("flip_prob", 0.0, 1.0),
    ("permute_prob", 0.0, 1.0),
    ("p_no_tumor", 0.0, 1.0),
    ("max_tumors", 0, 100),
    ("tumor_depth", 0.0, 1.0),
    ("tumor_contrast", 0.0, 100.0),
    ("noise_hu", 0.0, 1000.0),
    ("blur_sigma_mm", 0.0, 20.0),
)
#: fields that count voxels or tumors
WHOLE = {"size_range", "slices_range", "max_tumors"}


def _number(value: object, whole: bool) -> bool:
    """A finite real number (a whole one if ``whole``); NaN, Inf, text and booleans are not."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value) and (not whole or float(value).is_integer())


@dataclass
class PhantomConfig:
    """How phantom cases are drawn. Every range is ``(low, high)``, sampled per case.

    Attributes:
        dataset: ``"lits"`` (label 1 = liver) or ``"kits"`` (label 1 = both kidneys); also
            selects the file layout and the scan range (liver-centred or kidney-centred).
        size_range: in-plane matrix size in voxels (inclusive).
        nonsquare_prob: probability that the anterior-posterior matrix size is 85-97 % of the
            left-right one instead of equal to it (pixels stay square).
        slices_range: number of axial slices (inclusive).
        fov_mm_range: in-plane field of view; the pixel spacing is ``fov / size``.
        slice_mm_range: slice spacing.
        flip_prob: probability, per axis, that the stored array runs against RAS (L, P or I).
        permute_prob: probability that the stored axis order is not (x, y, z), e.g. KiTS19's
            (z, y, x); any of the five other orders is drawn.
        max_tumors: at most this many tumors per case (at least one unless none is drawn).
        p_no_tumor: probability of a case without tumor.
        tumor_mm_range: tumor diameter, drawn log-uniformly (small lesions are common).
        tumor_depth: how deep a tumor's centre lies inside the organ, as a fraction of its
            radius (distance to the nearest voxel outside the organ). 0 (the default) draws the
            centre on any organ voxel, so a LiTS tumor drawn at the rim is clipped to the liver
            and can keep a sliver of its volume (a 24 mm tumor of 140 voxels; a KiTS tumor may
            bulge into the fat around the kidney instead); 1 keeps every tumor
            whole where the organ is thick enough. Organs too thin for it fall back to their
            deepest voxels.
        tumor_contrast: difficulty knob multiplying every tumor-vs-organ HU contrast
            (0 makes tumors invisible; the anatomy of a seed does not depend on it).
        noise_hu: standard deviation of the image noise after blurring, in HU.
        blur_sigma_mm: Gaussian point-spread function of the reconstruction; the noise is
            filtered by the same kernel, which gives it CT's correlated texture.
    """

    dataset: str = "lits"
    size_range: tuple[int, int] = (192, 256)
    nonsquare_prob: float = 0.2
    slices_range: tuple[int, int] = (40, 64)
    fov_mm_range: tuple[float, float] = (320.0, 420.0)
    slice_mm_range: tuple[float, float] = (1.5, 5.0)
    flip_prob: float = 0.3
    permute_prob: float = 0.2
    max_tumors: int = 4
    p_no_tumor: float = 0.15
    tumor_mm_range: tuple[float, float] = (3.0, 40.0)
    tumor_depth: float = 0.0
    tumor_contrast: float = 1.0
    noise_hu: float = 12.0
    blur_sigma_mm: float = 0.8

    def __post_init__(self) -> None:
        """Normalise list-valued ranges (from YAML or JSON) to tuples and every number to its
        field's type (``int`` for :data:`WHOLE`, else ``float``: ``noise_hu: 12`` and ``12.0``
        are one config, with one fingerprint), and check every field."""
        # the fields as given, before normalising: what kdseg before 2026-12-08 fingerprinted
        # (a folder drawn with ``tumor_depth: 1`` recorded the int), still accepted as its own
        self._given = {f.name: getattr(self, f.name) for f in fields(self)}
        if self.dataset not in DATASETS:
            raise InputError(
                None, f"phantom dataset must be one of {DATASETS}, got {self.dataset!r}"
            )
        for name, minimum, maximum in RANGE_LIMITS:
            value = getattr(self, name)
            value = tuple(value) if isinstance(value, (list, tuple)) else (value,)
            whole = name in WHOLE
            if (
                len(value) != 2
                or not all(_number(v, whole) for v in value)
                or not minimum <= value[0] <= value[1] <= maximum
            ):
                raise InputError(
                    None,
                    f"phantom {name} must be (low, high) with {minimum} <= low <= high <= "
                    f"{maximum}{' (whole numbers)' if whole else ''}, got {getattr(self, name)}",
                )
            setattr(self, name, tuple(int(v) if whole else float(v) for v in value))
        self._check_spacing()
        for name, minimum, maximum in VALUE_LIMITS:
            value = getattr(self, name)
            if not _number(value, name in WHOLE) or not minimum <= value <= maximum:
                raise InputError(
                    None,
                    f"phantom {name} must be a {'whole ' if name in WHOLE else ''}number from "
                    f"{minimum} to {maximum}, got {value!r}",
                )
            setattr(self, name, int(value) if name in WHOLE else float(value))

    def _check_spacing(self) -> None:
        """Refuse ranges whose voxel spacing, rounded as :func:`~kdseg.data.phantom.sampling.
        _sample_grid` rounds it (pixel ``fov / size`` to 4 decimals, slice to 2), can leave
        :data:`kdseg.data.io.SPACING_MM`: 0 fails the drawing, any other such size the files
        that kdseg reads back."""
        low, high = SPACING_MM
        (fov_low, fov_high), (n_low, n_high) = self.fov_mm_range, self.size_range
        for name, lowest, highest, how in (
            ("fov_mm_range", fov_low / n_high, fov_high / n_low, "pixel spacing fov / size"),
            ("slice_mm_range", *self.slice_mm_range, "slice spacing"),
        ):
            lowest, highest = (
                round(v, 4 if name == "fov_mm_range" else 2) for v in (lowest, highest)
            )
            if lowest < low or highest > high:
                raise InputError(
                    None,
                    f"phantom {name} {getattr(self, name)} gives a {how} from {lowest:g} to "
                    f"{highest:g} mm; kdseg reads voxel sizes of {low:g}-{high:g} mm only",
                )
