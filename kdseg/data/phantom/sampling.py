"""Random draws: the per-concern streams, shape perturbations and the case-level parameters.

:func:`_streams` splits a case seed into independent generators (geometry, anatomy, tumors,
noise, orientation), so e.g. the noise or the storage orientation never changes the anatomy of
a seed. The helpers draw outline harmonics, bumps, rotations and parenchyma texture; the
samplers draw what a whole case shares before anything is painted: the grid, the trunk
(:class:`Body`), the HU of every tissue (:class:`Intensities`), the craniocaudal organ extents
(:class:`Layout`) and the vertebral column (:class:`Spine`). The order of the draws on a stream
is part of the output: a case is reproducible only while it stays the same.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from kdseg.data.phantom.config import _STREAMS, PhantomConfig
from kdseg.data.phantom.geometry import Box, Bump, Grid, Harmonic
from kdseg.errors import InputError


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
# Case-level draws: grid, body, intensities, craniocaudal layout, spine


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
