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
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import math
import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from enum import IntEnum
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, ornt_transform
from scipy import ndimage

from kdseg.errors import InputError, atomic_path, write_text_atomic

__all__ = [
    "DATASETS",
    "TRUTH_FILE",
    "PhantomConfig",
    "case_files",
    "case_id",
    "case_seed",
    "generate_case",
    "write_dataset",
]

DATASETS = ("lits", "kits")
TRUTH_FILE = "phantom_truth.json"
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
    tumor_contrast: float = 1.0
    noise_hu: float = 12.0
    blur_sigma_mm: float = 0.8

    def __post_init__(self) -> None:
        """Normalise list-valued ranges (from YAML or JSON) to tuples and check every field."""
        if self.dataset not in DATASETS:
            raise InputError(
                None, f"phantom dataset must be one of {DATASETS}, got {self.dataset!r}"
            )
        for name, minimum in (
            ("size_range", 32),
            ("slices_range", 8),
            ("fov_mm_range", 1e-3),
            ("slice_mm_range", 1e-3),
            ("tumor_mm_range", 1e-3),
        ):
            value = tuple(getattr(self, name))
            if len(value) != 2 or not minimum <= value[0] <= value[1]:
                raise InputError(
                    None,
                    f"phantom {name} must be (low, high) with "
                    f"{minimum} <= low <= high, got {value}",
                )
            setattr(self, name, value)
        for name in ("nonsquare_prob", "flip_prob", "permute_prob", "p_no_tumor"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise InputError(
                    None, f"phantom {name} must be a probability, got {getattr(self, name)}"
                )
        for name in ("max_tumors", "tumor_contrast", "noise_hu", "blur_sigma_mm"):
            if getattr(self, name) < 0:
                raise InputError(None, f"phantom {name} must be >= 0, got {getattr(self, name)}")


# --------------------------------------------------------------------------------------------
# Grid, boxes and the volume being drawn


@dataclass(frozen=True)
class Grid:
    """The RAS voxel grid of one case: world mm coordinates of the voxel centres per axis.

    ``recon_radius`` (mm, around the grid centre) is the scanner's reconstruction circle, outside
    which real scans hold -1024; None when the whole square is reconstructed.
    """

    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    spacing: tuple[float, float, float]
    recon_radius: float | None

    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape in RAS order."""
        return self.x.size, self.y.size, self.z.size

    @property
    def affine(self) -> np.ndarray:
        """Voxel-to-world (RAS+, mm) affine of the RAS-ordered array."""
        affine = np.diag([*self.spacing, 1.0])
        affine[:3, 3] = self.x[0], self.y[0], self.z[0]
        return affine

    def z_at(self, fraction: float) -> float:
        """World z of a fraction of the scan range (0 the lowest slice, 1 the highest)."""
        return float(self.z[0] + fraction * (self.z[-1] - self.z[0]))


@dataclass(frozen=True)
class Box:
    """A cropped block of the grid: index slices and broadcastable world mm coordinates."""

    index: tuple[slice, slice, slice]
    x: np.ndarray  # shape (n, 1, 1)
    y: np.ndarray  # shape (1, m, 1)
    z: np.ndarray  # shape (1, 1, p)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape of the block."""
        return self.x.shape[0], self.y.shape[1], self.z.shape[2]


def _box(grid: Grid, lo: Sequence[float], hi: Sequence[float]) -> Box | None:
    """The block of voxels whose centres lie in ``[lo, hi]`` (mm, per axis); None if empty."""
    index, coords = [], []
    for axis, (c, a, b) in enumerate(zip((grid.x, grid.y, grid.z), lo, hi, strict=True)):
        i0, i1 = int(np.searchsorted(c, a, "left")), int(np.searchsorted(c, b, "right"))
        if i1 <= i0:
            return None
        shape = [1, 1, 1]
        shape[axis] = i1 - i0
        index.append(slice(i0, i1))
        coords.append(c[i0:i1].astype(np.float32).reshape(shape))
    return Box(tuple(index), *coords)


def _slab(grid: Grid, k0: int, k1: int) -> Box:
    """The whole in-plane extent of slices ``k0 .. k1 - 1``."""
    lo = (grid.x[0], grid.y[0], grid.z[k0])
    hi = (grid.x[-1], grid.y[-1], grid.z[k1 - 1])
    box = _box(grid, lo, hi)
    assert box is not None
    return box


@dataclass
class Volume:
    """The phantom being drawn, in RAS order: HU values (float32) and tissue of every voxel."""

    hu: np.ndarray
    tissue: np.ndarray

    def paint(
        self,
        box: Box,
        mask: np.ndarray,
        hu: float | np.ndarray,
        tissue: Tissue,
        where: Sequence[Tissue] | None = None,
    ) -> np.ndarray:
        """Set HU and tissue inside ``mask`` (boolean, broadcastable to ``box``).

        With ``where``, only voxels currently made of one of those tissues change; this is how
        an organ stays inside the cavity or a vessel inside the liver. Returns the painted mask.
        """
        mask = np.broadcast_to(mask, box.shape)
        if where is not None:
            allowed = np.zeros(256, dtype=bool)
            allowed[list(where)] = True
            mask = mask & allowed[self.tissue[box.index]]
        hu_view = self.hu[box.index]
        hu_view[mask] = hu if np.isscalar(hu) else np.broadcast_to(hu, box.shape)[mask]
        self.tissue[box.index][mask] = tissue
        return mask


# --------------------------------------------------------------------------------------------
# Shapes: z-stacks of ellipses (organs) and perturbed ellipsoids (tumors, bowel loops)

Harmonic = tuple[int, float, float, float]  # order k, amplitude, phase, phase drift per mm of z


@dataclass(frozen=True)
class Bump:
    """A smooth bulge on an ellipsoid: ``amp * sin(freq * cos(angle to direction) + phase)``."""

    amp: float
    direction: tuple[float, float, float]
    freq: float
    phase: float


@dataclass(frozen=True)
class Tube:
    """An organ drawn as a stack of axial ellipses whose size follows a dome profile in z.

    Between ``z_lo`` and ``z_hi`` (mm) the semi-axes ``a`` (along ``angle``, radians from +x
    towards +y) and ``b`` are scaled by ``(1 - d^2) ** roundness``, where ``d`` runs from -1 at
    ``z_lo`` through 0 at the fraction ``peak`` of the extent to 1 at ``z_hi`` (roundness 0.5:
    an ellipsoid-like dome; 0: a cylinder). The centre moves linearly by ``shift`` (mm) from the
    top to the bottom end, and the outline is bent by ``wobble`` harmonics whose phases drift
    along z, so the shape changes smoothly from slice to slice.
    """

    cx: float
    cy: float
    a: float
    b: float
    angle: float
    z_lo: float
    z_hi: float
    peak: float = 0.5
    roundness: float = 0.5
    shift: tuple[float, float] = (0.0, 0.0)
    wobble: tuple[Harmonic, ...] = ()


@dataclass(frozen=True)
class Section:
    """A tube evaluated on its box: normalised radius ``rho`` (< 1 inside, NaN in slices the
    tube does not reach), the per-slice size ``scale`` and the per-slice centre."""

    box: Box
    rho: np.ndarray
    scale: np.ndarray  # (1, 1, p)
    cx: np.ndarray  # (1, 1, p)
    cy: np.ndarray  # (1, 1, p)


def _profile(z: np.ndarray, z_lo: float, z_hi: float, peak: float, roundness: float) -> np.ndarray:
    """Dome profile of a tube along z: 1 at the peak, 0 at and beyond both ends."""
    t = (z - z_lo) / (z_hi - z_lo)
    d = np.where(t < peak, (t - peak) / peak, (t - peak) / (1.0 - peak))
    inside = np.abs(d) <= 1.0
    return np.where(inside, np.clip(1.0 - d * d, 0.0, None) ** roundness, 0.0).astype(np.float32)


def _tube(grid: Grid, tube: Tube) -> Section | None:
    """Evaluate ``tube`` on the voxels of its bounding box; None when it misses the grid."""
    reach = max(tube.a, tube.b) * (1 + sum(abs(h[1]) for h in tube.wobble)) + math.hypot(
        *tube.shift
    )
    lo = (tube.cx - reach, tube.cy - reach, tube.z_lo)
    hi = (tube.cx + reach, tube.cy + reach, tube.z_hi)
    box = _box(grid, lo, hi)
    if box is None:
        return None
    scale = _profile(box.z, tube.z_lo, tube.z_hi, tube.peak, tube.roundness)
    below = (1 - (box.z - tube.z_lo) / (tube.z_hi - tube.z_lo)).astype(np.float32)
    cx = float(tube.cx) + below * float(tube.shift[0])
    cy = float(tube.cy) + below * float(tube.shift[1])
    safe = np.where(scale > 1e-3, scale, np.float32(np.nan))
    dx, dy = box.x - cx, box.y - cy
    c, s = math.cos(tube.angle), math.sin(tube.angle)
    u = (dx * c + dy * s) / (float(tube.a) * safe)
    v = (dy * c - dx * s) / (float(tube.b) * safe)
    rho = np.hypot(u, v)
    if tube.wobble:
        phi = np.arctan2(v, u)
        bend = np.ones_like(rho)
        for k, amp, phase, drift in tube.wobble:
            bend += float(amp) * np.cos(k * phi + (float(phase) + float(drift) * box.z))
        rho /= bend
    return Section(box, rho, scale, cx, cy)


def _blob(
    grid: Grid,
    centre: Sequence[float],
    radii: Sequence[float],
    rotation: np.ndarray,
    bumps: Sequence[Bump] = (),
) -> tuple[Box, np.ndarray] | None:
    """Normalised radius (< 1 inside) of a rotated, bumpy ellipsoid over its bounding box.

    ``rotation`` maps world offsets to the ellipsoid's axes, whose semi-axes are ``radii``."""
    centre, radii = [float(c) for c in centre], [float(r) for r in radii]
    # half-extent of the rotated ellipsoid along each world axis, enlarged by the bumps
    reach = np.sqrt(((rotation * np.array(radii)[:, None]) ** 2).sum(axis=0))
    reach *= 1 + sum(b.amp for b in bumps)
    box = _box(grid, np.subtract(centre, reach), np.add(centre, reach))
    if box is None:
        return None
    d = (box.x - centre[0], box.y - centre[1], box.z - centre[2])
    q = [sum(float(rotation[i, j]) * d[j] for j in range(3)) / radii[i] for i in range(3)]
    rho = np.sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2])
    if bumps:
        inv = 1.0 / np.maximum(rho, 1e-6)
        bend = np.ones_like(rho)
        for bump in bumps:
            cos_angle = (
                q[0] * bump.direction[0] + q[1] * bump.direction[1] + q[2] * bump.direction[2]
            ) * inv
            bend += bump.amp * np.sin(bump.freq * cos_angle + bump.phase)
        rho /= bend
    return box, rho


# --------------------------------------------------------------------------------------------
# Random draws


def _streams(seed: int) -> dict[str, np.random.Generator]:
    """Independent random streams per concern, so that e.g. the storage orientation, the noise
    or the tumor contrast knob never changes the anatomy drawn for a seed."""
    if seed < 0:
        raise InputError(None, f"phantom seed must be >= 0, got {seed}")
    return {name: np.random.default_rng([seed, i]) for i, name in enumerate(_STREAMS)}


def _wobble(
    rng: np.random.Generator, amplitude: float, orders: Sequence[int] = (2, 3, 4)
) -> tuple[Harmonic, ...]:
    """Low-frequency outline harmonics; higher orders get smaller amplitudes."""
    return tuple(
        (
            k,
            amplitude * rng.uniform(0.4, 1.0) * 2 / k,
            rng.uniform(0, 2 * math.pi),
            rng.uniform(-1, 1) * 2 * math.pi / 150.0,
        )
        for k in orders
    )


def _bumps(rng: np.random.Generator, n: int, amplitude: float) -> tuple[Bump, ...]:
    """``n`` random bulges whose amplitudes add up to at most ``amplitude`` (< 0.5 keeps the
    shape star-convex around its centre)."""
    out = []
    for _ in range(n):
        direction = rng.standard_normal(3)
        direction /= np.linalg.norm(direction)
        out.append(
            Bump(
                amplitude / n * rng.uniform(0.3, 1.0),
                tuple(float(v) for v in direction),
                rng.uniform(1.5, 4.0),
                rng.uniform(0, 2 * math.pi),
            )
        )
    return tuple(out)


def _rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3D orthogonal matrix."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    return q * np.sign(np.diag(r))


def _texture(rng: np.random.Generator, box: Box, amplitude: float) -> np.ndarray:
    """Smooth HU variation (wavelengths 40-120 mm, about +-``amplitude``) over ``box``: real
    parenchyma is not flat, so tumors cannot be found by a single threshold."""
    total = np.zeros(box.shape, dtype=np.float32)
    for _ in range(2):
        k = 2 * math.pi / rng.uniform(40, 120, size=3)
        p = rng.uniform(0, 2 * math.pi, size=3)
        total += (
            np.cos(float(k[0]) * box.x + float(p[0]))
            * np.cos(float(k[1]) * box.y + float(p[1]))
            * np.cos(float(k[2]) * box.z + float(p[2]))
        )
    return total * np.float32(amplitude / 2)


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    """A draw whose logarithm is uniform on ``[log lo, log hi]``."""
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


# --------------------------------------------------------------------------------------------
# Case-level draws: grid, body, intensities, craniocaudal layout


def _sample_grid(cfg: PhantomConfig, rng: np.random.Generator) -> Grid:
    """Matrix size, spacing and field-of-view position of one case.

    The body centre is world (0, 0); the field of view is shifted by up to 12 mm from it, and
    the scan starts at a table position between -700 and -300 mm.
    """
    nx = int(rng.integers(cfg.size_range[0], cfg.size_range[1] + 1))
    ny = nx
    if rng.random() < cfg.nonsquare_prob:
        ny = int(round(nx * rng.uniform(0.85, 0.97)))
    nz = int(rng.integers(cfg.slices_range[0], cfg.slices_range[1] + 1))
    dxy = round(rng.uniform(*cfg.fov_mm_range) / nx, 4)
    dz = round(rng.uniform(*cfg.slice_mm_range), 2)
    off_x, off_y = rng.uniform(-12.0, 12.0, size=2)
    z0 = rng.uniform(-700.0, -300.0)
    recon = rng.random() < 0.5
    x = off_x + (np.arange(nx) - (nx - 1) / 2) * dxy
    y = off_y + (np.arange(ny) - (ny - 1) / 2) * dxy
    z = z0 + np.arange(nz) * dz
    return Grid(x, y, z, (dxy, dxy, dz), nx * dxy / 2 if recon else None)


Wave = tuple[float, float, float]  # amplitude, period (mm), phase


def _wave_at(wave: Wave, z: np.ndarray | float) -> np.ndarray:
    """A slow sinusoid along z."""
    amp, period, phase = wave
    return amp * np.sin(2 * np.pi * np.asarray(z, dtype=np.float32) / period + phase)


@dataclass(frozen=True)
class Body:
    """Trunk outline, wall layers and spine position (world mm).

    The skin is an ellipse with semi-axes ``a`` (left-right) and ``b_ant`` / ``b_post``
    (flatter back), scaled slowly along z by ``wave``. In normalised radius, subcutaneous fat
    lies between ``r_muscle`` and 1, the muscle wall between ``r_cavity`` and ``r_muscle``, and
    the abdominal cavity inside ``r_cavity``.
    """

    a: float
    b_ant: float
    b_post: float
    r_muscle: float
    r_cavity: float
    wave: Wave
    spine_y: float
    size: float  # anatomy scale: cavity half-width / 125 mm

    @property
    def cavity(self) -> tuple[float, float, float]:
        """Cavity semi-axes (left-right, anterior, posterior) at the mean body size."""
        return self.a * self.r_cavity, self.b_ant * self.r_cavity, self.b_post * self.r_cavity

    def scale(self, z: np.ndarray | float) -> np.ndarray:
        """Outline scale factor at height ``z``."""
        return 1.0 + _wave_at(self.wave, z)

    def rho2(self, box: Box) -> np.ndarray:
        """Squared normalised body radius over ``box`` (< 1 inside the skin)."""
        s = self.scale(box.z)
        bx = box.x / (self.a * s)
        by = box.y / (np.where(box.y >= 0, self.b_ant, self.b_post).astype(np.float32) * s)
        return bx * bx + by * by


def _sample_body(grid: Grid, rng: np.random.Generator) -> Body:
    """A trunk that fills 75-90 % of the field of view left-right, with the table below it."""
    half_x = float(min(-grid.x[0], grid.x[-1]))
    amp = rng.uniform(0.01, 0.04)
    a = rng.uniform(0.8, 0.9) * half_x / (1 + amp)
    b_ant = min(a * rng.uniform(0.62, 0.76), 0.92 * float(grid.y[-1]) / (1 + amp))
    b_post = min(b_ant * rng.uniform(0.85, 0.95), 0.85 * -float(grid.y[0]) / (1 + amp))
    r_muscle = 1 - rng.uniform(0.06, 0.2)
    r_cavity = r_muscle - rng.uniform(0.06, 0.1)
    wave = (amp, rng.uniform(250.0, 600.0), rng.uniform(0, 2 * math.pi))
    spine_y = -b_post * r_cavity * rng.uniform(0.45, 0.55)
    size = a * r_cavity / 125.0
    return Body(a, b_ant, b_post, r_muscle, r_cavity, wave, spine_y, size)


@dataclass(frozen=True)
class Intensities:
    """Per-case HU of every tissue. ``enhancement`` (0 unenhanced .. 1 peak contrast) sets the
    contrast phase that links liver, spleen, kidney and vessel values."""

    enhancement: float
    fat: float
    visceral_fat: float
    muscle: float
    liver: float
    liver_vessel: float
    spleen: float
    cortex: float
    medulla: float
    sinus: float
    aorta: float
    ivc: float
    gallbladder: float
    bowel_wall: float
    lung: float
    cancellous: float
    cortical: float
    disc: float
    csf: float
    table: float


def _sample_intensities(dataset: str, rng: np.random.Generator) -> Intensities:
    """Tissue HU for one case. LiTS scans are mostly portal-venous but span all phases
    (liver 50-180 HU); KiTS19 scans are contrast-enhanced (kidney cortex 110-200 HU)."""
    e = rng.uniform(0.0, 1.0) if dataset == "lits" else rng.uniform(0.45, 1.0)
    fat, visceral_fat, muscle = rng.uniform(-120, -80), rng.uniform(-110, -70), rng.uniform(30, 60)
    liver = float(np.clip(50 + 130 * e + rng.normal(0, 6), 50, 180))
    return Intensities(
        enhancement=e,
        fat=fat,
        visceral_fat=visceral_fat,
        muscle=muscle,
        liver=liver,
        liver_vessel=liver - 15 + 65 * e + rng.uniform(-5, 5),
        spleen=float(np.clip(45 + 140 * e + rng.normal(0, 6), 40, 200)),
        cortex=35 + 165 * e + rng.uniform(-5, 5),
        medulla=30 + 75 * e * rng.uniform(0.6, 1.0),
        sinus=rng.uniform(-10, 20),
        aorta=40 + 210 * e + rng.uniform(-10, 10),
        ivc=35 + 120 * e + rng.uniform(-10, 10),
        gallbladder=rng.uniform(0, 25),
        bowel_wall=30 + 40 * e,
        lung=rng.uniform(-870, -820),
        cancellous=rng.uniform(250, 400),
        cortical=rng.uniform(700, 1200),
        disc=rng.uniform(70, 100),
        csf=rng.uniform(5, 20),
        table=rng.uniform(-250, -50),
    )


@dataclass(frozen=True)
class Layout:
    """Craniocaudal extents (world z, mm) of the organs of one case."""

    liver: tuple[float, float]
    kidney_right: tuple[float, float]
    kidney_left: tuple[float, float]
    spleen: tuple[float, float]
    stomach_z: float
    bowel: tuple[float, float]
    ribs_z: float


def _sample_layout(dataset: str, grid: Grid, rng: np.random.Generator) -> Layout:
    """Organ heights as fractions of the scan: LiTS scans centre on the liver, KiTS19 scans on
    the kidneys; both leave slices without the target organ at one end or both."""
    u = rng.uniform
    if dataset == "lits":
        liver = (u(0.12, 0.3), u(0.72, 0.9))
        right = (u(-0.25, 0.05), u(0.42, 0.52))
        spleen = (u(0.4, 0.5), liver[1] - u(0.0, 0.08))
        stomach, bowel, ribs = u(0.65, 0.85), (-0.15, 0.55), u(0.25, 0.45)
    else:
        right = (u(0.1, 0.25), u(0.6, 0.75))
        liver = (u(0.45, 0.6), u(1.05, 1.3))
        spleen = (u(0.55, 0.7), u(1.0, 1.2))
        stomach, bowel, ribs = u(0.85, 1.05), (-0.15, 0.5), u(0.4, 0.6)
    lift = u(0.02, 0.08)  # the left kidney sits higher than the right one
    left = (right[0] + lift, min(right[1] + lift, 0.85 if dataset == "kits" else 1.0))

    def mm(pair: tuple[float, float]) -> tuple[float, float]:
        return grid.z_at(pair[0]), grid.z_at(pair[1])

    return Layout(
        mm(liver), mm(right), mm(left), mm(spleen), grid.z_at(stomach), mm(bowel), grid.z_at(ribs)
    )


# --------------------------------------------------------------------------------------------
# Painters, in drawing order: later ones cover earlier ones


def _paint_body(vol: Volume, grid: Grid, body: Body, hu: Intensities, rows: int = 32) -> None:
    """Air, subcutaneous fat, muscle wall and visceral fat of the cavity, over the whole grid.

    Works in blocks of ``rows`` left-right positions: each is contiguous in memory, and the
    layer index (0 air .. 3 cavity) becomes HU and tissue through small lookup tables.
    """
    lut_hu = np.array([HU_AIR, hu.fat, hu.muscle, hu.visceral_fat], dtype=np.float32)
    lut_tissue = np.array(
        [Tissue.AIR, Tissue.FAT, Tissue.MUSCLE, Tissue.VISCERAL_FAT], dtype=np.uint8
    )
    x, y, z = grid.x, grid.y, grid.z
    for i0 in range(0, grid.shape[0], rows):
        i1 = min(i0 + rows, grid.shape[0])
        box = _box(grid, (x[i0], y[0], z[0]), (x[i1 - 1], y[-1], z[-1]))
        r2 = body.rho2(box)
        layer = (r2 < 1.0).astype(np.intp)
        layer += r2 < body.r_muscle**2
        layer += r2 < body.r_cavity**2
        vol.hu[box.index] = np.take(lut_hu, layer, mode="clip")
        vol.tissue[box.index] = np.take(lut_tissue, layer, mode="clip")


def _paint_table(
    vol: Volume, grid: Grid, body: Body, hu: Intensities, rng: np.random.Generator
) -> None:
    """The scanner table: a slab a few mm below the patient's back."""
    top = -body.b_post * (1 + body.wave[0]) - rng.uniform(2.0, 10.0)
    half_width = rng.uniform(0.7, 0.9) * body.a
    box = _box(
        grid, (-half_width, top - rng.uniform(6.0, 12.0), grid.z[0]), (half_width, top, grid.z[-1])
    )
    if box is not None:
        vol.paint(box, np.ones(box.shape, bool), hu.table, Tissue.TABLE, where=(Tissue.AIR,))


def _paint_bowel_loop(
    vol: Volume,
    grid: Grid,
    centre: Sequence[float],
    radii: Sequence[float],
    rng: np.random.Generator,
    hu: Intensities,
    upright: bool = False,
) -> None:
    """One bowel loop, a colon segment (``upright``: long axis along z) or the stomach:
    enhancing wall, fluid or oral-contrast content, and often a gas pocket above a horizontal
    gas-fluid level (gas rises anteriorly, +y, in a supine patient). Drawn only into visceral
    fat, so loops abut instead of overlapping."""
    rotation = np.eye(3) if upright else _rotation(rng)
    bumps = _bumps(rng, 3, 0.3)
    wall = rng.uniform(2.5, 4.0)
    content = rng.uniform(150, 300) if rng.random() < 0.15 else rng.uniform(0, 30)
    gas_draw = rng.random()
    level = -1.5 if gas_draw < 0.15 else (rng.uniform(-0.3, 0.5) if gas_draw < 0.6 else None)
    found = _blob(grid, centre, radii, rotation, bumps)
    if found is None:
        return
    box, rho = found
    lumen = rho < 1 - wall / min(radii)
    values = np.where(lumen, np.float32(content), np.float32(hu.bowel_wall))
    if level is not None:
        values[lumen & (box.y > centre[1] + level * radii[1])] = rng.uniform(-1000, -950)
    vol.paint(box, rho < 1, values, Tissue.BOWEL, where=(Tissue.VISCERAL_FAT,))


def _paint_bowel(
    vol: Volume, grid: Grid, body: Body, layout: Layout, hu: Intensities, rng: np.random.Generator
) -> None:
    """The stomach (left upper quadrant), the ascending and descending colon along the flanks
    and 14-26 small-bowel loops filling the anterior cavity."""
    A, B_ant, B_post = body.cavity
    k = body.size
    stomach = (-0.35 * A, 0.3 * B_ant, layout.stomach_z)
    _paint_bowel_loop(
        vol,
        grid,
        stomach,
        (rng.uniform(30, 45) * k, rng.uniform(25, 35) * k, rng.uniform(40, 60)),
        rng,
        hu,
    )
    for side in (1, -1):
        centre = (
            side * rng.uniform(0.6, 0.72) * A,
            rng.uniform(-0.25, 0.05) * B_post,
            layout.bowel[0] + rng.uniform(0.2, 0.4) * (layout.bowel[1] - layout.bowel[0]),
        )
        radii = (rng.uniform(16, 24) * k, rng.uniform(16, 24) * k, rng.uniform(80, 140))
        _paint_bowel_loop(vol, grid, centre, radii, rng, hu, upright=True)
    for _ in range(int(rng.integers(14, 27))):
        centre = (
            rng.uniform(-0.7, 0.65) * A,
            rng.uniform(-0.2 * B_post, 0.8 * B_ant),
            rng.uniform(*layout.bowel),
        )
        radii = (rng.uniform(12, 26) * k, rng.uniform(12, 26) * k, rng.uniform(15, 40))
        _paint_bowel_loop(vol, grid, centre, radii, rng, hu)


def _paint_liver(
    vol: Volume, grid: Grid, body: Body, layout: Layout, hu: Intensities, rng: np.random.Generator
) -> Box | None:
    """Right lobe against the right and anterior cavity wall, plus a left lobe crossing the
    midline anteriorly in the upper part. Returns the liver's bounding box."""
    A, B_ant, B_post = body.cavity
    z_lo, z_hi = layout.liver
    right = Tube(
        cx=rng.uniform(0.38, 0.46) * A,
        cy=rng.uniform(-0.08, 0.05) * B_ant,
        a=rng.uniform(0.5, 0.6) * A,
        b=rng.uniform(0.72, 0.85) * (B_ant + B_post) / 2,
        angle=math.radians(rng.uniform(-15, 15)),
        z_lo=z_lo,
        z_hi=z_hi,
        peak=rng.uniform(0.6, 0.8),
        roundness=rng.uniform(0.35, 0.55),
        shift=(rng.uniform(0.05, 0.15) * A, rng.uniform(0.0, 0.1) * B_ant),
        wobble=_wobble(rng, 0.06),
    )
    left = Tube(
        cx=rng.uniform(-0.15, 0.05) * A,
        cy=rng.uniform(0.4, 0.5) * B_ant,
        a=rng.uniform(0.35, 0.5) * A,
        b=rng.uniform(0.22, 0.3) * B_ant,
        angle=math.radians(rng.uniform(-15, 5)),
        z_lo=z_lo + rng.uniform(0.4, 0.55) * (z_hi - z_lo),
        z_hi=z_hi - rng.uniform(0.02, 0.08) * (z_hi - z_lo),
        peak=0.6,
        wobble=_wobble(rng, 0.08),
    )
    boxes = []
    for tube in (right, left):
        section = _tube(grid, tube)
        if section is None:
            continue
        box = section.box
        values = np.float32(hu.liver) + _texture(rng, box, rng.uniform(2, 6))
        vol.paint(
            box,
            section.rho < 1,
            values,
            Tissue.LIVER,
            where=(Tissue.VISCERAL_FAT, Tissue.BOWEL, Tissue.LIVER),
        )
        boxes.append(box)
    return _union_box(grid, boxes)


def _union_box(grid: Grid, boxes: Sequence[Box]) -> Box | None:
    """The smallest box holding all ``boxes``."""
    if not boxes:
        return None
    lo = [min(float(getattr(b, a).min()) for b in boxes) for a in "xyz"]
    hi = [max(float(getattr(b, a).max()) for b in boxes) for a in "xyz"]
    return _box(grid, lo, hi)


def _paint_gallbladder(
    vol: Volume, grid: Grid, body: Body, layout: Layout, hu: Intensities, rng: np.random.Generator
) -> None:
    """A fluid-dense pear under the liver's anterior-medial surface (absent in 20 % of cases,
    as after cholecystectomy): a dark look-alike that is not liver."""
    A, B_ant, _ = body.cavity
    z_lo, z_hi = layout.liver
    centre = (
        rng.uniform(0.15, 0.3) * A,
        rng.uniform(0.25, 0.4) * B_ant,
        z_lo + rng.uniform(0.15, 0.35) * (z_hi - z_lo),
    )
    radii = (rng.uniform(12, 20) * body.size, rng.uniform(10, 16) * body.size, rng.uniform(25, 40))
    rotation, bumps, present = _rotation(rng), _bumps(rng, 2, 0.15), rng.random() < 0.8
    found = _blob(grid, centre, radii, rotation, bumps) if present else None
    if found is not None:
        box, rho = found
        vol.paint(
            box,
            rho < 1,
            hu.gallbladder,
            Tissue.GALLBLADDER,
            where=(Tissue.LIVER, Tissue.VISCERAL_FAT, Tissue.BOWEL),
        )


def _paint_spleen(
    vol: Volume, grid: Grid, body: Body, layout: Layout, hu: Intensities, rng: np.random.Generator
) -> None:
    """A crescent-like ellipse along the left posterolateral cavity wall."""
    A, _, B_post = body.cavity
    theta = math.radians(rng.uniform(-150, -130))
    tube = Tube(
        cx=0.68 * A * math.cos(theta),
        cy=0.68 * B_post * math.sin(theta),
        a=rng.uniform(40, 55) * body.size,
        b=rng.uniform(16, 24) * body.size,
        angle=theta + math.pi / 2,
        z_lo=layout.spleen[0],
        z_hi=layout.spleen[1],
        peak=rng.uniform(0.4, 0.6),
        wobble=_wobble(rng, 0.1),
    )
    section = _tube(grid, tube)
    if section is not None:
        box = section.box
        values = np.float32(hu.spleen) + _texture(rng, box, 4.0)
        vol.paint(
            box,
            section.rho < 1,
            values,
            Tissue.SPLEEN,
            where=(Tissue.VISCERAL_FAT, Tissue.BOWEL),
        )


def _kidney_tube(
    body: Body, z_range: tuple[float, float], side: int, rng: np.random.Generator
) -> Tube:
    """One kidney beside the spine (``side`` +1 right, -1 left). Its long axis points
    anterolaterally, so the hilum faces anteromedially; the lower pole lies more lateral and
    anterior than the upper one."""
    k = body.size
    angle = math.radians(rng.uniform(45, 65))
    if side < 0:
        angle = math.pi - angle
    return Tube(
        cx=side * (rng.uniform(18, 24) + rng.uniform(38, 50)) * k,
        cy=body.spine_y + rng.uniform(-8, 4) * k,
        a=rng.uniform(26, 32) * k,
        b=rng.uniform(18, 23) * k,
        angle=angle,
        z_lo=z_range[0],
        z_hi=z_range[1],
        peak=rng.uniform(0.45, 0.55),
        shift=(side * rng.uniform(5, 12) * k, rng.uniform(3, 8) * k),
        wobble=_wobble(rng, 0.04),
    )


def _paint_kidney(
    vol: Volume, grid: Grid, tube: Tube, hu: Intensities, rng: np.random.Generator
) -> Box | None:
    """Cortex (5-7 mm rim), medulla and, around the hilum, the renal sinus; all are kidney.
    Returns the kidney's bounding box."""
    cortex_mm = rng.uniform(5, 7)
    section = _tube(grid, tube)
    if section is None:
        return None
    box, rho = section.box, section.rho
    local_b = tube.b * np.where(section.scale > 1e-3, section.scale, np.nan)
    medulla = rho < 1 - cortex_mm / local_b
    normal = np.array([-math.sin(tube.angle), math.cos(tube.angle)])
    if normal[0] * tube.cx > 0:  # make the hilum face the midline
        normal = -normal
    sx = section.cx + 0.5 * local_b * normal[0]
    sy = section.cy + 0.5 * local_b * normal[1]
    c, s = math.cos(tube.angle), math.sin(tube.angle)
    dx, dy = box.x - sx, box.y - sy
    su = (dx * c + dy * s) / (0.45 * tube.a * section.scale + 1e-6)
    sv = (dy * c - dx * s) / (0.4 * local_b)
    sinus = (su * su + sv * sv < 1) & (section.scale > 0.7) & medulla
    values = np.where(medulla, np.float32(hu.medulla), np.float32(hu.cortex))
    values = np.where(sinus, np.float32(hu.sinus), values) + _texture(rng, box, 3.0)
    vol.paint(
        box,
        rho < 1,
        values,
        Tissue.KIDNEY,
        where=(Tissue.VISCERAL_FAT, Tissue.BOWEL, Tissue.LIVER, Tissue.SPLEEN, Tissue.GALLBLADDER),
    )
    return box


@dataclass(frozen=True)
class Spine:
    """Vertebral column geometry (mm): body semi-axes, canal, and the vertebral period."""

    y: float
    r_lr: float
    r_ap: float
    canal_r: float
    period: float
    disc: float
    phase: float
    lordosis: Wave

    def centre_y(self, z: np.ndarray) -> np.ndarray:
        """Vertebral body centre y at height ``z`` (a slow lordotic curve)."""
        return self.y + _wave_at(self.lordosis, z)

    def canal_y(self, z: np.ndarray) -> np.ndarray:
        """Spinal canal centre y at height ``z``, just behind the vertebral body."""
        return self.centre_y(z) - self.r_ap - self.canal_r - 1.0


def _sample_spine(body: Body, rng: np.random.Generator) -> Spine:
    """Lumbar-sized vertebrae, 32-40 mm per level including a 7-10 mm disc."""
    k = body.size
    period = rng.uniform(32, 40)
    return Spine(
        body.spine_y,
        rng.uniform(18, 24) * k,
        rng.uniform(14, 18) * k,
        rng.uniform(7, 9) * k,
        period,
        rng.uniform(7, 10),
        rng.uniform(0, period),
        (rng.uniform(2, 6), rng.uniform(400, 800), rng.uniform(0, 2 * math.pi)),
    )


def _paint_lungs(
    vol: Volume,
    grid: Grid,
    body: Body,
    layout: Layout,
    spine: Spine,
    hu: Intensities,
    rng: np.random.Generator,
) -> None:
    """Lung bases and heart above a double-domed diaphragm.

    The right dome tops the liver, the left one is lower, and the costophrenic recesses reach
    down posteriorly and laterally. Above the diaphragm the heart (blood pool) sits anteriorly
    left of the midline, and the posterior mediastinum in front of the spine stays fat.
    """
    A, B_ant, B_post = body.cavity
    apex_r = layout.liver[1] - rng.uniform(0.0, 0.05) * (layout.liver[1] - layout.liver[0])
    apex_l = apex_r - rng.uniform(5.0, 20.0)
    depth = rng.uniform(0.3, 0.5) * (layout.liver[1] - layout.liver[0])
    ya = rng.uniform(0.0, 0.15) * B_ant
    heart = (
        rng.uniform(-0.2, -0.05) * A,
        rng.uniform(0.2, 0.35) * B_ant,
        rng.uniform(0.3, 0.4) * A,
        rng.uniform(0.45, 0.6) * B_ant,
    )
    x2, y2 = grid.x[:, None], grid.y[None, :]
    fall = ((y2 - ya) / np.where(y2 >= ya, B_ant, B_post)) ** 2
    dome_r = apex_r - depth * (((x2 - 0.35 * A) / A) ** 2 + fall)
    dome_l = apex_l - depth * (((x2 + 0.4 * A) / A) ** 2 + fall)
    diaphragm = np.maximum(dome_r, dome_l).astype(np.float32)
    k0 = int(np.searchsorted(grid.z, diaphragm.min(), "right"))
    if k0 >= grid.shape[2]:
        return
    box = _slab(grid, k0, grid.shape[2])
    thorax = box.z > diaphragm[:, :, None]
    in_heart = ((box.x - heart[0]) / heart[2]) ** 2 + ((box.y - heart[1]) / heart[3]) ** 2 < 1
    posterior_mediastinum = (np.abs(box.x) < spine.r_lr + 10) & (box.y < spine.y + spine.r_ap + 30)
    covered = (Tissue.VISCERAL_FAT, Tissue.BOWEL, Tissue.LIVER, Tissue.SPLEEN, Tissue.GALLBLADDER)
    vol.paint(box, thorax & in_heart, hu.ivc, Tissue.VESSEL, where=covered)
    vol.paint(box, thorax & ~in_heart & ~posterior_mediastinum, hu.lung, Tissue.LUNG, where=covered)


def _paint_muscles(
    vol: Volume, grid: Grid, body: Body, spine: Spine, hu: Intensities, rng: np.random.Generator
) -> None:
    """Erector spinae behind the spine and the psoas beside it, growing towards the pelvis."""
    back = -body.b_post * body.r_muscle
    x_es, half_es = rng.uniform(26, 32) * body.size, rng.uniform(18, 24) * body.size
    psoas_top = grid.z_at(rng.uniform(0.4, 0.8))
    psoas_growth = rng.uniform(100, 200)
    box = _box(
        grid,
        (-x_es - half_es - spine.r_lr - 40, back, grid.z[0]),
        (x_es + half_es + spine.r_lr + 40, spine.y + 2 * spine.r_ap, grid.z[-1]),
    )
    if box is None:
        return
    canal = spine.canal_y(box.z)
    cy = (canal + back) / 2
    half_y = (canal - back) / 2 + 6
    erector = ((np.abs(box.x) - x_es) / half_es) ** 2 + ((box.y - cy) / half_y) ** 2 < 1
    r_ps = (6 + 14 * np.clip((psoas_top - box.z) / psoas_growth, 0, 1)) * body.size
    r_ps = np.where(box.z < psoas_top, r_ps, 0).astype(np.float32)
    psoas = (
        (np.abs(box.x) - spine.r_lr - 0.8 * r_ps) ** 2 + (box.y - spine.centre_y(box.z) - 2) ** 2
    ) < r_ps**2
    vol.paint(
        box,
        erector | psoas,
        hu.muscle,
        Tissue.MUSCLE,
        where=(
            Tissue.VISCERAL_FAT,
            Tissue.MUSCLE,
            Tissue.BOWEL,
            Tissue.KIDNEY,
            Tissue.LIVER,
            Tissue.SPLEEN,
        ),
    )


def _paint_vessels(
    vol: Volume, grid: Grid, spine: Spine, hu: Intensities, rng: np.random.Generator
) -> None:
    """Aorta anterior-left of the spine (patient's left is -x) and the flatter inferior vena
    cava anterior-right of it, over the whole scan."""
    r_ao = rng.uniform(9, 13)
    aorta = Tube(
        cx=-rng.uniform(10, 20),
        cy=spine.y + spine.r_ap + r_ao + rng.uniform(1, 4),
        a=r_ao,
        b=r_ao,
        angle=0.0,
        z_lo=grid.z[0] - 1,
        z_hi=grid.z[-1] + 1,
        roundness=0.0,
        shift=(rng.uniform(-4, 4), rng.uniform(-4, 4)),
    )
    ivc = Tube(
        cx=rng.uniform(18, 28),
        cy=spine.y + spine.r_ap + rng.uniform(6, 12),
        a=rng.uniform(11, 15),
        b=rng.uniform(7, 10),
        angle=math.radians(rng.uniform(-20, 20)),
        z_lo=grid.z[0] - 1,
        z_hi=grid.z[-1] + 1,
        roundness=0.0,
        shift=(rng.uniform(-4, 4), rng.uniform(-4, 4)),
    )
    for tube, value in ((aorta, hu.aorta), (ivc, hu.ivc)):
        section = _tube(grid, tube)
        if section is not None:
            vol.paint(
                section.box,
                section.rho < 1,
                value,
                Tissue.VESSEL,
                where=(
                    Tissue.VISCERAL_FAT,
                    Tissue.BOWEL,
                    Tissue.LIVER,
                    Tissue.MUSCLE,
                    Tissue.KIDNEY,
                    Tissue.LUNG,
                ),
            )


def _paint_spine(vol: Volume, grid: Grid, body: Body, spine: Spine, hu: Intensities) -> None:
    """Vertebral bodies (cancellous core, cortical shell) alternating with discs, the spinal
    canal, and posterior elements (arch, spinous and transverse processes) in part of each
    level."""
    back = -body.b_post * body.r_muscle
    reach = spine.r_lr + 45 * body.size
    box = _box(grid, (-reach, back, grid.z[0]), (reach, spine.y + spine.r_ap + 12, grid.z[-1]))
    if box is None:
        return
    level = np.mod(box.z - spine.phase, spine.period)
    disc = level < spine.disc
    frac = (level - spine.disc) / (spine.period - spine.disc)
    arch_z = (frac > 0.1) & (frac < 0.7)
    transverse_z = (frac > 0.3) & (frac < 0.6)
    cy, canal_y = spine.centre_y(box.z), spine.canal_y(box.z)
    rv = np.hypot(box.x / spine.r_lr, (box.y - cy) / spine.r_ap)
    vertebra = rv < 1
    shell = rv > 1 - 2.0 / spine.r_ap
    rc = np.hypot(box.x, box.y - canal_y)
    canal = rc < spine.canal_r
    arch = (rc < spine.canal_r + 6 * body.size) & ~canal & arch_z
    tip = back + 8
    spinous = (
        (np.abs(box.x) < 4 * body.size) & (box.y < canal_y - spine.canal_r) & (box.y > tip) & arch_z
    )
    xt = spine.canal_r + 16 * body.size
    transverse = (
        (
            ((np.abs(box.x) - xt) / (14 * body.size)) ** 2
            + ((box.y - canal_y - 2) / (4.5 * body.size)) ** 2
        )
        < 1
    ) & transverse_z
    bone = np.where(shell, np.float32(hu.cortical), np.float32(hu.cancellous))
    values = np.where(vertebra & disc, np.float32(hu.disc), bone)
    values = np.where(arch | spinous | transverse, np.float32(0.8 * hu.cortical), values)
    values = np.where(canal, np.float32(hu.csf), values)
    vol.paint(box, vertebra | canal | arch | spinous | transverse, values, Tissue.SPINE)


def _paint_ribs(
    vol: Volume, grid: Grid, body: Body, layout: Layout, hu: Intensities, rng: np.random.Generator
) -> None:
    """Oblique rib sections in the muscle wall, mirrored left and right. Ribs descend
    anteriorly, so their angular positions drift with z; the lowest slices only show
    posterior ribs and the anterior limit rises along the costal margin."""
    period = math.radians(rng.uniform(19, 25))
    drift = math.radians(rng.uniform(0.7, 1.2))  # per mm of z
    phase = rng.uniform(0, period)
    costal = rng.uniform(70, 120)
    half_t, half_r = rng.uniform(6, 9) * body.size, rng.uniform(3.5, 5) * body.size
    ring = (body.r_muscle + body.r_cavity) / 2
    half_dz = grid.spacing[2] / 2
    for zk in grid.z[grid.z >= layout.ribs_z]:
        s = float(body.scale(zk))
        top = math.radians(-60 + 140 * min(max((zk - layout.ribs_z) / costal, 0.0), 1.0))
        start = (phase + drift * zk) % period - math.pi / 2
        for theta in np.arange(start, top, period):
            if theta < math.radians(-75):
                continue
            b = body.b_ant if theta > 0 else body.b_post
            for side in (1, -1):
                cx = side * body.a * s * ring * math.cos(theta)
                cy = b * s * ring * math.sin(theta)
                tangent = math.atan2(b * math.cos(theta), -side * body.a * math.sin(theta))
                _stamp_rib(vol, grid, (cx, cy, zk), half_dz, half_t, half_r, tangent, hu)


def _stamp_rib(
    vol: Volume,
    grid: Grid,
    centre: tuple[float, float, float],
    half_dz: float,
    half_t: float,
    half_r: float,
    angle: float,
    hu: Intensities,
) -> None:
    """One rib section in one slice: an ellipse elongated along the body wall, cortical rim
    and marrow."""
    cx, cy, z = centre
    box = _box(
        grid, (cx - half_t, cy - half_t, z - half_dz), (cx + half_t, cy + half_t, z + half_dz)
    )
    if box is None:
        return
    c, s = math.cos(angle), math.sin(angle)
    dx, dy = box.x - cx, box.y - cy
    rho = np.hypot((dx * c + dy * s) / half_t, (dy * c - dx * s) / half_r)
    values = np.where(rho > 1 - 1.5 / half_r, np.float32(hu.cortical), np.float32(hu.cancellous))
    vol.paint(
        box,
        rho < 1,
        values,
        Tissue.RIB,
        where=(Tissue.MUSCLE, Tissue.FAT, Tissue.VISCERAL_FAT, Tissue.LUNG),
    )


def _paint_liver_vessels(
    vol: Volume,
    grid: Grid,
    body: Body,
    layout: Layout,
    liver: Box | None,
    hu: Intensities,
    rng: np.random.Generator,
) -> None:
    """Portal and hepatic vein branches: tapering tubes from the hilum to random points of the
    liver, drawn only inside it (they stay liver in the label, as in LiTS)."""
    if liver is None:
        return
    A, _, B_post = body.cavity
    z_lo, z_hi = layout.liver
    hilum = np.array([0.2 * A, -0.1 * B_post, z_lo + 0.55 * (z_hi - z_lo)])
    inside = np.flatnonzero(vol.tissue[liver.index] == Tissue.LIVER)
    n_branches = int(rng.integers(4, 8))
    picks = rng.integers(0, max(len(inside), 1), size=n_branches)
    r_hilum = rng.uniform(4.0, 7.0, size=n_branches)
    r_tip = rng.uniform(1.5, 3.0, size=n_branches)
    if len(inside) == 0:
        return
    ends = np.array(np.unravel_index(inside[picks], liver.shape)).T
    for (i, j, k), r0, r1 in zip(ends, r_hilum, r_tip, strict=True):
        end = np.array([liver.x[i, 0, 0], liver.y[0, j, 0], liver.z[0, 0, k]], dtype=float)
        _paint_branch(vol, grid, hilum, end, float(r0), float(r1), hu.liver_vessel)


def _paint_branch(
    vol: Volume,
    grid: Grid,
    start: np.ndarray,
    end: np.ndarray,
    r0: float,
    r1: float,
    value: float,
    piece_mm: float = 30.0,
) -> None:
    """A tube tapering from radius ``r0`` to ``r1``, drawn as short capsules so each one is
    evaluated on a small box only."""
    n = max(1, int(math.ceil(np.linalg.norm(end - start) / piece_mm)))
    for i in range(n):
        p, q = start + (end - start) * i / n, start + (end - start) * (i + 1) / n
        ra, rb = r0 + (r1 - r0) * i / n, r0 + (r1 - r0) * (i + 1) / n
        reach = max(ra, rb)
        box = _box(grid, np.minimum(p, q) - reach, np.maximum(p, q) + reach)
        if box is None:
            continue
        seg = q - p
        length2 = float(seg @ seg) or 1.0
        d = (box.x - p[0], box.y - p[1], box.z - p[2])
        t = np.clip((d[0] * seg[0] + d[1] * seg[1] + d[2] * seg[2]) / length2, 0, 1)
        dist2 = sum((d[i] - t * seg[i]) ** 2 for i in range(3))
        radius = ra + (rb - ra) * t
        vol.paint(box, dist2 < radius * radius, value, Tissue.LIVER, where=(Tissue.LIVER,))


# --------------------------------------------------------------------------------------------
# Tumors


def _organ_voxels(vol: Volume, box: Box, tissue: Tissue, side: int = 0) -> np.ndarray:
    """Flat indices (into ``box``) of the voxels of ``tissue``; ``side`` +1 / -1 keeps only the
    patient's right (x > 0) / left half."""
    mask = vol.tissue[box.index] == tissue
    if side:
        mask &= (box.x * side) > 0
    return np.flatnonzero(mask)


def _paint_tumors(
    vol: Volume,
    grid: Grid,
    cfg: PhantomConfig,
    hu: Intensities,
    organ_boxes: dict[str, Box | None],
    rng: np.random.Generator,
) -> list[dict]:
    """Draw 0..max_tumors perturbed ellipsoids centred on organ voxels; return their truth.

    LiTS tumors are clipped to the liver; KiTS tumors may bulge out of the kidney into the
    surrounding fat (exophytic), as renal tumors do. A voxel belongs to the first tumor that
    claims it, so the listed voxel counts add up to the label-2 total exactly. Tumors left
    without a voxel are not listed.
    """
    none = rng.random() < cfg.p_no_tumor
    count = 0 if none or cfg.max_tumors == 0 else int(rng.integers(1, cfg.max_tumors + 1))
    organ = TARGET_TISSUE[cfg.dataset]
    reference = hu.liver if cfg.dataset == "lits" else hu.cortex
    allowed = (Tissue.LIVER,) if cfg.dataset == "lits" else (Tissue.KIDNEY, Tissue.VISCERAL_FAT)
    tumors = []
    for _ in range(count):
        diameter = _log_uniform(rng, *cfg.tumor_mm_range)
        radii = diameter / 2 * np.concatenate([[1.0], rng.uniform(0.7, 1.0, size=2)])
        rotation, bumps = _rotation(rng), _bumps(rng, 3, 0.35)
        magnitude = rng.uniform(10, 20) if rng.random() < 0.25 else rng.uniform(20, 80)
        sign = -1.0 if rng.random() < 0.75 else 1.0
        contrast = sign * magnitude * cfg.tumor_contrast
        side = (1 if rng.random() < 0.5 else -1) if cfg.dataset == "kits" else 0
        pick = rng.random()
        name = "liver" if side == 0 else ("right_kidney" if side > 0 else "left_kidney")
        box = organ_boxes.get(name)
        candidates = _organ_voxels(vol, box, organ, side) if box is not None else np.empty(0, int)
        if len(candidates) == 0:
            continue
        i, j, k = np.unravel_index(candidates[int(pick * len(candidates))], box.shape)
        centre = (float(box.x[i, 0, 0]), float(box.y[0, j, 0]), float(box.z[0, 0, k]))
        found = _blob(grid, centre, radii, rotation, bumps)
        if found is None:
            continue
        blob_box, rho = found
        painted = vol.paint(blob_box, rho < 1, reference + contrast, Tissue.TUMOR, where=allowed)
        voxels = int(painted.sum())
        if voxels:
            tumors.append(
                {
                    "organ": name,
                    "center_mm": [round(c, 2) for c in centre],
                    "diameter_mm": round(diameter, 2),
                    "contrast_hu": round(contrast, 2),
                    "voxels": voxels,
                }
            )
    return tumors


# --------------------------------------------------------------------------------------------
# Acquisition (blur, noise) and storage


def _blur_sigmas(cfg: PhantomConfig, grid: Grid) -> list[float]:
    """Blur sigma per RAS axis in voxels; 0 where the truncated kernel would be one tap wide
    (thick slices), so that axis costs no filter pass."""
    sigmas = [cfg.blur_sigma_mm / s for s in grid.spacing]
    return [s if int(BLUR_TRUNCATE * s + 0.5) > 0 else 0.0 for s in sigmas]


def _kernel_gain(sigmas: Sequence[float]) -> float:
    """L2 norm of the discrete Gaussian kernel ``scipy.ndimage.gaussian_filter`` applies: the
    factor by which it shrinks the standard deviation of white noise."""
    gain = 1.0
    for sigma in sigmas:
        if sigma > 0:
            radius = int(BLUR_TRUNCATE * sigma + 0.5)
            w = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
            w /= w.sum()
            gain *= float(np.sqrt((w * w).sum()))
    return gain


def _acquire(
    hu: np.ndarray, grid: Grid, cfg: PhantomConfig, rng: np.random.Generator
) -> np.ndarray:
    """Simulate reconstruction: white noise plus the ideal image, blurred by one Gaussian PSF,
    so the noise gets CT's correlated texture and a standard deviation of ``noise_hu``; then
    -1024 outside the reconstruction circle, rounding and clipping to int16 [-1024, 3071].
    ``hu`` (the ideal image, float32) is used as the work buffer and overwritten."""
    sigmas = _blur_sigmas(cfg, grid)
    if cfg.noise_hu > 0:
        noise = rng.standard_normal(hu.shape, dtype=np.float32)
        noise *= np.float32(cfg.noise_hu / _kernel_gain(sigmas))
        hu += noise
        del noise
    if any(sigmas):
        ndimage.gaussian_filter(hu, sigmas, output=hu, mode="nearest", truncate=BLUR_TRUNCATE)
    if grid.recon_radius is not None:
        cx, cy = (grid.x[0] + grid.x[-1]) / 2, (grid.y[0] + grid.y[-1]) / 2
        outside = np.hypot(grid.x[:, None] - cx, grid.y[None, :] - cy) > grid.recon_radius
        hu[outside] = HU_MIN
    np.rint(hu, out=hu)
    np.clip(hu, HU_MIN, HU_MAX, out=hu)
    return hu.astype(np.int16)


def _stored_axcodes(cfg: PhantomConfig, rng: np.random.Generator) -> str:
    """Draw the stored orientation: each axis flipped with ``flip_prob``, and with
    ``permute_prob`` one of the five non-(x, y, z) axis orders."""
    letters = [pair[int(rng.random() < cfg.flip_prob)] for pair in ("RL", "AP", "SI")]
    orders = [p for p in itertools.permutations(range(3)) if p != (0, 1, 2)]
    permute, which = rng.random() < cfg.permute_prob, int(rng.integers(len(orders)))
    order = orders[which] if permute else (0, 1, 2)
    return "".join(letters[i] for i in order)


def _nifti(data: np.ndarray, grid: Grid, axcodes: str) -> nib.Nifti1Image:
    """A NIfTI image of the RAS array ``data`` stored in orientation ``axcodes``, with a
    matching affine (qform and sform, scanner coordinates, mm)."""
    transform = ornt_transform(axcodes2ornt("RAS"), axcodes2ornt(tuple(axcodes)))
    stored = np.ascontiguousarray(apply_orientation(data, transform))
    affine = grid.affine @ inv_ornt_aff(transform, data.shape)
    image = nib.Nifti1Image(stored, affine)
    image.header.set_xyzt_units("mm", "sec")
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    return image


def _draw(
    cfg: PhantomConfig, grid: Grid, anatomy: np.random.Generator, tumor_rng: np.random.Generator
) -> tuple[Volume, Intensities, list[dict]]:
    """Draw the noiseless phantom on ``grid``: the volume, its tissue HU and the tumor truth.

    Painters run from background to foreground; each later one covers (or, through its
    ``where`` tissues, respects) the earlier ones, so the tissue map stays consistent.
    """
    body = _sample_body(grid, anatomy)
    hu = _sample_intensities(cfg.dataset, anatomy)
    layout = _sample_layout(cfg.dataset, grid, anatomy)
    spine = _sample_spine(body, anatomy)
    vol = Volume(np.empty(grid.shape, np.float32), np.empty(grid.shape, np.uint8))
    _paint_body(vol, grid, body, hu)
    _paint_table(vol, grid, body, hu, anatomy)
    _paint_bowel(vol, grid, body, layout, hu, anatomy)
    _paint_spleen(vol, grid, body, layout, hu, anatomy)
    boxes = {"liver": _paint_liver(vol, grid, body, layout, hu, anatomy)}
    _paint_gallbladder(vol, grid, body, layout, hu, anatomy)
    for name, z_range, side in (
        ("right_kidney", layout.kidney_right, 1),
        ("left_kidney", layout.kidney_left, -1),
    ):
        tube = _kidney_tube(body, z_range, side, anatomy)
        boxes[name] = _paint_kidney(vol, grid, tube, hu, anatomy)
    _paint_muscles(vol, grid, body, spine, hu, anatomy)
    _paint_lungs(vol, grid, body, layout, spine, hu, anatomy)
    _paint_vessels(vol, grid, spine, hu, anatomy)
    _paint_spine(vol, grid, body, spine, hu)
    _paint_ribs(vol, grid, body, layout, hu, anatomy)
    _paint_liver_vessels(vol, grid, body, layout, boxes["liver"], hu, anatomy)
    tumors = _paint_tumors(vol, grid, cfg, hu, boxes, tumor_rng)
    return vol, hu, tumors


def generate_case(cfg: PhantomConfig, seed: int) -> tuple[nib.Nifti1Image, nib.Nifti1Image, dict]:
    """Draw one phantom case: (image, label, truth), deterministic per ``(cfg, seed)``.

    The image is int16 HU and the label uint8 (0 background, 1 organ: liver for ``lits``,
    kidneys for ``kits``, 2 tumor); both share one affine. The truth dict holds ``tumors``
    (``organ``, ``center_mm`` in world RAS mm, ``diameter_mm``, ``contrast_hu`` against the
    organ, ``voxels`` with label 2), ``organ_voxels`` (label 1), ``orientation`` (axis codes of
    the stored array), ``spacing`` (voxel size per stored axis), ``shape``, ``seed``,
    ``enhancement`` (contrast phase, 0 unenhanced .. 1 peak) and ``organ_hu``.
    """
    rngs = _streams(seed)
    grid = _sample_grid(cfg, rngs["geometry"])
    vol, hu, tumors = _draw(cfg, grid, rngs["anatomy"], rngs["tumors"])
    label = np.zeros(grid.shape, np.uint8)
    label[vol.tissue == TARGET_TISSUE[cfg.dataset]] = 1
    label[vol.tissue == Tissue.TUMOR] = 2
    image = _acquire(vol.hu, grid, cfg, rngs["noise"])
    axcodes = _stored_axcodes(cfg, rngs["orientation"])
    image_nii, label_nii = _nifti(image, grid, axcodes), _nifti(label, grid, axcodes)
    truth = {
        "seed": int(seed),
        "tumors": tumors,
        "organ_voxels": int(np.count_nonzero(label == 1)),
        "orientation": "".join(nib.aff2axcodes(image_nii.affine)),
        "spacing": [round(float(s), 4) for s in image_nii.header.get_zooms()],
        "shape": list(image_nii.shape),
        "enhancement": round(hu.enhancement, 3),
        "organ_hu": round(hu.liver if cfg.dataset == "lits" else hu.cortex, 1),
    }
    return image_nii, label_nii, truth


# --------------------------------------------------------------------------------------------
# Datasets on disk


def case_id(dataset: str, index: int) -> str:
    """The real datasets' case name: ``volume-{i}`` (LiTS) or ``case_{i:05d}`` (KiTS19)."""
    return f"volume-{index}" if dataset == "lits" else f"case_{index:05d}"


def case_files(root: str | Path, dataset: str, index: int) -> tuple[Path, Path]:
    """(image, label) paths of case ``index`` in the real layout under ``root``."""
    root = Path(root)
    if dataset == "lits":
        return root / f"volume-{index}.nii.gz", root / f"segmentation-{index}.nii.gz"
    folder = root / case_id(dataset, index)
    return folder / "imaging.nii.gz", folder / "segmentation.nii.gz"


def case_seed(seed: int, index: int) -> int:
    """Seed of case ``index`` in a dataset written with ``seed``."""
    return seed * 100003 + index


def _config_digest(cfg: PhantomConfig) -> str:
    """Short fingerprint of a config: a case written with another config is redrawn."""
    return hashlib.sha256(json.dumps(asdict(cfg), sort_keys=True).encode()).hexdigest()[:16]


def _write_case(root: Path, cfg: PhantomConfig, index: int, seed: int) -> tuple[str, dict]:
    """Generate case ``index`` and write its two files atomically; return (id, truth)."""
    image, label, truth = generate_case(cfg, seed)
    image_path, label_path = case_files(root, cfg.dataset, index)
    for img, path in ((image, image_path), (label, label_path)):
        with atomic_path(path) as tmp:
            nib.save(img, str(tmp))
    truth["config"] = _config_digest(cfg)
    return case_id(cfg.dataset, index), truth


def _read_truth(path: Path) -> dict[str, dict]:
    """The truth file of a phantom folder, or an empty dict when there is none yet."""
    if not path.exists():
        return {}
    try:
        truth = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(
            path, f"unreadable phantom truth file ({exc}); delete it to redraw"
        ) from None
    if not isinstance(truth, dict):
        raise InputError(path, "phantom truth file must hold an object keyed by case id")
    return truth


def _case_order(key: str) -> tuple[int, str]:
    """Sort key that puts ``volume-2`` before ``volume-10``."""
    digits = "".join(ch for ch in key if ch.isdigit())
    return (int(digits) if digits else -1, key)


@contextlib.contextmanager
def _case_results(
    root: Path, cfg: PhantomConfig, jobs: Sequence[tuple[int, int]], workers: int
) -> Iterator[Iterator[tuple[str, dict]]]:
    """Write the pending cases, in this process or in a pool of ``workers`` processes; yields
    an iterator of ``(case id, truth)`` in completion order.

    The pool forks its workers on entry, before the caller starts any thread (the progress
    bar), so no lock is inherited mid-use; forking avoids re-importing the calling script
    (and torch) in every worker, as spawning would. Where fork does not exist, workers are
    spawned. On an error, cases not yet started are cancelled.
    """
    if workers <= 1 or len(jobs) <= 1:
        yield (_write_case(root, cfg, index, seed) for index, seed in jobs)
        return
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    pool = ProcessPoolExecutor(
        max_workers=min(workers, len(jobs)), mp_context=multiprocessing.get_context(method)
    )
    try:
        futures = [pool.submit(_write_case, root, cfg, index, seed) for index, seed in jobs]
        yield (future.result() for future in as_completed(futures))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@contextlib.contextmanager
def _progress(enabled: bool, total: int, description: str) -> Iterator[Callable[[int], None]]:
    """A rich progress bar (or nothing); yields ``advance(n)``."""
    if not enabled:
        yield lambda n: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


def write_dataset(
    root: str | Path,
    cfg: PhantomConfig,
    n_cases: int,
    seed: int = 0,
    workers: int = 1,
    progress: bool = True,
) -> list[Path]:
    """Write ``n_cases`` phantom cases in the real layout of ``cfg.dataset`` under ``root``.

    LiTS: ``root/volume-{i}.nii.gz`` and ``root/segmentation-{i}.nii.gz``; KiTS19:
    ``root/case_{i:05d}/imaging.nii.gz`` and ``.../segmentation.nii.gz``; case ``i`` uses
    :func:`case_seed` ``(seed, i)``. ``root/phantom_truth.json`` maps each case id to the truth
    of :func:`generate_case` plus the config fingerprint, and is rewritten after every case.
    Idempotent: a case whose files exist and whose truth entry has the same seed and config is
    skipped, so an interrupted run resumes where it stopped. Every file is written atomically.
    Returns the image paths of all ``n_cases`` cases, in order.
    """
    if n_cases < 0:
        raise InputError(None, f"phantom n_cases must be >= 0, got {n_cases}")
    root = Path(root).resolve()
    truth_path = root / TRUTH_FILE
    truth = _read_truth(truth_path)
    digest = _config_digest(cfg)
    jobs = []
    for index in range(n_cases):
        entry = truth.get(case_id(cfg.dataset, index), {})
        done = (
            entry.get("seed") == case_seed(seed, index)
            and entry.get("config") == digest
            and all(p.exists() for p in case_files(root, cfg.dataset, index))
        )
        if not done:
            jobs.append((index, case_seed(seed, index)))
    with (
        _case_results(root, cfg, jobs, workers) as results,
        _progress(progress, n_cases, f"phantom {cfg.dataset}") as advance,
    ):
        advance(n_cases - len(jobs))
        for key, entry in results:
            truth[key] = entry
            ordered = {k: truth[k] for k in sorted(truth, key=_case_order)}
            write_text_atomic(truth_path, json.dumps(ordered, indent=1))
            advance(1)
    return [case_files(root, cfg.dataset, index)[0] for index in range(n_cases)]
