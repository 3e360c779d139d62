"""Is this image a CT in Hounsfield units? The value checks every image passes on reading.

:func:`check_hounsfield` refuses, in one line naming the file, values no CT in HU has: beyond any CT
scale, none negative (a label map, a 0-255 export, stored values without the rescale), all near 0 (a
normalised image), mostly above dense bone, or air near -10000 (a CT in tenths of HU: a lost rescale
slope of 0.1; ``hu_check="warn"`` reads it anyway). It warns about a CT whose rescale intercept
(-1024) was lost, and about soft tissue near +500 with fat near -1000 (a CT in tenths of HU cropped
inside the body, or one in HU of mostly contrast or bone). Padding outside the scanner's field of
view (-1024 to -3024, -31744, -32768) and metal up to +30000 never trip it. Split out of
:mod:`kdseg.data.io`, which calls it from :func:`~kdseg.data.io.check_volume`. Numpy only: the ONNX
deploy path reads through it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from kdseg.errors import InputError

HU_RANGE = (-1100.0, 3100.0)
"""Where the voxels of a CT in Hounsfield units lie: air to dense bone, plus noise."""
HU_MIN_INSIDE = 0.5
"""At least this share of an image's voxels above :data:`HU_RANGE`'s low end lie in it. Voxels
below it are not counted: padding outside a scanner's field of view (-1,024 to -3,024 or
-32,768) can fill most of a small-field reconstruction in a large matrix."""
HU_LIMIT = 1e5
"""No CT scale stores values beyond this (16-bit extended HU ends at 65,535)."""
HU_LOWEST_BELOW = 0.0
"""The lowest voxel of a CT of a body in Hounsfield units lies below this: fat is about -100,
air about -1,000, and any field of view over a body holds one or the other (or padding below
both). An image without a negative value is a label map, a 0-255 export or raw stored values
without the scanner's rescale, all of which a model trained in HU turns into confident
garbage."""
HU_MIN_PEAK = 50.0
"""Some voxel above :data:`HU_RANGE`'s low end (padding not counted) lies at least this far
from 0 HU: air (-1000), lung, fat (-100) or bone (+400 and more), and even the soft tissue of
an enhanced organ. All of them within a few units of 0 is a normalised (z-scored) image or
stored values scaled by a broken slope, not Hounsfield units."""
HU10_BAND = (-13000.0, -1500.0)
"""Where the air (-1000 HU) and lung (-850) of a CT stored in tenths of a Hounsfield unit lie
(x10: -10000 and -8500, noise included). A CT in HU has nothing there but padding outside the
field of view (one stored value, -2048, -3024 or -31744 / -32768, and -10240 is a x10 CT's
-1024), the thin ring where a resampling blended that padding into air, and metal's darkest
streaks."""
HU10_MIN_SHARE = 0.15
"""Of the voxels that are not padding (the :data:`HU10_PADDING_VALUES` most common values in
:data:`HU10_BAND` and everything below it), at least this share in :data:`HU10_BAND` is a CT
in tenths of HU: its air and lung (a body CT's field of view: 25-70 %). Measured on the real
CT in tests/data/real_ct, 0 % as stored and 36 % times 10; on kdseg's phantoms 0 % and 60-70 %.
A blended padding ring is a few % of a slice at most."""
HU10_PADDING_VALUES = 3
"""How many of the most common values in :data:`HU10_BAND` count as padding (not as air)."""
HU10_MEDIAN_BELOW = -5000.0
"""... and the median of those voxels lies below this (air x10 -10000, lung x10 -8500; a ring
blending -2048 or -3024 padding into air lies above -3024)."""
HU10_SOFT_MODE = (250.0, 1500.0)
HU10_FAT_BAND = (-1500.0, -500.0)
HU10_MIN_FAT = 0.05
HU10_PEAK = 2.5
"""A CT in tenths of HU cropped inside the body (no air: :data:`HU10_BAND` is empty) may show it:
its most common 100-wide bin of values (:data:`HU_RANGE`, fat's low tail included) is soft tissue
x10 (muscle and organs +30 to +130 HU: +300 to +1300) within :data:`HU10_SOFT_MODE`, where a CT in
HU has only bone and contrast, a peak (at least :data:`HU10_PEAK` times the mean of the bins that
hold any: uniform noise's most common bin is 1.2-1.4 times theirs, a CT's 3.8-12), and at least
:data:`HU10_MIN_FAT` of its voxels (padding's most common values not counted) are fat x10 (-100 HU:
-1000) in :data:`HU10_FAT_BAND`, where a CT in HU has air and lung. A CT in HU with its intercept
lost (soft tissue +1060) has no voxels there, and a crop inside bone no fat. Warned about, not
refused: a CT in HU of mostly contrast or bone beside air or lung looks alike (a review's synthetic
cardiac CTA with its blood pool at +450 and 30 % lung, an abdomen at 40 keV, a wrist in a bone
kernel), and no measure of the fat at -100 told them apart from the real CT times ten (its partial
volumes put 6.5 % of its voxels there). The real CT in tests/data/real_ct cropped to the middle half
of its body (no air): most common bin 0 to +100 and 3 % in the fat band as stored; +400 to +500 and
24 % times 10 (kdseg's phantoms so cropped: 0 to +100, and +600 to +1200 with 13-15 %)."""
SHIFTED_AIR_BELOW = -300.0
SHIFTED_MAX_AIR = 0.001
SHIFTED_DENSE_ABOVE = 800.0
SHIFTED_MIN_DENSE = 0.25
"""A CT whose rescale intercept (-1024) was lost, stored signed (noise takes its air a little
below 0, so the none-negative check misses it), has no air or lung below
:data:`SHIFTED_AIR_BELOW` (under :data:`SHIFTED_MAX_AIR` of the voxels above -1100) and its
fat and soft tissue (+920, +1060) above :data:`SHIFTED_DENSE_ABOVE` (over
:data:`SHIFTED_MIN_DENSE`). Warned about, not refused: a CT cropped inside dense bone could
look alike. The real CT shifted by +1024: 0 % below -300, 60 % above 800; as stored 33 % and
0.3 %."""
HU_CHECK = ("error", "warn")
"""What ``hu_check=`` may say about an image that looks like a CT in tenths of HU."""


def check_hounsfield(
    data: np.ndarray, low: float, high: float, path: str | Path, hu_check: str | None = None
) -> None:
    """Refuse an image whose values cannot be CT in Hounsfield units (min / max given); one
    in tenths of HU is refused or, with ``hu_check="warn"``, warned about."""
    if max(abs(low), abs(high)) > HU_LIMIT:
        raise InputError(
            path,
            f"values run from {low:.4g} to {high:.4g}, beyond any CT scale; "
            "not a CT in Hounsfield units",
        )
    if low >= HU_LOWEST_BELOW:
        raise InputError(
            path,
            f"values run from {low:.4g} to {high:.4g}, none below {HU_LOWEST_BELOW:g} (fat is "
            "about -100 HU, air -1000); not a CT in Hounsfield units (a label map, a 0-255 "
            "export, or stored values without the rescale?)",
        )
    # every n-th voxel in C order, a fixed stride: cheap. Through ``flat``, not
    # ``reshape(-1)``, which copies a Fortran-ordered array (every NIfTI and DICOM volume)
    # whole: 0.3-0.4 s and the volume's size again at 512 x 512 x 150
    sample = data.flat[:: max(data.size // 1_000_003, 1)]
    counted = sample >= HU_RANGE[0]  # padding and air below it are not counted
    body = sample[counted]
    peak = float(np.abs(body).max()) if body.size else 0.0
    if peak < HU_MIN_PEAK:
        raise InputError(
            path,
            f"every voxel above {HU_RANGE[0]:g} lies within {peak:.4g} of 0 (values {low:.4g} "
            f"to {high:.4g}): no air (-1000), fat (-100) or bone (+400); a normalised image or "
            "a broken rescale slope, not Hounsfield units",
        )
    inside = float((body <= HU_RANGE[1]).mean()) if body.size else 0.0
    if inside < HU_MIN_INSIDE:
        raise InputError(
            path,
            f"only {inside:.0%} of the voxels above {HU_RANGE[0]:g} HU lie below "
            f"{HU_RANGE[1]:g} (values {low:.4g} to {high:.4g}); not a CT in Hounsfield units",
        )
    if (problem := _shifted_by_1024(body)) is not None:
        warnings.warn(f"{path}: {problem}", stacklevel=2)
    if low < HU10_BAND[1] and (problem := _tenths_of_hu(sample)) is not None:
        if hu_check != "warn":  # the hint only where the command has the option
            hint = " (hu_check=warn reads it anyway)" if hu_check == "error" else ""
            raise InputError(path, problem + hint)
        warnings.warn(f"{path}: {problem}", stacklevel=2)
    elif low < HU10_FAT_BAND[1] and (problem := _cropped_tenths(sample)) is not None:
        warnings.warn(f"{path}: {problem}", stacklevel=2)


def _shifted_by_1024(body: np.ndarray) -> str | None:
    """Why ``body`` (voxels above -1100) looks like a CT whose intercept -1024 was lost."""
    if not body.size:
        return None
    air = float((body < SHIFTED_AIR_BELOW).mean())
    dense = float((body > SHIFTED_DENSE_ABOVE).mean())
    if air >= SHIFTED_MAX_AIR or dense <= SHIFTED_MIN_DENSE:
        return None
    return (
        f"no air or lung (below {SHIFTED_AIR_BELOW:g}) and {dense:.0%} of the voxels above "
        f"{SHIFTED_DENSE_ABOVE:g}: soft tissue near +1000 is a CT whose rescale intercept "
        "(-1024) was lost, or not a CT? Read as it is"
    )


def _tenths_of_hu(sample: np.ndarray) -> str | None:
    """Why ``sample`` (voxels of one image) looks like a CT in tenths of a Hounsfield unit (a
    rescale slope of 0.1 lost: air near -10000), else None. Padding is not counted: the
    :data:`HU10_PADDING_VALUES` most common values in :data:`HU10_BAND` and all below it."""
    below = int((sample < HU10_BAND[0]).sum())
    band = sample[(sample >= HU10_BAND[0]) & (sample < HU10_BAND[1])]
    if band.size <= HU10_MIN_SHARE * (sample.size - below) or band.size == 0:
        return None  # cheap: most CTs end here
    spread, counted = _padding_free(band, sample.size - below)
    if not spread.size or spread.size <= HU10_MIN_SHARE * counted:
        return None
    median = float(np.median(spread))
    if median >= HU10_MEDIAN_BELOW:
        return None
    return (
        f"{spread.size / counted:.0%} of the voxels lie between {HU10_BAND[0]:g} and "
        f"{HU10_BAND[1]:g} (median {median:.0f}), where a CT in Hounsfield units has only "
        "padding: air at -10000 is a CT in tenths of HU (a rescale slope of 0.1 lost?); "
        "divide it by 10"
    )


def _padding_free(values: np.ndarray, counted: int) -> tuple[np.ndarray, int]:
    """``values`` (a band of an image's values) without their :data:`HU10_PADDING_VALUES` most
    common values (padding is one stored value; air, lung and fat are spread by noise), and
    ``counted`` (the image's voxels counted) less the padding removed."""
    if not values.size:
        return values, counted
    unique, counts = np.unique(values, return_counts=True)
    padding = unique[np.argsort(counts, kind="stable")[-HU10_PADDING_VALUES:]]
    free = values[~np.isin(values, padding)]
    return free, counted - (values.size - free.size)


def _cropped_tenths(sample: np.ndarray) -> str | None:
    """Why ``sample`` may be a CT in tenths of HU cropped inside the body (no air), from its
    soft tissue and fat (:data:`HU10_SOFT_MODE`), else None. Padding (its voxels under
    :data:`HU10_BAND`, the most common values in :data:`HU10_FAT_BAND`) is not counted."""
    below = int((sample < HU10_BAND[0]).sum())
    inside = sample[(sample >= HU10_FAT_BAND[0]) & (sample <= HU_RANGE[1])]
    if not inside.size:
        return None
    counts, edges = np.histogram(inside, bins=np.arange(HU10_FAT_BAND[0], HU_RANGE[1] + 1, 100))
    peak = int(np.argmax(counts))
    mode = float(edges[peak])
    if not HU10_SOFT_MODE[0] <= mode < HU10_SOFT_MODE[1]:
        return None  # cheap: a CT in HU ends here (soft tissue, fat or air most common)
    if counts[peak] < HU10_PEAK * counts[counts > 0].mean():
        return None  # no peak: not soft tissue
    fat_band = sample[(sample >= HU10_FAT_BAND[0]) & (sample <= HU10_FAT_BAND[1])]
    fat, counted = _padding_free(fat_band, sample.size - below)
    if not counted or fat.size < HU10_MIN_FAT * counted:
        return None
    return (
        f"most voxels lie at {mode:.0f} to {mode + 100:.0f} and {fat.size / counted:.0%} "
        f"between {HU10_FAT_BAND[0]:g} and {HU10_FAT_BAND[1]:g}: soft tissue near +500 and "
        "fat near -1000, a CT in tenths of HU cropped inside the body (a rescale slope of 0.1 "
        "lost? divide it by 10), or a CT in HU of mostly contrast or bone and air? Read as it is"
    )
