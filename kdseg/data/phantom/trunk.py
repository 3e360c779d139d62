"""Painters of the trunk around the target organs: body wall, table, bowel, chest, vessels.

The context a network must learn to ignore: air, subcutaneous fat, the muscle wall and the
visceral fat of the cavity (the background every later painter draws into), the scanner
table, the stomach, colon and small-bowel loops with gas-fluid levels, the lung bases and the
heart above the diaphragm, and the aorta and inferior vena cava. Each painter takes its random
draws from the anatomy stream it is given; :func:`kdseg.data.phantom.case._draw` sets the
drawing order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from kdseg.data.phantom.config import HU_AIR, Tissue
from kdseg.data.phantom.geometry import Grid, Tube, Volume, _blob, _box, _slab, _tube
from kdseg.data.phantom.sampling import Body, Intensities, Layout, Spine, _bumps, _rotation


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
