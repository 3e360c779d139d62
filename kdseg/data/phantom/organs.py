"""Painters of the solid abdominal organs: liver and its vessels, gallbladder, spleen, kidneys.

The targets (liver for LiTS, kidneys for KiTS19) and their look-alike neighbours. The liver is
two bent tubes (right and left lobe) with parenchymal texture and portal / hepatic vein
branches that stay liver in the label; the gallbladder is a fluid-dense blob under it; the
spleen a crescent along the left wall; each kidney a tube with cortex, medulla and renal sinus.
The liver and kidney painters return their bounding boxes, where the tumors are seeded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from kdseg.data.phantom.config import Tissue
from kdseg.data.phantom.geometry import Box, Grid, Tube, Volume, _blob, _box, _tube
from kdseg.data.phantom.sampling import (
    Body,
    Intensities,
    Layout,
    _bumps,
    _rotation,
    _texture,
    _wobble,
)


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
