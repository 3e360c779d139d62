"""Painters of the paraspinal muscles, the vertebral column and the ribs.

Bright, high-contrast structures drawn late, over the soft tissue: the erector spinae and psoas
(:func:`_paint_muscles`), vertebral bodies, discs, canal and posterior elements along the
:class:`~kdseg.data.phantom.sampling.Spine` (:func:`_paint_spine`), and oblique rib sections in
the muscle wall whose angular positions drift with z (:func:`_paint_ribs`).
"""

from __future__ import annotations

import math

import numpy as np

from kdseg.data.phantom.config import Tissue
from kdseg.data.phantom.geometry import Grid, Volume, _box
from kdseg.data.phantom.sampling import Body, Intensities, Layout, Spine


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
