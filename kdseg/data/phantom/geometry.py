"""The voxel grid of a case, boxes cropped from it, the volume being drawn, and shapes.

Everything here is deterministic geometry, without randomness: :class:`Grid` (RAS world mm of
the voxel centres), :class:`Box` (a block of it with broadcastable coordinates, so a shape is
evaluated on its bounding box only), :class:`Volume` (HU and tissue arrays, and the masked
``paint`` every painter goes through), and the two shape primitives: :class:`Tube`, an organ as
a z-stack of bent ellipses (:func:`_tube`), and the rotated bumpy ellipsoid of :func:`_blob`
(tumors, bowel loops, the gallbladder). The random draws that parametrise them live in
:mod:`kdseg.data.phantom.sampling`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from kdseg.data.phantom.config import Tissue


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
